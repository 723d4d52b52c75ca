"""A cascade, cheapest first: the student, a cheap LLM, a strong LLM, then a human. Pure.

An item goes to the next, costlier stage only when the previous stage's calibrated confidence is below
that stage's threshold, and to a human when the last stage is unsure (FrugalGPT, Chen et al. 2023).
Each stage's threshold comes from its own checks against human labels, by the auto-accept rule
(routing.auto_accept_threshold): the lowest calibrated confidence whose checked precision has a
Wilson lower bound at the target with at least `min_support` checks. A stage without enough checks
has no threshold and accepts nothing: its items move on, which is the safe default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from backend.llm.cost import Price, Usage, dollars
from backend.llm.routing import Threshold, auto_accept_threshold

STUDENT = "student"
CHEAP = "llm"
STRONG = "strong_llm"
HUMAN = "human"

ACCEPT = "accept"  # the stage's label is accepted
ASK = "ask"  # ask the stage (it has not answered yet)
TO_HUMAN = "to_human"  # every stage asked was unsure


@dataclass(frozen=True)
class Stage:
    name: str
    threshold: Threshold

    @property
    def gate(self) -> float | None:
        return self.threshold.value


def stage_from_checks(
    name: str, confidence: Sequence[float], correct: Sequence[bool], target_precision: float, min_support: int = 20
) -> Stage:
    """A stage whose threshold is chosen on its calibrated confidences on human-checked items."""
    return Stage(name, auto_accept_threshold(confidence, correct, target_precision, min_support))


def stage_with(name: str, threshold: float | None, checks: int = 0) -> Stage:
    """A stage with a threshold already chosen by the same rule elsewhere (the LLM checks of a training)."""
    return Stage(name, Threshold(threshold, None, None, 0, checks))


def stage_from_report(name: str, checks: Mapping[str, object] | None, needs_calibrator: bool = True) -> Stage:
    """A stage from the checks a training published: an LLM's (llm/checks.py: no threshold before a
    calibrator) or the student's (its scores are calibrated already)."""
    checks = checks or {}
    value = checks.get("threshold") if checks.get("calibrator") or not needs_calibrator else None
    threshold = Threshold(
        float(value) if isinstance(value, (int, float)) else None,
        _number(checks.get("threshold_precision")) if value is not None else None,
        None,
        int(_number(checks.get("threshold_support")) or 0) if value is not None else 0,
        int(_number(checks.get("checks")) or 0),
    )
    return Stage(name, threshold)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class Step:
    action: str  # ACCEPT, ASK or TO_HUMAN
    stage: str | None  # the stage accepted or to ask; None when the item goes to a human


def next_step(stages: Sequence[Stage], confidence: Mapping[str, float | None]) -> Step:
    """Where an item goes, given the calibrated confidence of each stage asked so far (stages in cost
    order). A stage missing from `confidence` has not been asked; None: it was asked and gave no usable
    answer (it moves the item on, like an unsure one)."""
    for stage in stages:
        if stage.name not in confidence:
            return Step(ASK, stage.name)
        score = confidence[stage.name]
        if score is not None and stage.gate is not None and score >= stage.gate:
            return Step(ACCEPT, stage.name)
    return Step(TO_HUMAN, None)


@dataclass
class StageCost:
    """What one stage did: items asked and accepted, tokens, dollars and seconds spent on them."""

    items: int = 0
    accepted: int = 0
    usage: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    seconds: float = 0.0

    def add(self, items: int, accepted: int, usage: Usage, price: Price, seconds: float) -> None:
        self.items += items
        self.accepted += accepted
        self.usage = self.usage + usage
        self.dollars += dollars(usage, price)
        self.seconds += seconds

    def fields(self) -> dict[str, float]:
        """The numbers to add to a running total (one Redis hash field each)."""
        return {"items": self.items, "accepted": self.accepted, "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens, "requests": self.usage.requests,
                "dollars": self.dollars, "seconds": self.seconds}  # fmt: skip


def total(costs: Mapping[str, StageCost]) -> StageCost:
    out = StageCost()
    for cost in costs.values():
        out.items += cost.items
        out.accepted += cost.accepted
        out.usage = out.usage + cost.usage
        out.dollars += cost.dollars
        out.seconds += cost.seconds
    return out


def report(stages: Sequence[Stage], totals: Mapping[str, Mapping[str, float]]) -> list[dict[str, object]]:
    """Per stage, in cost order: the running totals and the threshold with its checked precision; then
    the items that reached a human."""
    rows: list[dict[str, object]] = []
    for stage in stages:
        numbers = dict(totals.get(stage.name, {}))
        tokens = int(numbers.get("prompt_tokens", 0) + numbers.get("completion_tokens", 0))
        rows.append({"stage": stage.name, "items": int(numbers.get("items", 0)),
                     "accepted": int(numbers.get("accepted", 0)), "tokens": tokens,
                     "dollars": round(float(numbers.get("dollars", 0.0)), 6),
                     "seconds": round(float(numbers.get("seconds", 0.0)), 3), "threshold": stage.gate,
                     "precision": stage.threshold.precision, "precision_lower_bound": stage.threshold.lower_bound,
                     "checks": stage.threshold.checks})  # fmt: skip
    rows.append({"stage": HUMAN, "items": int(totals.get(HUMAN, {}).get("items", 0))})
    return rows
