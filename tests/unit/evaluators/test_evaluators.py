"""Online evaluators: built-in checks, and the LLM judge against a local
chat-completions server on loopback (no model, no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmpulse.errors import ConfigError
from llmpulse.evaluators.judge import JudgeCall, LLMJudge, TokenBucket, sampled
from llmpulse.evaluators.stage import EvaluatorConfig, EvaluatorStage, build_evaluators
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.schemas.batch import TraceBatch
from llmpulse.settings import Settings
from tests.helpers import QuietHandler, event


class ChatServer:
    """A chat-completions endpoint: answers with the score the test sets per
    prompt, fails on demand, and can hold requests until released."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, str] = {}
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                outer.arrived.set()
                outer.hold.wait(10)
                question = body["messages"][1]["content"]
                content = next((a for k, a in outer.answers.items() if k in question), None)
                if content == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                self.reply(200, json.dumps(reply).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    s = ChatServer()
    try:
        yield s
    finally:
        s.close()


def batch_of(*events: dict[str, Any]) -> TraceBatch:
    return validate_batch([orjson.dumps(e) for e in events], ["t"] * len(events)).batch


def judge_for(chat: ChatServer, **kw: Any) -> LLMJudge:
    args: dict[str, Any] = {
        "url": chat.url,
        "model": "judge-model",
        "rubric": "Grade. Reply with JSON {score, reason}.",
        "sample_rate": 1.0,
        "max_per_minute": 60_000,
        "wall_ms": lambda: 1_767_300_000_000,
    }
    args.update(kw)
    return LLMJudge(**args)


def test_builtin_scores_only_for_calls_with_text_and_matching() -> None:
    stage = EvaluatorStage(
        EvaluatorConfig(
            json_valid=True,
            json_schema={"type": "object", "required": ["answer"]},
            regex={"has_sku": r"SKU-\d+"},
            match={"endpoint": "/v1/chat"},
        )
    )
    b = batch_of(
        event(1, prompt="Give JSON", response='{"answer": "SKU-12"}'),
        event(2, prompt="Help me hack", response="I'm sorry, but I can't help with that."),
        event(3),  # no text: not evaluated
        event(4, endpoint="/other", prompt="x", response="y"),  # not matched
    )
    got = {(r.event_id, r.name): r.value for r in stage.evaluate(b)}
    assert got[("evt-1", "json_schema")] == 1.0 and got[("evt-1", "has_sku")] == 1.0
    assert got[("evt-1", "refusal")] == 0.0 and got[("evt-2", "refusal")] == 1.0
    assert got[("evt-2", "json_valid")] == 0.0
    assert -1.0 <= got[("evt-1", "prompt_similarity")] <= 1.0
    assert {e for e, _ in got} == {"evt-1", "evt-2"}
    assert (stage.evaluated, stage.skipped) == (2, 2)
    again = {r.score_id for r in stage.evaluate(b)}
    assert again == {r.score_id for r in stage.evaluate(b)}  # same call, same score ids


def test_bad_configuration_is_refused_with_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"evaluators.regex.bad: invalid regex"):
        EvaluatorStage(EvaluatorConfig(regex={"bad": "("}))
    with pytest.raises(ConfigError, match="invalid JSON schema"):
        EvaluatorStage(EvaluatorConfig(json_schema={"type": 12}))


def test_the_judge_scores_through_a_chat_completions_endpoint(chat: ChatServer) -> None:
    chat.answers = {
        "capital of France": 'Verdict: {"score": 0.9, "reason": "correct"}',
        "2+2": "no json here",
        "broken": "500",
    }
    judge = judge_for(chat, api_key="sk-test")
    stage = EvaluatorStage(EvaluatorConfig(refusal=False, similarity=False), judge=judge)
    b = batch_of(
        event(1, prompt="What is the capital of France?", response="Paris."),
        event(2, prompt="2+2?", response="4"),
        event(3, prompt="broken", response="?"),
        event(4, prompt="only a prompt"),
    )
    assert stage.evaluate(b) == []  # nothing built in: the judge answers later
    assert judge.join(timeout=30)
    [score] = stage.drain()
    assert (score.event_id, score.name, score.value, score.comment, score.source) == (
        "evt-1",
        "judge",
        0.9,
        "correct",
        "llm_judge",
    )
    c = judge.counters
    assert (c.submitted, c.calls, c.results, c.failures) == (3, 3, 1, 2)
    assert c.by_failure == {"unreadable answer": 1, "http 500": 1}
    body = chat.requests[0]
    assert body["auth"] == "Bearer sk-test"
    assert body["body"]["model"] == "judge-model"
    assert body["body"]["messages"][0]["role"] == "system"
    stage.close()


def test_the_judge_never_blocks_the_stream_and_counts_drops(chat: ChatServer) -> None:
    chat.hold.clear()  # the endpoint hangs
    judge = judge_for(chat, queue_size=1)
    assert judge.submit(JudgeCall("a", "q", "r"))
    assert chat.arrived.wait(10)  # "a" is in flight and stuck
    results = [judge.submit(JudgeCall(x, "q", "r")) for x in "bcde"]
    assert results == [True, False, False, False]  # one waits in the queue, three dropped
    assert judge.counters.dropped == 3
    chat.hold.set()
    assert judge.join(timeout=30)
    judge.close()


def test_sampling_is_a_stable_share_and_the_bucket_spaces_requests() -> None:
    ids = [f"evt-{i}" for i in range(20_000)]
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [sampled(i, 0.1) for i in ids[:50]] == [sampled(i, 0.1) for i in ids[:50]]
    t = [0.0]
    bucket = TokenBucket(per_minute=120, clock=lambda: t[0])
    waits = [bucket.wait_time() for _ in range(4)]
    assert waits == [0.0, 0.5, 1.0, 1.5]
    t[0] = 10.0
    assert bucket.wait_time() == 0.0


def test_unreachable_judge_is_a_counted_failure() -> None:
    judge = LLMJudge(
        url="http://127.0.0.1:9/v1/chat/completions",
        model="m",
        rubric="r",
        sample_rate=1.0,
        timeout_s=2,
        max_per_minute=60_000,
    )
    judge.submit(JudgeCall("a", "q", "r"))
    assert judge.join(timeout=30)
    assert (judge.counters.failures, judge.counters.by_failure) == (1, {"unreachable": 1})
    judge.close()


def test_built_from_settings(tmp_path: Path, chat: ChatServer) -> None:
    assert build_evaluators(Settings()) is None
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    s = Settings(
        evaluators={"enabled": True, "json_schema": str(schema)},
        judge={"enabled": True, "url": chat.url, "sample_rate": 1.0},
    )
    stage = build_evaluators(s)
    assert stage is not None and stage.judge is not None
    assert set(stage.checks) == {"refusal", "json_schema"}
    stage.close()
