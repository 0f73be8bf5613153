"""A real Kafka broker for test suites, from whatever this machine offers.

This module is a test edge: unlike the rest of llmpulse it reads the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmpulse.devkafka import broker

BOOTSTRAP_ENV = "LLMPULSE_KAFKA_BOOTSTRAP"
CACHE_ENV = "LLMPULSE_CACHE_DIR"
_CONTAINER_IMAGE = "confluentinc/cp-kafka:7.9.0"


def cache_dir() -> Path:
    """Where the broker jars are cached: $LLMPULSE_CACHE_DIR, else the XDG cache dir."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llmpulse"


def docker_available(timeout: float = 5.0) -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@contextmanager
def broker_for_tests(tmp_dir: Path) -> Iterator[str]:
    """Yield a bootstrap address: $LLMPULSE_KAFKA_BOOTSTRAP if set, else a testcontainers
    broker if Docker answers and testcontainers is installed, else a local broker with
    its state in ``tmp_dir`` on free ports. Whatever was started is stopped on exit."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    if docker_available():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            pass  # testcontainers is an optional dev dependency: fall back to a local broker
        else:
            with KafkaContainer(_CONTAINER_IMAGE).with_kraft() as container:
                yield str(container.get_bootstrap_server())
            return
    state_dir = tmp_dir / "broker"
    info = broker.start(
        state_dir=state_dir,
        cache_dir=cache_dir(),
        port=broker.free_port(),
    )
    try:
        yield info.bootstrap
    finally:
        broker.stop(state_dir)
