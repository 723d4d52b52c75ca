"""Query strategies for span tasks: which unlabelled texts a human should tag next. Pure.

In the style of backend.selection.strategies (and small-text): one class per strategy, each declaring the
`SequencePool` fields it `needs` and the task shape it `supports` (`spans`), and `rank(pool, n, rng)`
returning task indices, most useful first, ties broken at random by `rng`, NaN scores last. A
classification `Pool` holds one probability row per task; a sequence pool holds per-task arrays of
different lengths (token marginals) and the student's and LLM's span sets, so it is a pool of its own.
Wiring these into the rank job, beside the diversity strategies that work on task embeddings whatever
the kind, is the task-kind seam's job.

Every score is "higher is more uncertain":

- `mnlp`: maximum normalised log-probability (Shen et al., 2017, "Deep Active Learning for Named Entity
  Recognition", ICLR 2018): minus the best tag sequence's log-probability divided by the number of tokens,
  so long texts are not favoured merely for being long, as plain least confidence favours them.
- `sequence_least_confidence`: 1 - P(best sequence) (Culotta & McCallum, 2005), MNLP without the
  normalisation, for comparison.
- `total_token_entropy` / `mean_token_entropy`: the sum, or the mean, over tokens of the entropy of each
  token's tag marginal (Settles & Craven, 2008, "An Analysis of Active Learning Strategies for Sequence
  Labeling Tasks": total token entropy; the mean is its length-normalised form), each token's entropy
  divided by log(number of tags) so a uniform token counts 1.
- `least_confident_span`: 1 - the lowest confidence among the predicted spans; a text with no predicted
  span scores 0 (nothing predicted to doubt: its misses are what MNLP and entropy see).
- `span_disagreement`: 1 - the span F1 between the student's and the LLM's span sets, query by committee
  with the two as the committee (Seung et al., 1992); NaN (ranked last) where the LLM gave no answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import entr

from backend.selection.strategies import top_indices
from backend.spans.metrics import task_f1
from backend.spans.span import Span

SPANS = "spans"  # the task shape: named entities on a text


@dataclass
class SequencePool:
    """What a span strategy may look at; every field is over the same n unlabelled tasks, in one order."""

    marginals: Sequence[np.ndarray] | None = None  # per task, (tokens, tags) token tag marginals
    sequence_logprob: np.ndarray | None = None  # (n,) log P(best tag sequence)
    lengths: np.ndarray | None = None  # (n,) tokens per task (taken from marginals when not given)
    span_scores: Sequence[np.ndarray] | None = None  # per task, the predicted spans' confidences
    student_spans: Sequence[Sequence[Span]] | None = None
    llm_spans: Sequence[Sequence[Span] | None] | None = None  # None where the LLM gave no answer

    @classmethod
    def from_outputs(cls, outputs: Sequence, llm_spans: Sequence[Sequence[Span] | None] | None = None) -> SequencePool:
        """A pool from the student's `analyse` outputs (backend.spans.crf.SequenceOutput)."""
        return cls(
            marginals=[o.marginals for o in outputs],
            sequence_logprob=np.array([o.sequence_logprob for o in outputs], dtype=float),
            lengths=np.array([len(o.tokens) for o in outputs], dtype=float),
            span_scores=[np.array([s.score for s in o.spans], dtype=float) for o in outputs],
            student_spans=[o.spans for o in outputs],
            llm_spans=llm_spans,
        )

    def token_lengths(self) -> np.ndarray:
        if self.lengths is not None:
            return np.asarray(self.lengths, dtype=float)
        if self.marginals is None:
            raise ValueError("the pool has neither lengths nor marginals")
        return np.array([len(m) for m in self.marginals], dtype=float)

    @property
    def size(self) -> int:
        fields = ("marginals", "sequence_logprob", "lengths", "span_scores", "student_spans", "llm_spans")
        sizes = {name: len(value) for name in fields if (value := getattr(self, name)) is not None}
        if not sizes:
            raise ValueError("the SequencePool has no fields, so its size is unknown")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the SequencePool's fields disagree on the number of tasks: {sizes}")
        return next(iter(sizes.values()))

    def require(self, needed: frozenset[str], strategy: str) -> None:
        missing = sorted(name for name in needed if getattr(self, name) is None)
        if missing:
            raise ValueError(f"strategy {strategy!r} needs SequencePool field(s) {', '.join(missing)}")


# --- per-task scores ---------------------------------------------------------------------------------------


def mnlp(sequence_logprob: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """-log P(best sequence) / tokens; NaN for a task without tokens."""
    lengths = np.asarray(lengths, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lengths > 0, -np.asarray(sequence_logprob, dtype=float) / lengths, np.nan)


def sequence_least_confidence(sequence_logprob: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """1 - P(best sequence); NaN for a task without tokens."""
    lengths = np.asarray(lengths, dtype=float)
    return np.where(lengths > 0, 1.0 - np.exp(np.asarray(sequence_logprob, dtype=float)), np.nan)


def token_entropies(marginals: np.ndarray) -> np.ndarray:
    """Each token's tag entropy divided by log(tags): 0 when sure, 1 when uniform."""
    if marginals.shape[1] < 2:
        return np.zeros(len(marginals))
    return entr(marginals).sum(axis=1) / np.log(marginals.shape[1])


def total_token_entropy(marginals: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of the normalised token entropies; NaN for a task without tokens."""
    return np.array([token_entropies(m).sum() if len(m) else np.nan for m in marginals])


def mean_token_entropy(marginals: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the normalised token entropies; NaN for a task without tokens."""
    return np.array([token_entropies(m).mean() if len(m) else np.nan for m in marginals])


def least_confident_span(span_scores: Sequence[np.ndarray]) -> np.ndarray:
    """1 - the lowest span confidence of each task; 0 for a task with no predicted span."""
    return np.array([1.0 - float(np.min(s)) if len(s) else 0.0 for s in span_scores])


def span_disagreement(
    student_spans: Sequence[Sequence[Span]], llm_spans: Sequence[Sequence[Span] | None]
) -> np.ndarray:
    """1 - span F1 between the student's and the LLM's spans (0 when both found nothing); NaN without an
    LLM answer."""
    if len(student_spans) != len(llm_spans):
        raise ValueError(f"{len(student_spans)} student span sets but {len(llm_spans)} LLM ones")
    return np.array([np.nan if llm is None else 1.0 - task_f1(llm, student)
                     for student, llm in zip(student_spans, llm_spans, strict=True)])  # fmt: skip


# --- strategies -------------------------------------------------------------------------------------------


class _SequenceStrategy:
    """Scores each task on its own; the top n are the batch."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    supports: ClassVar[frozenset[str]] = frozenset({SPANS})

    def scores(self, pool: SequencePool) -> np.ndarray:
        raise NotImplementedError

    def rank(self, pool: SequencePool, n: int, rng: np.random.Generator) -> np.ndarray:
        pool.require(self.needs, self.name)
        n = min(int(n), pool.size)
        if n <= 0:
            return np.empty(0, dtype=np.intp)
        return np.asarray(top_indices(self.scores(pool), n, rng), dtype=np.intp)


class SequenceRandom(_SequenceStrategy):
    """The baseline: a random permutation."""

    name: ClassVar[str] = "random"
    needs: ClassVar[frozenset[str]] = frozenset()

    def rank(self, pool: SequencePool, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(pool.size)[: max(0, min(int(n), pool.size))].astype(np.intp)


class MNLP(_SequenceStrategy):
    """Shen et al. (2017): the lowest length-normalised log-probability of the best tag sequence first."""

    name: ClassVar[str] = "mnlp"
    needs: ClassVar[frozenset[str]] = frozenset({"sequence_logprob"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return mnlp(pool.sequence_logprob, pool.token_lengths())  # type: ignore[arg-type]


class SequenceLeastConfidence(_SequenceStrategy):
    """Culotta & McCallum (2005): the least likely best sequence first (favours long texts)."""

    name: ClassVar[str] = "sequence_least_confidence"
    needs: ClassVar[frozenset[str]] = frozenset({"sequence_logprob"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return sequence_least_confidence(pool.sequence_logprob, pool.token_lengths())  # type: ignore[arg-type]


class TotalTokenEntropy(_SequenceStrategy):
    """Settles & Craven (2008): the largest sum of token tag entropies first."""

    name: ClassVar[str] = "total_token_entropy"
    needs: ClassVar[frozenset[str]] = frozenset({"marginals"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return total_token_entropy(pool.marginals)  # type: ignore[arg-type]


class MeanTokenEntropy(_SequenceStrategy):
    """Token entropy normalised by length: the most uncertain tokens on average first."""

    name: ClassVar[str] = "mean_token_entropy"
    needs: ClassVar[frozenset[str]] = frozenset({"marginals"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return mean_token_entropy(pool.marginals)  # type: ignore[arg-type]


class LeastConfidentSpan(_SequenceStrategy):
    """The task whose least sure predicted span is least sure first."""

    name: ClassVar[str] = "least_confident_span"
    needs: ClassVar[frozenset[str]] = frozenset({"span_scores"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return least_confident_span(pool.span_scores)  # type: ignore[arg-type]


class SpanDisagreement(_SequenceStrategy):
    """Where the student's and the LLM's span sets differ most (1 - span F1) first."""

    name: ClassVar[str] = "span_disagreement"
    needs: ClassVar[frozenset[str]] = frozenset({"student_spans", "llm_spans"})

    def scores(self, pool: SequencePool) -> np.ndarray:
        return span_disagreement(pool.student_spans, pool.llm_spans)  # type: ignore[arg-type]


_ALL = (SequenceRandom, MNLP, SequenceLeastConfidence, TotalTokenEntropy, MeanTokenEntropy, LeastConfidentSpan,
        SpanDisagreement)  # fmt: skip
SEQUENCE_STRATEGIES: dict[str, Callable[[], _SequenceStrategy]] = {cls.name: cls for cls in _ALL}
