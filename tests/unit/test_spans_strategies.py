"""Span query strategies order hand-made pools as their definitions say."""

from __future__ import annotations

import numpy as np
import pytest

from backend.spans import Span
from backend.spans.strategies import (
    MNLP,
    SEQUENCE_STRATEGIES,
    LeastConfidentSpan,
    MeanTokenEntropy,
    SequenceLeastConfidence,
    SequencePool,
    SequenceRandom,
    SpanDisagreement,
    TotalTokenEntropy,
    mean_token_entropy,
    mnlp,
    token_entropies,
    total_token_entropy,
)


def _rows(row: list[float], tokens: int) -> np.ndarray:
    return np.tile(np.asarray(row), (tokens, 1))


# task 0: 5 sure tokens; task 1: 2 uniform tokens; task 2: 10 mildly unsure tokens; task 3: no tokens
MARGINALS = [_rows([0.99, 0.005, 0.005], 5), _rows([1 / 3, 1 / 3, 1 / 3], 2), _rows([0.8, 0.1, 0.1], 10),
             np.zeros((0, 3))]  # fmt: skip
LOGPROB = np.array([-0.05, -1.5, -3.0, 0.0])
H_MILD = -(0.8 * np.log(0.8) + 2 * 0.1 * np.log(0.1)) / np.log(3)  # 0.5817


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_token_entropy_is_normalised_to_one_for_a_uniform_token() -> None:
    assert token_entropies(MARGINALS[1]) == pytest.approx([1.0, 1.0])
    assert token_entropies(MARGINALS[2])[0] == pytest.approx(H_MILD)
    assert total_token_entropy(MARGINALS)[:3] == pytest.approx([5 * token_entropies(MARGINALS[0])[0], 2.0, 10 * H_MILD])
    assert mean_token_entropy(MARGINALS)[:3] == pytest.approx([token_entropies(MARGINALS[0])[0], 1.0, H_MILD])
    assert np.isnan(total_token_entropy(MARGINALS)[3]) and np.isnan(mean_token_entropy(MARGINALS)[3])


def test_total_entropy_favours_the_long_text_and_mean_entropy_the_unsure_one() -> None:
    pool = SequencePool(marginals=MARGINALS)
    assert TotalTokenEntropy().rank(pool, 4, _rng()).tolist() == [2, 1, 0, 3]
    assert MeanTokenEntropy().rank(pool, 4, _rng()).tolist() == [1, 2, 0, 3]


def test_mnlp_normalises_by_length_where_least_confidence_does_not() -> None:
    pool = SequencePool(sequence_logprob=LOGPROB, lengths=np.array([5, 2, 10, 0]))
    assert mnlp(LOGPROB, pool.lengths)[:3] == pytest.approx([0.01, 0.75, 0.3])
    assert MNLP().rank(pool, 4, _rng()).tolist() == [1, 2, 0, 3]  # the empty text last
    assert SequenceLeastConfidence().rank(pool, 4, _rng()).tolist() == [2, 1, 0, 3]
    from_marginals = SequencePool(marginals=MARGINALS, sequence_logprob=LOGPROB)
    assert MNLP().rank(from_marginals, 2, _rng()).tolist() == [1, 2]


def test_least_confident_span_and_a_task_without_spans() -> None:
    pool = SequencePool(span_scores=[np.array([0.9, 0.95]), np.array([0.4]), np.array([]), np.array([0.99])])
    assert LeastConfidentSpan().rank(pool, 4, _rng()).tolist() == [1, 0, 3, 2]


def _span(text: str, start: int, end: int, label: str) -> Span:
    return Span(start, end, label, text[start:end])


def test_span_disagreement_is_one_minus_span_f1_and_no_llm_answer_ranks_last() -> None:
    text = "Tim Cook runs Apple in Cupertino"
    tim, apple, cupertino = _span(text, 0, 8, "PER"), _span(text, 14, 19, "ORG"), _span(text, 23, 32, "LOC")
    student = [[tim, apple], [tim, apple], [tim], [], []]
    llm = [[tim, apple], [tim, _span(text, 14, 19, "LOC"), cupertino], None, [], [cupertino]]
    pool = SequencePool(student_spans=student, llm_spans=llm)
    scores = SpanDisagreement().scores(pool)
    assert scores[[0, 1, 3, 4]] == pytest.approx([0.0, 1 - 2 * 1 / 5, 0.0, 1.0])
    assert np.isnan(scores[2])
    assert SpanDisagreement().rank(pool, 5, _rng()).tolist()[:2] == [4, 1]
    assert SpanDisagreement().rank(pool, 5, _rng()).tolist()[-1] == 2


def test_ties_are_broken_at_random_but_reproducibly() -> None:
    pool = SequencePool(marginals=[_rows([0.5, 0.5], 3)] * 20)
    first = MeanTokenEntropy().rank(pool, 20, np.random.default_rng(1)).tolist()
    assert first == MeanTokenEntropy().rank(pool, 20, np.random.default_rng(1)).tolist()
    assert first != list(range(20)) and sorted(first) == list(range(20))
    assert len(set(SequenceRandom().rank(pool, 5, _rng()).tolist())) == 5


def test_a_pool_missing_what_a_strategy_needs_or_disagreeing_on_size_is_refused() -> None:
    with pytest.raises(ValueError, match="needs SequencePool field"):
        MNLP().rank(SequencePool(marginals=MARGINALS), 2, _rng())
    with pytest.raises(ValueError, match="disagree on the number of tasks"):
        MNLP().rank(SequencePool(marginals=MARGINALS, sequence_logprob=LOGPROB[:2]), 2, _rng())
    assert MNLP().rank(SequencePool(sequence_logprob=LOGPROB, lengths=np.ones(4)), 0, _rng()).tolist() == []


def test_every_strategy_is_registered_by_name() -> None:
    assert sorted(SEQUENCE_STRATEGIES) == ["least_confident_span", "mean_token_entropy", "mnlp", "random",
                                           "sequence_least_confidence", "span_disagreement",
                                           "total_token_entropy"]  # fmt: skip
    assert all(SEQUENCE_STRATEGIES[name]().name == name for name in SEQUENCE_STRATEGIES)


def test_a_pool_from_the_students_outputs_ranks_with_every_strategy() -> None:
    from backend.spans.crf import CRFStudent
    from tests.unit.test_spans_crf import _toy

    texts, spans = _toy(30, seed=0)
    model = CRFStudent(calibration="none", max_iterations=20).fit(texts, spans)
    probe = ["Bob flew to Oslo !", "Zed met friends in Xanadu today", "", "ok"]
    outputs = model.analyse(probe)
    pool = SequencePool.from_outputs(outputs, llm_spans=[outputs[0].spans, [], None, []])
    assert pool.size == 4
    for name, strategy in SEQUENCE_STRATEGIES.items():
        ranked = strategy().rank(pool, 4, _rng()).tolist()
        assert sorted(ranked) == [0, 1, 2, 3], name
    assert MNLP().rank(pool, 4, _rng()).tolist()[-1] == 2  # the empty text: nothing to tag
    assert mnlp(pool.sequence_logprob, pool.lengths)[1] > mnlp(pool.sequence_logprob, pool.lengths)[0]
