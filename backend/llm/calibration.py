"""Calibrating confidences against human labels, and measuring how well they are calibrated. Pure.

A reviewer reads a pre-label's score as "the chance this label is right". These functions fit that
mapping on (raw confidence, was the LLM right) pairs from tasks humans have checked, and report the
expected calibration error (ECE) and the points of a reliability diagram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; empty bins are left out."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.size} confidences but {hit.size} outcomes")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(ReliabilityBin(edges[b], edges[b + 1], int(mask.sum()), float(conf[mask].mean()),
                                      float(hit[mask].mean())))  # fmt: skip
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Sum over bins of (bin share) x |accuracy - mean confidence|; 0 is perfectly calibrated."""
    table = reliability(confidence, correct, bins)
    total = sum(b.count for b in table)
    if total == 0:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in table))


class Calibrator:
    """Maps a raw confidence to a calibrated probability of being right.

    `method`: "isotonic" (monotone, flexible, wants a few hundred checks), "platt" (a logistic curve
    on the logit, two parameters: fine from ~30 checks) or "auto" (Platt below `isotonic_from` checks).
    Before it is fitted, or with too few checks or only one outcome, it is the identity.
    """

    def __init__(self, method: str = "auto", min_checks: int = 20, isotonic_from: int = 300) -> None:
        if method not in ("auto", "isotonic", "platt"):
            raise ValueError(f"unknown calibration method {method!r}")
        self.method = method
        self.min_checks = min_checks
        self.isotonic_from = isotonic_from
        self.fitted_method: str | None = None
        self.n_checks = 0
        self._isotonic: IsotonicRegression | None = None
        self._platt: LogisticRegression | None = None

    def fit(self, confidence: Sequence[float], correct: Sequence[bool]) -> Calibrator:
        conf = np.clip(np.asarray(confidence, dtype=float), 1e-6, 1 - 1e-6)
        hit = np.asarray(correct, dtype=int)
        self.n_checks = int(conf.size)
        self.fitted_method = None
        if conf.size < self.min_checks or np.unique(hit).size < 2:
            return self
        method = self.method
        if method == "auto":
            method = "isotonic" if conf.size >= self.isotonic_from else "platt"
        if method == "isotonic":
            self._isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf, hit)
        else:
            logit = np.log(conf / (1 - conf)).reshape(-1, 1)
            self._platt = LogisticRegression(C=1.0).fit(logit, hit)
        self.fitted_method = method
        return self

    def transform(self, confidence: Sequence[float]) -> np.ndarray:
        conf = np.clip(np.asarray(confidence, dtype=float), 1e-6, 1 - 1e-6)
        if self.fitted_method == "isotonic" and self._isotonic is not None:
            return np.asarray(self._isotonic.predict(conf), dtype=float)
        if self.fitted_method == "platt" and self._platt is not None:
            return self._platt.predict_proba(np.log(conf / (1 - conf)).reshape(-1, 1))[:, 1]
        return conf

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (kept in a model version's metadata): the isotonic steps or Platt's two numbers."""
        out: dict[str, Any] = {"method": self.fitted_method, "n_checks": self.n_checks}
        if self.fitted_method == "isotonic" and self._isotonic is not None:
            out["x"] = [float(v) for v in self._isotonic.X_thresholds_]
            out["y"] = [float(v) for v in self._isotonic.y_thresholds_]
        elif self.fitted_method == "platt" and self._platt is not None:
            out["a"] = float(self._platt.coef_[0, 0])
            out["b"] = float(self._platt.intercept_[0])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        calibrator = cls()
        calibrator.n_checks = int(data.get("n_checks", 0))
        method = data.get("method")
        if method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            x, y = np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
            iso.fit(x, y)  # refitting on its own steps reproduces them exactly
            calibrator._isotonic, calibrator.fitted_method = iso, "isotonic"
        elif method == "platt":
            platt = LogisticRegression()
            platt.classes_ = np.array([0, 1])
            platt.coef_ = np.array([[float(data["a"])]])
            platt.intercept_ = np.array([float(data["b"])])
            calibrator._platt, calibrator.fitted_method = platt, "platt"
        return calibrator


def cross_calibrated(
    confidence: Sequence[float], correct: Sequence[bool], folds: int = 5, method: str = "auto", seed: int = 0
) -> np.ndarray:
    """Each check's confidence calibrated by a calibrator that did not see it: an honest "after" for ECE.

    Fitting and measuring on the same checks would report a calibration error that new tasks do not get.
    """
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=int)
    out = conf.copy()
    folds = min(folds, int(np.bincount(hit, minlength=2).min())) if hit.size else 0
    if folds < 2:
        return out
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(conf.reshape(-1, 1), hit):
        out[test] = Calibrator(method).fit(conf[train], hit[train]).transform(conf[test])
    return out
