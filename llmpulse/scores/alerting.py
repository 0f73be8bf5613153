"""Quality alerts per series: score contributions in, alert signals out (pure).

The score path folds every score into ``window_scores`` wherever it runs (one
per worker, see docs/topology.md). The alert rules need the quality of a
*series* over a window, and the scores of one series may reach any worker
(through any partition of ``llm.scores``). So each folded score is sent, as
one small :class:`Contribution` per grouping, to the keyed partition owning
that series: the key is the series key of the window statistics
(``llmpulse.stages.windows.series_keys``), so the quality alerts of a series
live in the same task as its latency and error alerts.

:class:`QualityAlerts` counts the contributions of the series it owns in the
tiles of the alerting length (``scores.signal_window_s``: the non-overlapping
windows, starting at multiples of the length) and hands their signals to the
rules once event time has passed a tile's end by ``scores.alert_delay_s``
(time for late scores), once per tile. Tiles, not the hopping windows: each
signal is then new evidence, so a rule's ``for: 2`` means two windows of
scores in a row, not two views sharing most of their scores (with hopping
windows the 2 % hallucination rule fired on the few scores of the partly
filled windows at the start of a stream). A
contribution is counted once per series however often it arrives (a sender
redoing work after a crash, a replayed repartition topic): its score id is
remembered until every window holding its call has been alerted on.

>>> from llmpulse.processors.windows import GroupingSet, WindowSpec
>>> from llmpulse.scores.records import CallInfo, ScoreRecord
>>> cfg = QualityConfig((WindowSpec(60, 60),), (GroupingSet(("model",)),),
...                     signal_window_s=60, alert_delay_ms=0)
>>> call = CallInfo("e1", 1_767_225_605_000, {"model": "m"})
>>> scored = [(ScoreRecord(f"s{i}", "hallucination", float(i), 0, "eval", "e1"), call)
...           for i in (0, 1)]
>>> [(key, len(items)) for key, items in contributions(scored, cfg.groupings).items()]
[('model\\x1em', 2)]
>>> alerts = QualityAlerts(cfg)
>>> items = decode(encode(contributions(scored, cfg.groupings)["model\\x1em"]))
>>> alerts.add(items + items), alerts.duplicates
(2, 2)
>>> sigs = alerts.advance(1_767_225_660_000)
>>> sorted((s.name, s.value, s.requests) for s in sigs)  # doctest: +NORMALIZE_WHITESPACE
[('hallucination_rate', 0.5, 2), ('score_mean:hallucination', 0.5, 2),
 ('score_rate_below:hallucination', 0.5, 2)]
>>> alerts.add(items), alerts.late
(0, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from llmpulse.alerts.signals import Signal
from llmpulse.processors.windows import GroupingSet
from llmpulse.scores.quality import QualityConfig, Scored, _Acc, window_signals

__all__ = ["Contribution", "QualityAlerts", "contributions", "decode", "encode", "series_key"]

_NEVER: Final = -(2**62)


@dataclass(frozen=True, slots=True)
class Contribution:
    """One folded score, for one series of one grouping."""

    score_id: str
    name: str
    value: float
    call_ms: int  # the scored call's event time: it decides the windows
    grouping: str
    series: tuple[str, ...]


def series_key(grouping: GroupingSet, series: Sequence[str]) -> str:
    """The routing key of a series: the same string as the window statistics' key
    (``stages.windows.series_keys``), so both are owned by the same partition."""
    return grouping.name + "\x1e" + "\x1f".join(series)


def contributions(
    scored: Iterable[Scored], groupings: Sequence[GroupingSet]
) -> dict[str, list[Contribution]]:
    """Per series key, the contributions of ``scored`` (each score once per grouping)."""
    out: dict[str, list[Contribution]] = {}
    for rec, call in scored:
        for g in groupings:
            series = tuple(str(call.dims.get(d, "") or "") for d in g.dims)
            out.setdefault(series_key(g, series), []).append(
                Contribution(rec.score_id, rec.name, rec.value, call.timestamp_ms, g.name, series)
            )
    return out


def encode(items: Sequence[Contribution]) -> bytes:
    return orjson.dumps(
        [[c.score_id, c.name, c.value, c.call_ms, c.grouping, list(c.series)] for c in items]
    )


def decode(data: bytes) -> list[Contribution]:
    return [
        Contribution(str(s), str(n), float(v), int(t), str(g), tuple(str(x) for x in series))
        for s, n, v, t, g, series in orjson.loads(data)
    ]


# (grouping name, series, window start ms, score name)
_Key = tuple[str, tuple[str, ...], int, str]


class QualityAlerts:
    """The open alerting windows of the series one task owns (see the module doc)."""

    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        self.spec = config.signal_spec
        self._groupings = {g.name: g for g in config.groupings}
        self._open: dict[_Key, _Acc] = {}
        # Score ids counted, by the end of their tile: a bucket is dropped once its
        # tile has been alerted on.
        self._seen: dict[int, set[tuple[str, str]]] = {}
        self.emitted_ms = _NEVER  # tiles ending at or before this have been alerted on
        self.counted = 0
        self.duplicates = 0
        self.late = 0  # the tile of their call already alerted on

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def add(self, items: Iterable[Contribution]) -> int:
        """Count ``items`` in the open tiles of their calls; returns how many were new."""
        spec = self.spec
        if spec is None:
            return 0
        length = spec.length_ms
        new = 0
        for c in items:
            g = self._groupings.get(c.grouping)
            if g is None or len(c.series) != len(g.dims):
                continue  # a grouping this worker is not configured with
            start = c.call_ms // length * length
            if start + length <= self.emitted_ms:
                self.late += 1
                continue
            seen = self._seen.setdefault(start + length, set())
            mark = (c.score_id, c.grouping)
            if mark in seen:
                self.duplicates += 1
                continue
            seen.add(mark)
            key = (c.grouping, c.series, start, c.name)
            acc = self._open.get(key)
            if acc is None:
                acc = self._open[key] = _Acc()
            acc.count += 1
            acc.total += c.value
            acc.below += c.value < self.config.threshold_of(c.name)
            new += 1
        self.counted += new
        return new

    def advance(self, watermark_ms: int) -> list[Signal]:
        """Signals of the tiles whose end is ``alert_delay_ms`` behind ``watermark_ms``."""
        spec = self.spec
        if spec is None:
            return []
        cutoff = int(watermark_ms) - self.config.alert_delay_ms
        if cutoff <= self.emitted_ms:
            return []
        self.emitted_ms = cutoff
        for end in [e for e in self._seen if e <= cutoff]:
            del self._seen[end]
        due = sorted((k for k in self._open if k[2] + spec.length_ms <= cutoff), key=lambda k: k[2])
        out: list[Signal] = []
        for key in due:
            acc = self._open.pop(key)
            grouping, series, start, name = key
            out.extend(
                window_signals(
                    self.config,
                    self._groupings[grouping],
                    series,
                    start,
                    spec,
                    name,
                    acc.count,
                    acc.total,
                    acc.below,
                )
            )
        return out

    def flush(self) -> list[Signal]:
        """Every open tile's signals (the end of a finite stream)."""
        return self.advance(2**62)

    def needed_from_ms(self) -> int | None:
        """The earliest call time a rebuild must replay (None: nothing open)."""
        if not self._open:
            return None
        return min(k[2] for k in self._open)

    def state(self) -> dict[str, Any]:
        return {"emitted_ms": self.emitted_ms}

    def load(self, state: dict[str, Any]) -> None:
        self.emitted_ms = max(self.emitted_ms, int(state.get("emitted_ms", _NEVER)))
