"""A LocalStack runtime executor that runs each Python execution environment as a host process.

Community LocalStack runs Lambda functions only in Docker: its ``DockerRuntimeExecutor`` starts a
container per execution environment with LocalStack's Go init inside. Where there is no Docker
engine this executor starts ``hostinit.py`` instead, under the function runtime's Python (from
``LOCALSTACK_HOST_LAMBDA_PYTHONS``, a JSON map such as ``{"python3.11": "/path/bin/python"}``),
with the environment LocalStack computed for the function. The child speaks the init's protocol
(ready/status, ``POST /invoke``, logs/response/error callbacks), so LocalStack's environment
reuse, keep-alive, event source mappings and log handling work unchanged.

Differences from the Docker executor, on purpose: the child binds an ephemeral loopback port and
reports it in its ready call (no fixed 9563 per container); the code runs from LocalStack's
unzipped code folder in place (no copy); a dead child (timeout, ``os._exit``, crash) is replaced
by a fresh one on the next invocation; and every wait also watches the child, so a child that
dies never leaves an invocation hanging for LocalStack's 905 s ceiling. What it lacks: other
runtimes than Python, container images, layers, isolation (the function runs as the LocalStack
user on the host) and memory limits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path

from localstack.aws.api.lambda_ import PackageType
from localstack.http import Response
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    InvokeSendError,
    ShutdownDuringStartup,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)
from werkzeug import Request

from localstack import config

LOG = logging.getLogger(__name__)

PYTHONS_ENV = "LOCALSTACK_HOST_LAMBDA_PYTHONS"
HOSTINIT = Path(__file__).resolve().parent / "hostinit.py"
HOST = "127.0.0.1"
# How long past the function's timeout to wait before declaring the child stuck (the child
# enforces the timeout itself; this only covers a child that cannot, e.g. blocked in C code).
TIMEOUT_GRACE_S = 10.0
STOP_GRACE_S = 2.0
POLL_S = 0.25


def interpreters() -> dict[str, str]:
    """Runtime name -> Python interpreter, from ``LOCALSTACK_HOST_LAMBDA_PYTHONS``."""
    raw = os.environ.get(PYTHONS_ENV) or "{}"
    try:
        mapping = json.loads(raw)
    except ValueError:
        LOG.error("%s is not a JSON object: %r", PYTHONS_ENV, raw)
        return {}
    return {str(k): str(v) for k, v in mapping.items()}


def lambda_log_dir() -> Path:
    """The functions' log files, one per function, under LocalStack's logs folder."""
    return Path(config.dirs.logs) / "lambda"


def pid_dir() -> Path:
    """One file per running environment, so the controller can find any straggler."""
    return Path(config.dirs.tmp) / "host-lambda-pids"


def _start_time(pid: int) -> int | None:
    """A process's start time, ``/proc/<pid>/stat`` field 22 (None without /proc)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# How Lambda's init words a runtime killed by a signal (Go's signal names).
SIGNAL_NAMES = {
    signal.SIGINT: "interrupt",
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
}


def _exit_reason(returncode: int) -> str:
    """The ``Runtime.ExitError`` message AWS gives for a runtime process that ended."""
    if returncode == 0:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        name = SIGNAL_NAMES.get(signal.Signals(-returncode), signal.Signals(-returncode).name)
        return f"Runtime exited with error: signal: {name}"
    return f"Runtime exited with error: exit status {returncode}"


class HostExecutorEndpoint(ExecutorEndpoint):
    """LocalStack's executor endpoint, learning the child's port from its ready call."""

    def status_ready(self, request: Request, executor_id: str) -> Response:
        body = request.get_json(silent=True, force=True) or {}
        if "port" in body:
            self.container_port = int(body["port"])
        return super().status_ready(request, executor_id)


class HostRuntimeExecutor(RuntimeExecutor):
    """One execution environment = one ``hostinit.py`` child process of LocalStack."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = HostExecutorEndpoint(self.id, container_address=HOST)
        self.process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.lock = threading.RLock()
        self.stopped = False
        name = function_version.id.function_name
        self.log_path = lambda_log_dir() / f"{name}.log"
        self.log_offset = 0
        self.pid_path = pid_dir() / f"{self.id}.pid"
        # Where the child captures a running handler's output: named, so that what a child that
        # dies mid-invocation (os._exit, a crash, sys.exit) wrote is still there to report.
        self.capture_path = pid_dir() / f"{self.id}.out"

    # ---------------------------------------------------------------------------------------
    # lifecycle

    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        self.env = self._process_env(env_vars)
        self._spawn()

    def _python(self) -> str:
        runtime = self.function_version.config.runtime
        python = interpreters().get(str(runtime))
        if not python:
            raise LambdaRuntimeException(
                f"The host Lambda executor has no interpreter for runtime {runtime!r} "
                f"(known: {sorted(interpreters())}; set {PYTHONS_ENV})"
            )
        return python

    def _code_dir(self) -> Path:
        return Path(self.function_version.config.code.get_unzipped_code_location())

    def _process_env(self, env_vars: dict[str, str]) -> dict[str, str]:
        """LocalStack's variables for the function on a clean base, not LocalStack's own."""
        python = self._python()
        home = Path(config.dirs.tmp) / "host-lambda-home" / self.id
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            # A private HOME and no shared AWS config: the developer's ~/.aws must not leak in.
            "HOME": str(home),
            "TMPDIR": str(home),
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "PYTHONUNBUFFERED": "1",
        }
        env.update({key: str(value) for key, value in env_vars.items() if value is not None})
        env["LAMBDA_TASK_ROOT"] = str(self._code_dir())
        env["LAMBDA_RUNTIME_DIR"] = str(HOSTINIT.parent)
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{self.function_version.config.runtime}"
        return env

    def _spawn(self) -> None:
        """Start the child and wait for its ready call, failing fast if it dies first."""
        endpoint = self.executor_endpoint
        endpoint.startup_future = Future()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            self.capture_path.unlink(missing_ok=True)
            self.process = subprocess.Popen(
                [self._python(), "-u", str(HOSTINIT), str(self.capture_path)],
                env=self.env,
                cwd=str(self._code_dir()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: what the function starts is killed with it.
                process_group=0,
            )
        # pid and start time (/proc stat field 22): the controller signals the group only
        # while that pid is still this process (or its group outlives it).
        self.pid_path.write_text(f"{self.process.pid} {_start_time(self.process.pid)}\n")
        LOG.debug("Started host environment %s (pid %s)", self.id, self.process.pid)
        while True:
            try:
                endpoint.startup_future.result(timeout=POLL_S)
                return
            except TimeoutError:
                code = self.process.poll()
                if code is not None:
                    raise LambdaRuntimeException(
                        f"Host environment {self.id} exited with status {code} before it was "
                        f"ready; see {self.log_path}:\n{self.get_logs()[-2000:]}"
                    ) from None
            except CancelledError as error:
                raise ShutdownDuringStartup(
                    "Executor environment shutdown during startup"
                ) from error

    def _kill_child(self) -> None:
        """Stop the child and every process in its group (what the function started)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_GRACE_S)
        _signal_group(process.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        self.capture_path.unlink(missing_ok=True)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self._kill_child()
        try:
            self.executor_endpoint.shutdown()
        except Exception as error:  # as the Docker executor: stopping must not raise
            LOG.debug("Error while stopping the endpoint of %s: %s", self.id, error)

    # ---------------------------------------------------------------------------------------
    # addresses

    def get_address(self) -> str:
        return HOST

    def get_endpoint_from_executor(self) -> str:
        return HOST

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{HOST}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    # ---------------------------------------------------------------------------------------
    # invocations

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        with self.lock:
            if self.stopped:
                raise LambdaRuntimeException(f"Host environment {self.id} is stopped")
            if self.process is None or self.process.poll() is not None:
                LOG.debug("Host environment %s had exited; starting a fresh one", self.id)
                self._kill_child()
                self._spawn()
        return self._invoke(payload)

    def _invoke(self, payload: dict[str, str]) -> InvocationResult:
        endpoint = self.executor_endpoint
        endpoint.invocation_future = future = Future()
        endpoint.logs = None
        url = f"http://{HOST}:{endpoint.container_port}/invoke"
        response = endpoint._perform_invoke(
            invocation_url=url, proxies={"http": "", "https": ""}, payload=payload
        )
        if not response.ok:
            raise InvokeSendError(f"Invocation to {url} failed: HTTP {response.status_code}")
        request_id = payload["invoke-id"]
        deadline = time.monotonic() + float(self.function_version.config.timeout) + TIMEOUT_GRACE_S
        while True:
            try:
                return future.result(timeout=POLL_S)
            except TimeoutError:
                pass
            process = self.process
            if process is not None and process.poll() is not None:
                # What the function started dies with it.
                _signal_group(process.pid, signal.SIGKILL)
                try:  # a timed-out child reports, then exits: its result may be on the way
                    return future.result(timeout=1.0)
                except TimeoutError:
                    message = (
                        f"RequestId: {request_id} Error: {_exit_reason(process.returncode)}"
                    )
                    return self._error(request_id, "Runtime.ExitError", message)
            if time.monotonic() > deadline:
                output = self._captured()
                self._kill_child()
                message = f"RequestId: {request_id} Error: Task timed out (environment stuck)"
                return self._error(request_id, "Sandbox.Timedout", message, output)

    def _captured(self) -> str:
        """What the running handler wrote before its process died (the child's capture file)."""
        try:
            return self.capture_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _error(
        self, request_id: str, error_type: str, message: str, output: str | None = None
    ) -> InvocationResult:
        """A failure the child could not report: the invocation's logs are what its handler
        wrote (its capture file) and the reason, also appended to the function's log file."""
        if output is None:
            output = self._captured()
        if output and not output.endswith("\n"):
            output += "\n"
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        logs = (
            f"START RequestId: {request_id} Version: {self.function_version.id.qualifier}\n"
            f"{output}{message}\nEND RequestId: {request_id}\n"
        )
        try:
            with self.log_path.open("ab") as log:
                log.write(logs.encode("utf-8", errors="replace"))
        except OSError as error:
            LOG.debug("Cannot append to %s: %s", self.log_path, error)
        return InvocationResult(request_id, body, is_error=True, logs=logs)

    def get_logs(self) -> str:
        """This environment's part of the function's log (other environments may interleave)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    # ---------------------------------------------------------------------------------------
    # versions

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        config_ = function_version.config
        if config_.package_type != PackageType.Zip or not config_.runtime:
            raise LambdaRuntimeException("The host Lambda executor runs zip packages only")
        if str(config_.runtime) not in interpreters():
            raise LambdaRuntimeException(
                f"The host Lambda executor cannot run runtime {config_.runtime!r}; it runs "
                f"{sorted(interpreters())} ({PYTHONS_ENV})"
            )
        if config_.code:
            config_.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        """Nothing to remove: LocalStack owns the unzipped code."""

    @classmethod
    def validate_environment(cls) -> bool:
        found = interpreters()
        missing = {runtime: path for runtime, path in found.items() if not os.access(path, os.X_OK)}
        if not found or missing:
            LOG.warning(
                "Host Lambda executor: no usable interpreters in %s (missing: %s)",
                PYTHONS_ENV,
                missing or "all",
            )
            return False
        return True

