"""The fine-tuned encoder student (real all-MiniLM-L6-v2, a few steps) and the rule that publishes it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from backend.student.finetune import FineTunedEncoder, FineTuneStopped, wins
from tests.helpers import NEGATIVE, POSITIVE

TEXTS = POSITIVE + NEGATIVE + [t + " indeed" for t in POSITIVE + NEGATIVE]
TARGETS = (["Positive"] * len(POSITIVE) + ["Negative"] * len(NEGATIVE)) * 2


def test_it_wins_only_by_a_margin_that_a_sign_test_backs() -> None:
    fast = [True] * 70 + [False] * 30
    assert wins(fast, [True] * 85 + [False] * 15)  # 15 tasks only it gets right, none the other way
    assert not wins(fast, [True] * 71 + [False] * 29)  # one point better: under the margin
    # 8 points better on 25 held-out tasks, but 4 against 2 discordant tasks is no evidence
    small_fast = [True] * 17 + [False] * 4 + [True, True] + [False, False]
    small_tuned = [True] * 17 + [True] * 4 + [False, False] + [False, False]
    assert np.mean(small_tuned) - np.mean(small_fast) > 0.079 and not wins(small_fast, small_tuned)
    with pytest.raises(ValueError, match="same, non-empty"):
        wins([True], [True, False])


def test_fine_tuning_learns_holds_out_a_stratified_fifth_and_pickles_its_weights() -> None:
    model = FineTunedEncoder(["Positive", "Negative"], epochs=3, batch_size=8, learning_rate=1e-4)
    model.fit(TEXTS, TARGETS)
    train, held = model.split(TARGETS)
    assert np.array_equal(train, model.train_rows_) and len(held) == round(0.2 * len(TEXTS))
    assert sorted(TARGETS[i] for i in held).count("Positive") == len(held) // 2  # stratified
    assert not set(train) & set(held)
    proba = model.predict_proba(["I love it, wonderful", "I hate it, awful"])
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1)
    assert proba[0, 0] > 0.5 and proba[1, 1] > 0.5
    assert len(model.holdout_right_) == len(held) and model.temperature_ > 0
    restored = pickle.loads(pickle.dumps(model))
    assert np.allclose(restored.predict_proba(["I love it, wonderful"]), proba[:1], atol=1e-2)


def test_asked_to_stop_it_stops_between_batches() -> None:
    asked = iter([False, False, True])
    model = FineTunedEncoder(["Positive", "Negative"], epochs=5, batch_size=4)
    with pytest.raises(FineTuneStopped):
        model.fit(TEXTS, TARGETS, should_stop=lambda: next(asked))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict_proba(["anything"])
