"""The host stand-in for LocalStack's in-container Lambda init: one Python execution environment.

LocalStack's Docker executor copies its Go ``lambda-runtime-init`` into a container that runs the
AWS runtime; the init reports ``status/<id>/ready`` to LocalStack, receives invocations on
``POST /invoke`` and posts each result back to ``invocations/<request-id>/logs`` and then
``.../response`` or ``.../error`` (the executor endpoint reads the logs when the result arrives,
so logs go first). This script speaks that protocol on the host, for Python handlers only.

It is run by ``executor.py`` as ``<python3.x> hostinit.py`` (the function's runtime interpreter,
not LocalStack's) with the environment LocalStack built for the function; it imports nothing but
the standard library before the function's own code, so it runs under any Python >= 3.9.

One process is one execution environment: invocations run one at a time, in a worker thread so a
timeout can be enforced; after a timeout the process exits (its handler thread cannot be stopped)
and the executor starts a fresh one for the next invocation, as AWS re-initialises a sandbox.
The handler's stdout/stderr are captured at the file-descriptor level (prints, logging,
subprocesses alike), returned as the invocation's logs and copied to this process's own stdout,
which the executor appends to the function's log file.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import os
import queue
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The executor endpoint of this environment in LocalStack, e.g.
# http://127.0.0.1:4566/_localstack_lambda/<executor-id>
RUNTIME_ENDPOINT = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
RUNTIME_ID = os.environ["LOCALSTACK_RUNTIME_ID"]
THIS_FILE = os.path.abspath(__file__)
# LocalStack's process: the executor starts this script directly.
PARENT_PID = os.getppid()


class LambdaContext:
    """The ``context`` argument of a handler: the attributes AWS's Python runtime provides."""

    def __init__(self, request_id: str, invoked_arn: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(message)


class LambdaError(Exception):
    """A failure reported as the runtime does: ``errorType`` is not always the exception's class."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


def _post(path: str, body: bytes, content_type: str = "application/json") -> None:
    request = urllib.request.Request(  # noqa: S310 - LocalStack's loopback endpoint
        f"{RUNTIME_ENDPOINT}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": content_type},
    )
    # No proxy: the endpoint is LocalStack on the loopback interface.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        response.read()


def _error_payload(error: BaseException | LambdaError, request_id: str) -> dict[str, Any]:
    if isinstance(error, LambdaError):
        return {
            "errorMessage": error.message,
            "errorType": error.error_type,
            "requestId": request_id,
            "stackTrace": error.stack,
        }
    # The function's frames only, as AWS shows them (not this runner's).
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if os.path.abspath(frame.filename) != THIS_FILE
    ]
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def _json_default(value: object) -> object:
    # AWS's Python runtime serialises Decimal (what DynamoDB returns) as a number.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class Handler:
    """The function's handler, imported on first use and again after a failed import (a re-init)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.function: Any = None
        self.init_duration_ms: float | None = None

    def load(self) -> Any:
        if self.function is not None:
            return self.function
        started = time.perf_counter()
        module_name, _, attribute = self.spec.rpartition(".")
        if not module_name:
            raise LambdaError("Runtime.MalformedHandlerName", f"Bad handler '{self.spec}'")
        module_name = module_name.replace("/", ".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise LambdaError(
                "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}"
            ) from error
        except SyntaxError as error:
            raise LambdaError(
                "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {error}"
            ) from error
        function = getattr(module, attribute, None)
        if function is None:
            raise LambdaError(
                "Runtime.HandlerNotFound",
                f"Handler '{attribute}' missing on module '{module_name}'",
            )
        self.function = function
        self.init_duration_ms = (time.perf_counter() - started) * 1000
        return function


class Capture:
    """Redirects fds 1 and 2 into a file while the handler runs.

    The file is the one the executor names (``hostinit.py <capture-file>``): when this process
    dies mid-invocation (``os._exit``, a crash, ``sys.exit``) the executor reads what the handler
    wrote from it and reports it as the invocation's logs. It is emptied after each invocation.
    """

    def __init__(self, path: str | None = None) -> None:
        self.original_out = os.dup(1)
        self.original_err = os.dup(2)
        self.path = path
        self.file: Any = None

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self.path:
            self.file = open(self.path, "w+b")  # noqa: SIM115 - closed in stop()
        else:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)

    def stop(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.original_out, 1)
        os.dup2(self.original_err, 2)
        self.file.seek(0)
        text = self.file.read().decode("utf-8", errors="replace")
        self.file.truncate(0)  # nothing of it is reported again if this process dies later
        self.file.close()
        return text

    def peek(self) -> str:
        """What the handler wrote so far, without restoring the descriptors (after a timeout)."""
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.file.fileno(), "rb", closefd=False) as raw:
            raw.seek(0)
            return raw.read().decode("utf-8", errors="replace")

    def echo(self, text: str) -> None:
        """Copy an invocation's logs to the environment's own log (the function's log file)."""
        os.write(self.original_out, text.encode("utf-8", errors="replace"))


class LambdaLogHandler(logging.Handler):
    """Root logger output in the runtime's format, ``[LEVEL] time request-id message``."""

    request_id = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            millis = int(record.msecs)
            message = self.format(record).replace("\n", "\r")
            sys.stdout.write(
                f"[{record.levelname}]\t{stamp}.{millis:03d}Z\t{self.request_id}\t{message}\n"
            )
        except Exception:
            self.handleError(record)


def _peak_memory_mb() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux keeps it across exec, so it would report
    LocalStack's own peak (the process this one was forked from)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _report_lines(request_id: str, duration_ms: float, init_ms: float | None) -> str:
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    used_mb = _peak_memory_mb()
    init = f"\tInit Duration: {init_ms:.2f} ms" if init_ms is not None else ""
    return (
        f"END RequestId: {request_id}\n"
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms\tMemory Size: {memory} MB\t"
        f"Max Memory Used: {used_mb} MB{init}\t\n"
    )


class Runtime:
    """Runs invocations one after the other and reports them to LocalStack."""

    def __init__(self) -> None:
        self.handler = Handler(os.environ.get("_HANDLER", ""))
        self.capture = Capture(sys.argv[1] if len(sys.argv) > 1 else None)
        self.invocations: queue.Queue[dict[str, Any]] = queue.Queue()
        self.timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3)
        self.version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.log_handler = LambdaLogHandler()
        root = logging.getLogger()
        root.addHandler(self.log_handler)
        level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
        if level:
            root.setLevel(level.upper())
        self.first = True

    def run_one(self, invocation: dict[str, Any]) -> None:
        request_id = invocation["invoke-id"]
        deadline = time.time() + self.timeout_s
        os.environ["_X_AMZN_TRACE_ID"] = invocation.get("trace-id") or ""
        self.log_handler.request_id = request_id
        outcome: dict[str, Any] = {}
        init_ms: float | None = None

        def work() -> None:
            try:
                function = self.handler.load()
                event = json.loads(invocation.get("payload") or "null")
                context = LambdaContext(request_id, invocation["invoked-function-arn"], deadline)
                result = function(event, context)
                try:
                    outcome["body"] = json.dumps(result, default=_json_default).encode()
                except (TypeError, ValueError) as error:
                    raise LambdaError(
                        "Runtime.MarshalError", f"Unable to marshal response: {error}"
                    ) from error
            except (SystemExit, KeyboardInterrupt) as error:
                # As AWS's runtime: the process ends (Runtime.ExitError), the next invocation
                # gets a fresh environment. Reported by the executor, output included.
                outcome["exit"] = error
                if isinstance(error, KeyboardInterrupt):
                    traceback.print_exc()
                elif error.code is not None and not isinstance(error.code, int):
                    print(error.code, file=sys.stderr)
            except BaseException as error:  # the handler's failure is the invocation's result
                outcome["error"] = error
                payload = _error_payload(error, request_id)
                # What AWS's runtime prints for an unhandled exception.
                print(
                    f"[ERROR] {payload['errorType']}: {payload['errorMessage']}\n"
                    "Traceback (most recent call last):\n" + "".join(payload["stackTrace"]),
                    flush=True,
                )

        started = time.perf_counter()
        self.capture.start()
        worker = threading.Thread(target=work, name=f"invoke-{request_id}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        duration_ms = (time.perf_counter() - started) * 1000
        if self.first and self.handler.init_duration_ms is not None:
            init_ms = self.handler.init_duration_ms
            self.first = False
        start_line = f"START RequestId: {request_id} Version: {self.version}\n"
        if worker.is_alive():
            output = self.capture.peek()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            message = f"{stamp} {request_id} Task timed out after {self.timeout_s:.2f} seconds"
            logs = start_line + output + _report_lines(request_id, duration_ms, init_ms)
            logs = logs.replace("END RequestId", f"{message}\n\nEND RequestId", 1)
            self.capture.echo(logs)
            self._post_result(request_id, logs, error={
                "errorMessage": message, "errorType": "Sandbox.Timedout",
            })
            # The handler thread cannot be stopped: end this environment; the executor starts a
            # fresh one for the next invocation.
            os._exit(0)
        if "exit" in outcome:
            _exit_like_python(outcome["exit"])
        output = self.capture.stop()
        logs = start_line + output + _report_lines(request_id, duration_ms, init_ms)
        self.capture.echo(logs)
        if "error" in outcome:
            self._post_result(request_id, logs, error=_error_payload(outcome["error"], request_id))
        else:
            self._post_result(request_id, logs, body=outcome.get("body", b"null"))

    def _post_result(
        self, request_id: str, logs: str, body: bytes = b"", error: dict[str, Any] | None = None
    ) -> None:
        _post(f"/invocations/{request_id}/logs", json.dumps({"logs": logs}).encode())
        if error is not None:
            _post(f"/invocations/{request_id}/error", json.dumps(error).encode())
        else:
            _post(f"/invocations/{request_id}/response", body)

    def serve(self) -> None:
        while True:
            invocation = self.invocations.get()
            try:
                self.run_one(invocation)
            except Exception:  # a failed report must not end the environment
                traceback.print_exc()


def _make_server(runtime: Runtime) -> ThreadingHTTPServer:
    class InvokeHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/invoke":
                self.send_response(404)
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            invocation = json.loads(self.rfile.read(length) or b"{}")
            runtime.invocations.put(invocation)
            # Accepted: the result goes back through the executor endpoint, as with the init.
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # fds 1/2 may belong to a running handler; stay quiet

    return ThreadingHTTPServer(("127.0.0.1", 0), InvokeHandler)


def _exit_like_python(error: SystemExit | KeyboardInterrupt) -> None:
    """End the process as Python does for an uncaught ``SystemExit``/``KeyboardInterrupt``:
    the exit status of ``sys.exit``, death by SIGINT for an interrupt."""
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(error, KeyboardInterrupt):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        os._exit(130)
    code = error.code
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _watch_parent() -> None:
    """Exit when LocalStack is gone (even if it was killed), so no environment outlives it;
    the processes the function started (this process's group) go with it."""
    while True:
        if os.getppid() != PARENT_PID:
            if os.getpgid(0) == os.getpid():
                os.killpg(os.getpid(), signal.SIGKILL)
            os._exit(0)
        time.sleep(1)


def main() -> None:
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The function's code first on the path, as in /var/task; never this script's folder.
    sys.path[0] = task_root
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    runtime = Runtime()
    server = _make_server(runtime)
    threading.Thread(target=server.serve_forever, name="invoke-server", daemon=True).start()
    port = server.server_address[1]
    _post(f"/status/{RUNTIME_ID}/ready", json.dumps({"port": port}).encode())
    runtime.serve()


if __name__ == "__main__":
    main()
