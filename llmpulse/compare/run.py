"""One comparison from the store: read both arms, decide, record in ``comparisons``.

The store is opened directly when possible; an embedded store owned by a
running worker is read through the worker's read-only ``/sql`` endpoint, and
then the result cannot be written to ``comparisons`` (the endpoint refuses
writes): the caller is told so and prints or gates on it all the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from llmpulse.compare.data import QueryFn, expand, load_arm, load_sketch, where_sql
from llmpulse.compare.verdict import Comparison, ScoreRule, compare_arms
from llmpulse.detectors.embedder import HashingEmbedder
from llmpulse.errors import StoreLockedError
from llmpulse.schemas.rows import COMPARISON_COLUMNS, names
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from llmpulse.store.readonly import query_worker, run_readonly

COMPARISON_NAMES = names(COMPARISON_COLUMNS)


@dataclass(frozen=True)
class Request:
    baseline: Mapping[str, str]
    candidate: Mapping[str, str]
    where: Mapping[str, str]
    since: datetime | None = None
    until: datetime | None = None
    metrics: Sequence[str] | None = None


@dataclass
class Outcome:
    comparison: Comparison
    run_id: str
    stored: bool
    note: str = ""


def selector_text(sel: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sel.items())


def run_id_of(req: Request, created_at: datetime, origin: str) -> str:
    key = "\x1f".join(
        [
            origin,
            selector_text(req.baseline),
            selector_text(req.candidate),
            selector_text(req.where),
            str(req.since),
            str(req.until),
            created_at.isoformat(),
        ]
    )
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def comparison_rows(
    c: Comparison, req: Request, *, run_id: str, created_at: datetime, origin: str
) -> list[tuple[Any, ...]]:
    """Rows of ``comparisons`` (``COMPARISON_COLUMNS`` order), one per metric."""
    rows = []
    for m in c.metrics:
        d = m.as_dict()
        rows.append(
            (
                run_id,
                created_at,
                origin,
                selector_text(req.baseline),
                selector_text(req.candidate),
                selector_text(req.where),
                req.since,
                req.until,
                m.metric,
                m.verdict,
                c.overall,
                m.test,
                _num(m.effect),
                _num(m.ci_low),
                _num(m.ci_high),
                float(m.tolerance),
                _num(m.p_value),
                _num(m.p_adjusted),
                m.n_baseline,
                m.n_candidate,
                m.needed_per_arm,
                m.reason,
                orjson.dumps(d["details"]).decode(),
            )
        )
    return rows


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def compare_with(query: QueryFn, req: Request, settings: Settings) -> Comparison:
    """Read both arms with ``query`` and compare them."""
    cs = settings.compare
    embedder = HashingEmbedder(dim=settings.drift.embedding_dim)
    arms = []
    for sel in (req.baseline, req.candidate):
        arm = load_arm(
            query,
            where_sql(sel, req.where, req.since, req.until),
            max_rows=cs.max_rows,
            seed=cs.seed,
            embedder=embedder,
        )
        if arm.n == 0:
            # Raw rows gone (retention) or never kept: the window sketches still
            # hold the latency and TTFT distributions, to within 1 %.
            for metric, attr in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
                sketch = load_sketch(query, sel, req.where, req.since, req.until, metric)
                if sketch is not None:
                    setattr(arm, attr, expand(sketch, cs.max_rows, cs.seed))
                    arm.sources[metric] = "sketch"
        arms.append(arm)
    return compare_arms(arms[0], arms[1], cs, ScoreRule.of(settings.scores), metrics=req.metrics)


def run_comparison(
    settings: Settings,
    req: Request,
    *,
    open_store: Callable[[Settings], SerialClient],
    origin: str = "cli",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    created = now()
    run_id = run_id_of(req, created, origin)
    try:
        client = open_store(settings)
    except StoreLockedError:
        url = settings.worker_url
        comparison = compare_with(lambda sql: query_worker(url, sql), req, settings)
        return Outcome(
            comparison,
            run_id,
            stored=False,
            note=f"read through the worker at {url}; its SQL endpoint is read-only, so this"
            " result is not stored in comparisons",
        )
    try:
        comparison = compare_with(lambda sql: run_readonly(client, sql), req, settings)
        rows = comparison_rows(comparison, req, run_id=run_id, created_at=created, origin=origin)
        if rows:
            client.insert(
                "comparisons",
                rows,
                COMPARISON_NAMES,
                settings={"insert_deduplication_token": run_id},
            )
    finally:
        client.close()
    return Outcome(comparison, run_id, stored=True)
