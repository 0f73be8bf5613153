"""Create topics and wait for a broker, from Python (the broker jars ship no CLI tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypedDict, Unpack

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from llmpulse.errors import KafkaError

# What a broker that is down, starting or unreachable raises through aiokafka.
_UNREACHABLE = (AioKafkaError, OSError, TimeoutError)


async def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        admin = _admin(bootstrap, max(left, 1.0))
        try:
            async with asyncio.timeout(max(left, 1.0)):
                await admin.start()
                await admin.describe_cluster()
            return
        except _UNREACHABLE as e:
            if loop.time() + 0.5 >= deadline:
                raise KafkaError(
                    bootstrap, f"no broker answered within {timeout:g} s: {e!r}"
                ) from e
        finally:
            await admin.close()
        await asyncio.sleep(0.5)


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication: int = 1,
    timeout: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the missing ones of ``topics`` (name -> partitions) and wait for their leaders.

    Topics that exist are left alone, even with fewer partitions than asked: adding
    partitions moves keys between partitions, which is not for a setup step to decide.
    """
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    if not topics:
        return
    admin = _admin(bootstrap, timeout)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(
                    name, partitions, replication, topic_configs=dict((configs or {}).get(name, {}))
                )
                for name, partitions in topics.items()
                if name not in existing
            ]
            if missing:
                resp = await admin.create_topics(missing, timeout_ms=int(timeout * 1000))
                for err in resp.to_object()["topic_errors"]:
                    code = err["error_code"]
                    # Another client may have created it since list_topics: fine.
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise KafkaError(
                            bootstrap,
                            f"cannot create topic {err['topic']!r}: error {code} "
                            f"{err.get('error_message') or ''}".rstrip(),
                        )
            await _wait_for_leaders(admin, list(topics))
    except TimeoutError as e:
        raise KafkaError(bootstrap, f"topics not ready within {timeout:g} s") from e
    except _UNREACHABLE as e:
        raise KafkaError(bootstrap, f"cannot ensure topics: {e!r}") from e
    finally:
        await admin.close()


class _EnsureOptions(TypedDict, total=False):
    """The keyword options of :func:`ensure_topics`."""

    replication: int
    timeout: float
    configs: Mapping[str, Mapping[str, str]] | None


def ensure_topics_sync(
    bootstrap: str, topics: Mapping[str, int], **options: Unpack[_EnsureOptions]
) -> None:
    """:func:`ensure_topics`, same options, for code that runs no event loop (CLI, fixtures)."""
    asyncio.run(ensure_topics(bootstrap, topics, **options))


async def partition_counts(
    bootstrap: str, names: list[str], timeout: float = 30.0
) -> dict[str, int]:
    """The number of partitions of each existing topic of ``names``."""
    admin = _admin(bootstrap, timeout)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            described = await admin.describe_topics(names)
    except (TimeoutError, *_UNREACHABLE) as e:
        raise KafkaError(bootstrap, f"cannot describe topics: {e!r}") from e
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    # A created topic is not usable until every partition has a leader; producers
    # sent to it earlier get retriable errors and slow tests down.
    while True:
        described = await admin.describe_topics(names)
        if len(described) == len(names) and all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)


def _admin(bootstrap: str, timeout: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(int(timeout * 1000), 1000),
        client_id="llmpulse-devkafka",
    )
