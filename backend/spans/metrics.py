"""How right predicted spans are against human ones: entity-level scores and calibration. Pure.

Entity level and exact, as CoNLL and WNUT score NER: a predicted span counts only when its start, end and
label all equal a gold span's; a right span with the wrong type, or one token short, is one false
positive and one false negative. Texts are compared task by task, so `gold[i]` and `predicted[i]` are
the span lists of the same task.

Calibration is at the span level: each predicted span's score against whether it is right. That is the
precision side only: a missed entity has no predicted span and no score, so a reviewer who cares about
misses reads `whole_set_matches` (a task is right only when its whole span set equals the human one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.llm.calibration import ReliabilityBin, expected_calibration_error, reliability
from backend.spans.span import Span


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int  # gold spans
    predicted: int
    correct: int


def prf(correct: int, predicted: int, support: int) -> PRF:
    """Precision, recall and F1 from counts. With nothing to find and nothing found all three are 1; a
    ratio whose denominator is 0 otherwise is 0 (no prediction has no precision to credit)."""
    if predicted == support == 0:
        return PRF(1.0, 1.0, 1.0, 0, 0, 0)
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2.0 * correct / (predicted + support)
    return PRF(precision, recall, f1, support, predicted, correct)


@dataclass(frozen=True)
class SpanScores:
    micro: PRF
    per_label: dict[str, PRF]

    @property
    def macro_f1(self) -> float:
        """The unweighted mean F1 over the labels seen in gold or predictions."""
        return float(np.mean([s.f1 for s in self.per_label.values()])) if self.per_label else 1.0


def _keys(spans: Sequence[Span]) -> set[tuple[int, int, str]]:
    return {span.key for span in spans}


def _check_paired(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold tasks but {len(predicted)} predicted ones")


def span_scores(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> SpanScores:
    """Micro-averaged and per-label exact-match precision, recall and F1 over all tasks."""
    _check_paired(gold, predicted)
    support: Counter[str] = Counter()
    guessed: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        wanted, given = _keys(gold_spans), _keys(predicted_spans)
        support.update(label for _, _, label in wanted)
        guessed.update(label for _, _, label in given)
        hits.update(label for _, _, label in wanted & given)
    labels = sorted(set(support) | set(guessed))
    per_label = {label: prf(hits[label], guessed[label], support[label]) for label in labels}
    micro = prf(sum(hits.values()), sum(guessed.values()), sum(support.values()))
    return SpanScores(micro, per_label)


def task_f1(gold_spans: Sequence[Span], predicted_spans: Sequence[Span]) -> float:
    """One task's exact-match span F1 (1 when neither side has a span)."""
    wanted, given = _keys(gold_spans), _keys(predicted_spans)
    return prf(len(wanted & given), len(given), len(wanted)).f1


def whole_set_matches(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> list[bool]:
    """Per task: is the predicted span set exactly the human one (no span missing, wrong or extra)?"""
    _check_paired(gold, predicted)
    return [_keys(g) == _keys(p) for g, p in zip(gold, predicted, strict=True)]


def scored_outcomes(
    gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]
) -> tuple[np.ndarray, np.ndarray]:
    """(score, right) for every predicted span, over all tasks; every predicted span must have a score."""
    _check_paired(gold, predicted)
    scores, right = [], []
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        wanted = _keys(gold_spans)
        for span in predicted_spans:
            if span.score is None:
                raise ValueError(f"span {span.start}..{span.end} {span.label} has no score")
            scores.append(span.score)
            right.append(span.key in wanted)
    return np.asarray(scores, dtype=float), np.asarray(right, dtype=bool)


@dataclass(frozen=True)
class SpanCalibration:
    spans: int
    precision: float  # share of predicted spans that are right
    mean_score: float
    ece: float
    table: list[ReliabilityBin]


def span_calibration(
    gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]], bins: int = 10
) -> SpanCalibration:
    """Span-level expected calibration error and reliability table (equal-width bins)."""
    scores, right = scored_outcomes(gold, predicted)
    if scores.size == 0:
        return SpanCalibration(0, 0.0, 0.0, 0.0, [])
    return SpanCalibration(
        spans=int(scores.size),
        precision=float(right.mean()),
        mean_score=float(scores.mean()),
        ece=expected_calibration_error(scores, right, bins),
        table=reliability(scores, right, bins),
    )
