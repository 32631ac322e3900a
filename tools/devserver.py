"""Serve one Chalice app the way ``chalice local`` does, minus its two slow defaults.

``python -m tools.devserver --project-dir user_api --stage local --port 5001``

Why not plain ``chalice local``: its ``ChaliceRequestHandler`` leaves Nagle's algorithm on, so on
a keep-alive connection the body (a second small write after the headers) waits for the client's
delayed ACK, about 40 ms per request on Linux; and its ``ThreadedHTTPServer`` keeps
``socketserver``'s listen backlog of 5, which resets connections once a few dozen clients
connect at once. Everything else is Chalice's own code path, so what works here works under
``chalice local`` too (and plain ``chalice local --stage local`` in an app folder still does):

* the stage's configuration from ``CLIFactory.create_config_obj``, the app imported by
  ``CLIFactory.load_chalice_app`` with the stage's environment applied to ``os.environ``;
* ``validate_routes``, as ``chalice local`` checks that the routes would deploy;
* the ``LocalChalice`` class swap that makes ``app.current_request`` thread-local, and
  ``LocalDevServer`` / ``LocalGateway`` to turn HTTP into Lambda proxy events.

``--set KEY=VALUE`` overrides are merged after the stage's environment (Chalice lets the config
win over the process environment, so exporting a variable would not move a URL or a table);
the local runner uses them to point the gateway at services on other ports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.deploy.validate import validate_routes
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    ForbiddenError,
    LocalChalice,
    LocalDevServer,
    LocalGateway,
    LocalGatewayException,
    ThreadedHTTPServer,
)

from svckit.web import REQUEST_ID_HEADER, request_id_for

LISTEN_BACKLOG = 128


class RouteNotFound(LocalGatewayException):
    """No route serves this method and path: the contract's 404, with a request id."""

    CODE = 404


class ContractGateway(LocalGateway):
    """Chalice's local API Gateway, answering what no view serves the way the deployed stages
    do (their gateway responses are ``infra/gateway_responses.py``): ``404 NotFoundError`` in the
    contract's shape with an ``X-Request-Id``, instead of ``403 Missing Authentication Token``
    and an empty ``200`` for ``OPTIONS``. A path whose route lacks the method is no route either:
    API Gateway has no method there to call the function with.
    """

    def _generate_lambda_event(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        event: dict[str, Any] = super()._generate_lambda_event(method, path, headers, body)
        if method not in self._app_object.routes[event["requestContext"]["resourcePath"]]:
            raise ValueError(f"no {method} method on {path}")
        return event

    def handle_request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, Any]:
        try:
            response: dict[str, Any] = super().handle_request(method, path, headers, body)
        except ForbiddenError as exc:  # raised only for "no route": the apps have no authorizer
            request_id = request_id_for({k.lower(): v for k, v in headers.items()})
            message = f"no route for {method} {path.split('?')[0]}"
            raise RouteNotFound(
                {REQUEST_ID_HEADER: request_id, "Content-Type": "application/json"},
                json.dumps({"Code": "NotFoundError", "Message": message}).encode(),
            ) from exc
        return response


class NoDelayRequestHandler(ChaliceRequestHandler):
    """Chalice's handler with ``TCP_NODELAY`` set on each accepted socket (by
    ``StreamRequestHandler.setup``), so a response's header and body writes leave at once, and
    the contract's answer for unknown routes (``ContractGateway``)."""

    disable_nagle_algorithm = True

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: Any,
        app_object: Any,
        config: Any,
    ) -> None:
        # BaseHTTPRequestHandler serves the request inside __init__: the gateway must exist first.
        self.local_gateway = ContractGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _send_http_response_with_body(
        self, code: int, headers: dict[str, Any], body: str | bytes
    ) -> None:
        """Chalice's response writer, with the head and the body in one ``send``: with
        ``TCP_NODELAY`` two writes are two packets and two system calls per response, which the
        profile showed as a sixth of a service's time under load. Same headers, same order."""
        payload = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        for name, value in headers.items():
            for one in value if isinstance(value, list) else [value]:
                self.send_header(name, one)
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer) + payload)
        self._headers_buffer = []

    def __getattr__(self, name: str) -> Any:
        """Every HTTP method goes to Chalice's one handler, so a method no route has (``TRACE``,
        ``CONNECT``, any token) gets the contract's 404 like ``OPTIONS`` does, as on API Gateway,
        not ``http.server``'s HTML 501 (found by schemathesis)."""
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access line: the app's middleware already logs each request as JSON with its id.
        Errors the HTTP layer itself reports (``log_error``) still print."""


class BackloggedHTTPServer(ThreadedHTTPServer):
    """Chalice's threaded server with a listen backlog that absorbs bursts of new connections
    instead of resetting them, and an address reusable right after a restart."""

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True
    daemon_threads = True


class _Stop(Exception):
    """Raised from the signal handler to leave ``serve_forever`` from the main thread."""


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> ``{"A": "1", "B": "x=y"}``; a pair without ``=`` is an error."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key] = value
    return overrides


def create_server(
    project_dir: Path,
    stage: str,
    host: str,
    port: int,
    overrides: Mapping[str, str] | None = None,
) -> LocalDevServer:
    """Build (and bind) the server ``chalice local`` would build, with the faster classes.

    Mirrors ``chalice.cli.create_local_server`` and ``chalice.local.create_local_server``; only
    the handler and server classes differ.
    """
    # environ=os.environ, as the chalice CLI passes it: the stage's variables must reach the
    # process environment that the app reads (svckit reads settings when used).
    factory = CLIFactory(str(project_dir), environ=os.environ)
    # user_provided_params are merged last by Config, i.e. after the global and stage env.
    config = factory.create_config_obj(
        chalice_stage_name=stage,
        user_provided_params={"environment_variables": dict(overrides or {})},
    )
    app_obj = config.chalice_app
    validate_routes(app_obj.routes)
    # chalice.local.create_local_server's trick: the app's class becomes a subclass of
    # LocalChalice so that current_request is per thread on this threaded server.
    CustomLocalChalice.__bases__ = (LocalChalice, app_obj.__class__)
    app_obj.__class__ = CustomLocalChalice
    return LocalDevServer(
        app_obj,
        config,
        host,
        port,
        handler_cls=NoDelayRequestHandler,
        server_cls=BackloggedHTTPServer,
    )


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one app until SIGINT/SIGTERM; exit 0 then, non-zero if it cannot start."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.devserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--project-dir", required=True, type=Path, help="the Chalice project folder"
    )
    parser.add_argument("--stage", default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment override applied after the stage's environment (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    project_dir = args.project_dir.resolve()

    # What `chalice local` does before serving: CLI mode flag, stdout logging, project cwd.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    os.chdir(project_dir)

    server = create_server(project_dir, args.stage, args.host, args.port, overrides)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    http_server = server.server
    bound_host, bound_port = http_server.server_address[:2]
    print(
        f"Serving {project_dir.name} (stage {args.stage}, pid {os.getpid()}) "
        f"on http://{bound_host}:{bound_port}",
        flush=True,
    )
    try:
        http_server.serve_forever(poll_interval=0.2)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        http_server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
