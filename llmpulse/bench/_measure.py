"""Wall time, CPU time and peak extra resident memory of a block of a benchmark,
shared by the benches that put methods side by side in one process."""

from __future__ import annotations

import ctypes
import gc
import math
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measure", "measured"]


@dataclass
class Measure:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_mb: float = math.nan
    how: str = ""


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    # Hand freed heap pages back to the OS so that RSS growth measures this block,
    # not whether the allocator happens to reuse what an earlier method freed.
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def measured() -> Iterator[Measure]:
    """Wall time and peak extra resident memory of the block.

    Peak RSS covers native memory (Rust, chDB) as well as numpy; on Linux the
    high-water mark is reset before the block through /proc/self/clear_refs.
    """
    m = Measure()
    gc.collect()
    # What the harness holds (the stream, reference answers of earlier blocks) is
    # moved out of the collector's sight, as the worker does after its setup
    # (runtime.tune_gc): otherwise each full collection in the block walks it,
    # charging the measured method for the harness's objects.
    gc.freeze()
    _trim_heap()
    before = _rss_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        m.how = "rss"
    except OSError:
        m.how = "maxrss"
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - start
        m.cpu_seconds = time.process_time() - cpu_start
        gc.unfreeze()
        peak = _rss_kb("VmHWM") if m.how == "rss" else None
        if peak is not None and before is not None:
            m.peak_mb = max(peak - before, 0) / 1024
        else:
            m.peak_mb = (
                max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max, 0) / 1024
            )
