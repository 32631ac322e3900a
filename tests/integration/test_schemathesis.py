"""schemathesis against the three apps' own documents on the real local system (make test's
bounded run; ``make fuzz`` is the same with a larger budget)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tools import fuzz
from tools.localrun import LocalSystem, Ports
from tools.services import GATEWAY, PRODUCT, USER

pytestmark = pytest.mark.integration

# About 40 s for the three on two cores; a fixed seed, so a failure is the same one next time.
MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[LocalSystem]:
    """A system of its own: thousands of wrong logins from 127.0.0.1 fill the per-source
    failed-login limit, which would refuse the other integration tests' logins (seen: the
    walk-through's 429 after this run on the shared system)."""
    own = LocalSystem(Ports.free())
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_every_document_survives_schemathesis(fuzzed: LocalSystem) -> None:
    urls = {s.name: fuzzed.url(s) for s in (GATEWAY, USER, PRODUCT)}
    results = fuzz.run(urls, MAX_EXAMPLES)
    print(fuzz.report(results))
    for result in results:
        assert result.requests > 100, f"{result.app} sent too little to mean anything"
        assert result.failures == [], result.output[-6000:]
        assert result.exit_code == 0, result.output[-6000:]


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_a_method_no_route_has_is_the_contracts_404(system: LocalSystem, method: str) -> None:
    # schemathesis: TRACE got http.server's HTML 501 from the local servers, not the JSON 404
    # the deployed stages answer for a method a route lacks.
    for url in (system.url("gateway_api"), system.url("user_api")):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request(method, "/health")
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 404
        assert json.loads(body)["Code"] == "NotFoundError"
        assert response.getheader("X-Request-Id")
