"""The fine-tuned encoder student (real all-MiniLM-L6-v2, a few steps) and the rule that publishes it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from backend.student import StudentModel
from backend.student.finetune import (
    ALWAYS,
    AUTO,
    NEVER,
    FineTunedEncoder,
    FineTunedStudent,
    FineTuneStopped,
    batched_proba,
    should_publish,
    skip_reason,
    wins,
)
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
    # refitted on every label: new weights, the held-out verdict and temperature of the fit kept
    verdict, temperature, weights = list(model.holdout_right_), model.temperature_, model._state
    model.refit(TEXTS, TARGETS)
    assert model._state != weights and model.holdout_right_ == verdict and model.temperature_ == temperature
    assert model.predict_proba(["I love it, wonderful"])[0, 0] > 0.5
    with pytest.raises(RuntimeError, match="refit follows fit"):
        FineTunedEncoder(["Positive", "Negative"]).refit(TEXTS, TARGETS)


def test_asked_to_stop_it_stops_between_batches() -> None:
    asked = iter([False, False, True])
    model = FineTunedEncoder(["Positive", "Negative"], epochs=5, batch_size=4)
    with pytest.raises(FineTuneStopped):
        model.fit(TEXTS, TARGETS, should_stop=lambda: next(asked))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict_proba(["anything"])


def test_when_a_project_is_fine_tuned() -> None:
    assert skip_reason(NEVER, False, 500, 200, 2000) == "STUDENT_FINETUNE=never"
    assert "single-label" in skip_reason(AUTO, True, 500, 200, 2000)
    assert (
        skip_reason(AUTO, False, 199, 200, 2000) == "199 human labels: fine-tuning starts at 200 (FINETUNE_MIN_LABELS)"
    )
    assert skip_reason(AUTO, False, 200, 200, 2000) is None and skip_reason(AUTO, False, 2000, 200, 2000) is None
    assert "FINETUNE_MAX_LABELS (2000)" in skip_reason(AUTO, False, 2001, 200, 2000)
    # always: from the smallest set a held-out fifth can judge, with no upper bound
    assert skip_reason(ALWAYS, False, 9, 200, 2000) == "9 human labels: fine-tuning starts at 10"
    assert skip_reason(ALWAYS, False, 10, 200, 2000) is None and skip_reason(ALWAYS, False, 50_000, 200, 2000) is None


def test_auto_publishes_only_a_clear_win_and_always_unless_it_is_worse() -> None:
    fast = [True] * 70 + [False] * 30
    tie, better, clear = fast, [True] * 71 + [False] * 29, [True] * 85 + [False] * 15
    assert [should_publish(AUTO, fast, t) for t in (tie, better, clear)] == [False, False, True]
    assert [should_publish(ALWAYS, fast, t) for t in (tie, better, clear)] == [True, True, True]
    assert not should_publish(ALWAYS, fast, [True] * 69 + [False] * 31)


def test_the_split_trains_on_labels_seen_once_and_holds_out_when_strata_cannot() -> None:
    model = FineTunedEncoder(["a", "b", "c", "d"])
    targets = ["a"] * 12 + ["b"] * 12 + ["c"]
    train, held = model.split(targets)
    assert 24 in train and len(held) == 5 and sorted(np.concatenate([train, held])) == list(range(25))
    # 11 rows over 4 labels: a held-out fifth (3 rows) cannot hold every label, so it is not stratified
    few = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "d"]
    train, held = model.split(few)
    assert len(held) == 3 and sorted(np.concatenate([train, held])) == list(range(11))


class ScriptedTuned:
    labels = ("Positive", "Negative")

    def predict_proba(self, texts):  # type: ignore[no-untyped-def]
        return np.array([[0.9, 0.1] if "good" in t else [0.2, 0.8] for t in texts])


def test_the_published_student_looks_its_tasks_up_and_asks_the_fast_one_for_the_rest() -> None:
    fast = StudentModel(["Positive", "Negative"]).fit(POSITIVE + NEGATIVE, [("Positive",)] * len(POSITIVE)
                                                      + [("Negative",)] * len(NEGATIVE))  # fmt: skip
    seen = ["a good thing", "a bad thing", NEGATIVE[0]]
    tuned = ScriptedTuned()
    proba = np.vstack(list(batched_proba(tuned, seen, batch=2)))  # type: ignore[arg-type]
    student = FineTunedStudent(fast, seen, proba)
    texts = [NEGATIVE[0], "a good thing", "never seen before", "a bad thing"]
    out = student.predict_proba(texts)
    assert np.allclose(out[[0, 1, 3]], [[0.2, 0.8], [0.9, 0.1], [0.2, 0.8]])  # the tuned model's, not the fast one's
    assert np.allclose(out[2], fast.predict_proba(["never seen before"])[0])
    assert [p.labels for p in student.predict(texts)] == [("Negative",), ("Positive",), fast.predict(
        ["never seen before"])[0].labels, ("Negative",)]  # fmt: skip
    assert student.labels == fast.labels and student.encoder is None and not student.multi_label
    asked = iter([False, True])
    with pytest.raises(FineTuneStopped):
        list(batched_proba(tuned, seen, lambda: next(asked), batch=2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 texts but 2 rows"):
        FineTunedStudent(fast, seen, proba[:2])
