"""Edges of make run's observability plumbing (found by a hostile review): a metrics line the
exporter refuses leaves nothing of itself counted, and the run log survives being deleted."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from tools.local.metrics import Exporter
from tools.local.runlog import RunLog, read_lines


def _line(values: dict) -> str:
    return json.dumps(
        {
            "_aws": {
                "Timestamp": 1,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "shop",
                        "Dimensions": [["service", "stage"]],
                        "Metrics": [
                            {"Name": "UsersRegistered", "Unit": "Count"},
                            {"Name": "PointsGranted", "Unit": "Count"},
                        ],
                    }
                ],
            },
            "service": "user_api",
            "stage": "local",
            **values,
        }
    )


def test_a_rejected_line_is_not_half_recorded():
    """A line the exporter calls unreadable must not leave some of its metrics counted."""
    exporter = Exporter()
    exporter.take(_line({"UsersRegistered": [1.0], "PointsGranted": [-5.0]}))
    assert exporter.unreadable == 1
    text = generate_latest(exporter.registry).decode()
    assert 'shop_users_registered_total{service="user_api",stage="local"} 1.0' not in text


def test_timeline_still_sees_lines_after_the_log_file_is_removed(tmp_path):
    """Deleting run.log (to start a clean timeline) must not make every later line vanish."""
    path = tmp_path / "run.log"
    log = RunLog(path, None, max_bytes=10_000)
    log("gateway_api", '{"a": 1}')
    path.unlink()
    for _ in range(100):
        log("gateway_api", '{"request_id": "abc"}')
    assert list(read_lines(path)), "every line after the deletion went to an unlinked file"
