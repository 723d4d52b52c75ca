"""What human labels say about the LLM's pre-labels: calibration, the auto-accept threshold, agreement. Pure.

Run at every retraining, on the tasks that have both an LLM answer and a human label (a "check").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from backend.labeling import Example
from backend.llm.annotator import StoredAnswer, scores_distribution
from backend.llm.bias import BatchCalibration, DistributionCalibration
from backend.llm.calibration import (
    Calibrator,
    DistributionCalibrator,
    cross_calibrated,
    cross_calibrated_distributions,
    distribution_matrix,
    expected_calibration_error,
    reliability,
    score_distributions,
)
from backend.llm.routing import agreement_by_label, auto_accept_threshold


def llm_checks(
    answers: Mapping[int, StoredAnswer],
    examples: Sequence[Example],
    labels: Sequence[str],
    target_precision: float = 0.95,
    min_checks: int = 20,
) -> dict[str, Any]:
    """A JSON-able report; `calibrator` is None until `min_checks` checks with both outcomes exist.

    `distribution` covers the answers that came with a label distribution (see distribution_checks); the
    rest of the report is about every answer's own label and top confidence.
    """
    checked = [(answers[e.task_id], e) for e in examples if e.task_id in answers]
    raw = [answer.confidence for answer, _ in checked]
    right = [set(answer.labels) == set(example.labels) for answer, example in checked]
    agreement = agreement_by_label([(a.labels, e.labels) for a, e in checked], labels)
    report: dict[str, Any] = {
        "checks": len(checked),
        "accuracy": sum(right) / len(right) if right else None,
        "agreement": [asdict(row) | {"precision": row.precision, "recall": row.recall} for row in agreement],
        "calibrator": None,
        "threshold": None,
        "target_precision": target_precision,
        "distribution": distribution_checks(answers, examples, labels, target_precision, min_checks),
    }
    if not checked:
        return report
    calibrator = Calibrator(min_checks=min_checks).fit(raw, right)
    after = cross_calibrated(raw, right) if calibrator.fitted_method else raw
    report["ece_raw"] = expected_calibration_error(raw, right)
    report["ece_calibrated"] = expected_calibration_error(after, right) if calibrator.fitted_method else None
    report["reliability_raw"] = [bin_.__dict__ for bin_ in reliability(raw, right)]
    report["reliability_calibrated"] = [bin_.__dict__ for bin_ in reliability(after, right)]
    if calibrator.fitted_method:
        report["calibrator"] = calibrator.to_dict()
        # chosen on out-of-fold calibrated scores: the gate is judged on scores it did not shape
        threshold = auto_accept_threshold(list(after), right, target_precision)
        report["threshold"] = threshold.value
        report["threshold_precision"] = threshold.precision
        report["threshold_support"] = threshold.support
    return report


def distribution_checks(
    answers: Mapping[int, StoredAnswer],
    examples: Sequence[Example],
    labels: Sequence[str],
    target_precision: float = 0.95,
    min_checks: int = 20,
) -> dict[str, Any] | None:
    """The label distributions checked three ways: raw, with the prior divided out, and calibrated (each
    check by a calibrator fitted without it), with accuracy, ECE and log-loss for each. None when no
    answer has a distribution.

    The prior is the mean over the unlabelled tasks' distributions (over all answered tasks while those
    are too few): it reads no human label. The auto-accept threshold is chosen on the out-of-fold
    calibrated scores, as `llm_checks` does for top confidences.
    """
    usable = {task: answer for task, answer in answers.items() if scores_distribution(answer)}
    if not usable:
        return None
    checked = [(usable[e.task_id], e) for e in examples
               if e.task_id in usable and len(e.labels) == 1 and e.labels[0] in labels]  # fmt: skip
    prior, prior_from = label_prior(usable, labels, {e.task_id for e in examples})
    truth = np.array([labels.index(e.labels[0]) for _, e in checked], dtype=int)
    raw = distribution_matrix([answer.distribution or {} for answer, _ in checked], labels)
    corrected = prior.transform(raw)
    calibrator = DistributionCalibrator(min_checks=min_checks).fit(corrected, truth)
    stages = {"raw": raw, "bias_corrected": corrected}
    if calibrator.method_:
        # the method chosen on all checks (one bit of selection), its parameters fitted out of fold
        stages["calibrated"] = cross_calibrated_distributions(corrected, truth, method=calibrator.method_,
                                                              min_checks=min_checks)  # fmt: skip
    report: dict[str, Any] = {
        "checks": len(checked),
        "prior_from": prior_from,
        "stages": {name: asdict(score_distributions(matrix, truth)) for name, matrix in stages.items()},
        "threshold": None,
    }
    if calibrator.method_:
        after = stages["calibrated"]
        best = after.argmax(axis=1)
        threshold = auto_accept_threshold(list(after[np.arange(truth.size), best]), list(best == truth),
                                          target_precision)  # fmt: skip
        report |= {"threshold": threshold.value, "threshold_precision": threshold.precision,
                   "threshold_support": threshold.support}  # fmt: skip
    calibration = DistributionCalibration(tuple(labels), prior, calibrator, report["threshold"])
    return report | {"calibration": calibration.to_dict()}


def label_prior(
    answers: Mapping[int, StoredAnswer], labels: Sequence[str], labelled: Collection[int] = ()
) -> tuple[BatchCalibration, int]:
    """The prior over the unlabelled tasks' distributions, or over all of them while those are too few;
    and how many distributions it is the mean of. Reads no human label."""
    usable = {task: answer for task, answer in answers.items() if scores_distribution(answer)}
    prior = BatchCalibration()
    unlabelled = [answer for task, answer in usable.items() if task not in labelled]
    source = unlabelled if len(unlabelled) >= prior.min_count else list(usable.values())
    return prior.fit(distribution_matrix([answer.distribution or {} for answer in source], labels)), len(source)


def prior_only(answers: Mapping[int, StoredAnswer], labels: Sequence[str]) -> DistributionCalibration:
    """Before any human check: the prior divided out, nothing calibrated, nothing auto-accepted."""
    return DistributionCalibration(tuple(labels), label_prior(answers, labels)[0], DistributionCalibrator())


def published_distribution_calibration(meta: Mapping[str, Any]) -> DistributionCalibration | None:
    """What a training run kept for answers with a label distribution; None in a model version from
    before distributions were calibrated (its answers keep the top-confidence path)."""
    section = (meta.get("llm_checks") or {}).get("distribution") or {}
    return DistributionCalibration.from_dict(section["calibration"]) if section.get("calibration") else None


def published_calibration(meta: Mapping[str, Any]) -> tuple[Calibrator | None, float | None]:
    """The LLM calibrator and auto-accept threshold a training run kept in its model version's metadata;
    (None, None) before there were enough checks."""
    checks = meta.get("llm_checks") or {}
    if not checks.get("calibrator"):
        return None, None
    return Calibrator.from_dict(checks["calibrator"]), checks.get("threshold")
