"""Routing pre-labels to review or auto-accept, and LLM-vs-human agreement. Pure.

A pre-label is an auto-accept candidate when its calibrated confidence reaches a threshold chosen on
human-checked tasks: the lowest threshold at which the auto-accepted share of those tasks is right at
least `target_precision` of the time, judged by a lower confidence bound rather than the raw rate, so
that twenty lucky checks cannot open the gate. With too few checks there is no threshold: everything
goes to review.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

REVIEW = "review"
AUTO_ACCEPT = "auto_accept"


def wilson_lower_bound(successes: int, trials: int, z: float = 1.645) -> float:
    """One-sided 95% lower bound on a success rate (Wilson score interval)."""
    if trials == 0:
        return 0.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre - margin) / denominator


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: no threshold meets the target; route everything to review
    precision: float | None  # measured precision of the checks at or above it
    lower_bound: float | None
    support: int  # checks at or above it
    checks: int  # all checks considered


def auto_accept_threshold(
    confidence: Sequence[float], correct: Sequence[bool], target_precision: float = 0.95, min_support: int = 20
) -> Threshold:
    """The lowest confidence t such that checks with confidence >= t are right with a lower bound >= target."""
    if len(confidence) != len(correct):
        raise ValueError(f"{len(confidence)} confidences but {len(correct)} outcomes")
    pairs = sorted(zip(confidence, correct, strict=True), key=lambda pair: -pair[0])
    best = Threshold(None, None, None, 0, len(pairs))
    hits = 0
    for i, (value, right) in enumerate(pairs, start=1):
        hits += bool(right)
        if i < len(pairs) and pairs[i][0] == value:
            continue  # ties enter together: a threshold cannot split them
        bound = wilson_lower_bound(hits, i)
        if i >= min_support and bound >= target_precision:
            best = Threshold(float(value), hits / i, bound, i, len(pairs))
    return best


def route(confidence: float | None, threshold: float | None) -> str:
    if confidence is None or threshold is None or confidence < threshold:
        return REVIEW
    return AUTO_ACCEPT


@dataclass(frozen=True)
class LabelAgreement:
    label: str
    predicted: int  # times the LLM gave this label on a human-checked task
    agreed: int  # ... and the human gave it too
    human: int  # times humans gave this label where the LLM had answered

    @property
    def precision(self) -> float | None:
        return self.agreed / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.agreed / self.human if self.human else None


def agreement_by_label(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]], labels: Sequence[str]
) -> list[LabelAgreement]:
    """(LLM labels, human labels) per checked task -> per-label agreement, in config order."""
    predicted: Counter[str] = Counter()
    human: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    for llm, person in pairs:
        predicted.update(set(llm))
        human.update(set(person))
        agreed.update(set(llm) & set(person))
    return [LabelAgreement(label, predicted[label], agreed[label], human[label]) for label in labels]
