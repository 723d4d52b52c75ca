"""How the student does on human-checked tasks, out of fold, and whether synthetic tasks help it. No I/O.

Synthetic tasks are only ever training data here: every score is measured on real (imported) tasks a
human labelled, so texts the LLM wrote can never grade themselves.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold

from backend.labeling import Example, TaskSpec
from backend.student import StudentModel
from backend.synthetic.targets import Target, confused_pairs, recall_by_label, weak_targets

ASSESS_AT_MOST = 3000  # real examples graded out of fold when picking targets


def out_of_fold(spec: TaskSpec, real: Sequence[Example], extra: Sequence[Example] = (), folds: int = 5,
                seed: int = 0) -> list[tuple[str, ...] | None]:  # fmt: skip
    """Each real example's predicted labels from a student that did not train on it (None where a fold's
    training part had fewer than two classes). `extra` joins every training part, never a test part."""
    predicted: list[tuple[str, ...] | None] = [None] * len(real)
    if len(real) < 2:
        return predicted
    splitter = KFold(n_splits=min(folds, len(real)), shuffle=True, random_state=seed)
    for train, test in splitter.split(np.arange(len(real))):
        training = [real[i] for i in train] + list(extra)
        if len({label for e in training for label in e.labels}) < 2:
            continue
        model = StudentModel(spec.labels, spec.multi_label)
        model.fit([e.text for e in training], [e.labels for e in training])
        for i, guess in zip(test, model.predict([real[i].text for i in test]), strict=True):
            predicted[i] = guess.labels
    return predicted


def weakest(spec: TaskSpec, real: Sequence[Example], labelled_synthetic: Sequence[Example] = (), limit: int = 3,
            seed: int = 0) -> list[Target]:  # fmt: skip
    """The targets synthetic texts should be written for, from human labels of real tasks (and the
    synthetic tasks humans labelled, which count toward a label's coverage but are never graded)."""
    counts = Counter(label for e in [*real, *labelled_synthetic] for label in e.labels)
    if len(real) > ASSESS_AT_MOST:  # recall per label is steady long before; five fits on 100k labels are not
        real = random.Random(seed).sample(list(real), ASSESS_AT_MOST)
    predicted = out_of_fold(spec, real, labelled_synthetic, seed=seed)
    graded = [(e, p) for e, p in zip(real, predicted, strict=True) if p is not None]
    if spec.multi_label:  # recall per label over tasks that have it; no pairs
        recall: dict[str, float | None] = {}
        for label in spec.labels:
            having = [p for e, p in graded if label in e.labels]
            recall[label] = sum(label in p for p in having) / len(having) if having else None
        return weak_targets(spec.labels, dict(counts), recall, (), limit)
    truth = [e.labels[0] for e, _ in graded]
    guess = [p[0] for _, p in graded]
    return weak_targets(spec.labels, dict(counts), recall_by_label(truth, guess, spec.labels),
                        confused_pairs(truth, guess), limit)  # fmt: skip


@dataclass(frozen=True)
class SyntheticEffect:
    real: int
    synthetic: int
    accuracy_without: float | None
    accuracy_with: float | None

    def line(self) -> str:
        if self.accuracy_without is None or self.accuracy_with is None:
            return (f"synthetic effect: not measurable yet ({self.real} human-labelled real tasks, "
                    f"{self.synthetic} human-labelled synthetic)")  # fmt: skip
        delta = self.accuracy_with - self.accuracy_without
        return (f"student accuracy on {self.real} human-labelled real tasks, out of fold: "
                f"{self.accuracy_without:.3f} without, {self.accuracy_with:.3f} with {self.synthetic} human-labelled "
                f"synthetic tasks ({delta:+.3f})")  # fmt: skip


def synthetic_effect(
    spec: TaskSpec, real: Sequence[Example], synthetic: Sequence[Example], seed: int = 0
) -> SyntheticEffect:
    """Out-of-fold accuracy on the real tasks, trained without and with the human-labelled synthetic tasks
    (the same folds both times)."""

    def accuracy(predicted: list[tuple[str, ...] | None]) -> float | None:
        graded = [(e, p) for e, p in zip(real, predicted, strict=True) if p is not None]
        return sum(set(e.labels) == set(p) for e, p in graded) / len(graded) if graded else None

    if not synthetic or len(real) < 4:
        return SyntheticEffect(len(real), len(synthetic), None, None)
    return SyntheticEffect(len(real), len(synthetic), accuracy(out_of_fold(spec, real, (), seed=seed)),
                           accuracy(out_of_fold(spec, real, synthetic, seed=seed)))  # fmt: skip
