"""The score path and the LLM judge on a worker's ``/metrics`` (read at scrape time).

* ``llmpulse_scores_total{outcome}``: score messages and made scores by outcome
  (``accepted``, ``duplicate``, ``rejected``, ``unknown_call``, ``resolved_late``,
  ``expired``, ``folded``);
* ``llmpulse_scores_pending``: scores waiting in memory for their call;
* ``llmpulse_evaluator_calls_total{outcome}``: calls the built-in evaluators saw
  (``evaluated``, ``skipped``: no text or not matching ``evaluators.match``);
* ``llmpulse_judge_total{outcome}``: the judge's counters (``submitted``,
  ``not_sampled``, ``dropped``, ``requests``, ``failures``, ``results``);
* ``llmpulse_judge_failures_total{kind}``: failures by kind (HTTP status,
  unreachable, unreadable answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.stages.scores import ScorePath


class ScoreCollector(Collector):
    def __init__(self, path: ScorePath) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        s = self.path.stats
        yield _counters(
            "llmpulse_scores",
            "Scores by outcome in the score path",
            "outcome",
            (
                ("accepted", s.accepted),
                ("duplicate", s.duplicates),
                ("rejected", sum(s.rejected.values())),
                ("unknown_call", s.unknown_calls),
                ("resolved_late", s.resolved_late),
                ("expired", s.expired),
                ("folded", s.folded),
            ),
        )
        yield GaugeMetricFamily(
            "llmpulse_scores_pending",
            "Scores waiting in memory for their call",
            value=self.path.stage.pending,
        )
        ev = self.path.evaluators
        if ev is None:
            return
        yield _counters(
            "llmpulse_evaluator_calls",
            "Calls seen by the online evaluators",
            "outcome",
            (("evaluated", ev.evaluated), ("skipped", ev.skipped)),
        )
        if ev.judge is None:
            return
        c = ev.judge.counters
        yield _counters(
            "llmpulse_judge",
            "LLM judge outcomes",
            "outcome",
            (
                ("submitted", c.submitted),
                ("not_sampled", c.not_sampled),
                ("dropped", c.dropped),
                ("requests", c.calls),
                ("failures", c.failures),
                ("results", c.results),
            ),
        )
        yield _counters(
            "llmpulse_judge_failures",
            "LLM judge failures by kind",
            "kind",
            sorted(dict(c.by_failure).items()),
        )


def _counters(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]
) -> CounterMetricFamily:
    """One counter family with a sample per value of its one ``label``."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for label_value, value in values:
        family.add_metric([label_value], value)
    return family
