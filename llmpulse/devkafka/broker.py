"""A local single-node KRaft Kafka broker run from jars that Maven resolves into a cache.

Meant for development and CI on machines without Docker. Everything a broker needs
lives in its ``state_dir``: ``server.properties``, ``log4j2.properties``, the data in
``data/``, the broker's output in ``broker.log`` and ``broker.json`` (pid and ports),
which is how :func:`status`, :func:`stop` and a repeated :func:`start` find it again.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmpulse.devkafka import lifetime
from llmpulse.devkafka._process import Log, locked, quiet, tail
from llmpulse.devkafka.jars import resolve_jars
from llmpulse.errors import KafkaError

HOST = "127.0.0.1"
DEFAULT_HEAP = "-Xms256m -Xmx512m"

_READY_LINE = b"Kafka Server started"
_RECORD = "broker.json"
_LOG = "broker.log"
# broker.log is appended to across restarts; past this size the old one is set aside.
_LOG_ROTATE_BYTES = 20 * 1024 * 1024

# Brokers started by this process. Keeping the Popen objects lets stop() reap them
# (a zombie still answers kill(pid, 0)) and avoids "still running" warnings at GC.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BrokerInfo:
    """Where a broker listens and where its files are."""

    bootstrap: str
    pid: int | None
    state_dir: Path
    log_file: Path


@dataclass(frozen=True)
class _Record:
    pid: int
    port: int
    controller_port: int
    log_offset: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- jars


# ------------------------------------------------------------------------ broker


def start(
    *,
    state_dir: Path,
    cache_dir: Path,
    port: int = 9092,
    controller_port: int | None = None,
    heap: str = DEFAULT_HEAP,
    timeout: float = 120.0,
    log: Log | None = None,
    die_with_parent: bool = False,
) -> BrokerInfo:
    """Start a broker on ``127.0.0.1:port`` with its state in ``state_dir``.

    ``die_with_parent``: the broker gets SIGTERM when this process dies (Linux;
    see :mod:`llmpulse.devkafka.lifetime`), for a broker that only lives for one
    command (the demo); ``llmpulse kafka start`` leaves it running on purpose.

    Idempotent: if the broker of ``state_dir`` already runs, it is returned as is.
    ``timeout`` bounds the wait for readiness, not the one-time jar download.
    Raises :class:`KafkaError` if the port belongs to someone else, if Java or Maven
    is missing, or if the broker does not get ready within ``timeout`` seconds.
    """
    say = log or quiet
    bootstrap = f"{HOST}:{port}"
    state_dir = state_dir.absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = state_dir / _LOG
    with locked(state_dir / ".lock"):
        rec = _read_record(state_dir)
        if rec is not None and _is_our_broker(rec.pid, state_dir):
            if rec.port != port:
                raise KafkaError(
                    bootstrap,
                    f"the broker of {state_dir} already runs on port {rec.port} "
                    f"(pid {rec.pid}); stop it first",
                )
            info = BrokerInfo(bootstrap, rec.pid, state_dir, log_file)
            if not _port_answers(port):
                # Started by a call that gave up waiting, or still booting: wait for it.
                _wait_ready(None, rec, log_file, time.monotonic() + timeout, bootstrap)
            say(f"Kafka already running at {bootstrap} (pid {rec.pid})")
            return info
        (state_dir / _RECORD).unlink(missing_ok=True)

        if not _port_free(port):
            raise KafkaError(bootstrap, f"port {port} is already in use by another process")
        if controller_port is None:
            controller_port = free_port()
            while controller_port == port:
                controller_port = free_port()
        elif controller_port == port or not _port_free(controller_port):
            raise KafkaError(bootstrap, f"controller port {controller_port} is not free")
        java = shutil.which("java")
        if java is None:
            raise KafkaError(bootstrap, "java is not on PATH; the local broker needs Java 17+")
        libs = resolve_jars(cache_dir, log=log)
        classpath = str(libs / "*")  # java expands the wildcard itself

        props = state_dir / "server.properties"
        log4j = state_dir / "log4j2.properties"
        data_dir = state_dir / "data"
        props.write_text(_server_properties(port, controller_port, data_dir), encoding="ascii")
        log4j.write_text(_LOG4J2, encoding="ascii")
        jvm_common = ["-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}"]
        if not (data_dir / "meta.properties").is_file():
            _format_storage(java, classpath, jvm_common, props, bootstrap)

        offset = _rotate_log(log_file)
        deadline = time.monotonic() + timeout
        say(f"starting Kafka at {bootstrap} (state in {state_dir})")
        cmd = [java, *shlex.split(heap), *jvm_common, "-cp", classpath, "kafka.Kafka", str(props)]
        with log_file.open("ab") as out:
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=state_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own session: the broker outlives this process and is not hit
                    # by a Ctrl-C meant for the command that started it.
                    start_new_session=True,
                    preexec_fn=lifetime.die_with_parent() if die_with_parent else None,  # noqa: PLW1509 - prctl only, see lifetime
                )
            except OSError as e:
                raise KafkaError(bootstrap, f"cannot run java: {e}") from e
        _CHILDREN[proc.pid] = proc
        rec = _Record(proc.pid, port, controller_port, offset)
        _write_record(state_dir, rec)
        try:
            _wait_ready(proc, rec, log_file, deadline, bootstrap)
        except BaseException:
            _terminate(proc.pid, grace=5.0)
            (state_dir / _RECORD).unlink(missing_ok=True)
            raise
        say(f"Kafka ready at {bootstrap} (pid {proc.pid})")
        return BrokerInfo(bootstrap, proc.pid, state_dir, log_file)


def stop(state_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the broker of ``state_dir``; returns whether one was running."""
    state_dir = state_dir.absolute()
    if not (state_dir / _RECORD).is_file():
        return False
    with locked(state_dir / ".lock"):
        rec = _read_record(state_dir)
        if rec is None:
            return False
        stopped = _is_our_broker(rec.pid, state_dir)
        if stopped:
            _terminate(rec.pid, grace=timeout)
        (state_dir / _RECORD).unlink(missing_ok=True)
        return stopped


def status(state_dir: Path) -> BrokerInfo | None:
    """The broker of ``state_dir`` if its process is alive and its port answers."""
    state_dir = state_dir.absolute()
    rec = _read_record(state_dir)
    if rec is None or not _is_our_broker(rec.pid, state_dir) or not _port_answers(rec.port):
        return None
    return BrokerInfo(f"{HOST}:{rec.port}", rec.pid, state_dir, state_dir / _LOG)


# ----------------------------------------------------------------------- helpers


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 base64url characters, as Kafka makes them."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        # Kafka's own generator rejects ids starting with "-": they read as CLI options.
        if not cid.startswith("-"):
            return cid


def _server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # One node: 50 partitions (the default) only slow down the first group join.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by llmpulse.devkafka; rewritten on every start."]
    lines += [f"{k}={_prop_escape(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _prop_escape(value: str) -> str:
    # Kafka loads properties as ISO-8859-1 with backslash escapes; paths may hold either.
    out = value.replace("\\", "\\\\")
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in out)


# The broker's stdout is appended to broker.log, so a console appender is all it takes
# (and fatal JVM errors land in the same file).
_LOG4J2 = """\
# Written by llmpulse.devkafka; rewritten on every start.
status = warn
# Log4j's own hook would stop logging while Kafka is still shutting down.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _format_storage(
    java: str, classpath: str, jvm_common: list[str], props: Path, bootstrap: str
) -> None:
    cmd = [
        java,
        *jvm_common,
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        new_cluster_id(),
        "--config",
        str(props),
        "--ignore-formatted",
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KafkaError(bootstrap, f"formatting the broker storage failed: {e}") from e
    if proc.returncode != 0:
        raise KafkaError(
            bootstrap,
            f"formatting the broker storage failed (exit code {proc.returncode}):\n"
            f"{tail(proc.stdout)}",
        )


def _wait_ready(
    proc: subprocess.Popen[bytes] | None,
    rec: _Record,
    log_file: Path,
    deadline: float,
    bootstrap: str,
) -> None:
    """Wait for the ready line in the log (past rec.log_offset) and an open port."""
    pos = rec.log_offset
    carry = b""
    seen = False
    while True:
        if not seen and log_file.is_file():
            with log_file.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
            pos += len(chunk)
            seen = _READY_LINE in carry + chunk
            # Keep a line's worth so a ready line split across two reads is found.
            carry = (carry + chunk)[-len(_READY_LINE) :]
        if seen and _port_answers(rec.port):
            return
        code = proc.poll() if proc is not None else None
        if code is not None or (proc is None and not _pid_alive(rec.pid)):
            shown = f" with exit code {code}" if code is not None else ""
            raise KafkaError(
                bootstrap,
                f"the broker exited{shown} before it was ready; end of {log_file}:\n"
                f"{_log_tail(log_file, rec.log_offset)}",
            )
        if time.monotonic() > deadline:
            raise KafkaError(
                bootstrap,
                f"the broker was not ready in time; end of {log_file}:\n"
                f"{_log_tail(log_file, rec.log_offset)}",
            )
        time.sleep(0.2)


def _rotate_log(log_file: Path) -> int:
    """Set an oversized log aside; return the offset this start's output begins at."""
    try:
        size = log_file.stat().st_size
    except FileNotFoundError:
        return 0
    if size > _LOG_ROTATE_BYTES:
        log_file.replace(log_file.with_name(log_file.name + ".1"))
        return 0
    return size


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM (Kafka then shuts down cleanly), SIGKILL if it takes too long."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_exit(pid, wait):
            break
    _CHILDREN.pop(pid, None)


def _wait_exit(pid: int, timeout: float) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _pid_alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie still exists for kill(); its state letter follows the ")".
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_broker(pid: int, state_dir: Path) -> bool:
    """Alive and, where /proc tells, running this state dir's config (pids get reused)."""
    if not _pid_alive(pid):
        return False
    if not Path("/proc/self").exists():  # no procfs (macOS): trust the pid
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(state_dir / "server.properties").encode() in cmdline.split(b"\0")


def _port_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Java sets it too: a port with connections in TIME_WAIT is still usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _read_record(state_dir: Path) -> _Record | None:
    try:
        raw = json.loads((state_dir / _RECORD).read_text())
        return _Record(
            int(raw["pid"]),
            int(raw["port"]),
            int(raw["controller_port"]),
            int(raw.get("log_offset", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(state_dir: Path, rec: _Record) -> None:
    body = {
        "pid": rec.pid,
        "port": rec.port,
        "controller_port": rec.controller_port,
        "bootstrap": f"{HOST}:{rec.port}",
        "log_offset": rec.log_offset,
        "started_at": time.time(),
    }
    tmp = state_dir / (_RECORD + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(state_dir / _RECORD)


def _log_tail(log_file: Path, offset: int, lines: int = 30) -> str:
    try:
        with log_file.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - 64 * 1024))
            return tail(f.read(), lines)
    except OSError as e:
        return f"(cannot read the log: {e})"
