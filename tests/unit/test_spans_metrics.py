"""Entity-level span scores, whole-task agreement and span calibration, on cases worked out by hand."""

from __future__ import annotations

import pytest

from backend.spans import Span
from backend.spans.metrics import prf, span_calibration, span_scores, task_f1, whole_set_matches

TEXT = "Tim went to Paris with Apple staff and more words here"


def _span(start: int, end: int, label: str, score: float | None = None) -> Span:
    return Span(start, end, label, TEXT[start:end], score)


GOLD = [
    [_span(0, 3, "PER"), _span(12, 17, "LOC")],
    [_span(23, 28, "ORG")],
    [],
]
PREDICTED = [
    [_span(0, 3, "PER", 0.9), _span(12, 16, "LOC", 0.6), _span(29, 34, "ORG", 0.2)],  # right, one short, extra
    [_span(23, 28, "PER", 0.7)],  # the right stretch, the wrong type
    [],
]


def test_micro_and_per_label_scores_count_exact_span_and_type_only() -> None:
    scores = span_scores(GOLD, PREDICTED)
    micro = scores.micro
    assert (micro.correct, micro.predicted, micro.support) == (1, 4, 3)
    assert micro.precision == pytest.approx(0.25)
    assert micro.recall == pytest.approx(1 / 3)
    assert micro.f1 == pytest.approx(2 / 7)
    assert sorted(scores.per_label) == ["LOC", "ORG", "PER"]
    per = scores.per_label["PER"]
    assert (per.precision, per.recall, per.f1) == pytest.approx((0.5, 1.0, 2 / 3))
    assert scores.per_label["LOC"].f1 == 0.0 and scores.per_label["ORG"].f1 == 0.0
    assert scores.macro_f1 == pytest.approx(2 / 9)


def test_the_edge_cases_of_empty_sides() -> None:
    assert prf(0, 0, 0).f1 == 1.0  # nothing to find, nothing found
    assert (prf(0, 0, 3).precision, prf(0, 0, 3).recall, prf(0, 0, 3).f1) == (0.0, 0.0, 0.0)
    assert (prf(0, 2, 0).precision, prf(0, 2, 0).recall) == (0.0, 0.0)
    assert span_scores([[]], [[]]).micro.f1 == 1.0


def test_task_f1_and_whole_set_agreement() -> None:
    assert task_f1(GOLD[0], PREDICTED[0]) == pytest.approx(2 * 1 / (3 + 2))
    assert task_f1([], []) == 1.0
    assert task_f1([], PREDICTED[1]) == 0.0
    assert whole_set_matches(GOLD, PREDICTED) == [False, False, True]
    rescored = [[s.with_score(0.1) for s in GOLD[0]]]
    assert whole_set_matches(GOLD[:1], rescored) == [True]  # scores are not part of the comparison


def test_span_calibration_bins_each_predicted_span_against_being_right() -> None:
    calibration = span_calibration(GOLD, PREDICTED)
    assert calibration.spans == 4
    assert calibration.precision == pytest.approx(0.25)
    assert calibration.mean_score == pytest.approx(0.6)
    # bins of width 0.1: 0.9 right (0.1 off), 0.6, 0.2 and 0.7 wrong: (0.1 + 0.6 + 0.2 + 0.7) / 4
    assert calibration.ece == pytest.approx(0.4)
    assert [(b.count, b.accuracy) for b in calibration.table] == [(1, 0.0), (1, 0.0), (1, 0.0), (1, 1.0)]
    assert span_calibration([[]], [[]]).spans == 0


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 gold tasks but 1 predicted"):
        span_scores([[], []], [[]])
    with pytest.raises(ValueError, match="has no score"):
        span_calibration(GOLD[:1], [[_span(0, 3, "PER")]])
