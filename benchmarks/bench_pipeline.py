"""End-to-end benchmark outside the CLI: emit -> Kafka -> worker -> ClickHouse.

python benchmarks/bench_pipeline.py --events 200000 --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from llmpulse.bench.pipeline import run_pipeline_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as work:
        result = run_pipeline_bench(
            args.bootstrap, Path(work), events=args.events, partitions=args.partitions
        )
    for measure, value in result.rows():
        print(f"{measure:<60} {value}")


if __name__ == "__main__":
    main()
