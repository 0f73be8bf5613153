"""llmpulse_quantile(q, keys, counts, zeros): the GROUP BY roll-up keeps the 1 % guarantee."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.sketch_sql import (
    CREATE_FUNCTIONS,
    CREATE_ROLLUP_FUNCTION,
    SKETCH_ALPHA,
    merged_quantile_sql,
)

TABLE = "rollup_rows"
LEVELS = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Iterator[Any]:
    from llmpulse.store.client import connect

    c = connect(f"chdb://{chdb_dir}", "t_quantile_function")
    for stmt in (*CREATE_FUNCTIONS, CREATE_ROLLUP_FUNCTION):
        c.command(stmt)
    c.command(f"DROP TABLE IF EXISTS {TABLE}")
    c.command(
        f"""CREATE TABLE {TABLE} (
            grp UInt32, latency_sketch_keys Array(Int32), latency_sketch_counts Array(UInt64),
            latency_sketch_zeros UInt64
        ) ENGINE = Memory"""
    )
    yield c
    c.command(f"DROP TABLE IF EXISTS {TABLE}")


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=st.lists(
        st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 300)), min_size=1, max_size=5),
        min_size=1,
        max_size=4,
    )
)
def test_rollup_equals_the_merged_sketch_and_is_within_1_percent(
    client: Any, groups: list[list[tuple[int, int]]]
) -> None:
    client.command(f"TRUNCATE TABLE {TABLE}")
    rows, raw = [], {}
    for grp, parts in enumerate(groups):
        xs = []
        for seed, n in parts:
            rng = np.random.default_rng(seed)
            x = rng.lognormal(rng.uniform(0, 7), rng.uniform(0.2, 2.0), n)
            x[rng.random(n) < 0.05] = 0.0
            h = LogHistogram(SKETCH_ALPHA)
            h.update_many(x)
            keys, counts = h.to_arrays()
            rows.append([grp, keys.tolist(), counts.tolist(), h.zero_count])
            xs.append(x)
        raw[grp] = np.concatenate(xs)
    client.insert(TABLE, rows, column_names=["grp", *(c for c in (
        "latency_sketch_keys", "latency_sketch_counts", "latency_sketch_zeros"))])  # fmt: skip
    for q in LEVELS:
        result = client.query(
            f"SELECT grp, llmpulse_quantile({q}, latency_sketch_keys, latency_sketch_counts,"
            f" latency_sketch_zeros), {merged_quantile_sql('latency', q)}"
            f" FROM {TABLE} GROUP BY grp ORDER BY grp"
        ).result_rows
        assert [r[0] for r in result] == list(range(len(groups)))
        for grp, rollup, merged in result:
            assert rollup == merged
            exact = float(np.quantile(raw[grp], q, method="lower"))
            if exact == 0.0:
                assert rollup == 0.0
            else:
                assert abs(rollup - exact) / exact <= 0.01 * (1 + 1e-9), (q, rollup, exact)
