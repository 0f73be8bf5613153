"""Per-metric tests, Holm correction and verdicts of one baseline/candidate comparison.

Every metric is reduced to an *effect* oriented so that positive is worse for
the candidate, in the unit of its tolerance (``CompareSettings``):

==================== ============================= ============================ =================
metric               test                          effect                       unit
==================== ============================= ============================ =================
latency, ttft        Mann-Whitney U                p50 candidate/baseline - 1   relative
error_rate           two proportions (z)           rate difference              absolute share
score:<name>         two proportions (z)           difference of bad shares     absolute share
cost_per_request     Welch t                       mean candidate/baseline - 1  relative
cost_per_1k_tokens   Welch t                       mean candidate/baseline - 1  relative
tokens_per_request   Welch t                       mean candidate/baseline - 1  relative
prompt_embedding,    drift two-sample test (MMD,   MMD² of the candidate vs a   MMD²
response_embedding   llmpulse.detectors)           reference fit on baseline
==================== ============================= ============================ =================

The p-values of all metrics are adjusted together (Holm). A metric then

* **fails** when its adjusted p-value is below ``alpha`` and its effect is above
  its tolerance (a significant regression beyond what is acceptable);
* is **inconclusive** when it does not fail and either arm has fewer calls than
  a test at level alpha / (number of metrics) needs to detect ``min_effect`` with
  ``power`` (the reason says how many more);
* **passes** otherwise (including significant changes within tolerance and
  improvements).

Overall: fail if any metric fails, else inconclusive if any is, else pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np

from llmpulse._types import BoolArray, FloatArray
from llmpulse.compare.stats import (
    Sample,
    holm,
    mann_whitney,
    n_for_means,
    n_for_proportions,
    quantile_ci,
    two_proportions,
    welch,
)
from llmpulse.detectors.reference import Reference, unit_rows
from llmpulse.detectors.windowed import MMDTest
from llmpulse.settings import CompareSettings, MetricSettings, ScoreSettings

Verdict = Literal["pass", "fail", "inconclusive"]
EXIT_CODES: Final[Mapping[str, int]] = {"pass": 0, "fail": 1, "inconclusive": 3}
QUANTILES: Final = (0.5, 0.95, 0.99)


@dataclass
class Arm:
    """One side of a comparison: per-call values (NaN where a call has none)."""

    latency_ms: FloatArray
    ttft_ms: FloatArray
    errors: BoolArray
    cost_usd: FloatArray
    tokens: FloatArray  # input + output tokens
    scores: dict[str, FloatArray] = field(default_factory=dict)
    prompt_embeddings: FloatArray | None = None
    response_embeddings: FloatArray | None = None
    calls: int = 0  # calls selected (before sampling)
    span_s: float = 0.0  # event-time span of the calls
    # metric -> where its values came from when not raw rows ("sketch": window tiles)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.latency_ms.size)

    @classmethod
    def empty(cls) -> Arm:
        z = np.zeros(0)
        return cls(z, z, np.zeros(0, dtype=np.bool_), z, z)


@dataclass(frozen=True)
class ScoreRule:
    """Which values of a score are bad (as in the window quality statistics)."""

    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    hallucination_score: str = "hallucination"
    hallucination_if: str = "above"

    @classmethod
    def of(cls, s: ScoreSettings) -> ScoreRule:
        return cls(s.threshold, dict(s.thresholds), s.hallucination_score, s.hallucination_if)

    def bad(self, name: str, values: FloatArray) -> BoolArray:
        t = self.thresholds.get(name, self.threshold)
        if name == self.hallucination_score and self.hallucination_if == "above":
            out: BoolArray = values >= t
        else:
            out = values < t
        return out


@dataclass
class MetricResult:
    metric: str
    test: str
    unit: str
    effect: float
    ci_low: float
    ci_high: float
    tolerance: float
    min_effect: float
    p_value: float
    n_baseline: int
    n_candidate: int
    baseline: float
    candidate: float
    needed_per_arm: int = 0
    effect_size: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    p_adjusted: float = 1.0
    verdict: Verdict = "inconclusive"
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "verdict": self.verdict,
            "reason": self.reason,
            "test": self.test,
            "unit": self.unit,
            "effect": _clean(self.effect),
            "ci": [_clean(self.ci_low), _clean(self.ci_high)],
            "tolerance": self.tolerance,
            "min_effect": self.min_effect,
            "p_value": _clean(self.p_value),
            "p_adjusted": _clean(self.p_adjusted),
            "baseline": _clean(self.baseline),
            "candidate": _clean(self.candidate),
            "n_baseline": self.n_baseline,
            "n_candidate": self.n_candidate,
            "needed_per_arm": self.needed_per_arm,
            "effect_size": _clean(self.effect_size),
            "details": {k: _clean(v) for k, v in self.details.items()},
        }


def _clean(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


@dataclass
class Comparison:
    metrics: list[MetricResult]
    overall: Verdict
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why not compared

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.overall]

    def metric(self, name: str) -> MetricResult:
        return next(m for m in self.metrics if m.metric == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "exit_code": self.exit_code,
            "metrics": [m.as_dict() for m in self.metrics],
            "skipped": dict(self.skipped),
        }


# --- one metric each ----------------------------------------------------------------------

_Builder = Callable[[Arm, Arm, MetricSettings, "_Ctx"], MetricResult | str]


@dataclass
class _Ctx:
    settings: CompareSettings
    rng: np.random.Generator
    alpha_power: float  # level used by the power calculation (alpha / metrics)
    score_rule: ScoreRule


def _finite(x: FloatArray) -> FloatArray:
    out: FloatArray = x[np.isfinite(x)]
    return out


def _distribution(name: str) -> _Builder:
    metric = "latency" if name == "latency_ms" else "ttft"

    def build(base: Arm, cand: Arm, m: MetricSettings, ctx: _Ctx) -> MetricResult | str:
        a = _finite(getattr(base, name))
        b = _finite(getattr(cand, name))
        if a.size == 0 and b.size == 0:
            return "no values in either arm"
        if a.size < 2 or b.size < 2:
            return _unmeasured(metric, "mann_whitney", "relative", m, a.size, b.size, need=2)
        rank = mann_whitney(a, b)
        sa, sb = Sample.of(a), Sample.of(b)
        qd = quantile_ci(sa, sb, QUANTILES, draws=ctx.settings.bootstrap, rng=ctx.rng)
        p50 = qd[0]
        pos = a[a > 0]
        sd = float(np.log(pos).std(ddof=1)) if pos.size > 1 else math.inf
        # Rank tests need about 1/0.955 of the t-test's sample on normal data.
        need = math.ceil(
            n_for_means(
                sd, math.log1p(m.min_effect), alpha=ctx.alpha_power, power=ctx.settings.power
            )
            / 0.955
        )
        details: dict[str, Any] = {}
        for arm, side in ((base, "baseline"), (cand, "candidate")):
            if metric in arm.sources:
                details[f"{side}_source"] = arm.sources[metric]
        for d in qd:
            key = f"p{round(d.q * 100)}"
            details[f"{key}_baseline_ms"] = d.baseline
            details[f"{key}_candidate_ms"] = d.candidate
            details[f"{key}_change"] = d.relative
            details[f"{key}_ci"] = [d.ci_low, d.ci_high]
        return MetricResult(
            metric=metric,
            test="mann_whitney",
            unit="relative",
            effect=p50.relative,
            ci_low=p50.ci_low,
            ci_high=p50.ci_high,
            tolerance=m.tolerance,
            min_effect=m.min_effect,
            p_value=rank.p_value,
            n_baseline=int(a.size),
            n_candidate=int(b.size),
            baseline=p50.baseline,
            candidate=p50.candidate,
            needed_per_arm=need,
            effect_size=rank.cles,
            details=details,
        )

    return build


def _unmeasured(
    metric: str, test: str, unit: str, m: MetricSettings, na: int, nb: int, *, need: int
) -> MetricResult:
    """An arm has too few values for ``test``: no effect, p = 1, and the sample it needs."""
    return MetricResult(
        metric, test, unit, math.nan, math.nan, math.nan, m.tolerance, m.min_effect, 1.0,
        na, nb, math.nan, math.nan, needed_per_arm=need,
    )  # fmt: skip


def _proportion(
    metric: str, xa: int, na: int, xb: int, nb: int, m: MetricSettings, ctx: _Ctx
) -> MetricResult:
    r = two_proportions(xa, na, xb, nb)
    p1 = r.baseline if na else 0.0
    need = n_for_proportions(p1, m.min_effect, alpha=ctx.alpha_power, power=ctx.settings.power)
    return MetricResult(
        metric=metric,
        test="two_proportions",
        unit="absolute",
        effect=r.diff,
        ci_low=r.ci_low,
        ci_high=r.ci_high,
        tolerance=m.tolerance,
        min_effect=m.min_effect,
        p_value=r.p_value,
        n_baseline=na,
        n_candidate=nb,
        baseline=r.baseline,
        candidate=r.candidate,
        needed_per_arm=need,
        details={"bad_baseline": xa, "bad_candidate": xb},
    )


def _errors(base: Arm, cand: Arm, m: MetricSettings, ctx: _Ctx) -> MetricResult | str:
    na, nb = int(base.errors.size), int(cand.errors.size)
    if na == 0 and nb == 0:
        return "no calls in either arm"
    return _proportion("error_rate", int(base.errors.sum()), na, int(cand.errors.sum()), nb, m, ctx)


def _mean_metric(metric: str, values: Callable[[Arm], FloatArray]) -> _Builder:
    def build(base: Arm, cand: Arm, m: MetricSettings, ctx: _Ctx) -> MetricResult | str:
        a, b = _finite(values(base)), _finite(values(cand))
        if a.size == 0 and b.size == 0:
            return "no values in either arm"
        if a.size < 2 or b.size < 2:
            return _unmeasured(metric, "welch", "relative", m, a.size, b.size, need=2)
        r = welch(a, b)
        scale = abs(r.baseline) if r.baseline else math.nan
        need = n_for_means(
            r.sd, m.min_effect * scale, alpha=ctx.alpha_power, power=ctx.settings.power
        )
        return MetricResult(
            metric=metric,
            test="welch",
            unit="relative",
            effect=r.diff / scale,
            ci_low=r.ci_low / scale,
            ci_high=r.ci_high / scale,
            tolerance=m.tolerance,
            min_effect=m.min_effect,
            p_value=r.p_value,
            n_baseline=int(a.size),
            n_candidate=int(b.size),
            baseline=r.baseline,
            candidate=r.candidate,
            needed_per_arm=need,
            effect_size=r.hedges_g,
            details={"difference": r.diff},
        )

    return build


def _cost_per_1k(arm: Arm) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(arm.tokens > 0, arm.cost_usd * 1000.0 / arm.tokens, np.nan)
    return out


def _embedding(attr: str, metric: str) -> _Builder:
    def build(base: Arm, cand: Arm, m: MetricSettings, ctx: _Ctx) -> MetricResult | str:
        a, b = getattr(base, attr), getattr(cand, attr)
        if a is None or b is None or a.shape[0] == 0 or b.shape[0] == 0:
            return "no embeddings or text in both arms (set clickhouse.store_text to keep text)"
        ua, oka = unit_rows(a)
        ub, okb = unit_rows(b)
        ua, ub = ua[oka], ub[okb]
        need = ctx.settings.min_embeddings
        if ua.shape[0] < need or ub.shape[0] < need or ua.shape[1] != ub.shape[1]:
            return _unmeasured(
                metric, "mmd", "mmd2", m, int(ua.shape[0]), int(ub.shape[0]), need=need
            )
        # The drift detectors' test: a reference fit on the baseline (geometry on
        # one half, null statistics on the other) and the candidate's feature mean.
        ref = Reference.fit(ua, seed=ctx.settings.seed)
        test = MMDTest(ref)
        feats = ref.transform(ub)[2]
        res = test.test(feats)
        mmd2 = test.mmd2(feats.mean(axis=0))
        # The baseline's own held-out half gives the MMD² expected without a change.
        own = ref.transform(ua[ua.shape[0] // 2 :])[2]
        null_mmd2 = test.mmd2(own.mean(axis=0))
        return MetricResult(
            metric=metric,
            test="mmd",
            unit="mmd2",
            effect=mmd2,
            ci_low=math.nan,
            ci_high=math.nan,
            tolerance=m.tolerance,
            min_effect=m.min_effect,
            p_value=res.p_value,
            n_baseline=int(ua.shape[0]),
            n_candidate=int(ub.shape[0]),
            baseline=null_mmd2,
            candidate=mmd2,
            needed_per_arm=need,
            effect_size=res.statistic,
            details={"t2": res.statistic, "baseline_self_mmd2": null_mmd2},
        )

    return build


_METRICS: Final[tuple[tuple[str, str, _Builder], ...]] = (
    ("latency", "latency", _distribution("latency_ms")),
    ("ttft", "ttft", _distribution("ttft_ms")),
    ("error_rate", "error_rate", _errors),
    *(
        (name, name, _mean_metric(name, values))
        for name, values in (
            ("cost_per_request", lambda a: a.cost_usd),
            ("cost_per_1k_tokens", _cost_per_1k),
            ("tokens_per_request", lambda a: a.tokens),
        )
    ),
    ("prompt_embedding", "embedding", _embedding("prompt_embeddings", "prompt_embedding")),
    ("response_embedding", "embedding", _embedding("response_embeddings", "response_embedding")),
)  # fmt: skip
METRIC_NAMES: Final = tuple(name for name, _, _ in _METRICS)


def compare_arms(
    base: Arm,
    cand: Arm,
    settings: CompareSettings,
    score_rule: ScoreRule | None = None,
    *,
    metrics: Sequence[str] | None = None,
) -> Comparison:
    """Every metric of ``cand`` against ``base``, Holm-corrected, with verdicts.

    ``metrics`` limits the comparison to the named metrics (``score:*`` for all
    score metrics); by default every metric with data is compared.
    """
    rule = score_rule or ScoreRule()
    wanted = set(metrics) if metrics is not None else None
    score_names = sorted(set(base.scores) | set(cand.scores))
    planned = [name for name, _, _ in _METRICS if wanted is None or name in wanted]
    planned += [
        f"score:{s}"
        for s in score_names
        if wanted is None or f"score:{s}" in wanted or "score:*" in wanted
    ]
    ctx = _Ctx(
        settings, np.random.default_rng(settings.seed), settings.alpha / max(1, len(planned)), rule
    )
    results: list[MetricResult] = []
    skipped: dict[str, str] = {}
    for name, section, build in _METRICS:
        if name not in planned:
            continue
        got = build(base, cand, getattr(settings, section), ctx)
        if isinstance(got, str):
            skipped[name] = got
        else:
            results.append(got)
    for s in score_names:
        name = f"score:{s}"
        if name not in planned:
            continue
        a = _finite(base.scores.get(s, np.zeros(0)))
        b = _finite(cand.scores.get(s, np.zeros(0)))
        r = _proportion(
            name,
            int(rule.bad(s, a).sum()),
            int(a.size),
            int(rule.bad(s, b).sum()),
            int(b.size),
            settings.score_rate,
            ctx,
        )
        r.details["threshold"] = rule.thresholds.get(s, rule.threshold)
        results.append(r)
    return decide(results, settings.alpha, skipped)


def decide(
    results: list[MetricResult], alpha: float, skipped: Mapping[str, str] | None = None
) -> Comparison:
    """Holm-adjust the p-values of ``results`` and give each its verdict."""
    adjusted = holm([r.p_value if math.isfinite(r.p_value) else 1.0 for r in results])
    out = []
    for given, p in zip(results, adjusted, strict=True):
        r = replace(given, p_adjusted=p)
        n = min(r.n_baseline, r.n_candidate)
        effect = r.effect
        if p < alpha and math.isfinite(effect) and effect > r.tolerance:
            r.verdict = "fail"
            r.reason = (
                f"regression {_fmt(effect, r.unit)} beyond tolerance {_fmt(r.tolerance, r.unit)}"
                f" (p={p:.2g} after Holm)"
            )
        elif n < r.needed_per_arm:
            r.verdict = "inconclusive"
            r.reason = (
                f"not enough data: {n:,} calls per arm, about {r.needed_per_arm:,} needed to see"
                f" {_fmt(r.min_effect, r.unit)} at power; {r.needed_per_arm - n:,} more per arm"
            )
        else:
            r.verdict = "pass"
            if p < alpha and effect > 0:
                r.reason = f"worse by {_fmt(effect, r.unit)}, within tolerance"
            elif p < alpha:
                r.reason = f"better by {_fmt(-effect, r.unit)}"
            else:
                r.reason = "no significant difference"
        out.append(r)
    verdicts = {r.verdict for r in out}
    overall: Verdict = (
        "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts or not out
        else "pass"
    )  # fmt: skip
    return Comparison(out, overall, dict(skipped or {}))


def _fmt(v: float, unit: str) -> str:
    if unit == "relative":
        return f"{v:+.1%}"
    if unit == "absolute":
        return f"{v * 100:+.2f} pp"
    return f"{v:.4f}"
