"""Online evaluators as a stage core: stored calls in, score records out.

``EvaluatorStage.evaluate(batch)`` runs the enabled built-in evaluators on the
calls of a stored ``TraceBatch`` that carry text (the batch holds the event's
prompt and response whether or not ``clickhouse.store_text`` keeps them) and
match ``evaluators.match``, and hands the sampled ones to the LLM judge, whose
results come back later through ``drain()``. Both return ``ScoreRecord`` objects
for the score path (``ScoreStage.add``), like any score.

Built-in scores are a pure function of the call: their id ignores time, so a
redelivered call gives the same score ids (stored once), and their timestamp is
the call's. Judge scores are stamped with the time of the judgement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from llmpulse.detectors.embedder import Embedder, HashingEmbedder
from llmpulse.errors import ConfigError
from llmpulse.evaluators.builtin import (
    Check,
    Scores,
    json_schema_checker,
    json_valid,
    prompt_similarity,
    refusal,
    regex_checker,
)
from llmpulse.evaluators.judge import JudgeCall, LLMJudge
from llmpulse.schemas.batch import TraceBatch
from llmpulse.schemas.score import score_id_of
from llmpulse.scores.records import ScoreRecord
from llmpulse.settings import Settings

EVAL_SOURCE = "eval"
JUDGE_SOURCE = "llm_judge"


@dataclass
class EvaluatorConfig:
    refusal: bool = True
    json_valid: bool = False
    json_schema: Mapping[str, object] | None = None
    regex: Mapping[str, str] = field(default_factory=dict)
    similarity: bool = True
    match: Mapping[str, str] = field(default_factory=dict)
    judge_score_name: str = "judge"


def load_schema(path: Path) -> Mapping[str, object]:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError("evaluators.json_schema", f"cannot read {path}: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError("evaluators.json_schema", f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError("evaluators.json_schema", f"{path} must hold a JSON object")
    return doc


class EvaluatorStage:
    def __init__(
        self,
        config: EvaluatorConfig,
        *,
        embedder: Embedder | None = None,
        judge: LLMJudge | None = None,
    ) -> None:
        self.config = config
        self.embedder = embedder or HashingEmbedder()
        self.judge = judge
        self.checks: dict[str, Check] = {}
        if config.refusal:
            self.checks["refusal"] = refusal
        if config.json_valid:
            self.checks["json_valid"] = json_valid
        if config.json_schema is not None:
            self.checks["json_schema"] = json_schema_checker(config.json_schema)
        for name, pattern in config.regex.items():
            self.checks[name] = regex_checker(pattern, name=name)
        self.evaluated = 0  # calls that had text and matched
        self.skipped = 0  # calls without text or not matching

    def _eligible(self, batch: TraceBatch) -> list[int]:
        o = batch.objects
        prompts, responses = o["prompt"].tolist(), o["response"].tolist()
        match: list[tuple[list[object], str]] = [
            (o[k].tolist(), v) for k, v in self.config.match.items() if k in o
        ]
        out = []
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            if not (isinstance(r, str) and r) and not (isinstance(p, str) and p):
                continue
            if all(col[i] == v for col, v in match):
                out.append(i)
        return out

    def evaluate(self, batch: TraceBatch) -> list[ScoreRecord]:
        """Built-in scores of the eligible calls of ``batch``; queues the judge's work."""
        if not len(batch):
            return []
        rows = self._eligible(batch)
        self.skipped += len(batch) - len(rows)
        self.evaluated += len(rows)
        if not rows:
            return []
        o = batch.objects
        ids = [batch.event_id[i] for i in rows]
        times = [int(batch.timestamp_ms[i]) for i in rows]
        prompts = [_text(o["prompt"][i]) for i in rows]
        responses = [_text(o["response"][i]) for i in rows]
        results: dict[str, Scores] = {n: check(responses) for n, check in self.checks.items()}
        if self.config.similarity:
            results["prompt_similarity"] = prompt_similarity(self.embedder, prompts, responses)
        out = [
            ScoreRecord(
                score_id=score_id_of(f"event:{eid}", name, EVAL_SOURCE, 0, 0.0),
                name=name,
                value=value,
                timestamp_ms=ts,
                source=EVAL_SOURCE,
                event_id=eid,
                data_type="numeric" if name == "prompt_similarity" else "boolean",
                origin=f"evaluator:{name}",
            )
            for name, scores in results.items()
            for eid, ts, value in zip(ids, times, scores, strict=True)
            if value is not None
        ]
        if self.judge is not None:
            for eid, p, r in zip(ids, prompts, responses, strict=True):
                if p and r:
                    self.judge.submit(JudgeCall(eid, p, r))
        return out

    def drain(self) -> list[ScoreRecord]:
        """The judge's scores that came back since the last call."""
        if self.judge is None:
            return []
        name = self.config.judge_score_name
        return [
            ScoreRecord(
                score_id=score_id_of(f"event:{j.event_id}", name, JUDGE_SOURCE, 0, 0.0),
                name=name,
                value=j.score,
                timestamp_ms=j.wall_ms,
                source=JUDGE_SOURCE,
                event_id=j.event_id,
                comment=j.reason,
                origin="evaluator:judge",
            )
            for j in self.judge.drain()
        ]

    def close(self, timeout: float = 10.0) -> None:
        if self.judge is not None:
            self.judge.close(timeout)


def _text(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def build_evaluators(
    settings: Settings, *, judge_factory: Callable[..., LLMJudge] = LLMJudge
) -> EvaluatorStage | None:
    """The stage from ``Settings`` (None when ``evaluators.enabled`` is false)."""
    ev, jd = settings.evaluators, settings.judge
    if not ev.enabled:
        return None
    config = EvaluatorConfig(
        refusal=ev.refusal,
        json_valid=ev.json_valid,
        json_schema=load_schema(ev.json_schema) if ev.json_schema else None,
        regex=dict(ev.regex),
        similarity=ev.similarity,
        match=dict(ev.match),
        judge_score_name=jd.score_name,
    )
    judge = None
    if jd.enabled:
        judge = judge_factory(
            url=jd.url,
            model=jd.model,
            rubric=jd.rubric,
            api_key=jd.api_key.get_secret_value() if jd.api_key else None,
            sample_rate=jd.sample_rate,
            max_per_minute=jd.max_per_minute,
            queue_size=jd.queue_size,
            timeout_s=jd.timeout_s,
            max_chars=jd.max_chars,
        )
    return EvaluatorStage(
        config, embedder=HashingEmbedder(dim=settings.drift.embedding_dim), judge=judge
    )


__all__ = ["EvaluatorConfig", "EvaluatorStage", "build_evaluators", "load_schema"]
