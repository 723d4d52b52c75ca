"""Dividing out the LLM's label prior, then calibrating whole label distributions. Pure.

A small model answering zero-shot leans towards some labels whatever the text (TREC-6 with SmolLM2 says
"description" for most questions), yet its distribution still ranks the right label higher on the items
where it is right. Batch calibration (Zhou et al. 2023; contextual calibration, Zhao et al. 2021) estimates
that lean as the mean distribution over many answered tasks, needing no human label, and divides it out:
p'(y|x) ∝ p(y|x) / prior(y). Once humans have checked enough answers, a DistributionCalibrator fitted on
them maps the corrected distribution to a calibrated one (backend.llm.calibration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.llm.calibration import DistributionCalibrator, distribution_matrix, normalized_rows

FLAT = 1e-6  # a distribution whose probabilities all lie within this of each other is flat


def informative(distribution: Mapping[str, float] | None) -> bool:
    """Whether a distribution says anything: a flat one (every label equally likely, as when the label's
    tokens were outside the top logprobs) has no argmax to take and would pull the prior towards uniform."""
    values = list((distribution or {}).values())
    return len(values) >= 2 and max(values) - min(values) > FLAT


class BatchCalibration:
    """The label prior: the mean of the label distributions over answered tasks (no human label read).

    Below `min_count` distributions the prior is not trusted and the correction is the identity; a label
    whose mean share falls below `floor` is divided by `floor` instead, so a label the model almost never
    names is not blown up by a near-zero denominator.
    """

    def __init__(self, floor: float = 0.01, min_count: int = 30) -> None:
        self.floor = floor
        self.min_count = min_count
        self.prior_: np.ndarray | None = None
        self.n_ = 0

    def fit(self, distributions: np.ndarray) -> BatchCalibration:
        matrix = normalized_rows(distributions)
        k = matrix.shape[1]
        if not 0 < self.floor < 1 / max(k, 1):
            raise ValueError(f"floor must lie in (0, 1/{k}), got {self.floor}")
        self.n_ = int(matrix.shape[0])
        self.prior_ = None
        if self.n_ >= max(self.min_count, 1):
            prior = np.maximum(matrix.mean(axis=0), self.floor)
            self.prior_ = prior / prior.sum()
        return self

    @property
    def applied(self) -> bool:
        return self.prior_ is not None

    def transform(self, distributions: np.ndarray) -> np.ndarray:
        matrix = normalized_rows(distributions)
        if self.prior_ is None:
            return matrix
        if matrix.shape[1] != self.prior_.size:
            raise ValueError(f"the prior has {self.prior_.size} labels, the distributions {matrix.shape[1]}")
        return normalized_rows(matrix / self.prior_)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "floor": self.floor, "min_count": self.min_count, "n": self.n_,
                "prior": None if self.prior_ is None else [float(v) for v in self.prior_]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchCalibration:
        """A prior of an unknown (newer) version loads as the identity rather than failing."""
        batch = cls(float(data.get("floor", 0.01)), int(data.get("min_count", 30)))
        batch.n_ = int(data.get("n", 0))
        if data.get("version") == 1 and data.get("prior") is not None:
            batch.prior_ = np.asarray(data["prior"], dtype=float)
        return batch


@dataclass(frozen=True)
class DistributionCalibration:
    """What pre-labels apply to an answer's label distribution: the prior divided out, then the calibrator
    fitted on human checks (the identity until there are enough), and the auto-accept threshold chosen on
    its calibrated scores."""

    labels: tuple[str, ...]
    prior: BatchCalibration
    calibrator: DistributionCalibrator
    threshold: float | None = None

    @property
    def calibrated(self) -> bool:
        return self.calibrator.method_ is not None

    @property
    def active(self) -> bool:
        return self.calibrated or self.prior.applied

    def transform(self, distributions: np.ndarray) -> np.ndarray:
        return self.calibrator.transform(self.prior.transform(distributions))

    def apply(self, distributions: Sequence[Mapping[str, float]]) -> list[tuple[str, float]]:
        """(label, probability) of each distribution's argmax after correction and calibration."""
        if not distributions:
            return []
        corrected = self.transform(distribution_matrix(distributions, self.labels))
        best = corrected.argmax(axis=1)
        return [(self.labels[i], float(row[i])) for i, row in zip(best, corrected, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "labels": list(self.labels), "prior": self.prior.to_dict(),
                "calibrator": self.calibrator.to_dict(), "threshold": self.threshold}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistributionCalibration | None:
        """None for anything but version 1 (an older model version has none: its answers keep the
        top-confidence path)."""
        if data.get("version") != 1 or not data.get("labels"):
            return None
        return cls(tuple(data["labels"]), BatchCalibration.from_dict(data.get("prior") or {}),
                   DistributionCalibrator.from_dict(data.get("calibrator") or {}), data.get("threshold"))  # fmt: skip
