"""``llmpulse bench compare`` on tiny parameters: the table has the shape the
closing note quotes (one row per scenario and metric), and the command prints it.

The quality targets themselves (false fails <= alpha, power >= 95 %) need the
documented sample sizes and many seeds; that run is the benchmark, not CI.
"""

from __future__ import annotations

import os
import subprocess
import sys

from llmpulse.bench.compare import HEADER, format_table, run_compare_bench
from llmpulse.compare.verdict import METRIC_NAMES
from llmpulse.settings import CompareSettings
from llmpulse.synth.ab import KINDS, TARGET_METRIC

SEEDS, N = 3, 500
# The no-effect rows: the overall verdict, then every metric the synthetic arms carry.
NONE_METRICS = ["any", *METRIC_NAMES[:-1], "score:hallucination", "score:relevance"]


def test_bench_rows_cover_every_scenario_and_metric() -> None:
    seen: list[str] = []
    rows = run_compare_bench(n=N, seeds=SEEDS, progress=seen.append)
    none, effects = rows[: len(NONE_METRICS)], rows[len(NONE_METRICS) :]
    assert [(r.scenario, r.metric) for r in none] == [("none", m) for m in NONE_METRICS]
    alpha = CompareSettings().alpha
    assert {r.target for r in none} == {f"<= {alpha:.0%}"}
    assert len(effects) == 2 * len(KINDS)
    for size, half in (("small", effects[: len(KINDS)]), ("large", effects[len(KINDS) :])):
        for kind, row in zip(KINDS, half, strict=True):
            assert row.scenario.startswith(f"{size} {kind} +"), row.scenario
            assert row.metric == TARGET_METRIC[kind]
            assert row.target == (">= 95%" if size == "large" else "(report)")
    for r in rows:
        assert (r.n, r.seeds) == (N, SEEDS)
        for rate in (r.fail_rate, r.overall_fail_rate, r.inconclusive_rate):
            # a share of the seeds: a whole number of them
            assert 0.0 <= rate <= 1.0 and abs(rate * SEEDS - round(rate * SEEDS)) < 1e-9
        # a metric failing makes the overall verdict fail in the same run
        assert r.fail_rate <= r.overall_fail_rate
    # the overall row without an effect is the per-metric rows' overall column
    assert {r.overall_fail_rate for r in none} == {none[0].fail_rate}
    assert len(seen) == 1 + 2 * len(KINDS)  # one progress line per scenario

    table = format_table(rows).splitlines()
    assert len(table) == len(rows) + 2  # header, separator, one line per row
    assert [c.strip() for c in table[0].strip("|").split("|")] == list(HEADER)
    assert set(table[1]) <= {"|", "-"}
    assert len({len(line) for line in table}) == 1  # aligned columns


def test_the_command_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", "bench", "compare", "--seeds", "2", "--n", "300"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(NONE_METRICS) + 2 * len(KINDS)
    assert "| none" in lines[2] and "300" in lines[2]
