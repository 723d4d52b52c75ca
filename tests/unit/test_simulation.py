"""The offline simulation loop (bench/simulate.py) on a tiny pool: a broken loop must fail here."""

from __future__ import annotations

import random
import statistics
from typing import ClassVar

import numpy as np
import pytest

from backend.selection.strategies import Pool, make_strategy
from bench.simulate import Split, area_under_curve, budgets, labels_to_reach, simulate

WORDS = {
    "common": ["apple", "pear", "plum", "fig", "kiwi", "lime"],
    "other": ["car", "bus", "train", "boat", "plane", "bike"],
    "rare": ["gold", "silver", "copper", "iron", "zinc", "tin"],
}
NOISE = ["the", "a", "of", "and", "to", "in", "on", "with", "for", "it", "at", "by"]


def tiny_split(seed: int) -> Split:
    """Three topics, one rare in the pool (4%) but a third of the test set: random sampling finds it late,
    a model-aware choice early."""
    rng = random.Random(seed)

    def make(n: int, weights: list[float]) -> tuple[list[str], list[str]]:
        texts, labels = [], []
        for _ in range(n):
            label = rng.choices(list(WORDS), weights=weights)[0]
            words = rng.sample(WORDS[label], 2) + rng.sample(NOISE, 5)
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
        return texts, labels

    pool, pool_labels = make(400, [0.6, 0.36, 0.04])
    test, test_labels = make(300, [1, 1, 1])
    return Split(pool, pool_labels, test, test_labels, sorted(WORDS))


class ToldTheLabels:
    """Picks the tasks the current model gets most wrong, reading the gold labels from `embeddings`."""

    name: ClassVar[str] = "told_the_labels"
    needs: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})

    def rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        assert pool.proba is not None and pool.embeddings is not None
        gold_probability = (pool.proba * np.asarray(pool.embeddings)).sum(axis=1)
        return np.argsort(gold_probability + rng.random(len(gold_probability)) * 1e-9)[:n]


def test_a_strategy_told_the_labels_beats_random() -> None:
    steps = budgets(initial=4, batch=4, batch_large=4, budget=40)
    assert steps == list(range(4, 41, 4))
    told, chance = [], []
    for seed in range(3):
        data = tiny_split(seed)
        one_hot = np.array([[float(y == c) for c in data.classes] for y in data.pool_labels])
        cheat = simulate(data, ToldTheLabels(), seed, steps, embeddings=one_hot)
        blind = simulate(data, make_strategy("random"), seed, steps, embeddings=one_hot)
        assert cheat["steps"] == steps and len(cheat["accuracy"]) == len(steps)
        assert len(cheat["round_seconds"]) == len(steps) - 1
        told.append(area_under_curve(steps, cheat["accuracy"]))
        chance.append(area_under_curve(steps, blind["accuracy"]))
    assert statistics.mean(told) > statistics.mean(chance) + 0.02, (told, chance)


def test_curve_summaries() -> None:
    assert labels_to_reach([10, 20, 30], [0.5, 0.8, 0.9], 0.75) == 20
    assert labels_to_reach([10, 20, 30], [0.5, 0.6, 0.7], 0.75) is None
    assert area_under_curve([0, 10], [0.5, 1.0]) == 0.75
    assert budgets(20, 20, 100, 450) == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 300, 400, 450]


class GoldLLM:
    """annotate_many as the LLM seed calls it: right on every item, so the seed must help the student."""

    def __init__(self, gold: dict[str, str]) -> None:
        self.gold = gold
        self.asked = 0

    def annotate_many(self, spec, prompts):  # type: ignore[no-untyped-def]
        from backend.llm.client import LLMAnswer
        from backend.llm.cost import Usage
        from backend.llm.prompts import unfenced

        self.asked += len(prompts)
        out = []
        for prompt in prompts:
            text = unfenced(prompt.messages[-1]["content"])
            out.append(LLMAnswer((self.gold[text],), 0.9, None, "logprobs", Usage(prompt_tokens=10, requests=1), []))
        return out


def test_an_llm_seed_joins_training_at_a_lower_weight_and_a_right_one_helps() -> None:
    from bench.simulate import llm_seed_labels, seed_label_config

    steps = budgets(initial=4, batch=4, batch_large=4, budget=12)
    with_seed, without = [], []
    for seed in range(3):
        data = tiny_split(seed)
        llm = GoldLLM(dict(zip(data.pool, data.pool_labels, strict=True)))
        config, to_gold = seed_label_config("tiny", data.classes)
        weak, usage = llm_seed_labels(llm, config, data.pool, 40, to_gold)
        assert len(weak) == 40 == llm.asked and usage.prompt_tokens == 400
        assert all(data.pool_labels[i] == label for i, label in weak.items())
        with_seed.append(simulate(data, make_strategy("random"), seed, steps, weak=weak)["accuracy"][0])
        without.append(simulate(data, make_strategy("random"), seed, steps)["accuracy"][0])
    assert statistics.mean(with_seed) > statistics.mean(without) + 0.05, (with_seed, without)


def test_the_table_names_the_command_that_made_it() -> None:
    from bench.simulate import command_line, parser

    assert command_line(vars(parser().parse_args([]))) == "python -m bench.simulate"
    args = ["--datasets", "movie_reviews", "20newsgroups", "--llm-seed", "30", "--llm-preannotate", "--out", "more"]
    assert command_line(vars(parser().parse_args(args))) == "python -m bench.simulate " + " ".join(args)


class ScriptedPreLabeller:
    """`annotate` as the pre-annotation bench calls it: sure and right on most items, unsure and wrong on
    every fifth, so human checks can calibrate it and open the auto-accept gate."""

    def __init__(self, gold: dict[str, str], classes: list[str], wrong_and_sure: bool = False) -> None:
        from backend.llm.client import LLMConfig

        self.gold, self.classes, self.wrong_and_sure = gold, classes, wrong_and_sure
        self.config = LLMConfig(base_url="http://unused", model="scripted", concurrency=2)
        self.asked: list[str] = []

    def annotate(self, spec, prompt):  # type: ignore[no-untyped-def]
        from backend.llm.client import LLMAnswer
        from backend.llm.cost import Usage
        from backend.llm.prompts import unfenced

        text = unfenced(prompt.messages[-1]["content"])
        self.asked.append(text)
        gold = self.gold[text]
        wrong = self.classes[(self.classes.index(gold) + 1) % len(self.classes)]
        if self.wrong_and_sure:
            label, confidence = wrong, 0.99
        else:
            label, confidence = (wrong, 0.4) if len(self.asked) % 5 == 0 else (gold, 0.97)
        return LLMAnswer((label,), confidence, None, "logprobs", Usage(prompt_tokens=100, completion_tokens=5,
                                                                              requests=1), [])  # fmt: skip


def test_pre_labels_keep_the_llm_label_distribution_in_the_corpus_label_names() -> None:
    from backend.llm.client import LLMAnswer, LLMConfig
    from backend.llm.cost import Usage
    from bench.simulate import PreAnnotator, seed_label_config

    config, to_gold = seed_label_config("trec6", [])
    distribution = {"number": 0.6, "location": 0.3, "human": 0.1}

    class Scored:
        config = LLMConfig(base_url="http://unused", model="scripted", concurrency=1)

        def annotate(self, spec, prompt):  # type: ignore[no-untyped-def]
            return LLMAnswer(("number",), 0.6, distribution, "scored", Usage(50, 1, 1), [])

    [(answer, usage)] = PreAnnotator(Scored(), config, to_gold, few_shot=0)(["How many moons has Mars ?"], [])
    assert answer.labels == ("NUM",) and answer.method == "scored" and usage.completion_tokens == 1
    # the product's checks read the distribution (bias correction, calibration): the bench must keep it
    assert answer.distribution == {"NUM": 0.6, "LOC": 0.3, "HUM": 0.1}


def test_pre_annotation_saves_human_labels_once_checks_open_the_gate() -> None:
    from bench.simulate import PreAnnotator, Review, seed_label_config

    steps = budgets(initial=20, batch=20, batch_large=20, budget=140)
    data = tiny_split(0)
    llm = ScriptedPreLabeller(dict(zip(data.pool, data.pool_labels, strict=True)), data.classes)
    config, to_gold = seed_label_config("tiny", data.classes)
    review = Review(PreAnnotator(llm, config, to_gold), data.classes)
    with_llm = simulate(data, make_strategy("random"), 0, steps, review=review)
    alone = simulate(data, make_strategy("random"), 0, steps)
    assert with_llm["steps"] == alone["steps"] == steps  # the x-axis stays human labels
    report = with_llm["review"]
    # before ~50 sure checks the gate is shut; after it, the sure (always right) pre-labels pass
    assert review.thresholds[0] is None and review.thresholds[-1] is not None
    assert report["auto_accepted"] > 0 and report["auto_accepted_right"] == report["auto_accepted"]
    # every queried task was pre-labelled once, humans labelled the budget, the gate took the rest
    assert report["pre_labelled"] == len(llm.asked) == steps[-1] + report["auto_accepted"]
    assert report["pre_labels_right"] == report["pre_labelled"] - report["pre_labelled"] // 5
    assert report["prompt_tokens"] == 100 * len(llm.asked) and report["completion_tokens"] == 5 * len(llm.asked)
    # the checks at the end are the pre-labels a human labelled; this LLM gives no distribution to score
    assert report["checks"] == steps[-1] and report["checks_accuracy"] == {}
    # unsure pre-labels went to humans: none of the wrong ones was accepted
    assert all(data.pool_labels[i] == label for i, label in review.accepted.items())


def test_a_sure_but_wrong_llm_never_gets_through_the_gate() -> None:
    from bench.simulate import PreAnnotator, Review, seed_label_config

    steps = budgets(initial=20, batch=20, batch_large=20, budget=100)
    data = tiny_split(1)
    llm = ScriptedPreLabeller(dict(zip(data.pool, data.pool_labels, strict=True)), data.classes, wrong_and_sure=True)
    config, to_gold = seed_label_config("tiny", data.classes)
    review = Review(PreAnnotator(llm, config, to_gold), data.classes)
    outcome = simulate(data, make_strategy("margin"), 1, steps, review=review)
    assert outcome["review"]["auto_accepted"] == 0 and outcome["review"]["pre_labelled"] == steps[-1]
    assert all(threshold is None for threshold in review.thresholds)


def test_the_informativeness_bench_picks_what_the_judge_scores_highest_among_margin_candidates() -> None:
    from bench.llm_informativeness import ARMS, JUDGED_PER_SLOT, one_round, summary

    data = tiny_split(0)
    judged: list[str] = []

    def rare_is_informative(texts: list[str]) -> list[dict[str, object]]:
        judged.extend(texts)
        return [{"score": float(any(w in t.split() for w in WORDS["rare"])), "expected": None, "fresh": True,
                 "seconds": 0.5, "prompt_tokens": 80, "completion_tokens": 6} for t in texts]  # fmt: skip

    rng = np.random.default_rng(0)
    labelled = [int(i) for i in rng.choice(len(data.pool), 12, replace=False)]
    result = one_round(data, labelled, rare_is_informative, 4, rng)  # type: ignore[arg-type]
    assert len(judged) == result["candidates"] == JUDGED_PER_SLOT * 4 and result["start_accuracy"] > 0
    rare = [t for t in judged if any(w in t.split() for w in WORDS["rare"])]
    picked = [data.pool[i] for i in result["arms"]["llm_informativeness"]["picked"]]
    # the judge's favourites first, whatever their margin
    assert rare and (set(picked) <= set(rare) if len(rare) >= 4 else set(rare) <= set(picked))
    assert {data.pool[i] for i in result["arms"]["margin"]["picked"]} <= set(judged)
    # no expected scores: the strategy falls back to margin's order
    assert result["arms"]["llm expected score"]["picked"] == result["arms"]["margin"]["picked"]
    assert set(result["arms"]) == set(ARMS) and all(i not in labelled for i in result["arms"]["margin"]["picked"])
    s = summary([{**result, "seed": 0, "round": 0}])
    assert s["pairs"] == 1 and s["seconds_per_item_mean"] == 0.5 and s["prompt_tokens_per_item"] == 80
    assert s["keep"] == (s["diff_vs_margin_mean"] >= 0.005)


def test_the_judges_expected_score_weighs_the_first_digit_by_its_probability() -> None:
    import math

    from backend.llm.confidence import TokenLogprob
    from bench.llm_informativeness import expected_score

    ln = math.log
    tokens = [
        TokenLogprob('{"', 0.0),
        TokenLogprob("score", 0.0),
        TokenLogprob(" ", 0.0, ((" ", 0.0), ("9", -9.0))),
        TokenLogprob("0", ln(0.5), (("0", ln(0.5)), ("8", ln(0.25)), (" 8", ln(0.25)), ("}", ln(0.1)))),
    ]
    # the first digit token's alternatives: 0 at 0.5, 8 at 0.25 (its spaced twin counted once), "}" no digit
    assert expected_score(tokens) == (0.25 * 8) / 0.75 / 10
    assert expected_score([TokenLogprob("{", 0.0)]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"score": 7}', 0.7), ('{"score": 0}', 0.0), ("10", 1.0), ("I'd say 3 out of 10", 0.3),
     ('{"score": 11}', None), ('{"score": true}', None), ("no idea", None), ("", None), (None, None)],
)  # fmt: skip
def test_the_informativeness_bench_reads_judge_scores(text: str | None, expected: float | None) -> None:
    from bench.llm_informativeness import parse_score

    assert parse_score(text) == (pytest.approx(expected) if expected is not None else None)
