"""`llmpulse demo` dies abnormally: its worker and broker must die with it.

The demo starts its own broker here (a free port and a fresh data dir, never the
shared one) and its worker on a free web port. Linux only: the mechanism is
``prctl(PR_SET_PDEATHSIG)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmpulse.devkafka import broker
from llmpulse.devkafka.testing import cache_dir

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only"
)

START_TIMEOUT_S = 240.0  # broker (10-20 s on 2 cores) + worker migrating its store
EXIT_TIMEOUT_S = 45.0  # SIGTERM: the JVM's shutdown hooks, the worker's batch


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _wait(what: str, cond: object, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not reached within {timeout:.0f}s\n{tail}")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return bool(json.loads(r.read()))
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("how", ["sigkill", "pipe"])
def test_children_die_with_the_demo(tmp_path: Path, how: str) -> None:
    kafka_port, web_port = broker.free_port(), broker.free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "LLMPULSE_DATA_DIR": str(data),
        "LLMPULSE_CACHE_DIR": str(cache_dir()),  # the jars, downloaded once
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
        "LLMPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",  # nobody there: start one
        "LLMPULSE_KAFKA_LOCAL_PORT": str(kafka_port),
        "LLMPULSE_WORKER_WEB_PORT": str(web_port),
        "LLMPULSE_TOPICS_PARTITIONS": "1",
    }
    log = tmp_path / "demo.log"
    with log.open("wb") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "llmpulse", "demo", "--rate", "20"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert demo.stdout is not None
    kids: set[int] = set()
    broker_pid: int | None = None
    try:
        _wait(
            "worker healthy",
            lambda: _healthy(web_port) or demo.poll() is not None,
            START_TIMEOUT_S,
            log,
        )
        assert demo.poll() is None, log.read_text(errors="replace")
        record = json.loads((data / "kafka" / "broker.json").read_text())
        broker_pid = int(record["pid"])
        kids = _children(demo.pid)
        assert broker_pid in kids and len(kids) >= 2, (kids, broker_pid)
        assert all(_alive(p) for p in kids)

        if how == "sigkill":
            demo.kill()  # no cleanup code of the demo runs
        else:
            # The reader of the demo's output goes away (`llmpulse demo | head -1`):
            # its next status line hits a closed pipe.
            demo.stdout.close()
        demo.wait(timeout=120)
        _wait("every child exited", lambda: not any(_alive(p) for p in kids), EXIT_TIMEOUT_S, log)
        # The next demo would find its ports free again.
        assert not _healthy(web_port)
        assert broker._port_free(kafka_port)
        if how == "pipe":
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text
    finally:
        for pid in [*kids, demo.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if demo.poll() is None:
            demo.wait(10)
