"""Synthetic A/B traffic with a known effect, as comparison arms (numpy, seeded).

The calls look like ``TrafficGenerator``'s for one endpoint and model: lognormal
latency (median ~1.2 s) of which 70 % stream a time to first token, 1 % errors,
lognormal token counts, a price per token, a 0/1 ``hallucination`` flag (1 %), a
``relevance`` score (Beta(9, 2)) and 32-dimensional prompt embeddings around
topic centroids. An ``Effect`` changes the candidate only:

* ``latency``: latencies and TTFT multiplied by ``1 + size``;
* ``error_rate``: the error probability raised by ``size`` (absolute);
* ``cost``: the price per token multiplied by ``1 + size``;
* ``scores``: the hallucination probability raised by ``size`` (absolute);
* ``embeddings``: a share ``size`` of prompts drawn from a topic the baseline never has.

>>> base, cand = ab_arms(Effect("latency", 0.3), n=2000, seed=1)
>>> ratio = float(np.median(cand.latency_ms) / np.median(base.latency_ms))
>>> 1.2 < ratio < 1.4, base.n, sorted(base.scores)
(True, 2000, ['hallucination', 'relevance'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from llmpulse.compare.verdict import Arm

Kind = Literal["none", "latency", "error_rate", "cost", "scores", "embeddings"]
KINDS: Final[tuple[Kind, ...]] = ("latency", "error_rate", "cost", "scores", "embeddings")
# The metric that should fail when an effect of this kind is present.
TARGET_METRIC: Final[dict[str, str]] = {
    "latency": "latency",
    "error_rate": "error_rate",
    "cost": "cost_per_request",
    "scores": "score:hallucination",
    "embeddings": "prompt_embedding",
}
SMALL: Final[dict[str, float]] = {
    "latency": 0.03,
    "error_rate": 0.002,
    "cost": 0.02,
    "scores": 0.003,
    "embeddings": 0.01,
}
LARGE: Final[dict[str, float]] = {
    "latency": 0.30,
    "error_rate": 0.03,
    "cost": 0.25,
    "scores": 0.04,
    "embeddings": 0.20,
}
DIM: Final = 32
TOPICS: Final = 5  # the baseline's topics; topic TOPICS is the candidate's new one


@dataclass(frozen=True)
class Effect:
    kind: Kind = "none"
    size: float = 0.0


def _centroids(dim: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    rng = np.random.default_rng(0xC0FFEE)
    c = rng.normal(size=(TOPICS + 1, dim))
    out: np.ndarray[Any, np.dtype[np.float64]] = c / np.linalg.norm(c, axis=1, keepdims=True)
    return out


_CENTROIDS = _centroids(DIM)


def _arm(rng: np.random.Generator, n: int, effect: Effect) -> Arm:
    k, s = effect.kind, effect.size
    slow = 1.0 + s if k == "latency" else 1.0
    ttft = rng.lognormal(np.log(350.0), 0.35, n)
    out_tokens = np.maximum(1, rng.lognormal(np.log(250.0), 0.7, n)).astype(np.int64)
    in_tokens = np.maximum(1, rng.lognormal(np.log(900.0), 0.6, n)).astype(np.int64)
    speed = rng.lognormal(np.log(80.0), 0.2, n)
    latency = (ttft + out_tokens / speed * 1000.0) * slow
    ttft = np.where(rng.random(n) < 0.7, ttft * slow, np.nan)
    errors = rng.random(n) < 0.01 + (s if k == "error_rate" else 0.0)
    price = 1.0 + s if k == "cost" else 1.0
    cost = (in_tokens * 0.15e-6 + out_tokens * 0.6e-6) * price
    hall = rng.random(n) < 0.01 + (s if k == "scores" else 0.0)
    relevance = rng.beta(9.0, 2.0, n)
    topic = rng.integers(0, TOPICS, n)
    if k == "embeddings":
        topic = np.where(rng.random(n) < s, TOPICS, topic)
    emb = _CENTROIDS[topic] + rng.normal(0.0, 0.12, (n, DIM))
    return Arm(
        latency_ms=latency,
        ttft_ms=ttft,
        errors=errors,
        cost_usd=cost,
        tokens=(in_tokens + out_tokens).astype(np.float64),
        scores={"hallucination": hall.astype(np.float64), "relevance": relevance},
        prompt_embeddings=emb,
        calls=n,
    )


def ab_arms(effect: Effect, *, n: int, seed: int) -> tuple[Arm, Arm]:
    """(baseline, candidate) of ``n`` calls each; the effect changes the candidate."""
    rng = np.random.default_rng([seed, 0xAB])
    return _arm(rng, n, Effect()), _arm(rng, n, effect)
