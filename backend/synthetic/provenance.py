"""Where a task came from, written into its data so that LS shows it, filters on it and exports it. Pure.

Every task the ops tools create carries `lsal_key`: a hash of its normalized text (or of the id an import
maps), so a re-run finds what the last run created and never creates it twice. A synthetic task also
carries its generator model, the label it was written for, the batch and the prompt's hash. Flat keys,
not a nested object: LS's Data Manager can show and filter flat fields.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KEY = "lsal_key"
SYNTHETIC = "synthetic"
GENERATOR = "synthetic_generator"
TARGET = "synthetic_target"
CONTRAST = "synthetic_contrast"
BATCH = "synthetic_batch"
PROMPT_HASH = "synthetic_prompt_hash"

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Case, accents, punctuation and spacing removed: two texts differing only in those are duplicates."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode() or text
    return _SPACE.sub(" ", _PUNCT.sub(" ", folded.casefold())).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:20]


def content_hash(payload: Any) -> str:
    """A short stable hash of any JSON-able value (a prompt, a batch's inputs)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Provenance:
    generator: str
    target: str
    batch: str
    prompt_hash: str
    contrast: str | None = None

    def fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {SYNTHETIC: True, GENERATOR: self.generator, TARGET: self.target,
                                BATCH: self.batch, PROMPT_HASH: self.prompt_hash}  # fmt: skip
        if self.contrast:
            data[CONTRAST] = self.contrast
        return data


def synthetic_task(data_key: str, text: str, provenance: Provenance) -> dict[str, Any]:
    """The task to import for one generated text: its text, its key and where it came from."""
    return {"data": {data_key: text, KEY: text_key(text), **provenance.fields()}}


def is_synthetic(data: Mapping[str, Any]) -> bool:
    return data.get(SYNTHETIC) is True or str(data.get(SYNTHETIC)).lower() == "true"


def generator_of(data: Mapping[str, Any]) -> str | None:
    """The model that wrote the task, or None for a task a person brought."""
    return str(data.get(GENERATOR)) if is_synthetic(data) and data.get(GENERATOR) else None


def may_label(data: Mapping[str, Any], model: str) -> bool:
    """Whether `model` may pre-label this task: never the model that generated it."""
    return generator_of(data) != model


def task_key(data: Mapping[str, Any], text_field: str) -> str | None:
    """The key a task was imported under, or the one its text gives (tasks LS got some other way)."""
    if data.get(KEY):
        return str(data[KEY])
    text = data.get(text_field)
    return text_key(text) if isinstance(text, str) and text.strip() else None


def source_of(data: Mapping[str, Any]) -> str:
    return "synthetic" if is_synthetic(data) else "imported"


def batch_id(project_id: int, generator: str, targets: Sequence[Any], per_target: int, seed: int) -> str:
    """The same inputs give the same batch id, so a re-run is recognisably the same batch."""
    return "syn-" + content_hash([project_id, generator, [str(t) for t in targets], per_target, seed])[:12]
