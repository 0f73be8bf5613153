"""Assembling the score path from settings (called by the worker and replay)."""

from __future__ import annotations

from llmpulse.errors import ConfigError, LlmpulseError
from llmpulse.processors.windows import GroupingSet, WindowSpec
from llmpulse.scores.quality import QualityConfig, QualityFolder
from llmpulse.scores.stage import ScoreStage
from llmpulse.scores.store import ClickHouseScoreStore
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient


def quality_config(settings: Settings) -> QualityConfig:
    w, s = settings.windows, settings.scores
    try:
        specs = tuple(WindowSpec(length, hop) for length, hop in w.specs)
        groupings = tuple(GroupingSet.parse(g) for g in w.groupings)
    except LlmpulseError as exc:
        raise ConfigError("windows", str(exc)) from exc
    lengths = [sp.length_s for sp in specs]
    signal_window_s = s.signal_window_s
    if signal_window_s not in lengths:
        if "signal_window_s" in s.model_fields_set:
            raise ConfigError(
                "scores.signal_window_s",
                f"must be the length of one of windows.specs {lengths}, got {signal_window_s}",
            )
        # The default (300 s) is not among custom window specs: alert on the
        # longest windows there are rather than refuse to start.
        signal_window_s = max(lengths)
    return QualityConfig(
        specs,
        groupings,
        threshold=s.threshold,
        thresholds=dict(s.thresholds),
        hallucination_score=s.hallucination_score,
        hallucination_if=s.hallucination_if,
        signal_window_s=signal_window_s,
        alert_delay_ms=int(s.alert_delay_s * 1000),
    )


def score_stage(
    settings: Settings, client: SerialClient, *, resend_stored: bool = False
) -> ScoreStage:
    """The score stage over ``client`` (call ``sweep`` once after building it);
    ``resend_stored`` as in ``ScoreStage``."""
    s = settings.scores
    return ScoreStage(
        QualityFolder(quality_config(settings)),
        ClickHouseScoreStore(client),
        call_cache=s.call_cache,
        pending_max=s.pending_max,
        pending_ms=int(s.pending_s * 1000),
        resend_stored=resend_stored,
    )
