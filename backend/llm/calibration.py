"""Calibrating confidences against human labels, and measuring how well they are calibrated. Pure.

A reviewer reads a pre-label's score as "the chance this label is right". These functions fit that
mapping on (raw confidence, was the LLM right) pairs from tasks humans have checked, and report the
expected calibration error (ECE) and the points of a reliability diagram. Where the LLM gave a label
distribution, DistributionCalibrator maps the whole distribution instead (temperature or vector scaling
on the log-probabilities), after backend.llm.bias has divided out the model's label prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold


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


# --- whole label distributions ----------------------------------------------------------------------
# Where the LLM gave a distribution over the labels (logprobs, single-label), the calibrator maps the whole
# distribution, so its argmax may change; the score is the calibrated probability of that argmax.

LOG_FLOOR = 1e-6  # probabilities below it are read as it: a label outside the top logprobs is unlikely, not impossible


def normalized_rows(distributions: np.ndarray) -> np.ndarray:
    """Rows clipped at 0 and scaled to sum to 1; an all-zero row becomes uniform."""
    matrix = np.clip(np.asarray(distributions, dtype=float), 0.0, None)
    if matrix.ndim != 2:
        raise ValueError(f"expected (items, labels) distributions, got shape {matrix.shape}")
    totals = matrix.sum(axis=1, keepdims=True)
    uniform = np.full_like(matrix, 1.0 / max(matrix.shape[1], 1))
    return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1.0), uniform)


def distribution_matrix(distributions: Sequence[Mapping[str, float]], labels: Sequence[str]) -> np.ndarray:
    """(items, labels) in `labels` order; a label a distribution leaves out has probability 0."""
    rows = [[float(d.get(label, 0.0)) for label in labels] for d in distributions]
    return normalized_rows(np.array(rows, dtype=float).reshape(len(rows), len(labels)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_loss(distributions: np.ndarray, truth: Sequence[int]) -> float:
    y = np.asarray(truth, dtype=int)
    if y.size == 0:
        return 0.0
    return float(-np.mean(np.log(np.clip(distributions[np.arange(y.size), y], LOG_FLOOR, 1.0))))


@dataclass(frozen=True)
class DistributionScore:
    accuracy: float | None  # of the argmax
    ece: float | None  # of the argmax's probability
    log_loss: float | None


def score_distributions(distributions: np.ndarray, truth: Sequence[int]) -> DistributionScore:
    y = np.asarray(truth, dtype=int)
    if y.size == 0:
        return DistributionScore(None, None, None)
    best = distributions.argmax(axis=1)
    right = best == y
    confidence = distributions[np.arange(y.size), best]
    return DistributionScore(float(right.mean()), expected_calibration_error(confidence, right),
                             log_loss(distributions, y))  # fmt: skip


def _fit_scaling(logp: np.ndarray, y: np.ndarray, vector: bool, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-label scale and bias (vector) or one shared scale (temperature) minimising the log-loss, by L-BFGS.
    The L2 penalty pulls vector scaling towards the identity (scale 1, bias 0), weaker as checks grow."""
    from scipy.optimize import minimize  # scikit-learn's own dependency

    n, k = logp.shape
    onehot = np.eye(k)[y]
    penalty = l2 / n

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if vector:
            return theta[:k], theta[k:]
        return np.full(k, np.exp(theta[0])), np.zeros(k)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = unpack(theta)
        p = _softmax(logp * scale + bias)
        loss = -np.sum(onehot * np.log(np.clip(p, 1e-300, 1.0))) / n
        residual = (p - onehot) / n
        if not vector:
            return float(loss), np.array([np.sum(residual * logp) * scale[0]])
        loss += penalty * (np.sum((scale - 1) ** 2) + np.sum(bias**2))
        grad = np.concatenate([np.sum(residual * logp, axis=0) + 2 * penalty * (scale - 1),
                               residual.sum(axis=0) + 2 * penalty * bias])  # fmt: skip
        return float(loss), grad

    if vector:
        start, bounds = np.concatenate([np.ones(k), np.zeros(k)]), [(0.0, 50.0)] * k + [(-50.0, 50.0)] * k
    else:
        start, bounds = np.zeros(1), [(np.log(0.02), np.log(50.0))]
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return unpack(result.x)


class DistributionCalibrator:
    """Maps a label distribution to a calibrated one: softmax(scale * log p + bias).

    `method`: "temperature" (one shared scale: fine from a few dozen checks), "vector" (a scale and a bias
    per label, L2 towards the identity: it can also move the argmax) or "auto": temperature below
    `vector_from` checks; from there, whichever of the two has the lower out-of-fold log-loss on the checks.
    Below `min_checks` checks, or with one label only among them, it is the identity. A fitted one is
    shrunk toward uniform by 1/(n+2) for n checks, like the student.
    """

    def __init__(self, method: str = "auto", min_checks: int = 20, vector_from: int = 100, l2: float = 1.0,
                 folds: int = 5, seed: int = 0) -> None:  # fmt: skip
        if method not in ("auto", "temperature", "vector"):
            raise ValueError(f"unknown distribution calibration method {method!r}")
        self.method = method
        self.min_checks = min_checks
        self.vector_from = vector_from
        self.l2 = l2
        self.folds = folds
        self.seed = seed
        self.method_: str | None = None
        self.n_checks_ = 0
        self.scale_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def fit(self, distributions: np.ndarray, truth: Sequence[int]) -> DistributionCalibrator:
        logp = np.log(np.clip(normalized_rows(distributions), LOG_FLOOR, 1.0))
        y = np.asarray(truth, dtype=int)
        if y.shape != (logp.shape[0],):
            raise ValueError(f"{logp.shape[0]} distributions but {y.size} labels")
        if y.size and (y.min() < 0 or y.max() >= logp.shape[1]):
            raise ValueError(f"label indices must lie in [0, {logp.shape[1]})")
        self.n_checks_, self.method_, self.scale_, self.bias_ = int(y.size), None, None, None
        if y.size < self.min_checks or np.unique(y).size < 2:
            return self
        method = self.method
        if method == "auto":
            method = "temperature" if y.size < self.vector_from else self._lower_out_of_fold_loss(logp, y)
        self.scale_, self.bias_ = _fit_scaling(logp, y, method == "vector", self.l2)
        self.method_ = method
        return self

    def _lower_out_of_fold_loss(self, logp: np.ndarray, y: np.ndarray) -> str:
        losses = {}
        for method in ("temperature", "vector"):
            out = np.empty_like(logp)
            for train, test in KFold(self.folds, shuffle=True, random_state=self.seed).split(logp):
                scale, bias = _fit_scaling(logp[train], y[train], method == "vector", self.l2)
                out[test] = _softmax(logp[test] * scale + bias)
            losses[method] = log_loss(out, y)
        return min(losses, key=lambda method: losses[method])

    def transform(self, distributions: np.ndarray) -> np.ndarray:
        matrix = normalized_rows(distributions)
        if self.method_ is None or self.scale_ is None or self.bias_ is None:
            return matrix
        calibrated = _softmax(np.log(np.clip(matrix, LOG_FLOOR, 1.0)) * self.scale_ + self.bias_)
        # shrunk toward uniform by 1/(n+2), as the student is: checks that all came out right (the scale
        # then runs to its bound) cannot make n checks claim certainty
        shrink = 1.0 / (self.n_checks_ + 2)
        return (1.0 - shrink) * calibrated + shrink / calibrated.shape[1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": 1, "method": self.method_, "n_checks": self.n_checks_}
        if self.scale_ is not None and self.bias_ is not None:
            out["scale"] = [float(v) for v in self.scale_]
            out["bias"] = [float(v) for v in self.bias_]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistributionCalibrator:
        """A calibrator of an unknown (newer) version loads as the identity rather than failing."""
        calibrator = cls()
        calibrator.n_checks_ = int(data.get("n_checks", 0))
        if data.get("version") == 1 and data.get("method") in ("temperature", "vector"):
            calibrator.scale_ = np.asarray(data["scale"], dtype=float)
            calibrator.bias_ = np.asarray(data["bias"], dtype=float)
            calibrator.method_ = data["method"]
        return calibrator


def cross_calibrated_distributions(
    distributions: np.ndarray, truth: Sequence[int], folds: int = 5, seed: int = 0, **calibrator: Any
) -> np.ndarray:
    """Each check's distribution calibrated by a calibrator fitted without it (the honest "after")."""
    matrix = normalized_rows(distributions)
    y = np.asarray(truth, dtype=int)
    out = matrix.copy()
    if y.size < 2:
        return out
    for train, test in KFold(min(folds, y.size), shuffle=True, random_state=seed).split(matrix):
        out[test] = DistributionCalibrator(**calibrator).fit(matrix[train], y[train]).transform(matrix[test])
    return out
