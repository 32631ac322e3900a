"""``make load``'s tool itself, so it cannot rot: a few seconds of the locustfile's mix with two
users against the integration system, and its data check.

Not a measurement (``make load`` is, and stays out of ``make test``): this holds the locustfile
to the routes it claims to send and to answers that are not failures, and the data check to
passing on a sound system and failing on a ledger the store contradicts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.load.check import check
from tools.load.ledger import CREATED, Ledger
from tools.load.routes import MIX_ROUTES
from tools.load.run import Plan, mix_and_check, points_per_product

pytestmark = pytest.mark.integration

SECONDS = 6


def test_the_mix_sends_every_route_without_failure_and_the_data_checks_out(
    gateway: str, tmp_path: Path
) -> None:
    run, result = mix_and_check(
        gateway, Plan(users=2, spawn_rate=2, seconds=SECONDS, out_dir=tmp_path), 60.0, say=print
    )

    sent = {(row.method, row.name) for row in run.stats.routes if row.requests}
    assert sent == MIX_ROUTES, run.stats.routes
    assert run.stats.total.failures == 0, run.stats.failures
    assert result.ok, result.render()
    # The ledger the check read is the locust process's, not an empty one.
    assert sum(ok for ok in run.ledger.users.values()) == 2, run.ledger.users
    assert any(e["state"] == CREATED for e in run.ledger.products.values()), run.ledger
    assert run.report.is_file()


def test_the_data_check_fails_when_the_store_contradicts_the_ledger(gateway: str) -> None:
    """A 201 product that is not there and points owed that were never granted: both reported."""
    ghost = Ledger(
        users={"nobody_loaded_this": True},
        products={"never-stored-by-load": {"user": "nobody_loaded_this", "state": CREATED}},
    )

    result = check(gateway, ghost, points_per_product(), settle_seconds=1.0, say=print)

    assert not result.ok
    assert any("never-stored-by-load" in p and "404" in p for p in result.problems), result.problems
    assert any(p.startswith("nobody_loaded_this: points 'HTTP 404'") for p in result.problems), (
        result.problems
    )
