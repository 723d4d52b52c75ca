"""Building the `Pool` the query strategies rank, from what the caller already holds. Pure: no I/O.

The rank job reads a project (its unlabelled tasks, human labels, LLM answers, kept sentence embeddings)
and scores the tasks; bench/simulate.py holds a corpus in memory. Both hand their arrays and texts here,
so a strategy sees the same Pool in the bench as in the product. What a Pool field costs (SVD embeddings,
a committee of students) is computed only when the strategy `needs` it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from backend.selection.embeddings import svd_embeddings
from backend.selection.strategies import Pool
from backend.student import StudentModel

if TYPE_CHECKING:
    from backend.labeling import Example, TaskSpec
    from backend.llm.annotator import StoredAnswer

PREDICT_CHUNK = 5000  # tasks per predict_proba call: bounded memory on large pools
COMMITTEE_MEMBERS = 5


@dataclass(frozen=True)
class TaskVectors:
    """The student's sentence embeddings of the pool's tasks and of the human-labelled ones, under its encoder."""

    encoder: str
    pool: np.ndarray  # (n, dim), rows in pool order
    human: np.ndarray  # (m, dim), rows in the order of the human examples
    row_of: Mapping[int, np.ndarray] = field(default_factory=dict)  # task id -> its row, where the caller has ids

    def of(self, task_ids: Sequence[int | None], _texts: Sequence[str]) -> np.ndarray:
        """The rows of tasks this ranking has read already (the batch, the stop set): no second Redis read."""
        return np.array([self.row_of[int(task)] for task in task_ids if task is not None], dtype=np.float32)


def predict_proba(model: StudentModel, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
    """The model's probabilities on `texts`, a chunk at a time."""
    chunks = [slice(i, i + PREDICT_CHUNK) for i in range(0, len(texts), PREDICT_CHUNK)]
    parts = [model.predict_proba(texts[c], None if embeddings is None else embeddings[c]) for c in chunks]
    return np.vstack(parts) if parts else np.zeros((0, len(model.labels)))


def label_value(labels: Sequence[str], multi_label: bool) -> str:
    """A task's labels as one comparable value: the label, or for multi-label the whole set, canonically."""
    return json.dumps(sorted(labels)) if multi_label else labels[0]


def bootstrap_committee(
    spec: TaskSpec,
    human: Sequence[Example],
    texts: Sequence[str],
    members: int = COMMITTEE_MEMBERS,
    seed: int = 0,
    vectors: TaskVectors | None = None,
) -> list[np.ndarray]:
    """Probabilities on `texts` from students fitted on bootstrap resamples of the human labels.

    With `vectors`, the members use the student's encoder features, like the student they stand in for.
    """
    rng = np.random.default_rng(seed)
    encoder = vectors.encoder if vectors is not None else None
    out = []
    for _ in range(members):
        rows = rng.integers(0, len(human), len(human))
        sample = [human[i] for i in rows]
        if len({label_value(e.labels, spec.multi_label) for e in sample}) < 2:
            continue  # one label set throughout: no label is seen both ways, so there is nothing to fit
        member = StudentModel(spec.labels, multi_label=spec.multi_label, encoder=encoder).fit(
            [e.text for e in sample], [e.labels for e in sample],
            embeddings=vectors.human[rows] if vectors is not None else None,
        )  # fmt: skip
        out.append(predict_proba(member, texts, vectors.pool if vectors is not None else None))
    return out


def llm_distributions(answers: Mapping[int, StoredAnswer], ids: Sequence[int], labels: Sequence[str]) -> np.ndarray:
    """(n, k) LLM label distributions, NaN rows where the LLM gave none."""
    out = np.full((len(ids), len(labels)), np.nan)
    for row, task in enumerate(ids):
        answer = answers.get(task)
        if answer is not None and answer.distribution:
            out[row] = [answer.distribution.get(label, 0.0) for label in labels]
    return out


def build_pool(
    needs: frozenset[str],
    spec: TaskSpec,
    proba: np.ndarray,
    texts: Sequence[str],
    human: Sequence[Example],
    *,
    vectors: TaskVectors | None = None,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    answers: Mapping[int, StoredAnswer] | None = None,
    ids: Sequence[int] = (),
    committee_seed: int = 0,
) -> Pool:
    """The Pool over the unlabelled `texts` (student probabilities `proba`, rows in the same order) with what
    a strategy that `needs` those fields asks for, computed only when it asks.

    Diversity embeddings: `embeddings` (the pool's rows, the labelled tasks' rows) where the caller keeps
    its own, else the student's sentence embeddings (`vectors`), else TF-IDF of the texts and the human
    examples reduced by truncated SVD. The committee: students on bootstrap resamples of `human`, seeded
    by `committee_seed`. The LLM's distributions come from `answers`, by task id in `ids` order; without
    `answers` the Pool has none.
    """
    pool = Pool(proba=proba, multi_label=spec.multi_label)
    if needs & {"embeddings", "labelled_embeddings"}:
        given = embeddings if embeddings is not None else _diversity_embeddings(texts, human, vectors)
        pool.embeddings, pool.labelled_embeddings = given
    if "committee" in needs and len(human) >= 2:
        pool.committee = bootstrap_committee(spec, human, texts, seed=committee_seed, vectors=vectors)
    if "llm_proba" in needs and answers is not None:
        pool.llm_proba = llm_distributions(answers, ids, spec.labels)
    return pool


def _diversity_embeddings(
    texts: Sequence[str], human: Sequence[Example], vectors: TaskVectors | None
) -> tuple[np.ndarray, np.ndarray]:
    if vectors is not None:
        return vectors.pool, vectors.human
    embedded = svd_embeddings(list(texts) + [e.text for e in human])
    return embedded[: len(texts)], embedded[len(texts) :]
