"""The arithmetic of folding scores into windows, over numpy columns (pure).

``quality.QualityFolder`` lays a batch of scores out as columns, one row per
(score, grouping, window spec, window start) in the order a loop over the
scores would visit them, then groups the rows here. Grouping by a sort
instead of a dict update per row is what makes the fold cheap: a score lands
in some thirty windows, so a dict update per window cost most of a second per
10,000 scores.

The results must be the same, to the bit, as adding the values one by one in
row order, because partial ids and alert signals are derived from them:

* groups are numbered by their first row, so they come out in the order a
  dict filled in row order would list them;
* sums use ``np.bincount`` with weights, which adds each weight to its bin in
  input order, starting from 0.0: the same float additions, in the same order,
  as ``total += value`` in a loop (``tests/unit/scores/test_fold.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Codes are combined by multiplication while the product stays below this.
_LIMIT: Final = 2**62


def combine(a: I64, na: int, b: I64, nb: int) -> tuple[I64, int]:
    """One code per distinct (a, b) pair, with a bound of the codes; ``a`` in
    ``[0, na)``, ``b`` in ``[0, nb)``. Dense codes only when the plain product
    would overflow (times spread over decades)."""
    if na * nb < _LIMIT:
        return a * nb + b, na * nb
    uniq, inv = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


def dense(values: I64) -> tuple[I64, int]:
    """``values`` as codes in ``[0, n)`` (order kept), and ``n``."""
    if not len(values):
        return values, 0
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < len(values) * 64:
        # A short range (window starts of one batch): an offset is enough.
        return values - lo, hi - lo + 1
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


@dataclass(frozen=True)
class Groups:
    """Rows grouped by key, groups numbered in order of their first row."""

    of_row: I64  # group of each row
    first: I64  # first row of each group
    count: I64  # rows of each group

    @property
    def size(self) -> int:
        return len(self.first)

    def sum(self, weights: F64) -> F64:
        """Per group, the weights of its rows added in row order (see module doc)."""
        sums = np.bincount(self.of_row, weights=weights, minlength=self.size)
        return sums.astype(np.float64, copy=False)

    def rows_by(self, rank: I64) -> I64:
        """Row indices ordered by group, then by ``rank`` (``rank`` in ``[0, n)``)."""
        n = int(rank.max()) + 1 if len(rank) else 1
        if self.size * n < _LIMIT:
            # One int64 key sorts in a third of the time of a two-key lexsort.
            return np.argsort(self.of_row * n + rank, kind="stable")
        return np.lexsort((rank, self.of_row))


def group(keys: I64) -> Groups:
    """Group rows by equal ``keys``."""
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    renumber = np.empty(len(uniq), dtype=np.int64)
    renumber[order] = np.arange(len(uniq), dtype=np.int64)
    of_row = renumber[inv.reshape(-1)]
    return Groups(of_row, first[order].astype(np.int64), np.bincount(of_row, minlength=len(uniq)))


def window_starts_of(times: I64, length_ms: int, hop_ms: int) -> I64:
    """Per time (rows), the starts of the hopping windows holding it (columns,
    ascending): the vector form of ``quality.window_starts``."""
    last = times // hop_ms * hop_ms
    offsets = np.arange(length_ms // hop_ms, dtype=np.int64) * hop_ms
    return (last - length_ms + hop_ms)[:, None] + offsets[None, :]
