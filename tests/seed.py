"""Seeding a store with the showcase traffic through the worker's own processing."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient

# A budget the showcase overspends, so the budget panels and alerts have data.
BUDGETS: list[dict[str, Any]] = [
    {"scope": "tenant", "name": "acme", "period": "day", "limit_usd": 1.0},
    {"scope": "team", "name": "platform", "period": "month", "limit_usd": 500.0},
]


def showcase_settings(chdb_dir: Path, data_dir: Path, database: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        cache_dir=data_dir / "cache",
        clickhouse={"dsn": f"chdb://{chdb_dir}", "database": database},
        budgets=BUDGETS,
    )


def replay_events(settings: Settings, events: Iterable[dict[str, Any]]) -> SerialClient:
    """Replay ``events`` into the store of ``settings``; the open client is returned."""
    from llmpulse.processors.traces import RawMessage
    from llmpulse.replay import replay_messages
    from llmpulse.runtime import build_pipeline, prepare_store

    client = prepare_store(settings)
    pipeline = build_pipeline(settings, client)
    messages = (RawMessage(orjson.dumps(e), f"seed:{i}", None) for i, e in enumerate(events))
    replay_messages(pipeline, messages, batch_size=5000)
    pipeline.close(timeout=30)
    return client


def budgets_toml() -> str:
    lines = []
    for b in BUDGETS:
        lines.append("[[budgets]]")
        lines += [f"{k} = {v!r}" if isinstance(v, float) else f'{k} = "{v}"' for k, v in b.items()]
    return "\n".join(lines) + "\n"


def opened(settings: Settings) -> closing[SerialClient]:
    """The store of ``settings`` (not migrated), closed at the end of the ``with``."""
    from llmpulse.runtime import open_store

    return closing(open_store(settings))


# Two comparisons of the showcase, as the worker's canary stage and `llmpulse
# compare` record them, so the dashboards' comparison panel has rows.
SEEDED_COMPARISONS: list[tuple[str, dict[str, str], dict[str, str]]] = [
    ("canary:prompt-v2", {"prompt_version": "v1"}, {"prompt_version": "v2"}),
    ("cli", {"model": "gpt-4o"}, {"model": "gpt-4o-mini"}),
]


def seed_comparisons(settings: Settings, end_ms: int) -> None:
    """Run the real comparisons of ``SEEDED_COMPARISONS`` over the seeded store and
    record them in ``comparisons``, stamped just before ``end_ms``."""
    from datetime import UTC, datetime, timedelta
    from functools import partial

    from llmpulse.compare.run import Request, run_comparison
    from llmpulse.runtime import open_store

    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    for i, (origin, baseline, candidate) in enumerate(SEEDED_COMPARISONS):
        at = end - timedelta(seconds=10 * (i + 1))
        outcome = run_comparison(
            settings,
            Request(baseline, candidate, {}),
            open_store=open_store,
            origin=origin,
            now=partial(_fixed, at),
        )
        assert outcome.stored, outcome.note


def _fixed(at: Any) -> Any:
    return at
