"""``llmpulse`` with faults injected at the store client seam; for tests only.

chDB runs inside the worker's own process and cannot be stopped from outside, so
a store outage is simulated where the worker talks to the store: while the file
named by ``LLMPULSE_TEST_STORE_DOWN`` exists, every insert fails as a refused
connection would (reads still answer, so a test can watch through ``/sql``).

``LLMPULSE_TEST_POISON`` names an ``event_id`` prefix: events with it pass
validation and then break the cost step (a poison message).

Run as ``python -m tests.fault_worker worker ...`` from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmpulse.store.client import SerialClient


def _inject_store_outage(flag: Path) -> None:
    def guard(method: Any) -> Any:
        def guarded(self: SerialClient, *args: Any, **kwargs: Any) -> Any:
            if flag.exists():
                raise ConnectionRefusedError(f"store down (injected: {flag} exists)")
            return method(self, *args, **kwargs)

        return guarded

    SerialClient.insert = guard(SerialClient.insert)  # type: ignore[method-assign]
    SerialClient.insert_arrow = guard(SerialClient.insert_arrow)  # type: ignore[method-assign]


def _inject_poison(prefix: str) -> None:
    from llmpulse.stages.traces import TraceStage

    process = TraceStage.process

    def poisoned(self: TraceStage, batch: Any, ctx: Any) -> Any:
        if any(str(i).startswith(prefix) for i in batch.event_id.tolist()):
            raise ArithmeticError(f"price of {prefix}* cannot be computed (injected)")
        return process(self, batch, ctx)

    TraceStage.process = poisoned  # type: ignore[method-assign]


if os.environ.get("LLMPULSE_TEST_STORE_DOWN"):
    _inject_store_outage(Path(os.environ["LLMPULSE_TEST_STORE_DOWN"]))
if os.environ.get("LLMPULSE_TEST_POISON"):
    _inject_poison(os.environ["LLMPULSE_TEST_POISON"])

if __name__ == "__main__":
    from llmpulse.cli.main import main

    main()
