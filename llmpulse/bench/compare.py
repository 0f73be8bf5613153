"""``llmpulse bench compare``: how often the comparison is right when the truth is known.

Synthetic A/B arms (``llmpulse.synth.ab``) with no effect, a small or a large
effect on one metric family, over many seeds, through ``compare_arms`` with the
shipped ``CompareSettings`` (bootstrap resamples reduced, they only shape the
displayed intervals, never a verdict). Reported:

* no effect: the false-fail rate, overall and per metric (target: at most alpha);
* each effect: the share of seeds where its metric fails (power; target at least
  95 % for the large effects) and where the overall verdict fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmpulse.compare.verdict import METRIC_NAMES, compare_arms
from llmpulse.settings import CompareSettings
from llmpulse.synth.ab import KINDS, LARGE, SMALL, TARGET_METRIC, Effect, ab_arms


@dataclass
class BenchRow:
    scenario: str
    metric: str
    n: int
    seeds: int
    fail_rate: float
    overall_fail_rate: float
    inconclusive_rate: float
    target: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.scenario,
            self.metric,
            f"{self.n:,}",
            str(self.seeds),
            f"{self.fail_rate:.1%}",
            f"{self.overall_fail_rate:.1%}",
            f"{self.inconclusive_rate:.1%}",
            self.target,
        )


HEADER = (
    "scenario",
    "metric",
    "calls/arm",
    "seeds",
    "metric fails",
    "overall fails",
    "inconclusive",
    "target",
)


def run_compare_bench(
    *,
    n: int = 5000,
    seeds: int = 100,
    settings: CompareSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    cs = settings or CompareSettings(bootstrap=200)
    alpha = cs.alpha
    rows: list[BenchRow] = []

    def runs(effect: Effect) -> tuple[Counter[str], int, int]:
        fails: Counter[str] = Counter()
        overall = inconclusive = 0
        for seed in range(seeds):
            base, cand = ab_arms(effect, n=n, seed=seed)
            c = compare_arms(base, cand, cs)
            fails.update(m.metric for m in c.metrics if m.verdict == "fail")
            overall += c.overall == "fail"
            inconclusive += c.overall == "inconclusive"
        return fails, overall, inconclusive

    if progress:
        progress(f"no effect: {seeds} seeds of {n:,} calls per arm")
    fails, overall, inconc = runs(Effect())
    rows.append(
        BenchRow("none", "any", n, seeds, overall / seeds, overall / seeds, inconc / seeds,
                 f"<= {alpha:.0%}")
    )  # fmt: skip
    metrics: Sequence[str] = (*METRIC_NAMES[:-1], "score:hallucination", "score:relevance")
    for metric in metrics:
        rows.append(
            BenchRow("none", metric, n, seeds, fails[metric] / seeds, overall / seeds,
                     inconc / seeds, f"<= {alpha:.0%}")
        )  # fmt: skip
    for size_name, sizes in (("small", SMALL), ("large", LARGE)):
        for kind in KINDS:
            effect = Effect(kind, sizes[kind])
            if progress:
                progress(f"{size_name} {kind} effect ({sizes[kind]:g}): {seeds} seeds")
            fails, overall, inconc = runs(effect)
            metric = TARGET_METRIC[kind]
            rows.append(
                BenchRow(
                    f"{size_name} {kind} +{_size(kind, sizes[kind])}",
                    metric,
                    n,
                    seeds,
                    fails[metric] / seeds,
                    overall / seeds,
                    inconc / seeds,
                    ">= 95%" if size_name == "large" else "(report)",
                )
            )
    return rows


def _size(kind: str, size: float) -> str:
    if kind in ("error_rate", "scores"):
        return f"{size * 100:g} pp"
    if kind == "embeddings":
        return f"{size:.0%} new topic"
    return f"{size:.0%}"


def format_table(rows: Sequence[BenchRow]) -> str:
    cells = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))) + " |"
             for c in cells]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
