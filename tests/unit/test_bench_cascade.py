"""bench/cascade.py's pure parts: routing one item through the product's next_step, a chain's account,
the matched-accuracy ratio, batch seconds per item, and an LLM stage calibrated on its checks."""

from __future__ import annotations

import random

import pytest

from backend.llm.cascade import HUMAN, STRONG, STUDENT, stage_with
from backend.llm.cost import Price, Usage
from bench.cascade import (
    StageAnswer,
    evaluate_chain,
    forced_label,
    latency_shares,
    llm_stage,
    matched_cost_ratio,
    route_item,
    stored_answer,
)

CHAIN = [stage_with(STUDENT, 0.9, 100), stage_with(STRONG, 0.8, 100)]
PRICES = {STRONG: Price(1.0, 2.0)}  # $ per 1M tokens


def ask(label: str | None, score: float | None, tokens: int = 0) -> StageAnswer:
    return StageAnswer(label, score, Usage(tokens, 1, 1) if tokens else Usage(), 0.5 if tokens else 0.01)


def test_a_sure_student_keeps_the_item_and_the_llm_is_never_asked() -> None:
    answers = {STUDENT: ask("a", 0.95), STRONG: ask("b", 0.99, 100)}
    assert route_item(CHAIN, answers) == (STUDENT, [STUDENT])


def test_an_unsure_student_passes_the_item_on_and_an_unsure_llm_to_a_human() -> None:
    assert route_item(CHAIN, {STUDENT: ask("a", 0.5), STRONG: ask("b", 0.85, 100)}) == (STRONG, [STUDENT, STRONG])
    assert route_item(CHAIN, {STUDENT: ask("a", 0.5), STRONG: ask("b", 0.6, 100)}) == (HUMAN, [STUDENT, STRONG])
    # no usable answer (or an uncalibrated one) moves the item on like an unsure one
    assert route_item(CHAIN, {STUDENT: ask("a", 0.5), STRONG: ask(None, None, 100)}) == (HUMAN, [STUDENT, STRONG])


def test_a_stage_without_a_threshold_takes_nothing() -> None:
    chain = [stage_with(STUDENT, None, 5), stage_with(STRONG, 0.8, 100)]
    assert route_item(chain, {STUDENT: ask("a", 1.0), STRONG: ask("b", 0.9, 100)}) == (STRONG, [STUDENT, STRONG])


def test_forced_label_is_the_last_answer_given_when_a_human_would_be_asked() -> None:
    answers = {STUDENT: ask("a", 0.5), STRONG: ask("b", 0.6, 100)}
    assert forced_label(HUMAN, [STUDENT, STRONG], answers) == "b"
    assert forced_label(HUMAN, [STUDENT, STRONG], answers | {STRONG: ask(None, None, 100)}) == "a"
    assert forced_label(STUDENT, [STUDENT], answers) == "a"


def test_evaluate_chain_counts_only_the_stages_asked() -> None:
    items = [
        {STUDENT: ask("a", 0.95), STRONG: ask("a", 0.99, 100)},  # student takes it, right
        {STUDENT: ask("a", 0.5), STRONG: ask("b", 0.85, 100)},  # LLM takes it, right
        {STUDENT: ask("b", 0.5), STRONG: ask("b", 0.9, 100)},  # LLM takes it, wrong
        {STUDENT: ask("a", 0.5), STRONG: ask("b", 0.6, 100)},  # to a human; forced: the LLM's "b", right
    ]
    out = evaluate_chain(CHAIN, items, ["a", "b", "a", "b"], PRICES)
    assert out["coverage"] == 0.75 and out["auto_labelled"] == 3 and out["to_human"] == 1
    assert out["auto_accuracy"] == pytest.approx(2 / 3)
    assert out["forced_accuracy"] == 0.75
    assert out["llm_items"] == 3 and out["llm_calls"] == 3
    assert out["tokens"] == 3 * 101
    assert out["dollars"] == pytest.approx(3 * (100 * 1.0 + 1 * 2.0) / 1e6)
    assert out["llm_seconds"] == pytest.approx(1.5)
    assert out["stages"][STUDENT]["items"] == 4 and out["stages"][STUDENT]["accepted"] == 1
    assert out["stages"][STRONG]["items"] == 3 and out["stages"][STRONG]["accepted"] == 2
    assert out["stages"][STRONG]["threshold"] == 0.8


def test_strong_only_asks_the_llm_about_every_item() -> None:
    items = [{STRONG: ask("a", 0.9, 10)}, {STRONG: ask("b", 0.1, 10)}]
    out = evaluate_chain([stage_with(STRONG, 0.8, 100)], items, ["a", "a"], PRICES)
    assert out["llm_items"] == 2 and out["coverage"] == 0.5 and out["auto_accuracy"] == 1.0
    assert out["forced_accuracy"] == 0.5


def test_matched_cost_ratio_takes_the_cheapest_point_at_least_as_accurate() -> None:
    points = [(0.70, 0.1), (0.80, 0.3), (0.85, 0.5), (0.90, 0.9)]
    assert matched_cost_ratio((0.80, 1.0), points) == (pytest.approx(0.3), 1)
    assert matched_cost_ratio((0.95, 1.0), points) is None
    assert matched_cost_ratio((0.5, 0.0), points) is None  # a free reference has no ratio


def test_latency_shares_add_up_to_the_wall_time() -> None:
    shares = latency_shares([1.0, 3.0], 2.0)
    assert shares == pytest.approx([0.5, 1.5])
    assert latency_shares([0.0, 0.0], 1.0) == [0.5, 0.5]
    assert latency_shares([], 1.0) == []


def record(p_spam: float, tokens: int = 50) -> dict:
    label = "spam" if p_spam >= 0.5 else "ham"
    return {"labels": [label], "confidence": max(p_spam, 1 - p_spam), "method": "scored",
            "distribution": {"ham": 1 - p_spam, "spam": p_spam}, "prompt_tokens": tokens,
            "completion_tokens": 1, "requests": 1, "seconds": 0.4, "error": None}  # fmt: skip


def test_llm_stage_is_calibrated_on_its_checks_and_gates_the_test_items() -> None:
    """A model that leans to "spam" but ranks well: with the prior divided out and a calibrator fitted on
    the checks, its sure answers reach a threshold at 0.9; an unusable answer is asked but scores None."""
    rng = random.Random(0)
    gold = ["spam" if rng.random() < 0.3 else "ham" for _ in range(260)]
    records = [record(rng.uniform(0.75, 0.99) if g == "spam" else rng.uniform(0.3, 0.7)) for g in gold]
    records[-1] = {**records[-1], "labels": None, "confidence": None, "distribution": None}
    checks = 160
    stage, answers, summary = llm_stage(STRONG, "m", records, gold[:checks], ["ham", "spam"],
                                        {"ham": "HAM", "spam": "SPAM"}, 0.9)  # fmt: skip
    assert stage.name == STRONG and stage.gate is not None and summary["checks"] == checks
    assert len(answers) == len(records) - checks
    assert answers[-1].label is None and answers[-1].score is None and answers[-1].usage.prompt_tokens == 50
    taken = [(a, g) for a, g in zip(answers, gold[checks:], strict=True) if a.score and a.score >= stage.gate]
    assert taken and sum(a.label == g.upper() for a, g in taken) / len(taken) >= 0.9
    # the raw argmax says "spam" for half the ham; the corrected one mostly does not
    right = sum(a.label == g.upper() for a, g in zip(answers, gold[checks:], strict=True))
    assert right / len(answers) > 0.85


def test_llm_stage_without_enough_checks_takes_nothing() -> None:
    gold = ["ham", "spam"] * 5
    records = [record(0.9 if g == "spam" else 0.2) for g in gold] * 2
    stage, answers, _ = llm_stage(STRONG, "m", records, gold, ["ham", "spam"], {"ham": "ham", "spam": "spam"}, 0.9)
    assert stage.gate is None
    assert all(a.score is None for a in answers)  # uncalibrated: never compared with a threshold


def test_stored_answer_drops_unusable_records() -> None:
    assert stored_answer(None, "m") is None
    assert stored_answer({"labels": None, "confidence": None}, "m") is None
    answer = stored_answer(record(0.8), "m")
    assert (
        answer is not None
        and answer.labels == ("spam",)
        and answer.distribution == pytest.approx({"ham": 0.2, "spam": 0.8})
    )
