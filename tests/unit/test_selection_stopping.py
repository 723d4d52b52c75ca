from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from backend.selection.stopping import (
    Round,
    Signal,
    StoppingConfig,
    accuracy_plateau,
    cohen_kappa,
    dollar_budget,
    evaluate,
    gain_per_dollar,
    label_budget,
    overall_confidence,
    should_stop,
    stabilizing_predictions,
)


def _by_name(signals: list[Signal]) -> dict[str, Signal]:
    return {signal.name: signal for signal in signals}


def test_cohen_kappa_matches_scikit_learn_and_handles_constant_labellings() -> None:
    rng = np.random.default_rng(0)
    first = rng.choice(["a", "b", "c"], size=200)
    second = np.where(rng.random(200) < 0.8, first, rng.choice(["a", "b", "c"], size=200))
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))
    assert cohen_kappa(["a"] * 5, ["a"] * 5) == 1.0
    with pytest.raises(ValueError, match="same length"):
        cohen_kappa(["a", "b"], ["a"])


def test_stabilizing_predictions_trigger_only_after_k_stable_rounds() -> None:
    config = StoppingConfig(kappa_threshold=0.99, kappa_rounds=3)
    stop_set = np.array(["x", "y", "z"] * 100)
    changed = stop_set.copy()
    changed[:30] = "z"  # a model that still moves 10% of the stop set
    history = [Round(labels=100, stop_set_predictions=changed)]
    for round_number in range(1, 5):
        history.append(Round(labels=100 + 20 * round_number, stop_set_predictions=stop_set))
        signal = stabilizing_predictions(history, config)
        if round_number < 4:  # fewer than 3 successive pairs of identical predictions
            assert not signal.triggered
        else:
            assert signal.triggered and signal.value == 1.0
    assert stabilizing_predictions(history[:2], config).value is None  # too little history: no value
    assert stabilizing_predictions(history[:4], config).value < 0.99  # the change is still in the window
    # one unstable round restarts the count
    history.append(Round(labels=200, stop_set_predictions=changed))
    assert not stabilizing_predictions(history, config).triggered
    # a stop set that lost tasks cannot be compared: no value, no trigger, and no exception
    shrunk = [*history[:-1], Round(labels=200, stop_set_predictions=stop_set[:-1])]
    signal = stabilizing_predictions(shrunk, config)
    assert signal.value is None and not signal.triggered and "changed size" in signal.reason


def test_label_and_dollar_budgets() -> None:
    config = StoppingConfig(max_labels=500, max_dollars=60.0, human_cost_per_label=0.10)
    under = [Round(labels=400, llm_dollars=15.0)]  # $40 of labels + $15 of LLM
    assert not label_budget(under, config).triggered
    spent = dollar_budget(under, config)
    assert spent.value == pytest.approx(55.0) and not spent.triggered
    over = [Round(labels=500, llm_dollars=15.0)]
    assert label_budget(over, config).triggered
    assert dollar_budget(over, config).triggered  # $50 + $15 >= $60
    assert "500 of 500" in label_budget(over, config).reason
    # budgets left unset are not evaluated at all
    assert {s.name for s in evaluate(over, StoppingConfig())}.isdisjoint({"label_budget", "dollar_budget"})


def test_overall_confidence_uses_the_latest_round_that_has_it() -> None:
    config = StoppingConfig(confidence_threshold=0.9)
    history = [Round(labels=10, mean_confidence=0.95), Round(labels=20, mean_confidence=0.7), Round(labels=30)]
    signal = overall_confidence(history, config)
    assert signal.value == 0.7 and not signal.triggered
    assert overall_confidence(history[:1], config).triggered


def test_accuracy_plateau() -> None:
    config = StoppingConfig(plateau_epsilon=0.005, plateau_rounds=3)
    accuracies = [0.60, 0.70, 0.75, 0.752, 0.754, 0.756]
    history = [Round(labels=100 * (i + 1), checked_accuracy=a) for i, a in enumerate(accuracies)]
    assert not accuracy_plateau(history[:4], config).triggered  # 0.60 -> 0.752: still climbing
    assert not accuracy_plateau(history[:5], config).triggered  # 0.70 -> 0.754
    signal = accuracy_plateau(history, config)  # 0.75 -> 0.756: just above epsilon
    assert signal.value == pytest.approx(0.006) and not signal.triggered
    flat = accuracy_plateau([*history, Round(labels=700, checked_accuracy=0.755)], config)  # 0.752 -> 0.755
    assert flat.value == pytest.approx(0.003) and flat.triggered
    assert accuracy_plateau(history[:3], config).value is None


def _log_curve(labels: list[int], llm_per_round: float = 1.0) -> list[Round]:
    """Accuracy exactly 0.5 + 0.05 ln(labels); the LLM costs the same each round."""
    return [
        Round(labels=n, llm_dollars=llm_per_round * (i + 1), checked_accuracy=0.5 + 0.05 * np.log(n))
        for i, n in enumerate(labels)
    ]


def test_gain_per_dollar_fits_the_learning_curve_and_prices_the_next_batch() -> None:
    history = _log_curve([700, 800, 900, 1000])
    config = StoppingConfig(human_cost_per_label=0.10, min_gain_per_dollar=1e-4)
    signal = gain_per_dollar(history, config)
    expected_gain = 0.05 * np.log(1100 / 1000)  # the next batch is the last one's size: 100 labels
    assert signal.value == pytest.approx(expected_gain / (100 * 0.10 + 1.0))
    assert not signal.triggered
    # the same curve at ten times the human price is no longer worth it
    assert gain_per_dollar(history, StoppingConfig(human_cost_per_label=1.0, min_gain_per_dollar=5e-5)).triggered
    # a flat curve buys nothing
    flat = [Round(labels=n, llm_dollars=1.0, checked_accuracy=0.8) for n in (700, 800, 900, 1000)]
    flat_signal = gain_per_dollar(flat, config)
    assert flat_signal.value == pytest.approx(0.0) and flat_signal.triggered
    # too few points: no value, no trigger
    assert gain_per_dollar(history[:2], config).value is None


def test_evaluate_reports_every_enabled_rule_and_should_stop_follows_them() -> None:
    config = StoppingConfig(max_labels=10_000)
    history = _log_curve([100, 200])
    signals = evaluate(history, config)
    assert [s.name for s in signals] == [
        "label_budget",
        "stabilizing_predictions",
        "overall_confidence",
        "accuracy_plateau",
        "gain_per_dollar",
    ]
    assert not should_stop(signals)
    assert all(s.reason for s in signals)
    done = evaluate([*history, Round(labels=10_000)], config)
    assert should_stop(done) and _by_name(done)["label_budget"].triggered
