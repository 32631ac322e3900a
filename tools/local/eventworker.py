"""One data service's event handlers, invoked as Lambda's event source mappings would invoke them.

``python -m tools.local.eventworker --service user_api --stage local``

The runner starts one per data service (``user_worker``, ``product_worker``), supervised and
hot-reloaded with the service. The app is loaded exactly as ``tools.devserver`` loads it
(``CLIFactory.create_config_obj`` for the stage, the app imported with the stage's environment
applied to ``os.environ``), so the handlers see the settings they would see in the function.
Then one poller thread per topology entry of the service (``tools.local.events``' ``stream``
and ``queue``): a stream poller per relay, a queue poller per subscription.

Endpoints come from the environment the runner sets: ``AWS_ENDPOINT_URL_DYNAMODB`` and
``AWS_ENDPOINT_URL_DYNAMODB_STREAMS`` (the DynamoDB engine), ``AWS_ENDPOINT_URL_SQS`` and
``AWS_ENDPOINT_URL_EVENTBRIDGE`` (the events program), which boto3 reads for each client.

``--project-dir`` loads another folder's ``app.py`` in the service's place (the tests host
handlers of their own that way); the queues, the table and the handler names are still the
service's, from the topology.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tools import services, topology
from tools.local import events

JOIN_SECONDS = 3.0


_say_lock = threading.Lock()


def say(text: str) -> None:
    """The worker's own lines (the runner prefixes them with the worker's name). One write per
    line, so a line never shares its row with one the app's log writer thread writes."""
    with _say_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def load_app(project_dir: Path, stage: str) -> tuple[ModuleType, Any]:
    """Import ``app.py`` as ``tools.devserver`` does; return the module and Chalice's config."""
    from chalice.cli.factory import CLIFactory

    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    config.chalice_app  # noqa: B018 - the property imports app.py with the stage's environment
    return sys.modules["app"], config


def function(config: Any, stage: str, handler_name: str, handler: Any) -> events.Function:
    """The handler with what Lambda's context would say about its function."""
    scoped = config.scope(stage, handler_name)
    return events.Function(
        name=f"{config.app_name}-{stage}-{handler_name}",
        handler=handler,
        timeout_seconds=int(scoped.lambda_timeout or 60),
        memory_mb=int(scoped.lambda_memory_size or 128),
    )


def pollers(
    service: services.ServiceDef,
    module: ModuleType,
    config: Any,
    stage: str,
    positions: events.Positions | None = None,
) -> list[events.Poller]:
    """One poller per relay and subscription of ``service`` whose handler the app defines; a
    missing handler is said and skipped (the rest still run)."""
    sqs = events.client("sqs", read_timeout=events.QUEUE_WAIT_SECONDS + 10)
    found: list[events.Poller] = []

    def handler_of(name: str) -> Any:
        handler = getattr(module, name, None)
        if handler is None or not callable(handler):
            say(f"app.py of {service.name} defines no handler {name}: it is not polled")
        return handler

    for relay in topology.relays_of(service):
        handler = handler_of(relay.handler)
        if handler is None:
            continue
        setting = service.table_env(relay.table)
        table = os.environ.get(setting) or service.stage_env(stage)[setting]
        found.append(
            events.StreamPoller(
                relay,
                function(config, stage, relay.handler, handler),
                table=table,
                stage=stage,
                streams=events.client("dynamodbstreams"),
                dynamodb_client=events.client("dynamodb"),
                sqs=sqs,
                say=say,
                positions=positions,
            )
        )
        say(f"{relay.handler} <- stream of table {table} (batch {relay.batch_size})")
    for sub in topology.subscriptions_of(service):
        handler = handler_of(sub.handler)
        if handler is None:
            continue
        found.append(
            events.QueuePoller(
                sub, function(config, stage, sub.handler, handler), stage=stage, sqs=sqs, say=say
            )
        )
        say(f"{sub.handler} <- queue {sub.queue_name(stage)} (batch {sub.batch_size})")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Poll until SIGTERM/SIGINT (exit 0); exit 2 on bad arguments, 1 if the app cannot load."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local.eventworker", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--service", required=True, choices=[s.name for s in services.DATA_SERVICES]
    )
    parser.add_argument("--stage", default="local")
    parser.add_argument("--project-dir", type=Path, help="the app folder (default: the service's)")
    parser.add_argument(
        "--positions",
        type=Path,
        help="a file keeping where each stream was read to, across restarts of this worker "
        "(without it every start reads the streams from their trim horizon)",
    )
    args = parser.parse_args(argv)
    service = next(s for s in services.DATA_SERVICES if s.name == args.service)
    project_dir = (args.project_dir or service.directory).resolve()
    positions_file = args.positions.resolve() if args.positions else None  # before the chdir

    # SIGTERM and SIGINT are taken by sigwait below, never by a handler: one arriving at any
    # moment (a reload right after the start) ends the worker the same orderly way. Blocked
    # before any thread starts, so every poller thread inherits the mask.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    # What tools.devserver does before loading the app: CLI mode flag, stdout logging, cwd.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # botocore says at INFO which endpoint each new client uses: noise for every client.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    os.chdir(project_dir)
    module, config = load_app(project_dir, args.stage)

    stop = threading.Event()
    found = pollers(service, module, config, args.stage, events.Positions(positions_file))
    threads = [poller.start(stop) for poller in found]
    say(
        f"Worker {service.name} (stage {args.stage}, pid {os.getpid()}) polling with "
        f"{len(threads)} thread(s)"
    )
    signal.sigwait(stop_signals)
    stop.set()
    # A poller in a long poll or an invocation finishes it first; the runner's grace period
    # (5 s) is longer than this, so the worker always ends on its own.
    deadline = time.monotonic() + JOIN_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
