"""The Pool the query strategies rank, built as the rank job and bench/simulate.py build it (selection/pool.py)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from backend.labeling import Example, parse_label_config
from backend.llm.annotator import StoredAnswer
from backend.selection import pool as pool_module
from backend.selection.embeddings import svd_embeddings
from backend.selection.pool import TaskVectors, build_pool, llm_distributions, predict_proba
from backend.selection.strategies import STRATEGIES, check_applies, make_strategy
from backend.student import StudentModel
from tests.helpers import NEGATIVE, POSITIVE, SINGLE

SPEC = parse_label_config(SINGLE)  # Positive, Negative
HUMAN = [Example(i, text, ("Positive",)) for i, text in enumerate(POSITIVE)] + [
    Example(100 + i, text, ("Negative",)) for i, text in enumerate(NEGATIVE)
]
TEXTS = ["love it, great", "hate it, awful", "a wonderful day", "a terrible day", "it arrived on a tuesday"]
EVERY_FIELD = frozenset().union(*(strategy.needs for strategy in STRATEGIES.values()))


def _proba(n: int = len(TEXTS)) -> np.ndarray:
    return np.tile([0.6, 0.4], (n, 1))


def _answer(distribution: dict[str, float] | None) -> StoredAnswer:
    return StoredAnswer(("Positive",), 0.9, "scored", "test-model", distribution=distribution)


def test_only_what_the_strategy_needs_is_built() -> None:
    pool = build_pool(frozenset({"proba"}), SPEC, _proba(), TEXTS, HUMAN, answers={0: _answer({"Positive": 1.0})})
    assert pool.size == len(TEXTS) and not pool.multi_label
    assert pool.embeddings is None and pool.labelled_embeddings is None
    assert len(pool.committee) == 0 and pool.llm_proba is None


def test_without_an_encoder_the_embeddings_are_svd_of_the_pool_and_the_labelled_texts_together() -> None:
    pool = build_pool(frozenset({"embeddings"}), SPEC, _proba(), TEXTS, HUMAN)
    together = svd_embeddings(TEXTS + [e.text for e in HUMAN])
    np.testing.assert_array_equal(pool.embeddings, together[: len(TEXTS)])
    np.testing.assert_array_equal(pool.labelled_embeddings, together[len(TEXTS) :])
    assert np.allclose(np.linalg.norm(pool.embeddings, axis=1), 1.0, atol=1e-5)


def test_the_students_sentence_vectors_stand_in_and_a_callers_own_embeddings_come_first() -> None:
    rng = np.random.default_rng(0)
    vectors = TaskVectors("test-encoder", rng.random((len(TEXTS), 4)), rng.random((len(HUMAN), 4)))
    pool = build_pool(frozenset({"embeddings"}), SPEC, _proba(), TEXTS, HUMAN, vectors=vectors)
    assert pool.embeddings is vectors.pool and pool.labelled_embeddings is vectors.human
    own = (rng.random((len(TEXTS), 3)), rng.random((2, 3)))
    given = build_pool(frozenset({"embeddings"}), SPEC, _proba(), TEXTS, HUMAN, vectors=vectors, embeddings=own)
    assert given.embeddings is own[0] and given.labelled_embeddings is own[1]


def test_the_committee_is_seeded_bootstrap_students_and_needs_two_human_labels() -> None:
    needs = frozenset({"committee"})
    first = build_pool(needs, SPEC, _proba(), TEXTS, HUMAN, committee_seed=3).committee
    again = build_pool(needs, SPEC, _proba(), TEXTS, HUMAN, committee_seed=3).committee
    other = build_pool(needs, SPEC, _proba(), TEXTS, HUMAN, committee_seed=4).committee
    assert len(first) == 5 and all(member.shape == (len(TEXTS), 2) for member in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=False))
    votes = np.mean([member.argmax(axis=1) for member in first], axis=0)  # column 1 is Negative
    assert votes[0] < 0.5 < votes[1]  # the members learnt the labels, not noise
    assert len(build_pool(needs, SPEC, _proba(), TEXTS, HUMAN[:1]).committee) == 0


def test_committee_members_use_the_students_sentence_vectors_where_it_has_them() -> None:
    # the texts say nothing about the label; only the vectors do, so only members that read them can tell
    human = [Example(i, f"item number {i}", ("Positive" if i % 2 else "Negative",)) for i in range(12)]
    texts = [f"item number {i}" for i in range(12, 16)]
    vectors = TaskVectors("test-encoder", _parity_vectors(range(12, 16)), _parity_vectors(e.task_id for e in human))
    committee = build_pool(frozenset({"committee"}), SPEC, _proba(4), texts, human, vectors=vectors).committee
    assert committee
    positive = np.mean([member[:, 0] for member in committee], axis=0)
    assert positive[1] > 0.5 > positive[0] and positive[3] > 0.5 > positive[2]


def _parity_vectors(items: Iterable[int]) -> np.ndarray:
    """Odd items (Positive) on one axis, even ones (Negative) on the other."""
    return np.array([[1.0, 0.0] if i % 2 else [0.0, 1.0] for i in items])


def test_llm_distributions_follow_the_pool_order_with_nan_where_the_llm_gave_none() -> None:
    answers = {7: _answer({"Negative": 0.8, "Positive": 0.2}), 8: _answer(None), 9: _answer({"Positive": 1.0})}
    rows = llm_distributions(answers, [9, 7, 8, 10], SPEC.labels)
    np.testing.assert_array_equal(rows[:2], [[1.0, 0.0], [0.2, 0.8]])
    assert np.isnan(rows[2:]).all()
    pool = build_pool(frozenset({"proba", "llm_proba"}), SPEC, _proba(4), TEXTS[:4], HUMAN, answers=answers,
                      ids=[9, 7, 8, 10])  # fmt: skip
    np.testing.assert_array_equal(pool.llm_proba, rows)
    without = build_pool(frozenset({"proba", "llm_proba"}), SPEC, _proba(4), TEXTS[:4], HUMAN)
    with pytest.raises(ValueError, match="llm_proba"):  # no answers given: the strategy is refused, as it was
        check_applies(make_strategy("student_llm_disagreement"), without)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_ranks_the_pool_built_with_every_field(name: str) -> None:
    answers = {task: _answer({"Positive": 0.3, "Negative": 0.7}) for task in range(0, len(TEXTS), 2)}
    pool = build_pool(EVERY_FIELD, SPEC, _proba(), TEXTS, HUMAN, answers=answers, ids=list(range(len(TEXTS))))
    ranked = make_strategy(name).rank(pool, 3, np.random.default_rng(0))
    assert len(set(ranked.tolist())) == 3 and set(ranked.tolist()) <= set(range(len(TEXTS)))


def test_predict_proba_in_chunks_equals_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    model = StudentModel(SPEC.labels).fit([e.text for e in HUMAN], [e.labels for e in HUMAN])
    whole = predict_proba(model, TEXTS)
    monkeypatch.setattr(pool_module, "PREDICT_CHUNK", 2)
    np.testing.assert_array_equal(predict_proba(model, TEXTS), whole)
    assert predict_proba(model, []).shape == (0, 2)
