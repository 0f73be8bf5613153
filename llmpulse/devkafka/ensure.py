"""A broker for interactive commands: the configured one if it answers, else a
local one started on the spot (and stopped again by the caller)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmpulse.devkafka import broker
from llmpulse.errors import KafkaError


@dataclass(frozen=True)
class BrokerLease:
    bootstrap: str
    started_here: bool
    state_dir: Path

    def release(self) -> None:
        if self.started_here:
            broker.stop(self.state_dir)


def answers(bootstrap: str, timeout: float = 1.0) -> bool:
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def lease_broker(
    bootstrap: str,
    *,
    state_dir: Path,
    cache_dir: Path,
    local_port: int,
    log: Callable[[str], None] | None = None,
    die_with_parent: bool = False,
) -> BrokerLease:
    if answers(bootstrap):
        return BrokerLease(bootstrap, False, state_dir)
    host = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)[0]
    if host not in ("localhost", "127.0.0.1", ""):
        raise KafkaError(bootstrap, "the configured broker does not answer")
    info = broker.start(
        state_dir=state_dir,
        cache_dir=cache_dir,
        port=local_port,
        log=log,
        die_with_parent=die_with_parent,
    )
    return BrokerLease(info.bootstrap, True, state_dir)
