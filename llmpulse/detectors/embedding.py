"""Embedding drift of one series and signal: ``DriftDetector``.

One algorithm per module (as in river): this one feeds unit embeddings to the
shared engine (``evidence``), their per-event scalars to the online detectors and
their random features to the windowed MMD test against a ``Reference``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np

from llmpulse._types import FloatArray, IntArray
from llmpulse.detectors.evidence import DetectorOptions, TimeLike, _Evidence, _times
from llmpulse.detectors.reference import SCALAR_NAMES, Reference, unit_rows
from llmpulse.detectors.results import DriftEvent
from llmpulse.detectors.windowed import MMDTest, TestResult, f_critical
from llmpulse.errors import ConfigError
from llmpulse.schemas.batch import to_ms

__all__ = ["DriftDetector"]


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
