"""Sliding-window percentiles: llmpulse's windowing core against exact numpy, river,
ddsketch and chDB on the same stream, in one process.

    python benchmarks/bench_windows.py --events 1000000 --series 100
"""

from __future__ import annotations

import argparse
import sys

from llmpulse.bench.windows import format_table, run_windows_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the stream")
    parser.add_argument("--series", type=int, default=100, help="service+endpoint+model series")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=2.0, help="event-time span of the stream")
    parser.add_argument(
        "--subsample", type=int, default=20_000, help="events fed to river and ddsketch"
    )
    args = parser.parse_args(argv)
    rows = run_windows_bench(
        args.events,
        args.series,
        args.seed,
        progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True),
        hours=args.hours,
        subsample=args.subsample,
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
