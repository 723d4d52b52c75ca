"""When to stop asking humans for labels: pure rules over the history of active-learning rounds.

Each rule turns the history into a `Signal` (its value, its threshold, whether it fired, and why), so
a status page can show how close each one is. `evaluate` computes all the enabled ones; the caller
decides what to do when one fires. The rules:

- label budget and dollar budget (human labels at a price each, plus what the LLM cost);
- stabilizing predictions (Bloodgood & Vijay-Shanker, 2009): Cohen's kappa between successive
  models' labels on a fixed stop set stays at or above a threshold for k rounds in a row;
- overall confidence: the student's mean probability of being right on the pool (its max probability;
  multi-label: its predicted set's probability) reaches a threshold;
- a plateau in human-checked accuracy: it gained less than epsilon over the last k rounds;
- cost-aware (after Pullar-Strecker et al., 2024): the accuracy the next batch is expected to buy,
  from a log-linear fit of the recent learning curve, per dollar of its human and LLM cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class Round:
    """The state after one round of labelling and retraining. Counts and dollars are cumulative."""

    labels: int  # human labels so far
    llm_dollars: float = 0.0  # dollars spent on the LLM so far
    stop_set_predictions: Sequence[object] | None = None  # this round's labels (or label sets) on the fixed stop set
    checked_accuracy: float | None = None  # accuracy measured against human labels (e.g. checked predictions)
    mean_confidence: float | None = None  # the student's mean probability of being right over the unlabelled pool


@dataclass(frozen=True)
class StoppingConfig:
    """Thresholds of the stopping rules. A budget left at None disables that rule."""

    max_labels: int | None = None
    max_dollars: float | None = None
    human_cost_per_label: float = 0.10  # dollars; set it to what the project's annotators cost
    kappa_threshold: float = 0.99
    kappa_rounds: int = 3
    confidence_threshold: float = 0.95
    plateau_epsilon: float = 0.005
    plateau_rounds: int = 3
    min_gain_per_dollar: float = 1e-4  # accuracy per dollar: 1e-4 is one point of accuracy per $100
    gain_fit_rounds: int = 4  # the most recent accuracy points the learning curve is fitted on


@dataclass(frozen=True)
class Signal:
    name: str
    value: float | None  # None while there is not yet enough history to compute it
    threshold: float
    triggered: bool
    reason: str


def dollars(round_: Round, config: StoppingConfig) -> float:
    """Everything spent up to this round: human labels at their price, and the LLM."""
    return round_.labels * config.human_cost_per_label + round_.llm_dollars


def cohen_kappa(first: Sequence[object], second: Sequence[object]) -> float:
    """Agreement between two labellings beyond chance: 1 when identical, 0 at chance level."""
    a, b = np.asarray(first), np.asarray(second)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"two labellings of one stop set must have the same length: {a.shape} and {b.shape}")
    if not len(a):
        raise ValueError("the stop set is empty")
    _, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
    a_codes, b_codes = codes[: len(a)], codes[len(a) :]
    observed = float(np.mean(a_codes == b_codes))
    k = int(codes.max()) + 1
    expected = float(np.bincount(a_codes, minlength=k) @ np.bincount(b_codes, minlength=k)) / len(a) ** 2
    if expected == 1.0:  # both gave every item the same single label
        return 1.0
    return (observed - expected) / (1.0 - expected)


def label_budget(history: Sequence[Round], config: StoppingConfig) -> Signal | None:
    if config.max_labels is None:
        return None
    used = history[-1].labels if history else 0
    return Signal(
        "label_budget",
        float(used),
        float(config.max_labels),
        used >= config.max_labels,
        f"{used:,} of {config.max_labels:,} human labels used",
    )


def dollar_budget(history: Sequence[Round], config: StoppingConfig) -> Signal | None:
    if config.max_dollars is None:
        return None
    spent = dollars(history[-1], config) if history else 0.0
    return Signal(
        "dollar_budget",
        spent,
        config.max_dollars,
        spent >= config.max_dollars,
        f"${spent:,.2f} of ${config.max_dollars:,.2f} spent on human labels and the LLM",
    )


def stabilizing_predictions(history: Sequence[Round], config: StoppingConfig) -> Signal:
    """The smallest kappa between successive models over the last `kappa_rounds` pairs."""
    labelled = [r.stop_set_predictions for r in history if r.stop_set_predictions is not None]
    needed = config.kappa_rounds + 1
    if len(labelled) < needed:
        return Signal(
            "stabilizing_predictions",
            None,
            config.kappa_threshold,
            False,
            f"needs stop-set predictions from {needed} rounds, has {len(labelled)}",
        )
    recent = labelled[-needed:]
    if len({len(predictions) for predictions in recent}) > 1:  # tasks left the stop set: kappa is undefined
        return Signal(
            "stabilizing_predictions",
            None,
            config.kappa_threshold,
            False,
            f"the stop set changed size within the last {needed} rounds: "
            + ", ".join(str(len(predictions)) for predictions in recent),
        )
    kappas = [cohen_kappa(before, after) for before, after in pairwise(recent)]
    lowest = min(kappas)
    stable = lowest >= config.kappa_threshold
    return Signal(
        "stabilizing_predictions",
        lowest,
        config.kappa_threshold,
        stable,
        f"kappa between successive models over the last {config.kappa_rounds} rounds: "
        + ", ".join(f"{kappa:.3f}" for kappa in kappas)
        + (" - predictions have stabilized" if stable else f" - not all >= {config.kappa_threshold}"),
    )


def overall_confidence(history: Sequence[Round], config: StoppingConfig) -> Signal:
    latest = next((r.mean_confidence for r in reversed(history) if r.mean_confidence is not None), None)
    if latest is None:
        return Signal("overall_confidence", None, config.confidence_threshold, False, "no mean confidence yet")
    confident = latest >= config.confidence_threshold
    return Signal(
        "overall_confidence",
        latest,
        config.confidence_threshold,
        confident,
        f"the student's mean confidence on the pool is {latest:.3f}"
        + (" - little uncertainty is left" if confident else f", below {config.confidence_threshold}"),
    )


def accuracy_plateau(history: Sequence[Round], config: StoppingConfig) -> Signal:
    """The gain in checked accuracy from `plateau_rounds` measurements ago to the latest."""
    accuracies = [r.checked_accuracy for r in history if r.checked_accuracy is not None]
    needed = config.plateau_rounds + 1
    if len(accuracies) < needed:
        return Signal(
            "accuracy_plateau",
            None,
            config.plateau_epsilon,
            False,
            f"needs checked accuracy from {needed} rounds, has {len(accuracies)}",
        )
    gain = accuracies[-1] - accuracies[-needed]
    flat = gain < config.plateau_epsilon
    return Signal(
        "accuracy_plateau",
        gain,
        config.plateau_epsilon,
        flat,
        f"checked accuracy moved {accuracies[-needed]:.3f} -> {accuracies[-1]:.3f} over the last "
        f"{config.plateau_rounds} rounds ({gain:+.3f})" + (" - it has plateaued" if flat else ""),
    )


def gain_per_dollar(history: Sequence[Round], config: StoppingConfig) -> Signal:
    """The accuracy the next batch is expected to add, per dollar it will cost.

    Fits accuracy = a + b log(labels) to the latest `gain_fit_rounds` checked accuracies (learning
    curves are close to log-linear in the middle range), predicts the gain of a batch as large as the
    last one, and divides by that batch's cost: as many human labels at their price, and as many LLM
    dollars as the last round spent.
    """
    points = [(r.labels, r.checked_accuracy) for r in history if r.checked_accuracy is not None and r.labels > 0]
    points = points[-config.gain_fit_rounds :]
    if len(points) < 3 or len(history) < 2 or len({labels for labels, _ in points}) < 2:
        return Signal(
            "gain_per_dollar",
            None,
            config.min_gain_per_dollar,
            False,
            f"needs checked accuracy at 3 label counts, has {len({labels for labels, _ in points})}",
        )
    labels, accuracy = np.array(points, dtype=float).T
    slope = float(np.polyfit(np.log(labels), accuracy, 1)[0])
    batch = history[-1].labels - history[-2].labels
    batch_cost = batch * config.human_cost_per_label + (history[-1].llm_dollars - history[-2].llm_dollars)
    if batch <= 0 or batch_cost <= 0:
        return Signal(
            "gain_per_dollar", None, config.min_gain_per_dollar, False, "the last round added no labels or no cost"
        )
    now = history[-1].labels
    expected_gain = max(slope * float(np.log((now + batch) / now)), 0.0)
    value = expected_gain / batch_cost
    low = value < config.min_gain_per_dollar
    return Signal(
        "gain_per_dollar",
        value,
        config.min_gain_per_dollar,
        low,
        f"the next {batch:,} labels (${batch_cost:,.2f}) should add {expected_gain:.4f} accuracy: "
        f"{value * 100:.4f} accuracy per $100" + (" - no longer worth its cost" if low else ""),
    )


def evaluate(history: Sequence[Round], config: StoppingConfig | None = None) -> list[Signal]:
    """Every enabled rule's signal for this history (oldest round first)."""
    config = config or StoppingConfig()
    rules = (
        label_budget,
        dollar_budget,
        stabilizing_predictions,
        overall_confidence,
        accuracy_plateau,
        gain_per_dollar,
    )
    return [signal for rule in rules if (signal := rule(history, config)) is not None]


def should_stop(signals: Sequence[Signal]) -> bool:
    return any(signal.triggered for signal in signals)
