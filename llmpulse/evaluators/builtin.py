"""Built-in evaluators that need no model: pure functions of a call's text.

Each returns one score per (prompt, response) pair, or None where it has
nothing to say (no response, no prompt for a similarity). Scores are 0/1 flags
except ``prompt_similarity`` (a cosine in [-1, 1]).

>>> refusal(["I'm sorry, but I can't help with that.", "Paris is the capital."])
[1.0, 0.0]
>>> json_valid(['{"a": 1}', '```json\\n[1, 2]\\n```', "{'a': 1}", None])
[1.0, 1.0, 0.0, None]
>>> schema = json_schema_checker({"type": "object", "required": ["answer"]})
>>> schema(['{"answer": 42}', '{"other": 1}', "not json"])
[1.0, 0.0, 0.0]
>>> regex_checker(r"\\bSKU-\\d+\\b")(["order SKU-42 shipped", "no code", None])
[1.0, 0.0, None]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from llmpulse.detectors.embedder import Embedder
from llmpulse.errors import ConfigError

Texts = Sequence[str | None]
Scores = list[float | None]
Check = Callable[[Texts], Scores]

# Phrases assistants use to decline; matched case-insensitively near the start of
# the response, where a refusal is stated (a quoted refusal later on is not one).
REFUSAL_PATTERNS: Final = (
    r"\bI(?:'m| am) sorry,? but I (?:can(?:no|')t|am unable|won't)",
    r"\bI (?:can(?:no|')t|am unable to|won't be able to|will not) "
    r"(?:help|assist|provide|comply|do that|answer|fulfil|fulfill|support)",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply|answer)",
    r"\bAs an AI(?: language model)?,? I (?:can(?:no|')t|don't|do not|am not able)",
    r"\bI must (?:decline|refuse)",
    r"\b(?:sorry|unfortunately),? (?:but )?(?:that|this) (?:is not something|isn't something) I",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)
_REFUSAL_WINDOW: Final = 300
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _flag(v: bool) -> float:
    return 1.0 if v else 0.0


def refusal(responses: Texts) -> Scores:
    """1.0 when the response declines to answer."""
    return [
        None
        if r is None
        else _flag(_REFUSAL.search(r[:_REFUSAL_WINDOW].replace("’", "'")) is not None)
        for r in responses
    ]


def _parse_json(text: str) -> tuple[bool, Any]:
    t = text.strip()
    m = _FENCE.match(t)
    if m:  # models often wrap JSON in a Markdown code fence
        t = m.group(1).strip()
    try:
        return True, orjson.loads(t)
    except orjson.JSONDecodeError:
        return False, None


def json_valid(responses: Texts) -> Scores:
    """1.0 when the response is a JSON document (a Markdown code fence is allowed)."""
    return [None if r is None else _flag(_parse_json(r)[0]) for r in responses]


def json_schema_checker(schema: Mapping[str, Any]) -> Check:
    """1.0 when the response is JSON matching ``schema`` (JSON Schema 2020-12)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError("evaluators.json_schema", f"invalid JSON schema: {exc.message}") from exc
    validator = Draft202012Validator(schema)

    def check(responses: Texts) -> Scores:
        out: Scores = []
        for r in responses:
            if r is None:
                out.append(None)
                continue
            ok, doc = _parse_json(r)
            out.append(_flag(ok and validator.is_valid(doc)))
        return out

    return check


def regex_checker(pattern: str, *, name: str = "regex") -> Check:
    """1.0 when the response matches ``pattern`` (``re.search``)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"evaluators.regex.{name}", f"invalid regex {pattern!r}: {exc}") from exc
    return lambda responses: [
        None if r is None else _flag(compiled.search(r) is not None) for r in responses
    ]


def prompt_similarity(embedder: Embedder, prompts: Texts, responses: Texts) -> Scores:
    """Cosine of the prompt's and the response's embeddings (both needed).

    >>> from llmpulse.detectors.embedder import HashingEmbedder
    >>> e = HashingEmbedder(dim=256)
    >>> s = prompt_similarity(e, ["how do I reset my password", "hi", None],
    ...                       ["To reset your password, open settings", "quarterly revenue", "x"])
    >>> s[0] > s[1], s[2]
    (True, None)
    """
    idx = [i for i, (p, r) in enumerate(zip(prompts, responses, strict=True)) if p and r]
    out: Scores = [None] * len(prompts)
    if not idx:
        return out
    texts = [prompts[i] or "" for i in idx] + [responses[i] or "" for i in idx]
    vecs = embedder.embed_many(texts)
    a, b = vecs[: len(idx)], vecs[len(idx) :]
    cos = np.einsum("ij,ij->i", a, b)
    for i, c in zip(idx, cos.tolist(), strict=True):
        out[i] = round(float(c), 6)
    return out
