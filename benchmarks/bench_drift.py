"""Embedding drift benchmark outside the CLI: llmpulse's detector and Evidently's
embedding drift methods on the same synthetic streams with known change points.

python benchmarks/bench_drift.py --dims 64 384 768 --seeds 5 --stationary 100000
"""

from __future__ import annotations

import argparse
import sys

from llmpulse.bench.drift import (
    SCENARIOS,
    format_table,
    measure_monitor_throughput,
    run_drift_bench,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 384, 768])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per scenario and dimension")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument(
        "--stationary", type=int, default=100_000, help="events per stationary control run"
    )
    parser.add_argument("--no-evidently", action="store_true", help="skip the Evidently peer")
    parser.add_argument("--evidently-seeds", type=int, default=3)
    parser.add_argument("--evidently-windows", type=int, default=8)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    rows = run_drift_bench(
        dims=args.dims,
        seeds=range(args.seeds),
        scenarios=args.scenarios,
        n_stationary=args.stationary,
        progress=None if args.quiet else (lambda msg: print(msg, file=sys.stderr)),
        evidently=not args.no_evidently,
        evidently_seeds=args.evidently_seeds,
        evidently_windows=args.evidently_windows,
    )
    rows.append(measure_monitor_throughput())
    print(format_table(rows))


if __name__ == "__main__":
    main()
