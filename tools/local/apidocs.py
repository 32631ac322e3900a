"""``make run``'s docs page: Swagger UI over the gateway's ``/openapi.json``, for a person to read.

The apps serve their OpenAPI documents as JSON (``svckit.openapi``), which a program reads well
and a person does not. The runner serves one page that renders the gateway's document (the
public API: the services behind it are reached only through it). It is a tool of the local run,
like the metrics exporter (``tools.local.metrics``): a thread of the runner, bound to 127.0.0.1,
never part of an app, so nothing of it is packaged into the Lambdas.

Everything the page loads comes from this one server, never from a CDN:

* Swagger UI is the npm registry package ``swagger-ui-dist``, pinned with its integrity in
  ``tools/local/apidocs/package-lock.json`` and installed by ``make setup`` (``npm ci
  --ignore-scripts``, as DynamoDB Local is) into the git-ignored ``.local/apidocs``. Only the
  files of :data:`DIST_FILES` are served from it; any other path is a 404, so no request can
  walk out of that allow-list (``/../``, the package's other files, the lock).
* The page itself (``index.html``, ``init.js``) is kept beside the lock.
* ``/openapi.json`` is the gateway's, fetched from it for each request: the page and its
  document share one origin, so the browser needs no CORS from the gateway (which sends none).
  The gateway sees this server's request addressed to itself, so the document's ``servers`` is
  the gateway's URL, where a person sends the walk-through's curl commands.

The page reads only: "Try it out" is off (the gateway's routes are another origin without CORS,
and proxying them here would put a second, different gateway on another port).

Where npm is missing ``make setup`` says so in one line and the build goes on; the runner then
says in its banner that the docs page is off, and why. The same goes for a taken port: a page
for reading is not worth refusing to start the system for (``DOCS_PORT`` moves it).

``python -m tools.local.apidocs install`` is ``make setup``'s step.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tools import services
from tools.local import npm

DEFAULT_PORT = 5103  # after DynamoDB (5100), metrics (5101) and the events endpoint (5102)
PORT_ENV = "DOCS_PORT"

PACKAGE_DIR = Path(__file__).resolve().parent / "apidocs"  # package.json + lock + the page
INSTALL_DIR = services.LOCAL_DIR / "apidocs"  # node_modules, git-ignored
DIST_DIR = INSTALL_DIR / "node_modules" / "swagger-ui-dist"
OPENAPI_PATH = "/openapi.json"
UPSTREAM_TIMEOUT = 15.0  # the gateway's first document asks both services for theirs

JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
MAP = "application/json; charset=utf-8"
PNG = "image/png"
HTML = "text/html; charset=utf-8"
# The page's own files, from PACKAGE_DIR: URL path -> (file name, content type).
PAGE_FILES: Mapping[str, tuple[str, str]] = {
    "/": ("index.html", HTML),
    "/init.js": ("init.js", JS),
}
# The only files of swagger-ui-dist that are served (the source maps for a browser's devtools).
DIST_FILES: Mapping[str, tuple[str, str]] = {
    "/swagger-ui-bundle.js": ("swagger-ui-bundle.js", JS),
    "/swagger-ui-bundle.js.map": ("swagger-ui-bundle.js.map", MAP),
    "/swagger-ui.css": ("swagger-ui.css", CSS),
    "/swagger-ui.css.map": ("swagger-ui.css.map", MAP),
    "/index.css": ("index.css", CSS),
    "/favicon-32x32.png": ("favicon-32x32.png", PNG),
    "/favicon-16x16.png": ("favicon-16x16.png", PNG),
}
# The browser's own guarantee that the page loads nothing from another host. Swagger UI sets
# inline styles and draws its icons from data: URIs; its scripts are all files of this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


# --------------------------------------------------------------------------------------------
# installation


def missing() -> list[str]:
    """The served files of swagger-ui-dist that are not installed (all present: ``[]``)."""
    return [name for name, _type in DIST_FILES.values() if not (DIST_DIR / name).is_file()]


def install(say: Any = print) -> bool:
    """Swagger UI from its pinned lock (``tools.local.npm``); where npm is missing, ``make run``
    goes on without its docs page. swagger-ui-dist's one dependency, @scarf/scarf, is install
    analytics run by a postinstall script: scripts are never run, and no served file uses it."""
    return npm.install(
        label="Swagger UI",
        package="swagger-ui-dist",
        package_dir=PACKAGE_DIR,
        install_dir=INSTALL_DIR,
        installed=lambda: not missing(),
        without="make run's docs page is off",
        say=say,
    )


def unavailable() -> str | None:
    """Why the page cannot be served here (``None``: it can), with what to do about it."""
    if not missing():
        return None
    if shutil.which("npm") is None:
        return f"Swagger UI is not installed and npm is missing ({npm.NPM_HINT})"
    return "Swagger UI is not installed (run `make setup`)"


# --------------------------------------------------------------------------------------------
# the server


class DocsServer:
    """The page, Swagger UI's files and the gateway's document on one local port.

    Started and stopped with the system as the metrics exporter is (``serve``/``stop``), but it
    never stops the system from starting: when it cannot serve, ``url`` stays ``None`` and
    ``off`` says why, for the banner.
    """

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway  # the gateway's base URL, http://127.0.0.1:5000
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        self.off: str | None = "not started"

    def serve(self, host: str, port: int) -> str | None:
        """Serve from a thread of its own; return the page's URL, or ``None`` (see ``off``)."""
        problem = unavailable()
        if problem is not None:
            self.off = problem
            return None
        handler = type("Handler", (_Handler,), {"docs": self})
        try:
            server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            self.off = f"port {port} is taken ({exc.strerror}; set {PORT_ENV} to move it)"
            return None
        server.daemon_threads = True
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="apidocs", daemon=True)
        self._thread.start()
        self.url = f"http://{host}:{port}/"
        self.off = None
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.url = None
        self.off = "stopped"

    def gateway_document(self) -> tuple[int, str, bytes]:
        """(status, content type, body) of the gateway's ``GET /openapi.json``; a 502 saying why
        when it does not answer (stopped, restarting, or left out with ``--without``)."""
        parts = urlsplit(self.gateway)
        conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=UPSTREAM_TIMEOUT
        )
        try:
            conn.request("GET", OPENAPI_PATH, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
            content_type = response.getheader("Content-Type", "application/json")
            return response.status, content_type, body
        except (OSError, http.client.HTTPException) as exc:
            why = f"the gateway at {self.gateway} did not answer {OPENAPI_PATH}: {exc}"
            return 502, "application/json", json.dumps({"message": why}).encode()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the allow-listed paths; everything else is a 404 (or 501 for a method)."""

    docs: DocsServer  # set on the subclass DocsServer.serve makes
    server_version = "make-run-docs"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        # The path is looked up as sent, never joined to a folder: only the allow-list exists.
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        headers: dict[str, str] = {}
        if path == OPENAPI_PATH:
            status, content_type, body = self.docs.gateway_document()
        elif path in PAGE_FILES or path in DIST_FILES:
            name, content_type = PAGE_FILES.get(path) or DIST_FILES[path]
            folder = PACKAGE_DIR if path in PAGE_FILES else DIST_DIR
            try:
                body = (folder / name).read_bytes()
                status = 200
            except OSError:  # uninstalled while running
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not installed\n"
            if path == "/":
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Reloading the page shows the gateway's current document and a reinstalled Swagger UI.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per asset would bury the services' lines in the runner's terminal."""


# --------------------------------------------------------------------------------------------
# command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.local.apidocs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["install"])
    parser.parse_args(argv)
    install()
    return 0


if __name__ == "__main__":
    sys.exit(main())
