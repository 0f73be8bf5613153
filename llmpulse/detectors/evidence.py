"""Combining online and windowed evidence into drift detections that page nobody in vain.

This module is the detection engine shared by every drift detector (``_Evidence``):
the embedding detector (``embedding``) and the scalar one (``scalar``) only turn
their inputs into the rows it tests.

A detection fires on either path:

* ``combined``: an online detector (ADWIN by default) flags a change in a
  per-event scalar, and a two-sample test of the most recent events against
  the reference confirms it at p < ``confirm_p`` (default 0.001, Bonferroni
  corrected over the segment lengths tried: 32, 64, 128 and ``window``
  events). While an alarm is unconfirmed it is re-tested every ``stride``
  events for one ``window``, because ADWIN often flags before there are
  enough new events for the multivariate test.
* the windowed path (``mmd`` for embeddings, ``ztest`` / ``fisher`` for
  scalars): ``consecutive`` tumbling windows in a row (default 2 of 200
  events) reject at p < ``window_alpha`` (default 0.001). This catches slow or
  diffuse changes that move no per-event scalar, such as a small shift of
  every embedding in a new direction. It only votes once the null statistics
  rest on ``null_target`` events (see ``windowed``), because a reference
  measured on a few hundred events makes some series' windows reject far more
  often than the nominal rate.

After a detection the detector stays silent for ``cooldown`` events and resets
its online detectors. A drift that persists fires again once per cool-down
until the series is re-baselined (``rebaseline()``, or automatically after
every detection with ``auto_rebaseline=True``), so alerting can tell a
persisting drift from one that went away.

Event time is injected: every update carries the event's own timestamp (epoch
milliseconds or an aware datetime), and cool-downs and windows count events,
so a replay gives the same detections as the live run.

>>> import numpy as np
>>> from llmpulse.detectors.embedding import DriftDetector
>>> rng = np.random.default_rng(0)
>>> topics = 3.0 * np.eye(32)[:4]
>>> def events(n, ids):
...     return topics[rng.choice(ids, size=n)] + rng.normal(size=(n, 32))
>>> det = DriftDetector("prompt_embedding", warmup=400, null_target=1000, seed=0)
>>> det.update_many(events(4000, [0, 1, 2]), np.arange(4000) * 1000)
[]
>>> found = det.update_many(events(1000, [0, 1, 2, 3]), 4_000_000 + np.arange(1000) * 1000)
>>> first = found[0]
>>> first.signal, first.detector, first.event_time.isoformat()[:10]
('prompt_embedding', 'combined', '1970-01-01')
>>> delay = (to_ms(first.event_time) - 4_000_000) // 1000  # events after the change
>>> bool(delay < 150)
True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict

import numpy as np

from llmpulse._types import FloatArray, IntArray
from llmpulse.detectors.online import DEFAULT_CLOCK, DEFAULT_DELTA, DETECTORS, DetectorBank
from llmpulse.detectors.results import DriftEvent, WindowScore
from llmpulse.detectors.windowed import TestResult
from llmpulse.errors import ConfigError
from llmpulse.schemas.batch import from_ms, to_ms

TimeLike = datetime | int | float

SEGMENTS: tuple[int, ...] = (32, 64, 128)
# Calibration events per partial sum of the null statistics (see _Evidence._calibrate).
_NULL_BLOCK = 64


def _times(times: Sequence[TimeLike] | IntArray, n: int) -> IntArray:
    if isinstance(times, np.ndarray):
        out = times.astype(np.int64, copy=False)
    else:
        out = np.fromiter((to_ms(t) for t in times), dtype=np.int64, count=len(times))
    if out.shape[0] != n:
        raise ValueError(f"{n} values but {out.shape[0]} event times")
    return out


class DetectorOptions(TypedDict, total=False):
    """The options every drift detector takes, with the defaults of ``_Evidence``:
    ``warmup`` events (500) fit the reference; the online ``detector`` ("adwin",
    with ``delta`` and ``clock``) and the windowed test on tumbling windows of
    ``window`` events (200) vote as the module doc describes (``confirm_p``,
    ``window_alpha``, ``consecutive``, ``cooldown``, ``stride``, ``null_target``,
    ``auto_rebaseline``); ``labels`` and ``grouping`` name the series,
    ``max_window_scores`` bounds the window scores kept."""

    warmup: int
    detector: str
    window: int
    seed: int
    delta: float
    clock: int
    confirm_p: float
    window_alpha: float
    consecutive: int
    cooldown: int
    stride: int
    null_target: int
    auto_rebaseline: bool
    labels: Mapping[str, str] | None
    grouping: str
    max_window_scores: int


class _Evidence(ABC):
    """The detection logic shared by embedding and scalar detectors.

    Subclasses turn a batch of raw inputs into: channel values for the online
    detectors, "test rows" whose segment sums are sufficient statistics of the
    two-sample test, and per-event display values.
    """

    window_detector: str = "window"
    min_segment: int = 32
    min_warmup: int | None = None

    def __init__(
        self,
        signal: str,
        *,
        warmup: int = 500,
        detector: str = "adwin",
        window: int = 200,
        seed: int = 0,
        delta: float = DEFAULT_DELTA,
        clock: int = DEFAULT_CLOCK,
        confirm_p: float = 1e-3,
        window_alpha: float = 1e-3,
        consecutive: int = 2,
        cooldown: int = 2000,
        stride: int = 16,
        null_target: int = 2000,
        auto_rebaseline: bool = False,
        labels: Mapping[str, str] | None = None,
        grouping: str = "",
        max_window_scores: int = 1000,
    ) -> None:
        if self.min_warmup is not None and warmup < self.min_warmup:
            raise ConfigError("drift.warmup", f"must be >= {self.min_warmup}, got {warmup}")
        if detector not in DETECTORS:
            raise ConfigError(
                "drift.detector", f"unknown detector {detector!r}; choose one of {DETECTORS}"
            )
        if window < self.min_segment:
            raise ConfigError("drift.window", f"must be >= {self.min_segment}, got {window}")
        if consecutive < 1 or stride < 1 or cooldown < 0:
            raise ConfigError("drift", "consecutive and stride must be >= 1, cooldown >= 0")
        self.signal = signal
        self.warmup = warmup
        self.window = window
        self.detector = detector
        self.delta = delta
        self.clock = clock
        self.confirm_p = confirm_p
        self.window_alpha = window_alpha
        self.consecutive = consecutive
        self.cooldown = cooldown
        self.stride = stride
        self.null_target = null_target
        self.auto_rebaseline = auto_rebaseline
        self.seed = seed
        self.labels: dict[str, str] = dict(labels or {})
        self.grouping = grouping
        self.window_scores: deque[WindowScore] = deque(maxlen=max_window_scores)
        self.segments = tuple(s for s in (*SEGMENTS, window) if self.min_segment <= s <= window)
        self.n_seen = 0  # every input, including warm-up
        self.n_detections = 0
        self.online_alarms = 0
        self._bank: DetectorBank | None = None
        self._reset_state()

    # -- state ------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._active = False
        self._since = 0  # events since the detector became active
        self._pending: tuple[int, int] | None = None  # (alarm index, channel)
        self._hits = 0
        self._quiet = 0
        self._tail_rows: FloatArray | None = None
        self._tail_times = np.zeros(0, dtype=np.int64)
        self._tail_values = np.zeros(0, dtype=np.float64)
        self._null_sum: FloatArray | None = None
        self._null_sq: FloatArray | None = None
        self._null_rows: FloatArray | None = None  # calibration rows not yet in a block
        self._null_count = 0

    @property
    def warming_up(self) -> bool:
        return not self._active

    @property
    def calibrated(self) -> bool:
        """Whether the null statistics rest on ``null_target`` events (windowed path armed)."""
        return self._active and self._null_n() >= self.null_target

    def rebaseline(self) -> None:
        """Forget the reference: the next ``warmup`` events build a new one."""
        self._reset_state()
        self._on_rebaseline()

    def _activate(self) -> None:
        self._active = True
        self._since = 0
        self._bank = DetectorBank(
            self._channels(), self.detector, delta=self.delta, clock=self.clock, seed=self.seed
        )

    # -- subclass hooks -----------------------------------------------------------------

    @abstractmethod
    def _channels(self) -> Sequence[str]: ...

    @abstractmethod
    def _on_rebaseline(self) -> None: ...

    @abstractmethod
    def _null_n(self) -> int: ...

    @abstractmethod
    def _absorb_null(self, total: FloatArray, sq: FloatArray, count: int) -> None: ...

    @abstractmethod
    def _test(self, seg_sum: FloatArray, n: int) -> TestResult: ...

    @abstractmethod
    def _critical(self, p: float, result: TestResult) -> float: ...

    @abstractmethod
    def _baseline_id(self) -> str: ...

    def _window_value(self, seg_sum: FloatArray, n: int, value_mean: float) -> float:
        return value_mean

    def _describe(self, seg_sum: FloatArray, n: int) -> dict[str, Any]:
        """What changed, in words an alert can show (only computed when firing)."""
        return {}

    # -- the engine ------------------------------------------------------------------------

    def _calibrate(self, rows: FloatArray) -> None:
        """Add events to the null statistics until ``null_target`` is reached."""
        need = self.null_target - self._null_n() - self._null_count
        if need <= 0 or rows.shape[0] == 0:
            return
        part = rows[:need]
        if self._null_sum is None or self._null_sq is None:
            self._null_sum = np.zeros(rows.shape[1])
            self._null_sq = np.zeros((rows.shape[1], rows.shape[1]))
        self._null_count += part.shape[0]
        done = self._null_n() + self._null_count >= self.null_target
        # Summed in fixed blocks of the calibration events, whatever batches brought
        # them: floating-point sums over other boundaries differ in their last bits,
        # and the reference's id (part of every drift_id, the dedup key) with them.
        held = part if self._null_rows is None else np.vstack([self._null_rows, part])
        upto = held.shape[0] if done else held.shape[0] // _NULL_BLOCK * _NULL_BLOCK
        for lo in range(0, upto, _NULL_BLOCK):
            block = np.ascontiguousarray(held[lo : min(lo + _NULL_BLOCK, upto)])
            self._null_sum += block.sum(axis=0)
            self._null_sq += block.T @ block
        self._null_rows = held[upto:].copy() if upto < held.shape[0] else None
        if done:
            self._absorb_null(self._null_sum, self._null_sq, self._null_count)
            self._null_sum = self._null_sq = None
            self._null_count = 0

    def _run(
        self,
        channels: FloatArray,
        rows: FloatArray,
        values: FloatArray,
        times: IntArray,
        ids: Sequence[str] | None,
        id_offset: int,
    ) -> tuple[list[DriftEvent], int]:
        """Process active events; returns the detections and how many events were consumed
        (fewer than given when an automatic re-baseline sends the rest to warm-up, or
        when the null statistics change within the batch). ``channels``: the online
        detectors' inputs, one row per event.

        The events in order, exactly as one at a time, but without a Python step per
        event: the online detectors see the whole batch first (``DetectorBank.scan``,
        redone from an event that resets them), and only events where something can
        happen are visited (an alarm, a window boundary, a re-test of a pending
        alarm); between them only the counters move."""
        need = self.null_target - self._null_n() - self._null_count
        if 0 < need < rows.shape[0]:
            # The null statistics change at one exact event, whatever the batch
            # boundaries, so a replay reproduces the live detections. The caller
            # prepares the rest of the batch again: its rows may depend on them.
            channels, rows, values, times = (
                channels[:need],
                rows[:need],
                values[:need],
                times[:need],
            )
        assert self._bank is not None
        n = rows.shape[0]
        tail = self._tail_rows if self._tail_rows is not None else np.zeros((0, rows.shape[1]))
        hist = np.vstack([tail, rows]) if tail.shape[0] else rows
        htimes = np.concatenate([self._tail_times, times])
        hvalues = np.concatenate([self._tail_values, values])
        cs = np.zeros((hist.shape[0] + 1, hist.shape[1]))
        np.cumsum(hist, axis=0, out=cs[1:])
        cv = np.concatenate([[0.0], np.cumsum(hvalues)])
        off = tail.shape[0]
        bank = self._bank
        found: list[DriftEvent] = []
        consumed = n
        armed = self._null_n() >= self.null_target
        hits = bank.scan(channels)
        alarms = np.flatnonzero(hits >= 0)
        a_pos = 0  # next alarm in ``alarms`` not yet visited
        window, stride = self.window, self.stride
        i = 0
        while i < n:
            # The next event where anything but the counters can change.
            while a_pos < alarms.size and alarms[a_pos] < i:
                a_pos += 1
            nxt = int(alarms[a_pos]) if a_pos < alarms.size else n
            nxt = min(nxt, i + (-(self._since + 1)) % window)
            if self._pending is not None:
                since_alarm = self._since - self._pending[0]
                nxt = min(nxt, i + (-since_alarm) % stride, i + max(0, window - since_alarm))
            if nxt > i:
                k = min(nxt, n) - i
                self._since += k
                self._quiet = max(0, self._quiet - k)
                i += k
                continue
            j = off + i + 1  # end (exclusive) of history up to this event
            age_total = self._since
            self._since += 1
            hit = int(hits[i])
            if hit >= 0:
                bank.alarms += 1
                self.online_alarms += 1
                if self._pending is None:
                    self._pending = (age_total, hit)
            fired: DriftEvent | None = None
            if self._quiet > 0:
                self._quiet -= 1
            if self._pending is not None:
                since_alarm = age_total - self._pending[0]
                if self._quiet == 0 and since_alarm % stride == 0:
                    fired = self._confirm(cs, j, min(j, age_total + 1), htimes, i, ids, id_offset)
                if since_alarm >= window:
                    self._pending = None
            if self._since % window == 0:
                a = j - window
                seg_sum = cs[j] - cs[a]
                res = self._test(seg_sum, window)
                self.window_scores.append(
                    WindowScore(
                        window_start=from_ms(int(htimes[a:j].min())),
                        window_end=from_ms(int(htimes[a:j].max())),
                        signal=self.signal,
                        detector=self.window_detector,
                        statistic=res.statistic,
                        p_value=res.p_value,
                        threshold=self._critical(self.window_alpha, res),
                        n=window,
                        value=self._window_value(seg_sum, window, float(cv[j] - cv[a]) / window),
                        baseline_id=self._baseline_id(),
                        labels=self.labels,
                        grouping=self.grouping,
                    )
                )
                self._hits = self._hits + 1 if res.p_value < self.window_alpha else 0
                if fired is None and armed and self._quiet == 0 and self._hits >= self.consecutive:
                    fired = self._event(
                        times[i],
                        self.window_detector,
                        res,
                        self.window_alpha,
                        i,
                        ids,
                        id_offset,
                        {
                            "windows": self._hits,
                            "window": window,
                            **self._describe(seg_sum, window),
                        },
                    )
            if fired is not None:
                found.append(fired)
                self.n_detections += 1
                bank.reset()
                self._pending = None
                self._hits = 0
                self._quiet = self.cooldown
                if self.auto_rebaseline:
                    consumed = i + 1
                    break
                # Fresh detectors from the next event on: what they saw of the rest of
                # the batch before the reset no longer counts.
                rest = bank.scan(channels[i + 1 :])
                hits = np.concatenate([hits[: i + 1], rest])
                alarms = np.flatnonzero(hits >= 0)
                a_pos = 0
            i += 1
        if self.auto_rebaseline and found:
            self.rebaseline()
            return found, consumed
        if self._null_n() < self.null_target:
            self._calibrate(rows)
        keep = self.window
        self._tail_rows = hist[-keep:].copy()
        self._tail_times = htimes[-keep:].copy()
        self._tail_values = hvalues[-keep:].copy()
        return found, consumed

    def _confirm(
        self,
        cs: FloatArray,
        j: int,
        available: int,
        htimes: IntArray,
        i: int,
        ids: Sequence[str] | None,
        id_offset: int,
    ) -> DriftEvent | None:
        lengths = [s for s in self.segments if s <= available]
        if not lengths:
            return None
        best: TestResult | None = None
        best_sum = cs[j] - cs[j]
        for length in lengths:
            seg_sum = cs[j] - cs[j - length]
            res = self._test(seg_sum, length)
            if best is None or res.p_value < best.p_value:
                best, best_sum = res, seg_sum
        assert best is not None
        level = self.confirm_p / len(self.segments)
        if best.p_value >= level:
            return None
        assert self._pending is not None
        channel = self._channels()[self._pending[1]]
        return self._event(
            int(htimes[j - 1]),
            "combined",
            best,
            level,
            i,
            ids,
            id_offset,
            {
                "online": self.detector,
                "channel": channel,
                "segment": best.n,
                "since_alarm": self._since - self._pending[0],
                **self._describe(best_sum, best.n),
            },
        )

    def _event(
        self,
        time_ms: int | np.integer[Any],
        detector: str,
        res: TestResult,
        level: float,
        i: int,
        ids: Sequence[str] | None,
        id_offset: int,
        extra: dict[str, Any],
    ) -> DriftEvent:
        details: dict[str, Any] = {
            "p_value": res.p_value,
            "neg_log10_p": -math.log10(max(res.p_value, 1e-300)),
            "level": level,
            "n": res.n,
            "null_n": self._null_n(),
            **extra,
        }
        return DriftEvent(
            event_time=from_ms(int(time_ms)),
            signal=self.signal,
            detector=detector,
            score=res.statistic,
            threshold=self._critical(level, res),
            baseline_id=self._baseline_id(),
            details=details,
            labels=self.labels,
            grouping=self.grouping,
            event_id=ids[id_offset + i] if ids is not None else "",
        )
