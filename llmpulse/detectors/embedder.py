"""Text embedders that fill in embeddings an event did not carry.

``HashingEmbedder`` needs no model download and no network: character n-grams
are hashed (FNV-1a over the UTF-8 bytes, then a splitmix64 finaliser, all in
numpy) straight into ``dim`` signed buckets and the vector is L2-normalised.
The sign bit makes collisions cancel on average instead of piling up, so dot
products stay unbiased estimates of n-gram overlap (feature hashing, Weinberger
et al. 2009). It captures surface form, not meaning, which is enough to notice
that users started asking about different things.

>>> emb = HashingEmbedder(dim=64)
>>> a = emb.embed("How do I reset my password?")
>>> b = emb.embed("how can I reset my password")
>>> c = emb.embed("Quarterly revenue grew by 12 percent")
>>> round(float(a @ a), 6), bool(a @ b > 0.5), bool(abs(a @ c) < 0.3)
(1.0, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from llmpulse._types import FloatArray
from llmpulse.errors import ConfigError

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


class Embedder(Protocol):
    """What ``DriftMonitor`` needs from an embedder."""

    @property
    def name(self) -> str: ...

    def embed(self, text: str) -> FloatArray:
        """One text: the one row of ``embed_many([text])``."""
        row: FloatArray = self.embed_many([text])[0]
        return row

    def embed_many(self, texts: Sequence[str]) -> FloatArray: ...


def _splitmix(h: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    # FNV's low bits are weak for short keys; the finaliser spreads every input
    # bit over the bucket index and the sign bit.
    h ^= h >> np.uint64(30)
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    h ^= h >> np.uint64(31)
    return h


class HashingEmbedder(Embedder):
    """Signed feature hashing of character n-grams, L2-normalised.

    Deterministic across processes and machines (no use of Python's salted
    ``hash``): the same text, ``dim``, ``ngram`` and ``seed`` always give the
    same vector. Text is lower-cased and whitespace collapsed first.

    >>> e = HashingEmbedder(dim=32, seed=1)
    >>> bool((e.embed("hello world") == HashingEmbedder(dim=32, seed=1).embed("hello world")).all())
    True
    >>> e.embed_many(["a", ""]).shape
    (2, 32)
    """

    def __init__(self, dim: int = 384, ngram: tuple[int, int] = (3, 5), seed: int = 0) -> None:
        if dim < 2:
            raise ConfigError("embedder.dim", f"must be >= 2, got {dim}")
        lo, hi = ngram
        if not 1 <= lo <= hi <= 16:
            raise ConfigError("embedder.ngram", f"need 1 <= min <= max <= 16, got {ngram}")
        self.dim = dim
        self.ngram = (lo, hi)
        self.seed = seed
        self._dim64 = np.uint64(dim)

    @property
    def name(self) -> str:
        return f"hashing-{self.dim}-{self.ngram[0]}-{self.ngram[1]}-s{self.seed}"

    def embed_many(self, texts: Sequence[str]) -> FloatArray:
        """Rows of unit vectors (all zeros for a text without any n-gram), one per
        text, computed in one vectorised pass."""
        n = len(texts)
        out = np.zeros(n * self.dim, dtype=np.float64)
        if n == 0:
            return out.reshape(0, self.dim)
        # Padding with a space marks word boundaries at both ends of the text.
        encoded = [(" " + " ".join(t.lower().split()) + " ").encode("utf-8") for t in texts]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=n)
        buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
        doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
        total = buf.size
        for g in range(self.ngram[0], self.ngram[1] + 1):
            m = total - g + 1
            if m <= 0:
                continue
            start = (_FNV_OFFSET ^ ((self.seed * 0x9E3779B97F4A7C15 + g) & _MASK64)) & _MASK64
            h = np.full(m, start, dtype=np.uint64)
            for j in range(g):
                h ^= buf[j : j + m]
                h *= _FNV_PRIME
            # An n-gram is kept only if it starts and ends in the same text.
            keep = doc[:m] == doc[g - 1 : g - 1 + m]
            h = _splitmix(h[keep])
            bucket = (h >> np.uint64(1)) % self._dim64
            sign = 1.0 - 2.0 * (h & np.uint64(1)).astype(np.float64)
            flat = doc[:m][keep] * self.dim + bucket.astype(np.int64)
            out += np.bincount(flat, weights=sign, minlength=n * self.dim)
        mat = out.reshape(n, self.dim)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        np.divide(mat, norms, out=mat, where=norms > 0)
        return mat


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model (optional extra). Give a local path or a
    model already in the Hugging Face cache: otherwise sentence-transformers
    downloads it on first use.

    >>> try:
    ...     SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    ... except ConfigError as exc:
    ...     print(exc.setting)
    ... else:
    ...     print("embedder")
    embedder
    """

    def __init__(self, model_name: str = "all-MiniLM-L6-v2", *, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigError(
                "embedder",
                "sentence-transformers is not installed; install it "
                "(pip install sentence-transformers) or use the built-in HashingEmbedder",
            ) from exc
        self.model_name = model_name
        self._model: Any = SentenceTransformer(model_name, device=device)

    @property
    def name(self) -> str:
        return f"st-{self.model_name}"

    def embed_many(self, texts: Sequence[str]) -> FloatArray:
        vecs = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float64)
