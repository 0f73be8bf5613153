"""End-to-end benchmark outside the CLI: engine floor, replay, one and two workers.

python benchmarks/bench_pipeline.py --bootstrap 127.0.0.1:9092 --scale 0.5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from llmpulse.bench.pipeline import run_pipeline_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as work:
        result = run_pipeline_bench(
            args.bootstrap,
            Path(work),
            scale=args.scale,
            partitions=args.partitions,
            python=args.python,
        )
    headers, rows = result.table()
    print(" | ".join(headers))
    for row in rows:
        print(" | ".join(row))
    print("freshness ms (p50, p99, max):", result.freshness_ms)
    print("memory per active series KiB:", result.memory_per_series_kib)


if __name__ == "__main__":
    main()
