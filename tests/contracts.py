"""Contract checks shared by every stage, drift detector and alert sink.

In the spirit of river's ``perform_test`` (``river/utils/estimator_checks``): one
list of checks, each a plain function taking the thing under test (or a way to
build a fresh one) and raising ``AssertionError`` when the contract is broken.
``tests/integration/test_contracts.py`` finds the classes by walking the packages and runs
every check on every one, so a new stage, detector or sink is checked without
anyone remembering to add it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import Context, Output, Rows, Stage

# --- discovery ---------------------------------------------------------------------------


def modules_of(package: str) -> Iterator[ModuleType]:
    """Every module of ``package``, imported (a module that fails to import fails here)."""
    pkg = importlib.import_module(package)
    yield pkg
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        yield importlib.import_module(info.name)


def classes_in(package: str, keep: Callable[[type], bool]) -> list[type]:
    """The concrete classes defined in ``package`` (not merely imported) that ``keep``."""
    found: dict[str, type] = {}
    for module in modules_of(package):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            home = getattr(cls, "__module__", "")
            if not (home == package or home.startswith(package + ".")):
                continue
            if inspect.isabstract(cls) or not keep(cls):
                continue
            found[f"{home}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


def stage_classes() -> list[type[Stage]]:
    return classes_in("llmpulse.stages", lambda c: issubclass(c, Stage) and c is not Stage)


# --- comparing outputs ------------------------------------------------------------------


def _rows_data(rows: Rows) -> str:
    data: Any = rows.data
    if hasattr(data, "to_pylist"):
        return repr(data.to_pylist())
    return repr([tuple(r) for r in data])


def plain(out: Output) -> dict[str, Any]:
    """An Output as comparable plain data (``repr`` keeps NaN equal to NaN)."""
    return {
        "rows": [(r.table, list(r.columns or ()), _rows_data(r)) for r in out.rows],
        "batch": None if out.batch is None else out.batch.event_id.tolist(),
        "signals": [repr(s) for s in out.signals],
        "after_write": len(out.after_write),
        "poisoned": [(p.step, p.error) for p in out.poisoned],
    }


# --- stages -----------------------------------------------------------------------------


@dataclass
class StageInput:
    """What one call of a stage gets: the batch and the context (copied per call)."""

    batch: TraceBatch
    ctx: Context

    def context(self) -> Context:
        # A fresh Context per call, equal in every field a stage may read: a stage
        # that adds to ctx.stats or reads ctx.signals sees the same thing each run.
        return replace(self.ctx, signals=list(self.ctx.signals), stats=type(self.ctx.stats)())


def run(stage: Stage, inputs: Sequence[StageInput]) -> list[dict[str, Any]]:
    """``process`` each input, then ``tick`` and ``flush`` with the last context."""
    outs = [plain(stage.process(i.batch, i.context())) for i in inputs]
    outs.append(plain(stage.tick(inputs[-1].context())))
    outs.append(plain(stage.flush(inputs[-1].context())))
    return outs


def check_declares(cls: type[Stage], store_tables: set[str]) -> None:
    name = getattr(cls, "name", None)
    assert isinstance(name, str) and name, f"{cls.__name__} declares no name"
    tables = cls.tables
    assert isinstance(tables, tuple) and all(isinstance(t, str) for t in tables), tables
    missing = set(tables) - store_tables
    assert not missing, f"{cls.__name__} writes tables the store does not have: {missing}"


def check_rows_declared(stage: Stage, out: Output) -> None:
    for rows in out.rows:
        assert rows.table in stage.tables, f"{stage.name} wrote {rows.table}, not declared"
        assert len(rows) > 0, f"{stage.name} returned an empty insert into {rows.table}"


def check_empty_batch(stage: Stage, ctx: Context) -> None:
    out = stage.process(TraceBatch.empty(), ctx)
    assert isinstance(out, Output), type(out)
    check_rows_declared(stage, out)
    if out.batch is not None:
        assert len(out.batch) == 0, "an empty batch came out non-empty"
    assert not out.poisoned


def check_keys(stage: Stage, batches: Sequence[TraceBatch]) -> None:
    widths = set()
    for batch in [TraceBatch.empty(), *batches]:
        keys = stage.keys(batch)
        assert isinstance(keys, list), type(keys)
        widths.add(len(keys))
        for col in keys:
            assert isinstance(col, np.ndarray) and col.ndim == 1, col
            assert col.shape[0] == len(batch), (col.shape, len(batch))
            assert col.dtype == object
    # One column per kind of state: how many cannot depend on the batch.
    assert len(widths) == 1, f"{stage.name}: keys() returned {widths} columns"


def check_deterministic(build: Callable[[], Stage], inputs: Sequence[StageInput]) -> None:
    first = run(build(), inputs)
    second = run(build(), inputs)
    assert first == second, "two runs with the same Context gave different outputs"


def check_round_trip(
    build: Callable[[], Stage],
    before: Sequence[StageInput],
    after: Sequence[StageInput],
    *,
    exact: bool = True,
) -> None:
    """snapshot -> restore (+ rebuild from the retained input) -> the same snapshot and
    the same outputs on the same later input as the stage that never stopped.
    ``exact=False``, a stage that checkpoints part of its state by design: what the
    checkpoint holds stays as it was (the same snapshot after the later input)."""
    original = build()
    for i in before:
        original.process(i.batch, i.context())
    blob = original.snapshot()
    moved = build()
    if blob is not None:
        assert isinstance(blob, bytes), type(blob)
        moved.restore(blob)
        again = moved.snapshot()
        # None: unchanged since the checkpoint (which keeps the blob), also right.
        assert again is None or again == blob, "restore then snapshot changed the state"
    if original.retention().needed:
        for i in before:  # the stretch a task replays after a move (a superset is fine)
            moved.rebuild(i.batch, i.context())
    expected = run(original, after)
    got = run(moved, after)
    if exact:
        assert got == expected, "a restored stage answers differently from the original"
    else:
        assert moved.snapshot() == original.snapshot(), "the checkpointed state was lost"


class Injected(RuntimeError):
    """The fault a check injects (never raised by real code)."""


def check_raise_keeps_state(
    build: Callable[[], Stage],
    before: Sequence[StageInput],
    failing: StageInput,
    after: Sequence[StageInput],
    break_stage: Callable[[Stage], Callable[[], None]],
) -> None:
    """The isolation contract: a ``process`` that raises leaves the state as it was.
    ``break_stage`` makes the stage raise on its next call and returns the repair."""
    reference, victim = build(), build()
    for i in before:
        reference.process(i.batch, i.context())
        victim.process(i.batch, i.context())
    repair = break_stage(victim)
    try:
        victim.process(failing.batch, failing.context())
    except Injected:
        pass
    else:
        raise AssertionError("the injected fault was not reached: the check tests nothing")
    finally:
        repair()
    # Retried, as llmpulse.topology.isolation does: exactly as if it never failed.
    assert run(victim, [failing, *after]) == run(reference, [failing, *after])


# --- drift detectors ---------------------------------------------------------------------


@dataclass
class Stream:
    """A seeded source of detector input: ``normal(n)`` before the change, ``shifted(n)``
    after it; values as ``update_many`` takes them."""

    normal: Callable[[np.random.Generator, int], Any]
    shifted: Callable[[np.random.Generator, int], Any]


def feed(det: Any, values: Any, start_ms: int, chunk: int) -> list[Any]:
    """``update_many`` in chunks of ``chunk`` events, one event per second of event time."""
    found: list[Any] = []
    n = len(values)
    for lo in range(0, n, chunk):
        part = values[lo : lo + chunk]
        times = start_ms + (np.arange(lo, lo + len(part), dtype=np.int64) * 1000)
        ids = [f"e{start_ms + i}" for i in range(lo, lo + len(part))]
        found.extend(det.update_many(part, times, ids))
    return found


def check_quiet_when_stationary(make: Callable[[], Any], stream: Stream, n: int) -> None:
    det = make()
    found = feed(det, stream.normal(np.random.default_rng(1), n), 0, 500)
    assert not det.warming_up, "still warming up after the whole stream"
    assert found == [], f"{len(found)} false alarm(s) on a stationary stream of {n}"


def check_detects_shift(make: Callable[[], Any], stream: Stream, n: int, max_delay: int) -> None:
    det = make()
    rng = np.random.default_rng(2)
    assert feed(det, stream.normal(rng, n), 0, 500) == []
    found = feed(det, stream.shifted(rng, 4 * max_delay), n * 1000, 50)
    assert found, f"no detection within {4 * max_delay} events of an abrupt shift"
    delay = (int(found[0].event_time.timestamp() * 1000) - n * 1000) // 1000
    assert 0 <= delay <= max_delay, f"detected {delay} events after the shift"
    assert det.n_detections >= 1


def check_rebaseline(make: Callable[[], Any], stream: Stream, n: int) -> None:
    """After ``rebaseline`` the detector learns afresh: the shifted regime becomes normal."""
    det = make()
    rng = np.random.default_rng(3)
    feed(det, stream.normal(rng, n), 0, 500)
    before = det.n_detections
    det.rebaseline()
    assert det.warming_up
    found = feed(det, stream.shifted(rng, n), n * 1000, 500)
    assert found == [] and det.n_detections == before and not det.warming_up


def check_seeded_and_chunk_free(make: Callable[[], Any], stream: Stream, n: int) -> None:
    """Same seed, same input: same detections, whatever the batch boundaries."""
    rng = np.random.default_rng(4)
    values = stream.normal(rng, n)
    shifted = stream.shifted(rng, n // 2)
    runs = []
    for chunk in (n, 500, 37):
        det = make()
        got = feed(det, values, 0, chunk) + feed(det, shifted, n * 1000, chunk)
        runs.append([(d.drift_id, d.detector, round(d.score, 9)) for d in got])
    assert runs[0], "no detection at all: the comparison would be empty"
    assert runs[0] == runs[1] == runs[2]
