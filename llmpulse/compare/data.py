"""Selecting the two arms of a comparison in ClickHouse and reading them.

Queries are plain read-only SQL strings, so they run wherever ``llmpulse sql``
runs: on the store itself, or through a worker's read-only ``/sql`` endpoint
while the worker owns the embedded store. Values typed by the user are quoted
here (no parameter binding exists on that endpoint); keys must be known
columns.

>>> sel = parse_selection("prompt_version=v3,model=gpt-4o", "--candidate")
>>> sel
{'prompt_version': 'v3', 'model': 'gpt-4o'}
>>> where_sql(sel, {"endpoint": "/chat"}, None, None)
"prompt_version = 'v3' AND model = 'gpt-4o' AND endpoint = '/chat'"
>>> parse_selection("colour=red", "--baseline")
Traceback (most recent call last):
...
llmpulse.errors.ConfigError: --baseline: unknown key 'colour'; use one of service, endpoint, \
model, provider, tenant, team, prompt_version, variant, environment, operation, response_model, \
finish_reason, status, error_type, user_id or attributes.<name>
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np

from llmpulse.compare.stats import Sample
from llmpulse.compare.verdict import Arm
from llmpulse.detectors.embedder import Embedder
from llmpulse.errors import ConfigError
from llmpulse.processors.sketch import representatives, sketch_params
from llmpulse.processors.sketch_sql import SKETCH_ALPHA
from llmpulse.schemas.event import DIMENSIONS

QueryFn = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]

KEYS: Final = (
    *DIMENSIONS,
    "operation",
    "response_model",
    "finish_reason",
    "status",
    "error_type",
    "user_id",
)
_ATTR = re.compile(r"^attributes\.([A-Za-z0-9_.:/-]{1,128})$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_EMBEDDED: Final = 5000  # texts per arm embedded for the embedding metrics


def quote(value: str) -> str:
    """A ClickHouse string literal.

    >>> quote("it's \\\\ ok")
    "'it\\\\'s \\\\\\\\ ok'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column(key: str, flag: str) -> str:
    if key in KEYS:
        return key
    m = _ATTR.match(key)
    if m:
        return f"attributes[{quote(m.group(1))}]"
    raise ConfigError(
        flag,
        f"unknown key {key!r}; use one of {', '.join(KEYS)} or attributes.<name>",
    )


def parse_selection(text: str, flag: str) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE...]`` -> mapping (keys checked, values verbatim)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(flag, f"expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
        _column(key, flag)
        if key in out and out[key] != value:
            raise ConfigError(flag, f"key {key!r} given twice")
        out[key] = value
    return out


def parse_time(text: str, flag: str, now: datetime) -> datetime:
    """RFC 3339 (UTC when no zone), epoch milliseconds, or a duration ago (90m, 6h, 7d).

    >>> now = datetime(2026, 1, 2, tzinfo=UTC)
    >>> parse_time("6h", "--since", now).isoformat()
    '2026-01-01T18:00:00+00:00'
    >>> parse_time("2026-01-01T00:00:00Z", "--since", now).hour
    0
    """
    t = text.strip()
    m = _DURATION.match(t)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if t.isdigit():
        return datetime.fromtimestamp(int(t) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            flag, f"expected RFC 3339, epoch ms or a duration like 30m, 6h, 7d; got {text!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ts(t: datetime) -> str:
    return (
        f"toDateTime64({quote(t.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3])}, 3, 'UTC')"
    )


def where_sql(
    arm: Mapping[str, str],
    where: Mapping[str, str],
    since: datetime | None,
    until: datetime | None,
) -> str:
    parts = [f"{_column(k, '--where')} = {quote(v)}" for k, v in {**arm, **where}.items()]
    if since is not None:
        parts.append(f"timestamp >= {_ts(since)}")
    if until is not None:
        parts.append(f"timestamp < {_ts(until)}")
    return " AND ".join(parts) or "1"


def _floats(col: list[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([math.nan if v is None else float(v) for v in col], dtype=np.float64)


def load_arm(
    query: QueryFn,
    cond: str,
    *,
    max_rows: int,
    seed: int,
    embedder: Embedder | None,
) -> Arm:
    """The calls matching ``cond`` (a sample of ``max_rows`` at most, the same rows
    for the same seed), their scores (inline and late) and text embeddings."""
    sample = (
        f"SELECT * FROM traces FINAL WHERE {cond} "
        f"ORDER BY cityHash64(event_id, {int(seed)}) LIMIT {int(max_rows)}"
    )
    _, meta = query(
        "SELECT count(), toUnixTimestamp64Milli(min(timestamp)), "
        f"toUnixTimestamp64Milli(max(timestamp)) FROM traces FINAL WHERE {cond}"
    )
    calls, t0, t1 = (int(meta[0][0]), meta[0][1], meta[0][2]) if meta else (0, 0, 0)
    if calls == 0:
        return Arm.empty()
    _, rows = query(
        "SELECT latency_ms, ttft_ms, status = 'error', cost_usd, "
        "if(isNull(input_tokens) AND isNull(output_tokens), NULL, "
        "ifNull(input_tokens, 0) + ifNull(output_tokens, 0)) "
        f"FROM ({sample})"
    )
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 5
    lat, ttft, err, cost, tokens = cols
    arm = Arm(
        latency_ms=_floats(lat),
        ttft_ms=_floats(ttft),
        errors=np.array([bool(v) for v in err], dtype=np.bool_),
        cost_usd=_floats(cost),
        tokens=_floats(tokens),
        calls=calls,
        span_s=max(0.0, (float(t1 or 0) - float(t0 or 0)) / 1000.0),
    )
    values: dict[str, list[float]] = {}
    _, inline = query(
        f"SELECT name, value FROM ({sample}) "
        "ARRAY JOIN mapKeys(scores) AS name, mapValues(scores) AS value"
    )
    for name, value in inline:
        values.setdefault(str(name), []).append(float(value))
    # Scores that came later, joined to the sampled calls by event id or by span;
    # scores the pipeline copied from the traces themselves are already counted.
    _, late = query(
        f"WITH arm AS (SELECT event_id, trace_id, span_id FROM ({sample})) "
        "SELECT name, value FROM scores FINAL WHERE source != 'trace' AND ("
        "(event_id != '' AND event_id IN (SELECT event_id FROM arm)) OR "
        "(event_id = '' AND (trace_id, span_id) IN (SELECT trace_id, span_id FROM arm)))"
    )
    for name, value in late:
        values.setdefault(str(name), []).append(float(value))
    arm.scores = {k: np.array(v, dtype=np.float64) for k, v in values.items()}
    if embedder is not None:
        _, texts = query(
            f"SELECT prompt, response FROM ({sample}) "
            f"WHERE prompt IS NOT NULL OR response IS NOT NULL LIMIT {MAX_EMBEDDED}"
        )
        prompts = [t[0] for t in texts if t[0]]
        responses = [t[1] for t in texts if t[1]]
        if prompts:
            arm.prompt_embeddings = embedder.embed_many(prompts)
        if responses:
            arm.response_embeddings = embedder.embed_many(responses)
    return arm


def _grouping_for(query: QueryFn, keys: set[str]) -> tuple[str, int] | None:
    """The grouping of the stored windows with the fewest dimensions that holds every
    key, and its shortest window length (its tiles count every call once)."""
    _, rows = query("SELECT grouping, min(window_seconds) FROM window_stats GROUP BY grouping")
    fits = [(str(g), int(w)) for g, w in rows if keys <= set(str(g).split("+"))]
    return min(fits, key=lambda f: (len(f[0].split("+")), f[1])) if fits else None


def load_sketch(
    query: QueryFn,
    sel: Mapping[str, str],
    where: Mapping[str, str],
    since: datetime | None,
    until: datetime | None,
    metric: str = "latency",
) -> Sample | None:
    """The merged sketch of ``metric`` (latency or ttft) of the calls of one arm, read
    from the window tiles of a grouping that holds every selection key; None when
    no grouping does or no window matched. Values are the buckets' representatives
    (within 1 % of every value they count)."""
    keys = {**where, **sel}
    if not set(keys) <= set(DIMENSIONS):
        return None
    found = _grouping_for(query, set(keys))
    if found is None:
        return None
    grouping, seconds = found
    parts = [f"grouping = {quote(grouping)}", f"window_seconds = {seconds}"]
    parts += [f"{k} = {quote(v)}" for k, v in keys.items()]
    if since is not None:
        parts.append(f"window_start >= {_ts(since)}")
    if until is not None:
        parts.append(f"window_end <= {_ts(until)}")
    _, rows = query(
        f"SELECT mapKeys(m), mapValues(m), z FROM (SELECT sumMap(mapFromArrays("
        f"{metric}_sketch_keys, {metric}_sketch_counts)) AS m, sum({metric}_sketch_zeros) AS z "
        f"FROM window_tiles WHERE {' AND '.join(parts)})"
    )
    if not rows:
        return None
    keys_, counts, zeros = rows[0]
    params = sketch_params(SKETCH_ALPHA)
    values = representatives(np.asarray(list(keys_), dtype=np.int64), params)
    cnt = np.asarray(list(counts), dtype=np.int64)
    if zeros:
        values = np.concatenate([[0.0], values])
        cnt = np.concatenate([[int(zeros)], cnt])
    if not cnt.size or cnt.sum() == 0:
        return None
    return Sample.from_counts(values, cnt)


def expand(sample: Sample, max_rows: int, seed: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Values of a sketch as rows for the rank test (a multinomial sample of
    ``max_rows`` when it counts more)."""
    counts = np.diff(np.concatenate([[0], sample.cum]))
    if sample.n > max_rows:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(max_rows, counts / counts.sum())
    out: np.ndarray[Any, np.dtype[np.float64]] = np.repeat(sample.values, counts)
    return out
