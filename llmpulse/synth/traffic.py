"""Deterministic synthetic LLM traffic for the demo, the benchmarks and the tests.

Events follow a Poisson process in *event time*: nothing here reads the wall
clock. Time is cut into one-second blocks and each block draws from its own
random generator seeded by ``(seed, block)``, so the stream is a pure function of
the configuration, the seed, ``start_ms`` and the rate, and any time range can be
generated without generating what comes before it:
``events_between(t0, t1)`` returns exactly the events of ``events(n)`` that fall
in ``[t0, t1)``.

Incidents change the traffic of matching series while they are active:
``latency_regression`` multiplies latencies (and time to first token) by
``magnitude``; ``error_burst`` raises the error probability to ``magnitude``;
``cost_spike`` multiplies output tokens by ``magnitude``; ``prompt_drift`` draws a
share ``magnitude`` of prompts from a topic absent from the baseline mix.

>>> gen = TrafficGenerator(TrafficConfig(), seed=7, start_ms=1_767_225_600_000, rate_per_s=20)
>>> first = next(gen.events(1))
>>> sorted(k for k in ("schema_version", "event_id", "timestamp", "service", "model",
...                    "latency_ms") if k in first)
['event_id', 'latency_ms', 'model', 'schema_version', 'service', 'timestamp']
>>> first == next(TrafficGenerator(TrafficConfig(), seed=7, start_ms=1_767_225_600_000,
...                                rate_per_s=20).events(1))
True
"""

from __future__ import annotations

import gzip as _gzip
import hashlib
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import orjson

from llmpulse.errors import ConfigError

__all__ = [
    "BASELINE_TOPICS",
    "ERROR_TYPES",
    "VOCABULARIES",
    "Incident",
    "IncidentKind",
    "ModelProfile",
    "TrafficConfig",
    "TrafficGenerator",
    "write_jsonl",
]

BLOCK_MS = 1000

IncidentKind = Literal["latency_regression", "error_burst", "cost_spike", "prompt_drift"]

# --------------------------------------------------------------------------- catalogues

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "billing": (
        "invoice", "refund", "charge", "payment", "subscription", "receipt", "credit",
        "card", "plan", "upgrade", "discount", "tax", "billing", "renewal", "overcharged",
    ),
    "shipping": (
        "order", "delivery", "package", "tracking", "courier", "address", "shipment",
        "delayed", "warehouse", "return", "parcel", "customs", "express", "arrival",
    ),
    "account": (
        "password", "login", "account", "email", "verification", "profile", "username",
        "locked", "reset", "security", "two-factor", "settings", "permissions", "session",
    ),
    "technical": (
        "error", "crash", "install", "update", "api", "timeout", "integration", "sdk",
        "webhook", "latency", "bug", "configuration", "database", "deployment", "logs",
    ),
    "product": (
        "feature", "pricing", "comparison", "recommendation", "specification", "warranty",
        "compatibility", "size", "color", "availability", "review", "bundle", "model",
    ),
    # Absent from the baseline mix: what prompt drift shifts traffic towards.
    "crypto": (
        "wallet", "blockchain", "staking", "ledger", "mining", "defi", "airdrop", "seed",
        "phrase", "exchange", "gas", "validator", "smart-contract", "bridge", "nft",
    ),
    "medical": (
        "symptom", "diagnosis", "prescription", "dosage", "allergy", "clinic", "insurance",
        "appointment", "vaccine", "therapy", "referral", "lab", "results", "pharmacy",
    ),
}  # fmt: skip

BASELINE_TOPICS: tuple[str, ...] = ("billing", "shipping", "account", "technical", "product")

_FILLER = ("please", "my", "the", "a", "for", "with", "about", "again", "today", "still")
_PROMPT_TEMPLATES = (
    "How do I fix the {0} {1} problem with my {2}?",
    "Can you explain why my {0} shows {1} after the {2}?",
    "Summarize this ticket: customer reports {0} and {1}, mentions {2}.",
    "What is the best way to handle {0} when {1} and {2} are involved?",
    "Write a short reply about {0}, {1} and {2}.",
)
_RESPONSE_TEMPLATES = (
    "To resolve the {0} issue, check the {1} first, then review the {2}.",
    "Your {0} is linked to the {1}; updating the {2} should help.",
    "Here is a summary: {0}, {1}, {2}. Let me know if you need more detail.",
)

# Error classes as the OpenAI and Anthropic Python SDKs name them, with a weight
# and the median latency of a call that ends that way (ms).
ERROR_TYPES: dict[str, tuple[float, float]] = {
    "RateLimitError": (0.40, 120.0),
    "InternalServerError": (0.25, 900.0),
    "APITimeoutError": (0.15, 30_000.0),
    "APIConnectionError": (0.12, 60.0),
    "BadRequestError": (0.08, 250.0),
}


@dataclass(frozen=True)
class ModelProfile:
    """How one model behaves: a lognormal time to first token, then streaming."""

    provider: str
    response_model: str
    ttft_median_ms: float
    tokens_per_s: float
    reasoning_share: float = 0.0  # mean share of output spent reasoning, when it reasons
    reasoning_probability: float = 0.0


MODEL_PROFILES: dict[str, ModelProfile] = {
    "gpt-4o": ModelProfile("openai", "gpt-4o-2024-08-06", 450.0, 85.0),
    "gpt-4o-mini": ModelProfile("openai", "gpt-4o-mini-2024-07-18", 320.0, 120.0),
    "claude-sonnet-4-5": ModelProfile(
        "anthropic", "claude-sonnet-4-5-20250929", 900.0, 70.0, 0.4, 0.2
    ),
    "claude-haiku-4-5": ModelProfile("anthropic", "claude-haiku-4-5-20251001", 480.0, 140.0),
    "gemini-2.5-flash": ModelProfile("google", "gemini-2.5-flash", 420.0, 190.0, 0.35, 0.8),
    "mistral-small-latest": ModelProfile("mistral", "mistral-small-2506", 300.0, 150.0),
}

# Median input and output tokens per service: RAG and summaries carry big prompts.
_SERVICE_TOKENS: dict[str, tuple[float, float]] = {
    "chat-api": (900.0, 300.0),
    "search": (2500.0, 200.0),
    "support-bot": (1500.0, 260.0),
    "summarizer": (4000.0, 350.0),
}
_DEFAULT_TOKENS = (800.0, 250.0)
_MAX_OUTPUT_TOKENS = 4096


def _guess_profile(model: str) -> ModelProfile:
    for prefix, provider in (
        ("gpt", "openai"),
        ("o1", "openai"),
        ("o3", "openai"),
        ("o4", "openai"),
        ("claude", "anthropic"),
        ("gemini", "google"),
        ("mistral", "mistral"),
        ("llama", "meta"),
    ):
        if model.startswith(prefix):
            return ModelProfile(provider, model, 500.0, 100.0)
    return ModelProfile("other", model, 500.0, 100.0)


def _stable_int(*parts: object) -> int:
    """An integer that depends only on ``parts`` (never on PYTHONHASHSEED)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _zipf_weights(n: int) -> list[float]:
    # A few popular series and a long tail, as real traffic looks.
    return [1.0 / (i + 1) for i in range(n)]


# --------------------------------------------------------------------------- configuration


@dataclass
class TrafficConfig:
    """What the synthetic traffic is made of. List order sets popularity (Zipf)."""

    services: list[str] = field(
        default_factory=lambda: ["chat-api", "search", "support-bot", "summarizer"]
    )
    endpoints: list[str] = field(
        default_factory=lambda: ["/v1/chat", "/v1/answer", "/v1/reply", "/v1/summarize"]
    )
    models: list[str] = field(
        default_factory=lambda: [
            "gpt-4o-mini",
            "claude-haiku-4-5",
            "gpt-4o",
            "gemini-2.5-flash",
            "claude-sonnet-4-5",
            "mistral-small-latest",
        ]
    )
    tenants: list[str] = field(
        default_factory=lambda: ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
    )
    # Each service belongs to one team (service i -> team i modulo the list).
    teams: list[str] = field(
        default_factory=lambda: ["platform", "search-quality", "support", "content"]
    )
    prompt_versions: list[str] = field(default_factory=lambda: ["v1", "v2"])
    variants: list[str] = field(default_factory=lambda: ["control", "treatment"])
    environments: list[str] = field(default_factory=lambda: ["prod"])
    regions: list[str] = field(default_factory=lambda: ["us-east-1", "eu-west-1"])
    topics: list[str] = field(default_factory=lambda: list(BASELINE_TOPICS))
    drift_topic: str = "crypto"
    users: int = 2000
    error_rate: float = 0.008
    stream_share: float = 0.7  # calls that stream, hence report a time to first token
    trace_continuation: float = 0.2  # calls that are a further step of the previous trace
    include_text: bool = True
    scores: bool = True
    embeddings: bool = False
    embedding_dim: int = 32
    embedding_noise: float = 0.12  # per component, around unit-norm topic centroids

    def __post_init__(self) -> None:
        for name in ("services", "endpoints", "models", "tenants", "teams", "topics"):
            if not getattr(self, name):
                raise ConfigError(name, "must not be empty")
        for topic in [*self.topics, self.drift_topic]:
            if topic not in VOCABULARIES:
                raise ConfigError("topics", f"unknown topic {topic!r}; known: {list(VOCABULARIES)}")
        if self.drift_topic in self.topics:
            raise ConfigError("drift_topic", "must be absent from the baseline topics")
        for name in ("error_rate", "stream_share", "trace_continuation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(name, "must be within [0, 1]")
        if self.users < 1 or self.embedding_dim < 1 or self.embedding_noise < 0:
            raise ConfigError("users", "users and embedding_dim >= 1, embedding_noise >= 0")


@dataclass
class Incident:
    """A change of the traffic of matching series during ``[start_s, start_s + duration_s)``
    (seconds after the generator's ``start_ms``). A None filter matches everything.

    ``magnitude``: latency multiplier (``latency_regression``), error probability
    (``error_burst``), output-token multiplier (``cost_spike``), share of prompts
    from the drift topic (``prompt_drift``; ``topic`` overrides the config's).
    """

    kind: IncidentKind
    start_s: float
    duration_s: float
    service: str | None = None
    endpoint: str | None = None
    model: str | None = None
    magnitude: float = 3.0
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(IncidentKind):
            raise ConfigError("kind", f"unknown incident kind {self.kind!r}")
        if self.start_s < 0 or self.duration_s <= 0:
            raise ConfigError("duration_s", "start_s >= 0 and duration_s > 0 required")
        share = self.kind in ("error_burst", "prompt_drift")
        if share and not 0.0 <= self.magnitude <= 1.0:
            raise ConfigError("magnitude", f"{self.kind} takes a probability in [0, 1]")
        if not share and self.magnitude <= 0:
            raise ConfigError("magnitude", f"{self.kind} takes a positive multiplier")
        if self.topic is not None and self.topic not in VOCABULARIES:
            raise ConfigError("topic", f"unknown topic {self.topic!r}")

    def active_at(self, t_ms: float, start_ms: int) -> bool:
        begin = start_ms + self.start_s * 1000.0
        return begin <= t_ms < begin + self.duration_s * 1000.0

    def matches(self, service: str, endpoint: str, model: str) -> bool:
        return (
            (self.service is None or self.service == service)
            and (self.endpoint is None or self.endpoint == endpoint)
            and (self.model is None or self.model == model)
        )


# --------------------------------------------------------------------------- generator


def _centroid(topic: str, dim: int) -> list[float]:
    rng = random.Random(_stable_int("centroid", topic, dim))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class TrafficGenerator:
    """Synthetic events for a configuration, a seed and a rate (see the module doc)."""

    def __init__(
        self,
        config: TrafficConfig | None = None,
        *,
        seed: int,
        start_ms: int,
        rate_per_s: float,
        incidents: Sequence[Incident] = (),
    ) -> None:
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ConfigError("rate_per_s", f"must be a positive number, got {rate_per_s!r}")
        self.config = config or TrafficConfig()
        self.seed = seed
        self.start_ms = int(start_ms)
        self.rate_per_s = float(rate_per_s)
        self.incidents = tuple(incidents)
        cfg = self.config
        self._service_w = _zipf_weights(len(cfg.services))
        self._endpoint_w = _zipf_weights(len(cfg.endpoints))
        self._model_w = _zipf_weights(len(cfg.models))
        self._tenant_w = _zipf_weights(len(cfg.tenants))
        self._topic_w = _zipf_weights(len(cfg.topics))
        self._profiles = {m: MODEL_PROFILES.get(m) or _guess_profile(m) for m in cfg.models}
        self._teams = {s: cfg.teams[i % len(cfg.teams)] for i, s in enumerate(cfg.services)}
        self._error_names = list(ERROR_TYPES)
        self._error_w = [w for w, _ in ERROR_TYPES.values()]
        self._centroids = (
            {t: _centroid(t, cfg.embedding_dim) for t in VOCABULARIES} if cfg.embeddings else {}
        )

    # -- public iteration

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        """The first ``n`` events from ``start_ms`` on, in timestamp order."""
        if n <= 0:
            return
        produced = 0
        block = 0
        while True:
            for event in self._block(block):
                yield event
                produced += 1
                if produced >= n:
                    return
            block += 1

    def events_between(self, t0_ms: int, t1_ms: int) -> Iterator[dict[str, Any]]:
        """The events whose timestamp is in ``[t0_ms, t1_ms)``, in timestamp order."""
        lo = max(t0_ms, self.start_ms)
        if t1_ms <= lo:
            return
        first = (lo - self.start_ms) // BLOCK_MS
        last = (t1_ms - 1 - self.start_ms) // BLOCK_MS
        for block in range(first, last + 1):
            for event in self._block(block):
                if lo <= event["timestamp"] < t1_ms:
                    yield event

    # -- one block

    def _block(self, block: int) -> list[dict[str, Any]]:
        rng = random.Random(f"llmpulse-synth:{self.seed}:{block}")
        t = float(self.start_ms + block * BLOCK_MS)
        end = t + BLOCK_MS
        previous: dict[str, Any] | None = None
        out: list[dict[str, Any]] = []
        while True:
            t += rng.expovariate(self.rate_per_s) * 1000.0
            if t >= end:
                return out
            event = self._event(rng, t, previous)
            out.append(event)
            previous = event

    def _event(
        self, rng: random.Random, t_ms: float, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        cfg = self.config
        service = rng.choices(cfg.services, self._service_w)[0]
        endpoint = rng.choices(cfg.endpoints, self._endpoint_w)[0]
        model = rng.choices(cfg.models, self._model_w)[0]
        profile = self._profiles[model]

        latency_factor = 1.0
        output_factor = 1.0
        error_rate = cfg.error_rate
        drift_share = 0.0
        drift_topic = cfg.drift_topic
        for incident in self.incidents:
            if not (
                incident.active_at(t_ms, self.start_ms)
                and incident.matches(service, endpoint, model)
            ):
                continue
            if incident.kind == "latency_regression":
                latency_factor *= incident.magnitude
            elif incident.kind == "error_burst":
                error_rate = max(error_rate, incident.magnitude)
            elif incident.kind == "cost_spike":
                output_factor *= incident.magnitude
            elif incident.magnitude >= drift_share:
                drift_share = incident.magnitude
                drift_topic = incident.topic or cfg.drift_topic

        drifted = drift_share > 0 and rng.random() < drift_share
        topic = drift_topic if drifted else rng.choices(cfg.topics, self._topic_w)[0]

        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{rng.getrandbits(128):032x}",
            "timestamp": int(t_ms),
            "service": service,
            "endpoint": endpoint,
            "model": model,
            "provider": profile.provider,
            "operation": "chat",
            "environment": rng.choice(cfg.environments) if cfg.environments else None,
            "tenant": rng.choices(cfg.tenants, self._tenant_w)[0],
            "team": self._teams[service],
            "user_id": f"user-{rng.randrange(cfg.users):05d}",
            "prompt_version": rng.choice(cfg.prompt_versions) if cfg.prompt_versions else None,
            "variant": rng.choice(cfg.variants) if cfg.variants else None,
        }
        if previous is not None and rng.random() < cfg.trace_continuation:
            event["trace_id"] = previous["trace_id"]
            event["parent_span_id"] = previous["span_id"]
        else:
            event["trace_id"] = f"{rng.getrandbits(128):032x}"
        event["span_id"] = f"{rng.getrandbits(64):016x}"
        if cfg.regions:
            event["attributes"] = {"region": rng.choice(cfg.regions)}

        words = VOCABULARIES[topic]
        if cfg.include_text:
            event["prompt"] = self._text(rng, _PROMPT_TEMPLATES, words)
        if cfg.embeddings:
            centroid = self._centroids[topic]
            noise = cfg.embedding_noise
            event["prompt_embedding"] = [round(c + rng.gauss(0.0, noise), 5) for c in centroid]

        if rng.random() < error_rate:
            self._fail(rng, event, latency_factor)
        else:
            self._succeed(
                rng,
                event,
                profile=profile,
                topic=topic,
                latency_factor=latency_factor,
                output_factor=output_factor,
                drifted=drifted,
            )
        return {k: v for k, v in event.items() if v is not None}

    def _fail(self, rng: random.Random, event: dict[str, Any], latency_factor: float) -> None:
        error_type = rng.choices(self._error_names, self._error_w)[0]
        median = ERROR_TYPES[error_type][1]
        sigma = 0.05 if error_type == "APITimeoutError" else 0.6
        event["status"] = "error"
        event["error_type"] = error_type
        event["latency_ms"] = round(median * rng.lognormvariate(0.0, sigma) * latency_factor, 3)

    def _succeed(
        self,
        rng: random.Random,
        event: dict[str, Any],
        *,
        profile: ModelProfile,
        topic: str,
        latency_factor: float,
        output_factor: float,
        drifted: bool,
    ) -> None:
        cfg = self.config
        service = event["service"]
        in_median, out_median = _SERVICE_TOKENS.get(service, _DEFAULT_TOKENS)
        input_tokens = max(1, int(in_median * rng.lognormvariate(0.0, 0.6)))
        visible = max(1, int(out_median * rng.lognormvariate(0.0, 0.7) * output_factor))
        reasoning = 0
        if profile.reasoning_probability and rng.random() < profile.reasoning_probability:
            share = profile.reasoning_share
            reasoning = int(visible * share / (1.0 - share) * rng.uniform(0.5, 1.5))
        output_tokens = visible + reasoning
        finish_reason = "stop"
        if output_tokens >= _MAX_OUTPUT_TOKENS:
            output_tokens = _MAX_OUTPUT_TOKENS
            reasoning = min(reasoning, output_tokens // 2)
            finish_reason = "length"
        elif service in ("chat-api", "support-bot") and rng.random() < 0.06:
            finish_reason = "tool_calls"
        elif rng.random() < 0.01:
            finish_reason = "length"

        # Prompt caching only pays above ~1k tokens; reads come in 128-token steps.
        cached = 0
        created = 0
        if input_tokens >= 1024 and rng.random() < 0.45:
            cached = int(input_tokens * rng.uniform(0.3, 0.9)) // 128 * 128
        if profile.provider == "anthropic" and input_tokens >= 1024 and rng.random() < 0.1:
            created = int((input_tokens - cached) * rng.uniform(0.2, 0.8))

        ttft = profile.ttft_median_ms * rng.lognormvariate(0.0, 0.35)
        # Cached prefixes shorten the prefill, hence the time to first token.
        ttft *= 1.0 - 0.4 * cached / input_tokens
        speed = profile.tokens_per_s * rng.lognormvariate(0.0, 0.2)
        latency = (ttft + output_tokens / speed * 1000.0) * latency_factor
        ttft *= latency_factor

        event["status"] = "ok"
        event["latency_ms"] = round(latency, 3)
        if rng.random() < cfg.stream_share:
            event["ttft_ms"] = round(ttft, 3)
        event["finish_reason"] = finish_reason
        event["response_model"] = profile.response_model
        event["input_tokens"] = input_tokens
        event["output_tokens"] = output_tokens
        if cached:
            event["cached_input_tokens"] = cached
        if created:
            event["cache_creation_input_tokens"] = created
        if reasoning:
            event["reasoning_tokens"] = reasoning
        if cfg.include_text:
            event["response"] = self._text(rng, _RESPONSE_TEMPLATES, VOCABULARIES[topic])
        if cfg.scores:
            # Answers on a topic the prompts were not tuned for are worse.
            relevance = rng.betavariate(4.0, 4.0) if drifted else rng.betavariate(9.0, 2.0)
            hallucinated = rng.random() < (0.2 if drifted else 0.008)
            event["scores"] = {
                "relevance": round(relevance, 4),
                "hallucination": float(hallucinated),
            }

    @staticmethod
    def _text(rng: random.Random, templates: Sequence[str], words: Sequence[str]) -> str:
        picked = rng.sample(words, 3)
        text = rng.choice(templates).format(*picked)
        extra = " ".join(
            rng.choice(words) if rng.random() < 0.6 else rng.choice(_FILLER)
            for _ in range(rng.randrange(2, 12))
        )
        return f"{text} {extra}"


# --------------------------------------------------------------------------- files


def write_jsonl(
    path: str | Path, events: Iterable[Mapping[str, Any]], *, gzip: bool | None = None
) -> int:
    """Write one JSON object per line; gzip when asked or, by default, when the
    name ends in ``.gz``. Returns the number of lines written."""
    target = Path(path)
    compress = target.suffix == ".gz" if gzip is None else gzip
    count = 0
    with _gzip.open(target, "wb") if compress else target.open("wb") as stream:
        for event in events:
            stream.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return count


def __getattr__(name: str) -> Any:
    # The malformed-event corpus lives in llmpulse.synth.malformed; the demo command
    # still imports it from here. Resolved on first use because the corpus builds its
    # base events with this module's generator (an import at the top would be a cycle).
    if name in ("malformed_cases", "malformed_events"):
        from llmpulse.synth import malformed

        return getattr(malformed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
