from __future__ import annotations

import math

import numpy as np
import pytest

from backend.llm.calibration import Calibrator, expected_calibration_error, reliability
from backend.llm.confidence import TokenLogprob, label_distribution, set_agreement, vote_distribution
from backend.llm.cost import Budget, BudgetExceeded, Price, Usage, dollars, parse_prices, price_for

LN = math.log


def tok(token: str, p: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token, LN(p), tuple((t, LN(q)) for t, q in alternatives))


def test_distribution_from_first_token_alternatives_in_json() -> None:
    # {"label": "Positive"} with the value starting right after the opening quote
    text = '{"label": "'
    tokens = [tok('{"', 1.0), tok("label", 1.0), tok('":', 1.0), tok(' "', 1.0),
              tok("Pos", 0.7, ("Pos", 0.7), ("Neg", 0.2), ("Neu", 0.05), ("xyz", 0.05)),
              tok("itive", 1.0), tok('"}', 1.0)]  # fmt: skip
    dist = label_distribution(tokens, len(text), ["Positive", "Negative", "Neutral"])
    assert dist is not None
    assert dist["Positive"] == pytest.approx(0.7 / 0.95)
    assert dist["Negative"] == pytest.approx(0.2 / 0.95)
    assert dist["Neutral"] == pytest.approx(0.05 / 0.95)


def test_shared_first_token_follows_the_generated_path() -> None:
    labels = ["Sports", "Sportswear", "Politics"]
    tokens = [tok("Sport", 0.8, ("Sport", 0.8), ("Pol", 0.2)),
              tok("s", 0.75, ("s", 0.75), ("swear", 0.25)),
              tok('"', 1.0)]  # fmt: skip
    dist = label_distribution(tokens, 0, labels)
    assert dist == pytest.approx({"Sports": 0.8 * 0.75, "Sportswear": 0.8 * 0.25, "Politics": 0.2})


def test_value_starting_mid_token() -> None:
    # the endpoint merged the quote and the label's first characters into one token
    tokens = [tok('{"label":', 1.0), tok(' "Neg', 0.6, (' "Neg', 0.6), (' "Pos', 0.4)), tok('ative"}', 1.0)]
    dist = label_distribution(tokens, len('{"label": "'), ["Positive", "Negative"])
    assert dist == pytest.approx({"Positive": 0.4, "Negative": 0.6})


def test_labels_missing_from_the_alternatives_get_the_smallest_shown_probability() -> None:
    # llama.cpp reports logprobs from before the grammar: off-label tokens crowd the top list
    tokens = [tok("Positive", 0.05, ("It", 0.35), ("The", 0.06), ("Positive", 0.05), ("Tuesday", 0.02)), tok('"', 1.0)]
    dist = label_distribution(tokens, 0, ["Positive", "Negative"])
    assert dist == pytest.approx({"Positive": 0.05 / 0.07, "Negative": 0.02 / 0.07})


def test_no_logprobs_reaching_the_value() -> None:
    assert label_distribution([tok("{", 1.0)], 10, ["a", "b"]) is None
    assert label_distribution([tok("zzz", 1.0, ("yyy", 0.5))], 0, ["a", "b"]) is None


def test_votes_and_set_agreement() -> None:
    votes = vote_distribution([("a",), ("a",), ("b",), None], ["a", "b", "c"])
    assert votes == {"a": 0.5, "b": 0.25, "c": 0.0}
    assert vote_distribution([], ["a"]) is None
    best, share = set_agreement([("x", "y"), ("y", "x"), ("x",), None])
    assert best == ("x", "y") and share == 0.5
    assert set_agreement([None, None]) == (None, 0.0)


def test_calibration_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.6, 1.0, 2000)
    truth = rng.uniform(0, 1, 2000) < (raw - 0.3)  # right 30 points less often than it claims
    before = expected_calibration_error(raw, truth)
    assert before > 0.25
    for method in ("platt", "isotonic"):
        calibrator = Calibrator(method).fit(raw[:1000], truth[:1000])
        after = expected_calibration_error(calibrator.transform(raw[1000:]), truth[1000:])
        assert after < 0.05, method
    assert Calibrator("auto").fit(raw[:100], truth[:100]).fitted_method == "platt"
    assert Calibrator("auto").fit(raw, truth).fitted_method == "isotonic"


def test_calibrator_is_identity_until_it_has_enough_checks() -> None:
    calibrator = Calibrator(min_checks=20).fit([0.9] * 5, [True, False, True, True, False])
    assert calibrator.fitted_method is None
    assert calibrator.transform([0.9, 0.3]) == pytest.approx([0.9, 0.3])
    assert Calibrator().fit([0.8] * 50, [True] * 50).fitted_method is None  # one outcome only
    with pytest.raises(ValueError):
        Calibrator("magic")


def test_reliability_bins() -> None:
    table = reliability([0.05, 0.15, 0.95, 0.95], [False, True, True, False], bins=10)
    assert [(b.count, b.accuracy) for b in table] == [(1, 0.0), (1, 1.0), (2, 0.5)]
    with pytest.raises(ValueError):
        reliability([0.1], [True, False])


def test_cost_and_budget() -> None:
    usage = Usage(1_000_000, 500_000, 1) + Usage(0, 0, 1, cached_requests=1)
    assert usage.requests == 2 and usage.total_tokens == 1_500_000
    assert dollars(usage, Price(0.15, 0.60)) == pytest.approx(0.45)
    assert price_for("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert price_for("anything", local=True) == Price(0.0, 0.0)
    with pytest.raises(KeyError, match="LLM_PRICES"):
        price_for("some-hosted-model")
    assert parse_prices("m1=1/2, m2=0.5/1.5") == {"m1": Price(1, 2), "m2": Price(0.5, 1.5)}
    with pytest.raises(ValueError, match="model=input/output"):
        parse_prices("m1=1")
    budget = Budget(1.0)
    budget.check(0.5, 0.4)
    with pytest.raises(BudgetExceeded, match=r"\$1.00"):
        budget.check(0.9, 0.2)
    assert Budget(None).remaining(1e9) == float("inf")


def test_forced_tokens_after_the_label_is_determined_do_not_count() -> None:
    # the grammar spells "Positive" as P-osit-iv-e; only the first token was a choice
    tokens = [tok("P", 0.2, ("P", 0.2), ("N", 0.6), ("Ter", 0.2)), tok("osit", 1e-5), tok("iv", 0.02), tok("e", 1e-6)]
    dist = label_distribution(tokens, 0, ["Positive", "Negative"])
    assert dist == pytest.approx({"Positive": 0.25, "Negative": 0.75})


def test_settings_price_the_configured_model() -> None:
    from backend.settings import Settings

    assert Settings(llm_base_url=None).llm_price() == Price(0.0, 0.0)  # the embedded local model
    hosted = Settings(llm_base_url="https://api.example/v1", llm_model="gpt-4o-mini")
    assert hosted.llm_price() == Price(0.15, 0.60)
    mine = Settings(llm_base_url="http://vllm:8000/v1", llm_model="qwen", llm_prices="qwen=0/0")
    assert mine.llm_price() == Price(0.0, 0.0)
    with pytest.raises(KeyError, match="LLM_PRICES"):
        Settings(llm_base_url="http://vllm:8000/v1", llm_model="qwen").llm_price()
    assert Settings(llm_budget_usd="").llm_budget_usd is None
