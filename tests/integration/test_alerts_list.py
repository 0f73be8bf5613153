"""`llmpulse alerts list` is readable in an 80-column terminal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from llmpulse.cli.alerts_cmd import app, compact_labels
from llmpulse.cli.context import CliState, out


@pytest.fixture
def state(showcase: tuple[Any, int]) -> CliState:
    return CliState(_settings=showcase[0])


def invoke(
    state: CliState, args: list[str], monkeypatch: pytest.MonkeyPatch, width: int = 80
) -> str:
    monkeypatch.setattr(out, "width", width)
    res = CliRunner().invoke(app, ["list", *args], obj=state)
    assert res.exit_code == 0, res.output
    return res.output


def test_list_fits_80_columns_and_stays_readable(
    state: CliState, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = invoke(state, [], monkeypatch)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("alerts firing now") for line in lines)
    assert "recent transitions" in text
    # whole words, not "2026…" or "late…": rule names, states and series labels
    assert "slo-error-burn" in text or "error-rate-high" in text
    assert "svc=search" in text and "pending>firing" in text
    assert "…" not in text


def test_wide_and_json(state: CliState, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = invoke(state, ["--wide", "-n", "3"], monkeypatch, width=400)
    assert "dedup_key" in wide and "llmpulse:" in wide and "from_state" in wide
    payload = json.loads(invoke(state, ["--format", "json", "-n", "5"], monkeypatch))
    assert set(payload) == {"firing", "recent"} and len(payload["recent"]) == 5
    assert {"dedup_key", "labels", "summary", "wall_time"} <= set(payload["firing"][0])
    assert json.loads(invoke(state, ["--json", "-n", "5"], monkeypatch)) == payload


def test_compact_labels_drop_bookkeeping() -> None:
    labels = {"grouping": "service+endpoint+model", "service": "chat-api", "endpoint": "/v1/chat"}
    assert compact_labels(labels) == "svc=chat-api ep=/v1/chat"
