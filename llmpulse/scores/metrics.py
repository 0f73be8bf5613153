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

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.stages.scores import ScorePath


class ScoreCollector(Collector):
    def __init__(self, path: ScorePath) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        s = self.path.stats
        scores = CounterMetricFamily(
            "llmpulse_scores", "Scores by outcome in the score path", labels=["outcome"]
        )
        for outcome, value in (
            ("accepted", s.accepted),
            ("duplicate", s.duplicates),
            ("rejected", sum(s.rejected.values())),
            ("unknown_call", s.unknown_calls),
            ("resolved_late", s.resolved_late),
            ("expired", s.expired),
            ("folded", s.folded),
        ):
            scores.add_metric([outcome], value)
        yield scores
        yield GaugeMetricFamily(
            "llmpulse_scores_pending",
            "Scores waiting in memory for their call",
            value=self.path.stage.pending,
        )
        ev = self.path.evaluators
        if ev is None:
            return
        calls = CounterMetricFamily(
            "llmpulse_evaluator_calls", "Calls seen by the online evaluators", labels=["outcome"]
        )
        calls.add_metric(["evaluated"], ev.evaluated)
        calls.add_metric(["skipped"], ev.skipped)
        yield calls
        if ev.judge is None:
            return
        c = ev.judge.counters
        judge = CounterMetricFamily("llmpulse_judge", "LLM judge outcomes", labels=["outcome"])
        for outcome, value in (
            ("submitted", c.submitted),
            ("not_sampled", c.not_sampled),
            ("dropped", c.dropped),
            ("requests", c.calls),
            ("failures", c.failures),
            ("results", c.results),
        ):
            judge.add_metric([outcome], value)
        yield judge
        failures = CounterMetricFamily(
            "llmpulse_judge_failures", "LLM judge failures by kind", labels=["kind"]
        )
        for kind, value in sorted(dict(c.by_failure).items()):
            failures.add_metric([kind], value)
        yield failures
