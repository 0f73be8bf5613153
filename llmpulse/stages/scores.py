"""The score path of one process: score messages, stored calls, evaluators, one stage.

Owner: the process (one per worker, one per replay), not a key. Scores name
their call by event id or span, and the call may be stored by any task, so the
score stage (``llmpulse.scores.stage``) finds calls in its cache of the calls
this process stored and then in the store. It writes ``scores``,
``window_scores`` and its rejections itself, idempotently (score ids, partial
ids, insert tokens), so a task redone after a crash never counts a score twice.

:class:`ScorePath` feeds that stage from everywhere scores come from:

* ``messages``: score events (``llm.scores``, score records of a replay file);
* ``calls``: every batch of calls just stored: the stage remembers them (scores
  that came first are folded now), the scores the events carried inline
  (``source = 'trace'``) and the results of the built-in evaluators;
* ``drain``: the LLM judge's results that came back (call it every iteration);
* ``sweep``: stored scores whose call was unknown and is stored by now.

Each returns a :class:`Scored` list: the scores folded (or delivered again), for
the quality alerts of their series (``llmpulse.scores.alerting``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmpulse.evaluators.stage import EvaluatorStage
from llmpulse.processors.traces import RawMessage, Rejection
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.scores.quality import Scored
from llmpulse.scores.records import inline_scores
from llmpulse.scores.stage import PreparedScores, ScoreOutcome, ScoreStage, ScoreStats

__all__ = ["ScorePath", "ScoreResult"]


@dataclass
class ScoreResult:
    """What one call of the path did: the scores to pass on to the quality alerts
    (each once), and the rejected messages (for the DLQ)."""

    scored: list[Scored] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def extend(self, outcome: ScoreOutcome) -> None:
        self._take((*outcome.folded, *outcome.resent))
        self.rejections.extend(outcome.rejections)

    def add(self, other: ScoreResult) -> None:
        self._take(other.scored)
        self.rejections.extend(other.rejections)

    def _take(self, scored: Sequence[Scored]) -> None:
        if not scored:
            return
        seen = {r.score_id for r, _ in self.scored}
        for rec, call in scored:
            if rec.score_id not in seen:
                seen.add(rec.score_id)
                self.scored.append((rec, call))


class ScorePath:
    def __init__(self, stage: ScoreStage, evaluators: EvaluatorStage | None = None) -> None:
        self.stage = stage
        self.evaluators = evaluators

    @property
    def stats(self) -> ScoreStats:
        return self.stage.stats

    def prepare(self, messages: Sequence[RawMessage]) -> PreparedScores:
        """Validation only (no state): may run while the previous batch commits."""
        return self.stage.prepare(messages)

    def commit(self, prepared: PreparedScores) -> ScoreResult:
        out = ScoreResult()
        if prepared.messages:
            out.extend(self.stage.commit(prepared))
        return out

    def messages(self, messages: Sequence[RawMessage]) -> ScoreResult:
        return self.commit(self.prepare(messages))

    def calls(self, batch: TraceBatch) -> ScoreResult:
        """Calls just stored: waiting scores, inline scores and evaluator scores."""
        out = ScoreResult()
        if not len(batch):
            return out
        out.extend(self.stage.observe_calls(batch))
        made = inline_scores(batch)
        if self.evaluators is not None:
            made += self.evaluators.evaluate(batch)
        if made:
            out.extend(self.stage.add(made))
        return out

    def drain(self) -> ScoreResult:
        """The judge's scores that came back since the last call."""
        out = ScoreResult()
        if self.evaluators is not None:
            judged = self.evaluators.drain()
            if judged:
                out.extend(self.stage.add(judged))
        return out

    def sweep(self, limit: int = 100_000) -> ScoreResult:
        """Fold stored scores whose call came after them (see ``ScoreStage.sweep``):
        those of the last ``pending_s`` of event time, or all of them before any
        call was seen (at start-up)."""
        wm = self.stage.folder.watermark_ms
        since = 0 if wm < 0 else max(0, wm - self.stage.pending_ms)
        out = ScoreResult()
        out.extend(self.stage.sweep(from_ms(since), limit))
        return out

    def close(self, timeout: float = 10.0) -> None:
        if self.evaluators is not None:
            self.evaluators.close(timeout)
