"""A worker in a child process, for the demo, the benchmark and end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpulse.errors import LlmpulseError, StoreError
from llmpulse.store.readonly import QueryResult, query_worker


class WorkerProcess:
    """``llmpulse worker`` with the given environment; queried through its HTTP port."""

    def __init__(self, env: dict[str, str], log_file: Path, *, web_port: int) -> None:
        self.env = env
        self.log_file = log_file
        self.url = f"http://127.0.0.1:{web_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.python = sys.executable  # another interpreter runs another installation
        self.args: list[str] = []  # more flags of `llmpulse worker`
        # The module run with -m: tests put a fault-injecting launcher here.
        self.module = "llmpulse"
        self.preexec: Callable[[], None] | None = None  # e.g. lifetime.die_with_parent()

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", self.module, "worker", *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self.preexec,  # noqa: PLW1509 - prctl only, see lifetime
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.health(timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise LlmpulseError(f"worker not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the worker owns its partitions and restored their state (``/ready``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                req = urllib.request.Request(self.url + "/ready", headers=self._auth())
                with urllib.request.urlopen(req, timeout=2) as r:
                    if json.loads(r.read()).get("ready"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise LlmpulseError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def sql(self, query: str) -> QueryResult:
        return query_worker(self.url, query, token=self._token())

    def _token(self) -> str | None:
        """The worker's own token (every endpoint but /health needs it when set)."""
        return self.env.get("LLMPULSE_WORKER_TOKEN") or os.environ.get("LLMPULSE_WORKER_TOKEN")

    def _auth(self) -> dict[str, str]:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def scalar(self, query: str) -> int:
        return int(self.sql(query)[1][0][0])

    def wait_for(self, query: str, expected: int, timeout: float = 90.0) -> int:
        """Poll ``query`` (one integer) until it equals ``expected``."""
        deadline = time.monotonic() + timeout
        value = -1
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                value = self.scalar(query)
            except StoreError:
                value = -1
            if value == expected:
                return value
            time.sleep(0.3)
        raise LlmpulseError(f"{query} = {value}, expected {expected}\n{self.log_tail()}")

    def _check_alive(self) -> None:
        if not self.alive:
            raise LlmpulseError(f"worker exited:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
