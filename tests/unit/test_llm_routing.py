from __future__ import annotations

import pytest

from backend.llm.routing import (
    AUTO_ACCEPT,
    REVIEW,
    agreement_by_label,
    auto_accept_threshold,
    route,
    wilson_lower_bound,
)


def test_wilson_bound_is_below_the_rate_and_tightens_with_trials() -> None:
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(20, 20) < 1.0
    assert wilson_lower_bound(20, 20) < wilson_lower_bound(200, 200) < wilson_lower_bound(2000, 2000)
    assert wilson_lower_bound(90, 100) < 0.9


def test_threshold_is_the_lowest_that_keeps_precision_above_target() -> None:
    # 300 checks at high confidence, all right; 100 at middling confidence, half right
    confidence = [0.99] * 300 + [0.6] * 100
    correct = [True] * 300 + [i % 2 == 0 for i in range(100)]
    found = auto_accept_threshold(confidence, correct, target_precision=0.95)
    assert found.value == 0.99
    assert found.support == 300 and found.precision == 1.0
    assert found.lower_bound is not None and found.lower_bound >= 0.95
    # a looser target admits the middle group as well
    loose = auto_accept_threshold(confidence, correct, target_precision=0.7)
    assert loose.value == 0.6 and loose.support == 400


def test_no_threshold_with_too_few_checks_or_a_model_that_is_often_wrong() -> None:
    assert auto_accept_threshold([0.99] * 10, [True] * 10).value is None  # lucky, but only 10 checks
    wrong = auto_accept_threshold([0.95] * 200, [i % 5 != 0 for i in range(200)])  # 80% right
    assert wrong.value is None and wrong.checks == 200
    with pytest.raises(ValueError, match="2 confidences but 1"):
        auto_accept_threshold([0.1, 0.2], [True])


def test_ties_are_never_split() -> None:
    # 100 right at 0.9 and 100 at 0.8 of which 20 wrong: a threshold of 0.8 must take all 200
    confidence = [0.9] * 100 + [0.8] * 100
    correct = [True] * 100 + [i >= 20 for i in range(100)]
    found = auto_accept_threshold(confidence, correct, target_precision=0.95)
    assert found.value == 0.9 and found.support == 100


def test_route() -> None:
    assert route(0.97, 0.95) == AUTO_ACCEPT
    assert route(0.95, 0.95) == AUTO_ACCEPT
    assert route(0.94, 0.95) == REVIEW
    assert route(0.99, None) == REVIEW  # no threshold yet: a human looks at everything
    assert route(None, 0.5) == REVIEW


def test_agreement_by_label() -> None:
    pairs = [(("A",), ("A",)), (("A",), ("B",)), (("B",), ("B",)), (("A", "C"), ("C",))]
    table = {row.label: row for row in agreement_by_label(pairs, ["A", "B", "C", "D"])}
    assert (table["A"].predicted, table["A"].agreed, table["A"].human) == (3, 1, 1)
    assert table["A"].precision == pytest.approx(1 / 3) and table["A"].recall == 1.0
    assert table["B"].precision == 1.0 and table["B"].recall == 0.5
    assert table["C"].precision == 1.0
    assert table["D"].precision is None and table["D"].recall is None
