"""What human labels say about the LLM's pre-labels: calibration, the auto-accept threshold, agreement. Pure.

Run at every retraining, on the tasks that have both an LLM answer and a human label (a "check").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from backend.labeling import Example
from backend.llm.annotator import StoredAnswer
from backend.llm.calibration import Calibrator, cross_calibrated, expected_calibration_error, reliability
from backend.llm.routing import agreement_by_label, auto_accept_threshold


def llm_checks(
    answers: Mapping[int, StoredAnswer],
    examples: Sequence[Example],
    labels: Sequence[str],
    target_precision: float = 0.95,
    min_checks: int = 20,
) -> dict[str, Any]:
    """A JSON-able report; `calibrator` is None until `min_checks` checks with both outcomes exist."""
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


def published_calibration(meta: Mapping[str, Any]) -> tuple[Calibrator | None, float | None]:
    """The LLM calibrator and auto-accept threshold a training run kept in its model version's metadata;
    (None, None) before there were enough checks."""
    checks = meta.get("llm_checks") or {}
    if not checks.get("calibrator"):
        return None, None
    return Calibrator.from_dict(checks["calibrator"]), checks.get("threshold")
