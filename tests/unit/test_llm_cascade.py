"""The cascade's pure core: thresholds from checks, routing cheapest first, per-stage accounting."""

from __future__ import annotations

import pytest

from backend.llm.cascade import (
    ACCEPT,
    ASK,
    CHEAP,
    HUMAN,
    STRONG,
    STUDENT,
    TO_HUMAN,
    StageCost,
    Step,
    next_step,
    report,
    stage_from_checks,
    stage_with,
    total,
)
from backend.llm.cost import Price, Usage


def checks(sure: int, unsure: int) -> tuple[list[float], list[bool]]:
    """`sure` checks at 0.95, all right, and `unsure` at 0.6, right half the time."""
    return [0.95] * sure + [0.6] * unsure, [True] * sure + [i % 2 == 0 for i in range(unsure)]


def chain() -> list:
    return [stage_from_checks(STUDENT, *checks(60, 40), 0.9), stage_from_checks(CHEAP, *checks(40, 40), 0.9),
            stage_from_checks(STRONG, *checks(80, 10), 0.9)]  # fmt: skip


def test_each_threshold_comes_from_its_checks_not_a_constant() -> None:
    stages = chain()
    assert [stage.gate for stage in stages] == [0.95, 0.95, 0.95]
    assert all(stage.threshold.precision == 1.0 for stage in stages)
    assert [stage.threshold.support for stage in stages] == [60, 40, 80]
    # a lower target lets the strong stage accept its unsure band too: 85 of 90 right clears 0.85
    assert stage_from_checks(STRONG, *checks(80, 10), 0.85).gate == 0.6


def test_an_item_stops_at_the_first_stage_confident_enough() -> None:
    stages = chain()
    assert next_step(stages, {}) == Step(ASK, STUDENT)
    assert next_step(stages, {STUDENT: 0.97}) == Step(ACCEPT, STUDENT)
    assert next_step(stages, {STUDENT: 0.7}) == Step(ASK, CHEAP)
    assert next_step(stages, {STUDENT: 0.7, CHEAP: 0.95}) == Step(ACCEPT, CHEAP)
    assert next_step(stages, {STUDENT: 0.7, CHEAP: 0.9}) == Step(ASK, STRONG)
    assert next_step(stages, {STUDENT: 0.7, CHEAP: 0.9, STRONG: 0.99}) == Step(ACCEPT, STRONG)


def test_the_last_stage_unsure_or_silent_sends_the_item_to_a_human() -> None:
    stages = chain()
    assert next_step(stages, {STUDENT: 0.7, CHEAP: 0.9, STRONG: 0.94}) == Step(TO_HUMAN, None)
    # no usable answer (None) moves the item on like an unsure one
    assert next_step(stages, {STUDENT: None, CHEAP: None}) == Step(ASK, STRONG)
    assert next_step(stages, {STUDENT: None, CHEAP: None, STRONG: None}) == Step(TO_HUMAN, None)


def test_a_stage_without_enough_checks_accepts_nothing() -> None:
    few = stage_from_checks(CHEAP, *checks(19, 0), 0.9)  # 19 perfect checks: one short of the support
    assert few.gate is None and few.threshold.checks == 19
    stages = [few, stage_with(STRONG, None)]
    assert next_step(stages, {CHEAP: 1.0}) == Step(ASK, STRONG)
    assert next_step(stages, {CHEAP: 1.0, STRONG: 1.0}) == Step(TO_HUMAN, None)
    # a wrong check among them: no threshold either
    assert stage_from_checks(CHEAP, [0.99] * 30, [True] * 15 + [False] * 15, 0.9).gate is None


def test_costs_add_up_per_stage_and_in_total() -> None:
    price = Price(1.0, 2.0)
    cheap, strong = StageCost(), StageCost()
    cheap.add(10, 7, Usage(1000, 10, 10), price, 1.5)
    cheap.add(5, 5, Usage(500, 5, 5), price, 0.5)
    strong.add(8, 6, Usage(2000, 80, 8), Price(10.0, 30.0), 4.0)
    assert (cheap.items, cheap.accepted, cheap.usage.total_tokens) == (15, 12, 1515)
    assert cheap.dollars == pytest.approx((1500 * 1.0 + 15 * 2.0) / 1e6) and cheap.seconds == 2.0
    everything = total({CHEAP: cheap, STRONG: strong})
    assert (everything.items, everything.accepted, everything.usage.requests) == (23, 18, 23)
    assert everything.dollars == pytest.approx(cheap.dollars + (2000 * 10 + 80 * 30) / 1e6)
    assert everything.seconds == 6.0


def test_the_report_lists_stages_in_cost_order_then_the_human() -> None:
    stages = chain()
    totals = {STUDENT: {"items": 100, "accepted": 60}, CHEAP: StageCost(40, 20, Usage(400, 40, 40)).fields(),
              HUMAN: {"items": 3}}  # fmt: skip
    rows = report(stages, totals)
    assert [row["stage"] for row in rows] == [STUDENT, CHEAP, STRONG, HUMAN]
    assert rows[1] == {"stage": CHEAP, "items": 40, "accepted": 20, "tokens": 440, "dollars": 0.0, "seconds": 0.0,
                       "threshold": 0.95, "precision": 1.0, "precision_lower_bound": rows[1]["precision_lower_bound"],
                       "checks": 80}  # fmt: skip
    assert rows[2]["items"] == 0 and rows[3] == {"stage": HUMAN, "items": 3}


def test_the_strong_endpoint_names_its_model_and_is_priced_like_the_cheap_one() -> None:
    from pydantic import ValidationError

    from backend.settings import Settings

    assert Settings().llm_strong_base_url is None and Settings(llm_strong_base_url="").llm_strong_base_url is None
    with pytest.raises(ValidationError, match="LLM_STRONG_MODEL"):
        Settings(llm_strong_base_url="https://api.example/v1")
    hosted = Settings(llm_strong_base_url="https://api.example/v1", llm_strong_model="gpt-4o")
    assert hosted.llm_strong_price() == Price(2.50, 10.00)
    # the embedded model as the strong stage: free only when the price table says so
    embedded = {"llm_strong_base_url": "http://127.0.0.1:9091/v1", "llm_strong_model": "qwen2.5-coder-1.5b"}
    with pytest.raises(KeyError, match="LLM_PRICES"):
        Settings(**embedded).llm_strong_price()
    assert Settings(**embedded, llm_prices="qwen2.5-coder-1.5b=0/0").llm_strong_price() == Price(0.0, 0.0)
