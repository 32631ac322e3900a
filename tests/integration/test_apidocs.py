"""``make run``'s docs page (``tools.local.apidocs``) on the session's running system: the page,
every file it loads, all from the runner's own server (no CDN), showing the gateway's document;
nothing outside the allow-list is served.

The page is fetched over HTTP as a browser would, then parsed for what it loads: a file added to
the page but not served, or served with a type a browser refuses under ``nosniff``, fails here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.system import Reply, get
from tools.local import apidocs
from tools.local.process import HOST, free_port, port_in_use
from tools.localrun import LocalSystem, Ports, banner, docs_line

pytestmark = pytest.mark.integration

PAGE_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
ABSOLUTE_URL = re.compile(r"https?://[^\s\"'<>)]+")


class _References(HTMLParser):
    """What a browser would load for the page (``src``/``href``), and the document it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.openapi: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.loads.append(str(found[name]))
        if found.get("data-openapi"):
            self.openapi = found["data-openapi"]


@pytest.fixture(scope="module")
def docs(system: LocalSystem) -> str:
    """The docs page's base URL; a system without one fails, saying why (a skip only where npm,
    and so Swagger UI, cannot be had at all, as DynamoDB Local's tests skip without Java)."""
    if system.docs.url is None:
        if shutil.which("npm") is None:
            pytest.skip(f"no docs page: {system.docs.off}")
        pytest.fail(f"no docs page: {system.docs.off}")
    return system.docs.url.rstrip("/")


@pytest.fixture(scope="module")
def page(docs: str) -> Reply:
    reply = get(docs, "/")
    assert reply.status == 200, reply
    return reply


def references(page: Reply) -> _References:
    parsed = _References()
    parsed.feed(page.body.decode())
    return parsed


def test_the_page_is_html_under_a_policy_of_this_server_only(page: Reply) -> None:
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    policy = page.header("Content-Security-Policy") or ""
    assert "default-src 'self'" in policy, page
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert b'id="swagger-ui"' in page.body


def test_every_file_the_page_loads_is_served_with_its_type(docs: str, page: Reply) -> None:
    loads = references(page).loads
    assert {"/swagger-ui-bundle.js", "/swagger-ui.css", "/init.js"} <= set(loads), loads
    for path in loads:
        assert not urlsplit(path).netloc, f"{path} is not a file of this server"
        reply = get(docs, path)
        assert reply.status == 200, (path, reply)
        assert reply.body, path
        wanted = PAGE_TYPES[Path(path).suffix]
        assert (reply.header("Content-Type") or "").split(";")[0] == wanted, (path, reply)
        assert reply.header("X-Content-Type-Options") == "nosniff", path
    bundle = get(docs, "/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.body
    # The stylesheet's images are inline: no font or image from another host.
    stylesheet = get(docs, "/swagger-ui.css").body.decode()
    targets = re.findall(r"url\(\s*[\"']?([^\"')]*)", stylesheet)
    assert targets, "no url() at all: the check below would prove nothing"
    assert [target for target in targets if not target.startswith("data:")] == []


def test_the_page_and_its_script_name_no_other_host(docs: str, page: Reply) -> None:
    script = get(docs, "/init.js")
    assert script.status == 200, script
    for text in (page.body.decode(), script.body.decode()):
        assert ABSOLUTE_URL.findall(text) == []
    # The document comes from this server too: the page's data-openapi, read by init.js.
    assert "root.dataset.openapi" in script.body.decode()
    assert "validatorUrl: null" in script.body.decode()


def test_the_page_shows_the_gateways_document(docs: str, page: Reply, gateway: str) -> None:
    openapi = references(page).openapi
    assert openapi == "/openapi.json", openapi
    shown = get(docs, openapi)
    direct = get(gateway, "/openapi.json")
    assert shown.status == direct.status == 200, (shown, direct)
    assert (shown.header("Content-Type") or "").startswith("application/json"), shown
    document = shown.json()
    assert document["info"]["title"] == direct.json()["info"]["title"]
    assert document["paths"].keys() == direct.json()["paths"].keys()
    assert "/register_user" in document["paths"]
    # Asked of the gateway at its own address: curl from the page's servers entry reaches it.
    assert document["servers"] == [{"url": gateway}]
    assert document == direct.json()


@pytest.mark.parametrize(
    "path",
    [
        # From swagger-ui-dist's folder these name real files: the installed package.json and
        # this repository's own code.
        "/../../package.json",
        "/../../../../tools/local/apidocs.py",
        "/../package.json",
        "/..%2fpackage-lock.json",
        "/%2e%2e/package.json",
        "/node_modules/swagger-ui-dist/swagger-ui-bundle.js",
        "/swagger-ui.js",  # in swagger-ui-dist, not in the allow-list
        "/package.json",
        "/index.html",
        "/apidocs/index.html",
        "//etc/passwd",
        "/nothing-here.js",
    ],
)
def test_only_the_allow_list_is_served(docs: str, path: str) -> None:
    reply = get(docs, path)
    assert reply.status == 404, (path, reply)
    assert reply.body == b"not found\n"


def test_the_server_listens_on_loopback_only(system: LocalSystem, docs: str) -> None:
    assert system.docs.server is not None
    assert system.docs.server.server_address[0] == HOST == "127.0.0.1"
    assert docs == f"http://127.0.0.1:{system.ports.docs}"


def test_the_banner_links_the_page(system: LocalSystem, docs: str) -> None:
    line = f"docs: {docs}/ (Swagger UI of the gateway's /openapi.json)"
    assert docs_line(system) == line
    assert line in banner(system, reload=False).splitlines()


# --------------------------------------------------------------------------------------------
# one server of its own: the ways it is off, and a gateway that does not answer


@pytest.fixture
def lone() -> Iterator[apidocs.DocsServer]:
    """A docs server whose gateway port nobody listens on."""
    server = apidocs.DocsServer(f"http://{HOST}:{free_port()}")
    yield server
    server.stop()


def test_a_gateway_that_does_not_answer_is_a_502_saying_so(lone: apidocs.DocsServer) -> None:
    url = lone.serve(HOST, free_port())
    assert url is not None, lone.off
    reply = get(url, "/openapi.json")
    assert reply.status == 502, reply
    assert lone.gateway in reply.json()["message"]


def test_stop_frees_the_port(lone: apidocs.DocsServer) -> None:
    port = free_port()
    assert lone.serve(HOST, port) is not None, lone.off
    assert port_in_use(port)
    lone.stop()
    assert not port_in_use(port)
    assert lone.url is None


def test_a_taken_port_turns_the_page_off_and_the_banner_says_why(
    lone: apidocs.DocsServer,
) -> None:
    other = apidocs.DocsServer(lone.gateway)
    port = free_port()
    try:
        assert other.serve(HOST, port) is not None, other.off
        assert lone.serve(HOST, port) is None
    finally:
        other.stop()
    assert lone.off is not None
    assert f"port {port}" in lone.off
    assert "DOCS_PORT" in lone.off
    unstarted = LocalSystem(Ports.free())
    unstarted.docs = lone
    assert docs_line(unstarted) == f"docs: off ({lone.off})"


def test_without_swagger_ui_installed_the_page_is_off_saying_how_to_fix_it(
    lone: apidocs.DocsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(apidocs, "DIST_DIR", tmp_path / "swagger-ui-dist")
    assert lone.serve(HOST, free_port()) is None
    assert lone.off is not None
    assert "Swagger UI is not installed" in lone.off
    assert "make setup" in lone.off
