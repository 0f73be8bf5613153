"""Combining online and windowed evidence into drift detections that page nobody in vain.

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

import hashlib
import math
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, Unpack

import numpy as np

from llmpulse._types import FloatArray, IntArray
from llmpulse.detectors.online import DEFAULT_CLOCK, DEFAULT_DELTA, DETECTORS, DetectorBank
from llmpulse.detectors.reference import SCALAR_NAMES, Reference, unit_rows
from llmpulse.detectors.windowed import (
    MMDTest,
    TestResult,
    category_test,
    f_critical,
    z_critical,
    z_test,
)
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


@dataclass(frozen=True)
class DriftEvent:
    """One confirmed drift of one signal of one series, at the event time it was seen."""

    event_time: datetime
    signal: str
    detector: str
    score: float
    threshold: float
    baseline_id: str
    details: dict[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    grouping: str = ""
    event_id: str = ""

    @property
    def drift_id(self) -> str:
        """Deterministic id: a replay of the same events gives the same ids (dedup key)."""
        key = "\x1f".join(
            [
                self.grouping,
                *(f"{k}={v}" for k, v in sorted(self.labels.items())),
                self.signal,
                self.detector,
                self.baseline_id,
                str(to_ms(self.event_time)),
            ]
        )
        return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class WindowScore:
    """The windowed test of one tumbling window (a row of ``drift_scores``)."""

    window_start: datetime
    window_end: datetime
    signal: str
    detector: str
    statistic: float
    p_value: float
    threshold: float
    n: int
    value: float  # mean cosine distance, mean value, error share or mix distance
    baseline_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    grouping: str = ""


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


class DriftDetector(_Evidence):
    """Embedding drift of one series and one signal (``prompt_embedding``, ...).

    ``update(vec, event_time, event_id)`` takes one embedding of any dimension
    (fixed per detector; others are skipped and counted in ``skipped``);
    ``update_many(matrix, times, ids)`` the same for a batch, which is what to
    use for speed. The first ``warmup`` usable embeddings build the
    ``Reference`` unless one was given or restored with ``set_reference``.
    """

    window_detector = "mmd"
    min_warmup = 2 * 20

    def __init__(
        self,
        signal: str = "prompt_embedding",
        *,
        k: int = 8,
        projection_dim: int = 16,
        rff_features: int = 48,
        reference: Reference | None = None,
        **options: Unpack[DetectorOptions],
    ) -> None:
        self.k = k
        self.projection_dim = projection_dim
        self.rff_features = rff_features
        self.dim: int | None = None
        self.skipped = 0
        self._buffer: list[FloatArray] = []
        self._buffered = 0
        self.reference: Reference | None = None
        self._test_state: MMDTest | None = None
        super().__init__(signal, **options)
        self.baselines: deque[Reference] = deque(maxlen=8)
        if reference is not None:
            self.set_reference(reference)

    # -- reference ----------------------------------------------------------------------

    def set_reference(self, reference: Reference) -> None:
        """Use this reference from now on (pinned or restored baseline); skips warm-up."""
        if self.dim is not None and reference.dim != self.dim:
            raise ConfigError(
                "drift.baseline", f"dimension {reference.dim} != series dimension {self.dim}"
            )
        self._reset_state()
        self._buffer, self._buffered = [], 0
        self.dim = reference.dim
        self.reference = reference
        self._test_state = MMDTest(reference)
        self._activate()

    def _on_rebaseline(self) -> None:
        self.reference = None
        self._test_state = None
        self._buffer, self._buffered = [], 0

    def _channels(self) -> Sequence[str]:
        return SCALAR_NAMES

    def _null_n(self) -> int:
        return self.reference.null_n if self.reference is not None else 0

    def _absorb_null(self, total: FloatArray, sq: FloatArray, count: int) -> None:
        assert self.reference is not None
        self.reference = self.reference.with_null(total, sq, count)
        self._test_state = MMDTest(self.reference)
        self.baselines.append(self.reference)

    def _test(self, seg_sum: FloatArray, n: int) -> TestResult:
        assert self._test_state is not None
        return self._test_state.from_mean(seg_sum / n, n)

    def _critical(self, p: float, result: TestResult) -> float:
        assert self._test_state is not None
        return f_critical(p, self._test_state.dim, self._test_state.null_n)

    def _baseline_id(self) -> str:
        return self.reference.baseline_id if self.reference is not None else ""

    def _describe(self, seg_sum: FloatArray, n: int) -> dict[str, Any]:
        assert self._test_state is not None
        return {"mmd2": self._test_state.mmd2(seg_sum / n)}

    # -- updates ---------------------------------------------------------------------------

    def update(
        self, vec: FloatArray | Sequence[float], event_time: TimeLike, event_id: str | None = None
    ) -> DriftEvent | None:
        """Feed one embedding; the drift detected at this event, if any."""
        found = self.update_many(
            np.asarray(vec, dtype=np.float64)[None, :],
            np.array([to_ms(event_time)], dtype=np.int64),
            None if event_id is None else [event_id],
        )
        return found[0] if found else None

    def update_many(
        self,
        vecs: FloatArray,
        times: Sequence[TimeLike] | IntArray,
        ids: Sequence[str] | None = None,
    ) -> list[DriftEvent]:
        """Feed a batch of embeddings (rows, in event order) with their event times."""
        x = np.asarray(vecs, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a matrix of embeddings, got shape {x.shape}")
        tms = _times(times, x.shape[0])
        if self.dim is None and x.shape[0]:
            self.dim = int(x.shape[1])
        if x.shape[0] and x.shape[1] != self.dim:
            self.skipped += x.shape[0]
            return []
        u, ok = unit_rows(x)
        self.n_seen += x.shape[0]
        if not ok.all():
            self.skipped += int((~ok).sum())
            keep = np.flatnonzero(ok)
            u, tms = u[keep], tms[keep]
            ids = [ids[int(t)] for t in keep] if ids is not None else None
        found: list[DriftEvent] = []
        start = 0
        n = u.shape[0]
        while start < n:
            if not self._active:
                take = min(self.warmup - self._buffered, n - start)
                self._buffer.append(u[start : start + take].astype(np.float32))
                self._buffered += take
                start += take
                if self._buffered >= self.warmup:
                    ref = Reference.fit(
                        np.vstack(self._buffer).astype(np.float64),
                        k=self.k,
                        projection_dim=self.projection_dim,
                        rff_features=self.rff_features,
                        seed=self.seed,
                    )
                    self.set_reference(ref)
                    self.baselines.append(ref)
                continue
            assert self.reference is not None
            std, raw, feats = self.reference.transform(u[start:])
            got, used = self._run(std, feats, raw[:, 0], tms[start:], ids, start)
            found.extend(got)
            start += used
        return found


class ScalarDriftDetector(_Evidence):
    """Drift of a cheap per-event scalar of one series.

    ``kind="numeric"`` (output length, a score...): each value becomes its
    mid-rank in the reference sample, u = F_ref(x) in [0, 1]. Without drift u
    has mean 1/2 whatever the shape of the distribution, so the online detector
    (ADWIN's bound is derived for values in [0, 1]) and the window test (a
    z-test of the mean rank: Mann-Whitney against the reference) keep their
    false alarm rates on skewed and heavy-tailed scores; on raw values a
    lognormal score raised about 100 false alarms per million events. Values
    that were all 0 or 1 during warm-up (a "hallucinated" flag) are counted and
    tested exactly instead. Ranks ignore any monotone transform, so token
    counts need no log scale.

    ``kind="categorical"`` (finish_reason, status...): an exact test of each
    category's share, online detectors on the indicator of each frequent one.

    ``None`` and non-finite values are skipped.

    >>> det = ScalarDriftDetector("output_tokens", warmup=300, null_target=600, seed=0)
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det.update_many(rng.lognormal(5, 0.5, 3000).tolist(), np.arange(3000))
    []
    >>> hits = det.update_many(rng.lognormal(5.4, 0.5, 600).tolist(), 3000 + np.arange(600))
    >>> hits[0].signal, hits[0].detector, bool(to_ms(hits[0].event_time) - 3000 < 150)
    ('output_tokens', 'combined', True)
    """

    def __init__(
        self,
        signal: str,
        *,
        kind: str = "numeric",
        max_categories: int = 12,
        categories: Sequence[str] | None = None,
        **options: Unpack[DetectorOptions],
    ) -> None:
        if kind not in ("numeric", "categorical"):
            raise ConfigError("drift.kind", f"must be numeric or categorical, got {kind!r}")
        self.kind = kind
        self.max_categories = max_categories
        self._fixed_categories = tuple(categories) if categories else None
        self.skipped = 0
        self._warm: list[Any] = []
        self._binary = False
        # numeric: sorted reference values (the online one stays the warm-up's)
        self._online_sorted = np.zeros(0)
        self._ref_sorted = np.zeros(0)
        self._u_std = 0.5
        self._cal_values: list[FloatArray] = []
        # counted (categorical or 0/1)
        self.categories: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._ref_counts = np.zeros(0)
        self._watch: tuple[int, ...] = ()
        self._n0 = 0
        self.window_detector = "ztest" if kind == "numeric" else "fisher"
        self.min_segment = 32 if kind == "numeric" else 64
        super().__init__(signal, **options)

    @property
    def _ranked(self) -> bool:
        return self.kind == "numeric" and not self._binary

    @property
    def reference_summary(self) -> dict[str, Any]:
        """The reference as plain data (quantiles or category counts)."""
        if self._ranked:
            q = np.quantile(self._ref_sorted, (0.05, 0.25, 0.5, 0.75, 0.95)).tolist()
            return {"n": self._n0, "quantiles": q, "rank_std": self._u_std}
        return {"categories": [*self.categories, "__other__"], "counts": self._ref_counts.tolist()}

    def _baseline_id(self) -> str:
        if not self._active:
            return ""
        key = f"{self.signal}|{self.kind}|" + repr(self.reference_summary)
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    def _on_rebaseline(self) -> None:
        self._warm = []
        self._binary = False
        self._cal_values = []
        self.window_detector = "ztest" if self.kind == "numeric" else "fisher"

    def _channels(self) -> Sequence[str]:
        if self.kind == "numeric":
            return ("rank",) if self._ranked else ("value",)
        return tuple(
            self.categories[c] if c < len(self.categories) else "__other__" for c in self._watch
        )

    def _null_n(self) -> int:
        return self._n0

    @staticmethod
    def _midrank(ref: FloatArray, x: FloatArray) -> FloatArray:
        lo = np.searchsorted(ref, x, side="left")
        hi = np.searchsorted(ref, x, side="right")
        out: FloatArray = (lo + hi) / (2.0 * ref.shape[0])
        return out

    def _set_ranked_reference(self, values: FloatArray) -> None:
        ref = np.sort(values)
        self._ref_sorted = ref
        self._n0 = int(ref.shape[0])
        # Ties (ratings, token limits) shrink the spread of mid-ranks below 1/sqrt(12).
        self._u_std = float(max(self._midrank(ref, ref).std(ddof=1), 1e-6))

    def _start(self) -> None:
        if self.kind == "numeric":
            arr = np.array(self._warm, dtype=np.float64)
            if bool(np.isin(arr, (0.0, 1.0)).all()):
                # 0/1 values are counts of events: tested exactly, fed raw to ADWIN.
                self._binary = True
                self.window_detector = "fisher"
                self.categories = ("0", "1")
                self._ref_counts = np.array([float((arr == 0).sum()), float((arr == 1).sum())])
                self._n0 = int(arr.shape[0])
            else:
                self._online_sorted = np.sort(arr)
                self._set_ranked_reference(arr)
        else:
            counts = Counter(str(v) for v in self._warm)
            if self._fixed_categories is not None:
                cats = self._fixed_categories
            else:
                cats = tuple(c for c, _ in counts.most_common(self.max_categories))
            self.categories = cats
            self._index = {c: i for i, c in enumerate(cats)}
            ref = np.zeros(len(cats) + 1)
            for c, m in counts.items():
                ref[self._index.get(c, len(cats))] += m
            self._ref_counts = ref
            self._n0 = int(ref.sum())
            # Watch the frequent categories online (and the rest as one),
            # at most 6 channels: each one is another chance of a false alarm.
            share = ref / max(ref.sum(), 1.0)
            order = [int(i) for i in np.argsort(-share) if share[i] >= 0.01 or i == len(cats)]
            self._watch = tuple(order[:6]) if len(order) > 1 else (0,)
        self._warm = []
        self._activate()

    def _calibrate(self, rows: FloatArray) -> None:
        if not self._ranked:
            super()._calibrate(rows)
            return
        need = self.null_target - self._n0 - self._null_count
        if need <= 0 or rows.shape[0] == 0:
            return
        part = rows[:need, 1].copy()
        self._cal_values.append(part)
        self._null_count += part.shape[0]
        if self._n0 + self._null_count >= self.null_target:
            self._set_ranked_reference(np.concatenate([self._ref_sorted, *self._cal_values]))
            self._cal_values = []
            self._null_count = 0

    def _absorb_null(self, total: FloatArray, sq: FloatArray, count: int) -> None:
        self._ref_counts = self._ref_counts + total
        self._n0 = int(self._ref_counts.sum())

    def _test(self, seg_sum: FloatArray, n: int) -> TestResult:
        if self._ranked:
            r = z_test(float(seg_sum[0]) / n, n, 0.5, self._u_std, self._n0)
            # Unsigned, so that "statistic > threshold" means "rejects" for every
            # detector; the direction is in the detection's details.
            return TestResult(abs(r.statistic), r.p_value, r.n)
        return category_test(seg_sum, self._ref_counts)

    def _describe(self, seg_sum: FloatArray, n: int) -> dict[str, Any]:
        if self._ranked:
            rank = float(seg_sum[0]) / n
            return {"mean_rank": rank, "direction": "up" if rank > 0.5 else "down"}
        share = seg_sum / n
        ref = self._ref_counts / max(float(self._ref_counts.sum()), 1.0)
        c = int(np.argmax(np.abs(share - ref)))
        names = [*self.categories, "__other__"]
        return {
            "category": names[c] if c < len(names) else "__other__",
            "share": float(share[c]),
            "reference_share": float(ref[c]),
            "direction": "up" if share[c] > ref[c] else "down",
        }

    def _critical(self, p: float, result: TestResult) -> float:
        if self._ranked:
            return z_critical(p)
        return -math.log10(p)  # the exact test's statistic is -log10 p

    def _window_value(self, seg_sum: FloatArray, n: int, value_mean: float) -> float:
        if self.kind == "numeric":
            return value_mean
        ref = self._ref_counts / max(self._ref_counts.sum(), 1.0)
        # Total variation distance between the window mix and the reference mix.
        return float(0.5 * np.abs(seg_sum / n - ref).sum())

    # -- updates ------------------------------------------------------------------------------

    def update(
        self, value: Any, event_time: TimeLike, event_id: str | None = None
    ) -> DriftEvent | None:
        found = self.update_many(
            [value],
            np.array([to_ms(event_time)], dtype=np.int64),
            None if event_id is None else [event_id],
        )
        return found[0] if found else None

    def update_many(
        self,
        values: Sequence[Any],
        times: Sequence[TimeLike] | IntArray,
        ids: Sequence[str] | None = None,
    ) -> list[DriftEvent]:
        tms = _times(times, len(values))
        self.n_seen += len(values)
        keep = [
            i
            for i, v in enumerate(values)
            if v is not None
            and (self.kind != "numeric" or (isinstance(v, int | float) and math.isfinite(v)))
        ]
        if len(keep) != len(values):
            self.skipped += len(values) - len(keep)
            values = [values[i] for i in keep]
            tms = tms[np.asarray(keep, dtype=np.int64)] if keep else tms[:0]
            ids = [ids[i] for i in keep] if ids is not None else None
        found: list[DriftEvent] = []
        start, n = 0, len(values)
        while start < n:
            if not self._active:
                take = min(self.warmup - len(self._warm), n - start)
                self._warm.extend(values[start : start + take])
                start += take
                if len(self._warm) >= self.warmup:
                    self._start()
                continue
            part = values[start:]
            if self.kind == "numeric":
                x = shown = np.asarray(part, dtype=np.float64)
                if self._binary:
                    rows = np.column_stack([1.0 - x, x])
                    chans = x[:, None]
                else:
                    rows = np.column_stack([self._midrank(self._ref_sorted, x), x])
                    chans = self._midrank(self._online_sorted, x)[:, None]
            else:
                other = len(self.categories)
                codes = np.fromiter(
                    (self._index.get(str(v), other) for v in part), dtype=np.int64, count=len(part)
                )
                rows = np.zeros((len(part), other + 1))
                rows[np.arange(len(part)), codes] = 1.0
                shown = np.zeros(len(part))
                chans = rows[:, list(self._watch)]
            got, used = self._run(chans, rows, shown, tms[start:], ids, start)
            found.extend(got)
            start += used
        return found
