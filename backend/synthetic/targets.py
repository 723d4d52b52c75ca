"""Where the student is weak: which labels (and which confused pairs) synthetic texts should be written for. Pure.

Weakness of a label mixes scarcity (few human labels compared with the best-covered label) and missed
recall on human-checked tasks (out-of-fold predictions, so the student is never graded on what it
trained on). A confused pair (true A predicted as B) asks for texts of A that are unmistakably not B.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    label: str
    contrast: str | None  # a label the student confuses it with, or None
    weakness: float  # 0 (fine) .. 2 (no labels and never recalled)
    reason: str

    def __str__(self) -> str:
        return f"{self.label} vs {self.contrast}" if self.contrast else self.label


def recall_by_label(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float | None]:
    """Share of each label's human-checked tasks the student got right; None where no task has it."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    totals = Counter(truth)
    hits = Counter(t for t, p in zip(truth, predicted, strict=True) if t == p)
    return {label: (hits[label] / totals[label] if totals[label] else None) for label in labels}


def confused_pairs(truth: Sequence[str], predicted: Sequence[str], min_count: int = 2) -> list[tuple[str, str, int]]:
    """(true, predicted, count) for mistakes seen at least `min_count` times, most frequent first."""
    mistakes = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    return sorted(((t, p, n) for (t, p), n in mistakes.items() if n >= min_count), key=lambda x: (-x[2], x[0], x[1]))


def weak_targets(
    labels: Sequence[str],
    counts: dict[str, int],
    recall: dict[str, float | None],
    pairs: Sequence[tuple[str, str, int]] = (),
    limit: int = 3,
) -> list[Target]:
    """Up to `limit` targets, weakest first: labels by scarcity plus missed recall, then confused pairs."""
    most = max([counts.get(label, 0) for label in labels] + [1])
    scored: list[Target] = []
    for label in labels:
        n = counts.get(label, 0)
        r = recall.get(label)
        scarcity = 1 - n / most
        missed = 1.0 if r is None else 1 - r
        parts = [f"{n} human labels (most: {most})"]
        parts.append("no checked tasks" if r is None else f"recall {r:.0%} on checked tasks")
        scored.append(Target(label, None, round(scarcity + missed, 4), ", ".join(parts)))
    scored.sort(key=lambda t: (-t.weakness, t.label))
    partner: dict[str, tuple[str, int]] = {}
    for true, predicted, n in pairs:  # most frequent first: the first partner seen is a label's worst
        partner.setdefault(true, (predicted, n))
    chosen: list[Target] = []
    for t in scored:
        if t.weakness <= 0 or len(chosen) >= limit:
            continue
        if t.label in partner:
            other, n = partner[t.label]
            t = Target(t.label, other, t.weakness, f"{t.reason}; {n} predicted as {other}")
        chosen.append(t)
    taken = {(t.label, t.contrast) for t in chosen}
    for true, predicted, n in pairs:  # confused pairs of labels that are otherwise fine
        if len(chosen) < limit and true in labels and predicted in labels and (true, predicted) not in taken:
            chosen.append(Target(true, predicted, 0.0, f"{n} checked {true} tasks predicted as {predicted}"))
            taken.add((true, predicted))
    return chosen
