"""The agent-run cookbook of docs/otlp.md, run as written against rows that took the
real path: OTLP export requests -> decoded events -> ``llmpulse replay`` -> chDB
-> ``llmpulse sql``. Expected values are computed here from the spans themselves."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmpulse.otlp import OtlpDecoder, encode_request
from llmpulse.processors.cost import PriceTable, cost_of_call
from llmpulse.settings import OtlpSettings
from tests.integration.test_cli import run
from tests.otlp_builders import MS, Scope, request, span

DOC = Path(__file__).resolve().parents[2] / "docs" / "otlp.md"
RUN_A = 0x4BF92F3577B34DA6A3CE929D0E0E4736  # the trace id the docs' "steps" query names
AGENT_OPS = ("invoke_agent", "create_agent", "invoke_workflow")


def cookbook() -> dict[str, str]:
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- cookbook: (\w+) -->\n```sql\n(.*?)```", text, re.S))
    assert set(found) == {"runs", "agents", "tools", "steps"}
    return found


@dataclass
class Step:
    op: str  # chat | execute_tool | chat_legacy
    start_ms: float
    duration_ms: float
    tokens: tuple[int, int] = (0, 0)
    tool: str = ""
    error: str = ""  # error.type, or "status" for a span status ERROR with an exception event


@dataclass
class Run:
    trace: int
    agent: str
    steps: list[Step]
    spans: list[Any] = field(default_factory=list)


# A chat span's attributes, and the names of its (input, output) token counts: the
# GenAI semantic conventions, and OpenLLMetry's older names (chat_legacy, same run).
CHAT_ATTRIBUTES: dict[str, tuple[dict[str, str], tuple[str, str]]] = {
    "chat": (
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o"},
        ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
    ),
    "chat_legacy": (
        {"gen_ai.system": "OpenAI", "llm.request.type": "chat",
         "gen_ai.request.model": "gpt-4o-mini"},
        ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
    ),
}  # fmt: skip


def build_run(run: Run, base_ns: int) -> list[Any]:
    chats = [s for s in run.steps if s.op.startswith("chat")]
    total_in = sum(s.tokens[0] for s in chats)
    total_out = sum(s.tokens[1] for s in chats)
    end = max(s.start_ms + s.duration_ms for s in run.steps) + 5
    spans = [
        span(
            run.trace,
            1,
            name=f"invoke_agent {run.agent}",
            base_ns=base_ns,
            duration_ms=end,
            attrs={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "openai",
                "gen_ai.agent.name": run.agent,
                "gen_ai.request.model": "gpt-4o",  # and the run's usage again: not counted twice
                "gen_ai.usage.input_tokens": total_in,
                "gen_ai.usage.output_tokens": total_out,
                "gen_ai.conversation.id": f"conv-{run.trace % 1000}",
            },
        )
    ]
    for i, s in enumerate(run.steps, start=2):
        attrs: dict[str, Any]
        events: list[Any] = []
        if s.op in CHAT_ATTRIBUTES:
            labels, (tokens_in, tokens_out) = CHAT_ATTRIBUTES[s.op]
            attrs = {**labels, tokens_in: s.tokens[0], tokens_out: s.tokens[1]}
        else:
            attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": s.tool}
            if s.error and s.error != "status":
                attrs["error.type"] = s.error
            if s.error == "status":
                events = [("exception", s.duration_ms - 1, {"exception.type": "KeyError"})]
        spans.append(
            span(
                run.trace,
                i,
                parent=1,
                base_ns=base_ns,
                start_ms=s.start_ms,
                duration_ms=s.duration_ms,
                attrs=attrs,
                events=events,
                error=bool(s.error),
            )
        )
    # an HTTP call under the last tool: not a GenAI span, skipped
    http = {"http.request.method": "GET"}
    spans.append(span(run.trace, 99, parent=len(run.steps) + 1, base_ns=base_ns, attrs=http))
    return spans


RUNS = [
    Run(
        RUN_A,
        "planner",
        [
            Step("chat", 10, 800, (1200, 300)),
            Step("execute_tool", 820, 150, tool="search"),
            Step("chat", 980, 640.5, (1800, 120)),
            Step("execute_tool", 1630, 2000, tool="get_weather", error="TimeoutError"),
            Step("chat", 3640, 500, (2100, 400)),
        ],
    ),
    Run(2, "planner", [Step("chat", 5, 300, (500, 50))]),
    Run(
        3,
        "researcher",
        [
            Step("chat", 5, 400, (900, 100)),
            Step("execute_tool", 410, 90, tool="search", error="HTTPError"),
            Step("chat_legacy", 510, 220, (300, 30)),
            Step("execute_tool", 740, 70, tool="search", error="status"),
            Step("execute_tool", 820, 30, tool="get_weather"),
        ],
    ),
    Run(
        4,
        "researcher",
        [Step("chat", 5, 250, (700, 90)), Step("execute_tool", 260, 40, tool="search")],
    ),
]


def expected_runs(base: datetime) -> dict[str, dict[str, Any]]:
    prices = PriceTable.default()
    out = {}
    for r in RUNS:
        chats = [s for s in r.steps if s.op.startswith("chat")]
        tools = [s for s in r.steps if s.op == "execute_tool"]
        cost = 0.0
        for s in chats:
            model = "gpt-4o" if s.op == "chat" else "gpt-4o-mini"
            c = cost_of_call(
                prices,
                model=model,
                provider="openai",
                at=base,
                input_tokens=s.tokens[0],
                output_tokens=s.tokens[1],
                cached_input_tokens=None,
                cache_creation_input_tokens=None,
                reasoning_tokens=None,
                cost_usd=None,
            )
            assert c.cost_usd is not None
            cost += c.cost_usd
        end = max(s.start_ms + s.duration_ms for s in r.steps) + 5
        out[r.trace.to_bytes(16, "big").hex()] = {
            "agent": r.agent,
            "run_ms": end,  # the agent span covers the run: from 0 to its end
            "llm_steps": len(chats),
            "tool_calls": len(tools),
            "tool_errors": sum(1 for s in tools if s.error),
            "input_tokens": sum(s.tokens[0] for s in chats),
            "output_tokens": sum(s.tokens[1] for s in chats),
            "cost_usd": round(cost, 6),
        }
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], datetime]:
    tmp = tmp_path_factory.mktemp("cookbook")
    env = {
        "LLMPULSE_DATA_DIR": str(tmp / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp / 'store'}",
        "LLMPULSE_WORKER_BATCH_SIZE": "7",
    }
    # Recent enough for the queries' "last day", on a whole second.
    base_ms = (int(time.time()) - 2 * 3600) * 1000
    spans_by_run = [build_run(r, base_ms * MS) for r in RUNS]
    # Two resources, runs split across them, one export request.
    req = request(
        ({"service.name": "agents"}, [Scope("agent.framework", spans_by_run[0] + spans_by_run[1])]),
        ({"service.name": "agents"}, [Scope("agent.framework", spans_by_run[2] + spans_by_run[3])]),
    )
    decoder = OtlpDecoder(OtlpSettings())
    out = decoder.decode(encode_request(req, "otlp_proto"), "kafka:otlp_spans/0@0")
    assert out.rejections == [] and out.skipped == len(RUNS)
    path = tmp / "events.jsonl"
    path.write_bytes(b"\n".join(v for v, _ in out.events) + b"\n")

    first = json.loads(run(["replay", str(path), "--json"], env).stdout)
    again = json.loads(run(["replay", str(path), "--json"], env).stdout)
    assert first["accepted"] == len(out.events) and first["rejected"] == 0
    assert again["accepted"] == 0 and again["duplicates"] == len(out.events)
    return env, datetime.fromtimestamp(base_ms / 1000, tz=UTC)


def sql(env: dict[str, str], query: str) -> list[dict[str, Any]]:
    return json.loads(run(["sql", query, "-f", "json"], env).stdout)  # type: ignore[no-any-return]


def test_runs(store: tuple[dict[str, str], datetime]) -> None:
    env, base = store
    rows = sql(env, cookbook()["runs"])
    started = [r.pop("started") for r in rows]
    assert started == sorted(started, reverse=True)
    got = {r.pop("trace_id"): r for r in rows}
    expected = expected_runs(base)
    assert set(got) == set(expected)
    for trace_id, row in got.items():
        want = expected[trace_id]
        # the sums' float order differs from this loop's: compare cost to a micro-dollar
        assert row.pop("cost_usd") == pytest.approx(want.pop("cost_usd"), abs=1e-6)
        assert row == want


def test_agents(store: tuple[dict[str, str], datetime]) -> None:
    env, base = store
    runs = expected_runs(base).values()
    rows = sql(env, cookbook()["agents"])
    assert [r["agent"] for r in rows] == ["planner", "researcher"]
    for row in rows:
        mine = [r for r in runs if r["agent"] == row["agent"]]
        assert row["runs"] == len(mine)
        assert row["avg_llm_steps"] == round(sum(r["llm_steps"] for r in mine) / len(mine), 2)
        assert row["tool_errors"] == sum(r["tool_errors"] for r in mine)
        assert row["cost_per_run_usd"] == pytest.approx(
            sum(r["cost_usd"] for r in mine) / len(mine), abs=1e-6
        )
        assert row["p95_run_ms"] == max(r["run_ms"] for r in mine)  # 2 runs: the larger
    # quantileExact returns one of the values: of two runs, the upper one
    assert [r["p50_run_ms"] for r in rows] == [4145, 855]


def test_tools(store: tuple[dict[str, str], datetime]) -> None:
    env, _ = store
    rows = sql(env, cookbook()["tools"])
    assert [(r["tool"], r["calls"], r["errors"], r["error_types"]) for r in rows] == [
        ("search", 4, 2, ["HTTPError", "KeyError"]),
        ("get_weather", 2, 1, ["TimeoutError"]),
    ]
    assert rows[0]["error_rate"] == 0.5


def test_steps_of_one_run(store: tuple[dict[str, str], datetime]) -> None:
    env, _ = store
    rows = sql(env, cookbook()["steps"])
    assert [(r["operation"], r["model"], r["status"], r["tool"]) for r in rows] == [
        ("invoke_agent", "gpt-4o", "ok", ""),
        ("chat", "gpt-4o", "ok", ""),
        ("execute_tool", "tool:search", "ok", "search"),
        ("chat", "gpt-4o", "ok", ""),
        ("execute_tool", "tool:get_weather", "error", "get_weather"),
        ("chat", "gpt-4o", "ok", ""),
    ]
    assert [r["latency_ms"] for r in rows[1:]] == [800, 150, 640.5, 2000, 500]
    assert {r["parent_span_id"] for r in rows[1:]} == {rows[0]["span_id"]}
    assert rows[0]["parent_span_id"] == ""
    assert rows[4]["error_type"] == "TimeoutError" and rows[4]["cost_usd"] is None
