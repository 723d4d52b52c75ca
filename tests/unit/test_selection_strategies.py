from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from backend.selection.embeddings import svd_embeddings
from backend.selection.strategies import (
    BADGE,
    STRATEGIES,
    ClusterDiverse,
    DensityWeighted,
    Entropy,
    KCenterGreedy,
    LeastConfidence,
    Margin,
    Pool,
    QueryStrategy,
    StudentLLMDisagreement,
    VoteEntropy,
    jensen_shannon,
    make_strategy,
    mean_vote_entropy,
    predicted_set_probability,
    predicted_sets,
)
from backend.settings import Settings, settings_error
from backend.student.model import decide


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """k-means's OpenMP threads cost ~20 ms a step on a busy machine, whatever the pool's size."""
    with threadpool_limits(1):
        yield


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _full_pool(n: int = 30, k: int = 3, d: int = 8, seed: int = 0) -> Pool:
    """Every field filled, with random contents: for the properties every strategy must have."""
    rng = _rng(seed)
    llm = rng.dirichlet(np.ones(k), size=n)
    llm[::4] = np.nan
    return Pool(
        proba=rng.dirichlet(np.ones(k), size=n),
        embeddings=_unit_rows(rng.standard_normal((n, d))),
        labelled_embeddings=_unit_rows(rng.standard_normal((5, d))),
        committee=[rng.dirichlet(np.ones(k), size=n) for _ in range(3)],
        llm_proba=llm,
    )


def test_the_registry_holds_every_strategy_under_its_name() -> None:
    assert set(STRATEGIES) == {
        "random",
        "least_confidence",
        "margin",
        "entropy",
        "vote_entropy",
        "student_llm_disagreement",
        "kcenter_greedy",
        "cluster_diverse",
        "badge",
        "density_weighted",
    }
    for name, strategy in STRATEGIES.items():
        built = make_strategy(name)
        assert built.name == name and isinstance(built, QueryStrategy) and isinstance(built, strategy)
    assert make_strategy("density_weighted", beta=0.5).beta == 0.5  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown query strategy 'nope'"):
        make_strategy("nope")


def test_margin_picks_the_point_between_two_clusters() -> None:
    rng = _rng()
    left = rng.normal((-3.0, 0.0), 0.5, size=(20, 2))
    right = rng.normal((3.0, 0.0), 0.5, size=(20, 2))
    model = LogisticRegression().fit(np.vstack([left[:10], right[:10]]), [0] * 10 + [1] * 10)
    pool_points = np.vstack([left[10:], right[10:], [[0.05, 0.3]]])  # the last one lies between them
    ranking = Margin().rank(Pool(proba=model.predict_proba(pool_points)), 3, rng)
    assert ranking[0] == len(pool_points) - 1


def test_least_confidence_margin_and_entropy_order_as_defined() -> None:
    proba = np.array(
        [
            [0.90, 0.05, 0.05],  # confident
            [0.45, 0.45, 0.10],  # a tie between two labels: least confident, smallest margin
            [0.50, 0.25, 0.25],  # spread over three labels: highest entropy
        ]
    )
    pool = Pool(proba=proba)
    assert LeastConfidence().rank(pool, 3, _rng()).tolist() == [1, 2, 0]
    assert Margin().rank(pool, 3, _rng()).tolist() == [1, 2, 0]
    assert Entropy().rank(pool, 3, _rng()).tolist() == [2, 1, 0]
    np.testing.assert_allclose(Entropy().scores(Pool(proba=np.full((1, 4), 0.25))), [1.0])


def test_kcenter_greedy_picks_the_far_outlier_first_and_starts_from_the_labelled() -> None:
    rng = _rng()
    crowd = _unit_rows(np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.05, size=(40, 3)))
    outlier = np.array([[0.0, 0.0, 1.0]])
    embeddings = np.vstack([crowd[:20], outlier, crowd[20:]])
    labelled = np.array([[1.0, 0.0, 0.0]])
    ranking = KCenterGreedy().rank(Pool(embeddings=embeddings, labelled_embeddings=labelled), 3, rng)
    assert ranking[0] == 20
    # with an outlier already labelled, the pick is far from both it and the crowd's centre
    labelled = np.vstack([labelled, outlier])
    second = np.array([[0.0, 1.0, 0.0]])
    pool = Pool(embeddings=np.vstack([embeddings, second]), labelled_embeddings=labelled)
    assert KCenterGreedy().rank(pool, 1, rng).tolist() == [41]
    # sparse embeddings work the same
    sparse_pool = Pool(embeddings=sparse.csr_matrix(embeddings), labelled_embeddings=sparse.csr_matrix(labelled[:1]))
    assert KCenterGreedy().rank(sparse_pool, 1, rng).tolist() == [20]


def _three_clusters(per_cluster: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    centres = np.eye(3)
    cluster_of = np.repeat(np.arange(3), per_cluster)
    return _unit_rows(centres[cluster_of] + rng.normal(0, 0.05, size=(3 * per_cluster, 3))), cluster_of


def test_cluster_diverse_takes_the_most_uncertain_task_of_each_cluster() -> None:
    embeddings, cluster_of = _three_clusters()
    rng = _rng(1)
    proba = np.column_stack([rng.uniform(0.8, 0.99, size=30), np.zeros(30)])
    # cluster 0 is the most uncertain everywhere; plain margin would take all three picks from it
    proba[:10, 0] = rng.uniform(0.5, 0.6, size=10)
    proba[:, 1] = 1.0 - proba[:, 0]
    pool = Pool(proba=proba, embeddings=embeddings)
    assert set(cluster_of[Margin().rank(pool, 3, rng)]) == {0}
    for seed in range(3):
        ranking = ClusterDiverse().rank(pool, 3, _rng(seed))
        assert sorted(cluster_of[ranking]) == [0, 1, 2]
        for task in ranking:  # each pick is its cluster's least confident task
            members = np.flatnonzero(cluster_of == cluster_of[task])
            assert proba[task, 0] == proba[members, 0].min()
        assert proba[ranking[0], 0] < 0.6  # ordered by uncertainty: cluster 0's pick first


def test_badge_spans_both_regions_rather_than_repeating_one() -> None:
    rng = _rng()
    region_a = _unit_rows(np.array([1.0, 0.0]) + rng.normal(0, 0.01, size=(50, 2)))
    region_b = _unit_rows(np.array([0.0, 1.0]) + rng.normal(0, 0.01, size=(50, 2)))
    proba = np.vstack(
        [
            np.column_stack([np.full(50, 0.52), np.full(50, 0.48)]),  # a: the most uncertain tasks
            np.column_stack([np.full(50, 0.40), np.full(50, 0.60)]),
        ]
    )
    pool = Pool(proba=proba, embeddings=np.vstack([region_a, region_b]))
    assert (Margin().rank(pool, 4, rng) < 50).all()  # uncertainty alone stays in region a
    for seed in range(5):
        batch = BADGE().rank(pool, 4, _rng(seed))
        assert len(set(batch.tolist())) == 4
        assert (batch < 50).any() and (batch >= 50).any()
        assert batch[0] < 50  # BADGE starts from the longest gradient embedding: the most uncertain task


def test_vote_entropy_picks_where_members_disagree_and_breaks_ties_by_mean_entropy() -> None:
    agree = np.array([[0.9, 0.1]] * 5)
    members = [agree.copy() for _ in range(3)]
    members[0][2] = [0.2, 0.8]  # task 2: two members say 0, one says 1
    members[1][4] = [0.45, 0.55]  # task 4: the same split, but the members are less sure
    members[2][4] = [0.51, 0.49]
    ranking = VoteEntropy().rank(Pool(committee=members), 5, _rng())
    assert ranking[:2].tolist() == [4, 2]
    with pytest.raises(ValueError, match="at least two committee members"):
        VoteEntropy().rank(Pool(committee=[agree]), 1, _rng())


def test_student_llm_disagreement_ranks_disagreement_then_unanswered_by_uncertainty() -> None:
    student = np.array([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.5, 0.5]])
    llm = np.array([[0.9, 0.1], [0.7, 0.3], [0.1, 0.9], [np.nan, np.nan], [0.7, 0.3], [np.nan, np.nan]])
    ranking = StudentLLMDisagreement().rank(Pool(proba=student, llm_proba=llm), 6, _rng())
    assert ranking.tolist()[:2] == [2, 1]  # the flat disagreement first, then the mild one
    assert ranking.tolist()[-2:] == [5, 3]  # no LLM answer: last, the more uncertain student first
    assert jensen_shannon(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))[0] == pytest.approx(1.0)
    assert jensen_shannon(student, student) == pytest.approx(np.zeros(6))


def test_density_weighting_prefers_an_uncertain_task_in_a_crowd_over_an_uncertain_outlier() -> None:
    rng = _rng()
    crowd = _unit_rows(np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.1, size=(20, 3)))
    embeddings = np.vstack([crowd, [[0.0, 0.0, 1.0]]])
    proba = np.tile([0.95, 0.05], (21, 1))
    proba[5] = [0.6, 0.4]  # uncertain, in the crowd
    proba[20] = [0.5, 0.5]  # more uncertain, alone
    pool = Pool(proba=proba, embeddings=embeddings)
    assert Entropy().rank(pool, 1, rng).tolist() == [20]
    assert DensityWeighted().rank(pool, 1, rng).tolist() == [5]
    assert DensityWeighted(beta=0.0).rank(pool, 1, rng).tolist() == [20]  # beta 0: plain uncertainty


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_missing_pool_field_raises_naming_it(name: str) -> None:
    strategy = make_strategy(name)
    full = _full_pool()
    for field in strategy.needs:
        pool = Pool(**{**full.__dict__, field: () if field == "committee" else None})
        with pytest.raises(ValueError, match=f"needs Pool field\\(s\\) {field}"):
            strategy.rank(pool, 3, _rng())


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_rankings_are_deterministic_given_the_rng_and_cover_the_pool_when_n_exceeds_it(name: str) -> None:
    strategy = make_strategy(name)
    pool = _full_pool()
    first = strategy.rank(pool, 5, _rng(7))
    assert len(first) == 5 and len(set(first.tolist())) == 5
    assert first.tolist() == strategy.rank(pool, 5, _rng(7)).tolist()
    everything = strategy.rank(pool, 100, _rng(7))
    assert sorted(everything.tolist()) == list(range(30))
    assert strategy.rank(pool, 0, _rng()).tolist() == []


@pytest.mark.parametrize("name", ["kcenter_greedy", "badge", "density_weighted", "cluster_diverse"])
def test_diversity_strategies_take_sparse_embeddings(name: str) -> None:
    dense = _full_pool()
    as_sparse = Pool(
        **{
            **dense.__dict__,
            "embeddings": sparse.csr_matrix(dense.embeddings),
            "labelled_embeddings": sparse.csr_matrix(dense.labelled_embeddings),
        }
    )
    ranking = make_strategy(name).rank(as_sparse, 5, _rng(3))
    assert len(set(ranking.tolist())) == 5
    if name != "cluster_diverse":  # k-means's steps differ a little between sparse and dense input
        assert ranking.tolist() == make_strategy(name).rank(dense, 5, _rng(3)).tolist()


def test_random_sampling_depends_on_the_rng() -> None:
    pool = _full_pool()
    assert (
        make_strategy("random").rank(pool, 10, _rng(1)).tolist()
        != make_strategy("random").rank(pool, 10, _rng(2)).tolist()
    )


def test_ties_are_broken_by_the_rng_not_by_index() -> None:
    pool = Pool(proba=np.full((50, 2), 0.5))
    picks = {tuple(Margin().rank(pool, 3, _rng(seed)).tolist()) for seed in range(5)}
    assert len(picks) > 1 and (0, 1, 2) not in picks


def test_a_pool_whose_arrays_disagree_on_its_size_is_refused() -> None:
    with pytest.raises(ValueError, match="disagree on the number of tasks"):
        Margin().rank(Pool(proba=np.full((4, 2), 0.5), llm_proba=np.full((5, 2), 0.5)), 2, _rng())
    with pytest.raises(ValueError, match="no arrays"):
        make_strategy("random").rank(Pool(), 2, _rng())


def test_svd_embeddings_are_unit_rows_that_keep_similar_texts_close() -> None:
    texts = ["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply", "prices of stock fell"] * 5
    embeddings = svd_embeddings(texts, dim=3)
    assert embeddings.shape == (20, 3) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.9 and similarity[0, 2] < 0.5
    assert svd_embeddings(texts, dim=3, max_fit_rows=8).shape == (20, 3)


@pytest.mark.parametrize("k", [2, 3, 6, 8, 9, 16, 17, 40])
def test_column_pass_reductions_match_numpys_row_reductions(k: int) -> None:
    from backend.selection.strategies import entropy, row_max, top_two

    proba = np.random.default_rng(k).dirichlet(np.ones(k), size=500)
    proba[0] = 1.0 / k  # a full tie
    assert np.array_equal(row_max(proba), proba.max(axis=1))
    first, second = top_two(proba)
    two = np.sort(proba, axis=1)[:, -2:]
    assert np.array_equal(first, two[:, 1]) and np.array_equal(second, two[:, 0])
    assert entropy(proba) == pytest.approx(-(proba * np.log(proba)).sum(axis=1) / np.log(k))


def test_a_pool_subset_keeps_the_rows_asked_for_in_every_array() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=6)
    pool = Pool(proba=proba, embeddings=np.eye(6), labelled_embeddings=np.ones((2, 6)),
                committee=[proba[::-1].copy(), proba * 0.5])  # fmt: skip
    part = pool.subset([4, 1])
    assert part.size == 2
    np.testing.assert_array_equal(part.proba, proba[[4, 1]])
    np.testing.assert_array_equal(part.embeddings, np.eye(6)[[4, 1]])
    np.testing.assert_array_equal(part.committee[0], proba[::-1][[4, 1]])
    assert part.labelled_embeddings is pool.labelled_embeddings and part.llm_proba is None


# --- multi-label pools: independent per-label probabilities -------------------------------------------

MULTI_PROBA = np.array(
    [
        [0.90, 0.10, 0.05],  # every label far from 0.5
        [0.50, 0.99, 0.01],  # one label exactly on its boundary, the others sure
        [0.70, 0.70, 0.30],  # every label fairly unsure
        [0.20, 0.30, 0.40],  # no label on: the likeliest one is the predicted set
    ]
)


def _bits(p: float) -> float:
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def test_multi_label_uncertainty_treats_each_label_as_its_own_on_off_decision() -> None:
    pool = Pool(proba=MULTI_PROBA, multi_label=True)
    # least confidence: 1 - P(the predicted set exactly), labels independent
    least_confident = [1 - 0.9 * 0.9 * 0.95, 1 - 0.5 * 0.99 * 0.99, 1 - 0.7 * 0.7 * 0.7, 1 - 0.8 * 0.7 * 0.4]
    np.testing.assert_allclose(LeastConfidence().scores(pool), least_confident)
    # margin: 1 - |2p - 1| of the label nearest its boundary
    np.testing.assert_allclose(Margin().scores(pool), [1 - 0.8, 1.0, 1 - 0.4, 1 - 0.2])
    # entropy: mean per-label binary entropy, in bits
    entropies = [np.mean([_bits(p) for p in row]) for row in MULTI_PROBA]
    np.testing.assert_allclose(Entropy().scores(pool), entropies)
    assert LeastConfidence().rank(pool, 4, _rng()).tolist() == [3, 2, 1, 0]
    assert Margin().rank(pool, 4, _rng()).tolist() == [1, 3, 2, 0]
    assert Entropy().rank(pool, 4, _rng()).tolist() == [2, 3, 0, 1]
    # read as one distribution, the row with a label at 0.5 looked fairly sure (its top two differ by 0.49)
    assert Margin().rank(Pool(proba=MULTI_PROBA), 4, _rng()).tolist() == [2, 3, 1, 0]


def test_the_predicted_set_and_its_probability_are_the_students() -> None:
    labels = ("a", "b", "c", "d")
    proba = np.random.default_rng(3).random((200, 4))
    proba[:20] *= 0.5  # rows with no label at 0.5: the likeliest one alone
    sets, scores = predicted_sets(proba), predicted_set_probability(proba)
    for row, chosen, score in zip(proba, sets, scores, strict=True):
        decided = decide(row, labels, multi_label=True)
        assert decided.labels == tuple(label for label, on in zip(labels, chosen, strict=True) if on)
        assert score == pytest.approx(decided.score)


def test_multi_label_vote_entropy_counts_each_members_vote_on_each_label() -> None:
    agree = np.array([[0.9, 0.1, 0.8]] * 4)
    members = [agree.copy() for _ in range(3)]
    members[0][1] = [0.9, 0.6, 0.8]  # task 1: one member of three puts label 1 in its set
    members[0][3] = [0.9, 0.6, 0.4]  # task 3: one member differs on two labels
    pool = Pool(committee=members, multi_label=True)
    np.testing.assert_allclose(mean_vote_entropy(members), [0, _bits(1 / 3) / 3, 0, 2 * _bits(1 / 3) / 3])
    assert VoteEntropy().rank(pool, 2, _rng()).tolist() == [3, 1]


def test_multi_label_badge_starts_from_the_task_whose_labels_are_least_settled() -> None:
    proba = np.array([[0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [0.1, 0.9, 0.1]])
    embeddings = np.eye(3)
    # its gradient is p - (the predicted set): long where labels sit near 0.5, short where all are sure
    assert BADGE().rank(Pool(proba=proba, embeddings=embeddings, multi_label=True), 1, _rng()).tolist() == [1]
    # p - onehot(argmax) would make the confident row [0.9, 0.9, 0.9] the longest
    assert BADGE().rank(Pool(proba=proba, embeddings=embeddings), 1, _rng()).tolist() == [0]


def test_a_strategy_refuses_a_task_shape_it_does_not_support_and_says_so() -> None:
    single_only = {name for name, strategy in STRATEGIES.items() if "multi-label" not in strategy.supports}
    assert single_only == {"student_llm_disagreement"}
    assert all("single-label" in strategy.supports for strategy in STRATEGIES.values())
    pool = Pool(proba=MULTI_PROBA, llm_proba=np.full_like(MULTI_PROBA, np.nan), multi_label=True)
    message = "strategy 'student_llm_disagreement' does not apply to multi-label tasks .it supports single-label"
    with pytest.raises(ValueError, match=message):
        StudentLLMDisagreement().rank(pool, 2, _rng())


@pytest.mark.parametrize("name", sorted(name for name, s in STRATEGIES.items() if "multi-label" in s.supports))
def test_every_multi_label_strategy_ranks_a_multi_label_pool(name: str) -> None:
    full = _full_pool()
    rng = _rng(5)
    independent = rng.random(full.proba.shape)
    committee = [rng.random(independent.shape) for _ in range(3)]
    pool = Pool(**{**full.__dict__, "proba": independent, "committee": committee, "multi_label": True})
    strategy = make_strategy(name)
    first = strategy.rank(pool, 5, _rng(7))
    assert len(set(first.tolist())) == 5 and first.tolist() == strategy.rank(pool, 5, _rng(7)).tolist()
    assert sorted(strategy.rank(pool, 100, _rng(7)).tolist()) == list(range(30))


def test_a_pool_subset_keeps_its_task_shape() -> None:
    pool = Pool(proba=MULTI_PROBA, multi_label=True)
    assert pool.subset([2, 0]).multi_label and pool.subset([2, 0]).shape == "multi-label"
    assert Pool(proba=MULTI_PROBA).shape == "single-label"


def test_an_unknown_or_dropped_queue_strategy_is_refused_at_start() -> None:
    with pytest.raises(Exception) as raised:
        Settings(queue_strategy="llm_informativeness")
    message = settings_error(raised.value)
    assert message.startswith("invalid settings: QUEUE_STRATEGY: unknown query strategy 'llm_informativeness'")
    assert "dropped" in message and "margin" in message
    assert Settings(queue_strategy="badge").queue_strategy == "badge"
