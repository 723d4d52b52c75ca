"""Query strategies: which unlabelled tasks a human should label next.

Each strategy looks only at a `Pool` of arrays over the n unlabelled tasks (student probabilities,
embeddings, a bootstrap committee, the LLM's answers) and returns task indices, most useful first.
They know nothing of texts, Label Studio or the LLM client: whoever builds the Pool does that.

Every strategy runs on 100,000 tasks in memory linear in n: no n x n matrix is ever formed.
Rankings are deterministic given the rng, which also breaks ties (so a pool of identical scores,
as at the cold start, is not taken in index order).

Tasks come in two shapes (the names small-text's `constraints` uses): single-label, where a row of
`proba` is one distribution over the labels, and multi-label, where each column is a label's own
probability of being on (one binary model per label, a set scored as the product). Each strategy
declares the shapes it `supports`; `rank` refuses a pool of any other shape with a ValueError that says
so. On multi-label pools the uncertainty strategies score the whole label set: see MULTI_LABEL_UNCERTAINTY.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy import sparse
from scipy.special import entr, rel_entr
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

from backend.selection.diversity import k_center_greedy

Embeddings = np.ndarray | sparse.spmatrix
SINGLE_LABEL, MULTI_LABEL = "single-label", "multi-label"
ANY_SHAPE = frozenset({SINGLE_LABEL, MULTI_LABEL})


@dataclass
class Pool:
    """What a strategy may look at. Every array is over the same n unlabelled tasks, in one order."""

    proba: np.ndarray | None = None  # (n, k) student probabilities, columns in label order
    embeddings: Embeddings | None = None  # (n, d) L2-normalized rows, for diversity
    labelled_embeddings: Embeddings | None = None  # (m, d) tasks already labelled: the coreset starts from them
    committee: Sequence[np.ndarray] = ()  # (n, k) probabilities from each bootstrap member of the student
    llm_proba: np.ndarray | None = None  # (n, k) the LLM's label distribution; NaN rows where it gave none
    multi_label: bool = False  # proba's columns are independent per-label probabilities, not one distribution

    @property
    def shape(self) -> str:
        return MULTI_LABEL if self.multi_label else SINGLE_LABEL

    @property
    def size(self) -> int:
        """The number of tasks, which every given array must agree on."""
        lengths = {
            name: value.shape[0]
            for name, value in (
                ("proba", self.proba),
                ("embeddings", self.embeddings),
                ("llm_proba", self.llm_proba),
            )
            if value is not None
        }
        lengths.update({f"committee[{i}]": len(member) for i, member in enumerate(self.committee)})
        if not lengths:
            raise ValueError("the Pool has no arrays, so its size is unknown")
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the Pool's arrays disagree on the number of tasks: {lengths}")
        return next(iter(lengths.values()))

    def subset(self, rows: Sequence[int] | np.ndarray) -> Pool:
        """The same pool with only `rows` of its tasks (the labelled embeddings unchanged)."""
        rows = np.asarray(rows, dtype=int)

        def take(value: Any) -> Any:
            return None if value is None else value[rows]

        return Pool(take(self.proba), take(self.embeddings), self.labelled_embeddings,
                    [member[rows] for member in self.committee], take(self.llm_proba), self.multi_label)  # fmt: skip

    def require(self, needed: frozenset[str], strategy: str) -> None:
        missing = [name for name in sorted(needed) if _is_missing(getattr(self, name))]
        if missing:
            raise ValueError(f"strategy {strategy!r} needs Pool field(s) {', '.join(missing)}, which are missing")


def check_applies(strategy: QueryStrategy, pool: Pool) -> None:
    """Raise a ValueError saying why, when `strategy` cannot rank `pool`: the wrong task shape or missing fields."""
    if pool.shape not in strategy.supports:
        raise ValueError(f"strategy {strategy.name!r} does not apply to {pool.shape} tasks "
                         f"(it supports {' and '.join(sorted(strategy.supports))} tasks)")  # fmt: skip
    pool.require(strategy.needs, strategy.name)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, Sequence) and len(value) == 0)


@runtime_checkable
class QueryStrategy(Protocol):
    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]  # the Pool fields it requires
    supports: ClassVar[frozenset[str]]  # the task shapes it applies to: SINGLE_LABEL, MULTI_LABEL

    def rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to n task indices into the pool, most useful first, none repeated."""
        ...


# --- uncertainty scores: higher means more uncertain, each in [0, 1] ---------------------------------


# numpy reduces short rows slowly (a 10k x 6 `max(axis=1)` costs ~0.45 ms); a pass per column costs ~0.07 ms.
# Past this many labels the row-wise reductions are the faster ones again.
_COLUMN_PASSES_UP_TO = 16


def row_max(proba: np.ndarray) -> np.ndarray:
    if proba.shape[1] > _COLUMN_PASSES_UP_TO or proba.shape[1] == 0:
        return proba.max(axis=1)
    best = proba[:, 0].copy()
    for j in range(1, proba.shape[1]):
        np.maximum(best, proba[:, j], out=best)
    return best


def top_two(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's largest and second largest value (the second is -inf for a single column)."""
    if proba.shape[1] > _COLUMN_PASSES_UP_TO // 2:
        two = np.partition(proba, -2, axis=1)[:, -2:]
        return two[:, 1], two[:, 0]
    first, second = proba[:, 0].copy(), np.full(len(proba), -np.inf)
    for j in range(1, proba.shape[1]):
        column = proba[:, j]
        np.maximum(second, np.minimum(first, column), out=second)
        np.maximum(first, column, out=first)
    return first, second


def least_confidence(proba: np.ndarray) -> np.ndarray:
    return 1.0 - row_max(proba)


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 minus the gap between the two likeliest labels: 1 for a tie, 0 for certainty."""
    first, second = top_two(proba)
    return 1.0 - (first - second)


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, divided by log(k) so a uniform row scores 1."""
    return (entr(proba) @ np.ones(proba.shape[1])) / np.log(proba.shape[1])


UNCERTAINTY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin_uncertainty,
    "entropy": entropy,
}


# Multi-label rows are k independent probabilities: a row's max, top two or entropy as one distribution
# mean nothing. Each score below treats the row as k binary decisions, and keeps the [0, 1] range.


def predicted_sets(proba: np.ndarray) -> np.ndarray:
    """(n, k) booleans: every label at p >= 0.5, the likeliest one if none is (student.model.decide's rule)."""
    chosen = proba >= 0.5
    empty = ~chosen.any(axis=1)
    chosen[np.flatnonzero(empty), proba[empty].argmax(axis=1)] = True
    return chosen


def predicted_set_probability(proba: np.ndarray) -> np.ndarray:
    """The probability that each row's predicted set is exactly right, under independent labels."""
    return np.prod(np.where(predicted_sets(proba), proba, 1.0 - proba), axis=1)


def least_confident_set(proba: np.ndarray) -> np.ndarray:
    """1 - P(predicted set): least confidence over label sets as structured outputs (Culotta & McCallum, 2005)."""
    return 1.0 - predicted_set_probability(proba)


def smallest_label_margin(proba: np.ndarray) -> np.ndarray:
    """1 minus the margin |p - (1 - p)| of the label nearest its decision boundary.

    Brinker (2006)'s "binary minimum" / MMU: a task is as uncertain as its least certain label. With two
    labels it equals single-label margin on a row (p, 1 - p).
    """
    return 1.0 - np.abs(2.0 * proba - 1.0).min(axis=1)


def mean_binary_entropy(proba: np.ndarray) -> np.ndarray:
    """Mean over labels of each label's on/off entropy in bits: 1 when every label is at 0.5.

    Esuli & Sebastiani (2009)'s "average" aggregation of per-label uncertainty.
    """
    return (entr(proba) + entr(1.0 - proba)).mean(axis=1) / np.log(2.0)


MULTI_LABEL_UNCERTAINTY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confident_set,
    "margin": smallest_label_margin,
    "entropy": mean_binary_entropy,
}


def uncertainty(name: str, pool: Pool) -> np.ndarray:
    """The uncertainty score `name` (a key of UNCERTAINTY) of each task, as the pool's task shape defines it."""
    return (MULTI_LABEL_UNCERTAINTY if pool.multi_label else UNCERTAINTY)[name](pool.proba)


def vote_entropy(committee: Sequence[np.ndarray]) -> np.ndarray:
    """Entropy of the members' argmax votes, divided by log(k): 0 when all agree."""
    n, k = committee[0].shape
    votes = np.zeros((n, k))
    rows = np.arange(n)
    for member in committee:
        votes[rows, member.argmax(axis=1)] += 1.0
    return entropy(votes / len(committee))


def mean_vote_entropy(committee: Sequence[np.ndarray]) -> np.ndarray:
    """Multi-label vote entropy: each label's on/off vote entropy over the members' predicted sets, averaged."""
    return mean_binary_entropy(np.mean([predicted_sets(member) for member in committee], axis=0))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence of each pair of rows, in bits: 0 when equal, 1 when disjoint."""
    middle = (p + q) / 2.0
    return (rel_entr(p, middle).sum(axis=1) + rel_entr(q, middle).sum(axis=1)) / (2.0 * np.log(2.0))


def top_indices(scores: np.ndarray, n: int, rng: np.random.Generator, *then_by: np.ndarray) -> np.ndarray:
    """The n highest-scoring indices, ties broken by `then_by` (higher first, in order), then at random.

    NaN scores rank last.
    """
    primary = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    n = max(0, min(n, len(primary)))
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    # Only rows scoring at least the n-th best can be picked: sort those, not the whole pool.
    cut = np.partition(primary, len(primary) - n)[len(primary) - n]
    rows = np.flatnonzero(primary >= cut)
    keys = [rng.random(len(rows))]
    keys += [-np.nan_to_num(np.asarray(key, dtype=float)[rows], nan=-np.inf) for key in reversed(then_by)]
    keys.append(-primary[rows])
    return rows[np.lexsort(keys)[:n]]


def _dot_rows(features: Embeddings, vector: np.ndarray) -> np.ndarray:
    """features @ vector as a flat array, for dense or sparse features."""
    return np.asarray(features @ vector).ravel()


def _row(features: Embeddings, i: int) -> np.ndarray:
    row = features[i]
    return np.asarray(row.toarray() if sparse.issparse(row) else row).ravel()


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


# --- strategies ----------------------------------------------------------------------------------


class _Strategy:
    """Validates the pool and clamps n, then hands over to `_rank`."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    supports: ClassVar[frozenset[str]] = ANY_SHAPE

    def rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        check_applies(self, pool)
        n = min(int(n), pool.size)
        if n <= 0:
            return np.empty(0, dtype=np.intp)
        return np.asarray(self._rank(pool, n, rng), dtype=np.intp)

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class _ScoredStrategy(_Strategy):
    """A strategy that scores each task on its own: the top n scores are the batch."""

    def scores(self, pool: Pool) -> np.ndarray:
        """One score per task, higher is more useful."""
        raise NotImplementedError

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        return top_indices(self.scores(pool), n, rng)


@dataclass(frozen=True)
class RandomSampling(_Strategy):
    """The baseline every other strategy must beat. Needs only the pool's size; any task shape."""

    name: ClassVar[str] = "random"
    needs: ClassVar[frozenset[str]] = frozenset()

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(pool.size)[:n]


@dataclass(frozen=True)
class LeastConfidence(_ScoredStrategy):
    """Tasks whose likeliest label is least likely; multi-label: whose predicted set is least likely."""

    name: ClassVar[str] = "least_confidence"
    needs: ClassVar[frozenset[str]] = frozenset({"proba"})

    def scores(self, pool: Pool) -> np.ndarray:
        return uncertainty(self.name, pool)


@dataclass(frozen=True)
class Margin(_ScoredStrategy):
    """Tasks whose two likeliest labels are closest: those nearest a decision boundary.

    Multi-label: tasks with a label nearest its own on/off boundary (Brinker, 2006; smallest_label_margin).
    """

    name: ClassVar[str] = "margin"
    needs: ClassVar[frozenset[str]] = frozenset({"proba"})

    def scores(self, pool: Pool) -> np.ndarray:
        return uncertainty(self.name, pool)


@dataclass(frozen=True)
class Entropy(_ScoredStrategy):
    """Tasks whose label distribution has the highest entropy; multi-label: the highest mean per-label
    binary entropy (Esuli & Sebastiani, 2009; mean_binary_entropy)."""

    name: ClassVar[str] = "entropy"
    needs: ClassVar[frozenset[str]] = frozenset({"proba"})

    def scores(self, pool: Pool) -> np.ndarray:
        return uncertainty(self.name, pool)


@dataclass(frozen=True)
class VoteEntropy(_Strategy):
    """Query by committee: tasks whose bootstrap members vote most differently.

    With a handful of members vote entropy takes few distinct values, so ties are broken by the
    entropy of the members' mean probabilities. Multi-label: each member votes on every label (on in its
    predicted set, or off), and the per-label vote entropies are averaged, ties broken by the mean
    per-label binary entropy of the members' mean probabilities.
    """

    name: ClassVar[str] = "vote_entropy"
    needs: ClassVar[frozenset[str]] = frozenset({"committee"})

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(pool.committee) < 2:
            raise ValueError(f"strategy {self.name!r} needs at least two committee members")
        mean = np.mean(np.stack(pool.committee), axis=0)
        if pool.multi_label:
            return top_indices(mean_vote_entropy(pool.committee), n, rng, mean_binary_entropy(mean))
        return top_indices(vote_entropy(pool.committee), n, rng, entropy(mean))


@dataclass(frozen=True)
class StudentLLMDisagreement(_Strategy):
    """Tasks where the student's and the LLM's label distributions differ most (Jensen-Shannon).

    Where they disagree one of them is wrong, and a human label there corrects the student or
    reveals an LLM mistake. Tasks without an LLM answer come after all the others, ordered by the
    student's margin uncertainty.

    Single-label only: for a multi-label task the LLM answers a set and a confidence, with no per-label
    distribution to compare the student's with, so there is nothing to measure a divergence on.
    """

    name: ClassVar[str] = "student_llm_disagreement"
    needs: ClassVar[frozenset[str]] = frozenset({"proba", "llm_proba"})
    supports: ClassVar[frozenset[str]] = frozenset({SINGLE_LABEL})

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        llm = np.asarray(pool.llm_proba, dtype=float)
        totals = llm.sum(axis=1)
        answered = np.isfinite(totals) & (totals > 0)
        divergence = np.full(len(llm), np.nan)
        if answered.any():
            student = pool.proba[answered]
            divergence[answered] = jensen_shannon(
                student / student.sum(axis=1, keepdims=True), llm[answered] / totals[answered, None]
            )
        uncertainty = margin_uncertainty(pool.proba)
        return top_indices(answered.astype(float), n, rng, np.where(answered, divergence, uncertainty), uncertainty)


@dataclass(frozen=True)
class KCenterGreedy(_Strategy):
    """Coreset (Sener & Savarese): each pick the task farthest from every labelled or picked task.

    Pure diversity: it ignores the student, so it applies to any task shape. Costs one pass over the
    pool's embeddings per labelled task and per pick (see diversity.k_center_greedy).
    """

    name: ClassVar[str] = "kcenter_greedy"
    needs: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        features, labelled = pool.embeddings, pool.labelled_embeddings
        already: Sequence[int] = ()
        if labelled is not None and labelled.shape[0]:
            if labelled.shape[1] != features.shape[1]:
                raise ValueError(
                    f"labelled_embeddings have {labelled.shape[1]} dimensions, embeddings {features.shape[1]}"
                )
            stack = sparse.vstack if sparse.issparse(features) or sparse.issparse(labelled) else np.vstack
            already = range(pool.size, pool.size + labelled.shape[0])
            features = stack([features, labelled])
            if sparse.issparse(features):
                features = features.tocsr()
        return np.asarray(k_center_greedy(features, n, already=already, seed=_seed(rng)))


@dataclass(frozen=True)
class ClusterDiverse(_Strategy):
    """k-means into n clusters, then the most uncertain task of each: uncertain, but not all alike.

    Picks are ordered by their uncertainty. Should k-means leave clusters empty, the most uncertain
    remaining tasks fill the batch. The uncertainty is the task shape's (see `uncertainty`).
    """

    name: ClassVar[str] = "cluster_diverse"
    needs: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})
    uncertainty: str = "margin"
    batch_size: int = 2048

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        scores = uncertainty(self.uncertainty, pool)
        tiebreak = rng.random(pool.size)
        kmeans = MiniBatchKMeans(n_clusters=n, batch_size=self.batch_size, n_init=1, random_state=_seed(rng))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters: filled below
            clusters = kmeans.fit_predict(pool.embeddings)
        by_cluster = np.lexsort((tiebreak, -scores, clusters))
        _, first = np.unique(clusters[by_cluster], return_index=True)
        picks = by_cluster[first]
        picks = picks[np.lexsort((tiebreak[picks], -scores[picks]))]
        if len(picks) < n:
            rest = np.ones(pool.size, dtype=bool)
            rest[picks] = False
            candidates = np.flatnonzero(rest)
            order = np.lexsort((tiebreak[candidates], -scores[candidates]))
            picks = np.concatenate([picks, candidates[order[: n - len(picks)]]])
        return picks


@dataclass(frozen=True)
class BADGE(_Strategy):
    """Batch Active learning by Diverse Gradient Embeddings (Ash et al., 2020), for a linear softmax model.

    A task's gradient embedding is (p - onehot(argmax p)) (x) x: long when the student is unsure,
    pointing where x lies. k-means++ seeding over these picks tasks that are both uncertain and far
    apart. The embeddings are never materialized (n x k*d): the squared distance between two of them
    is |a_i|^2 |x_i|^2 + |a_j|^2 |x_j|^2 - 2 (a_i . a_j)(x_i . x_j), with a = p - onehot, so each pick
    costs one pass over the pool's probabilities and embeddings.

    Multi-label: the student is one logistic regression per label, whose summed log-losses have the
    gradient (p - y) (x) x for the label vector y; with y the predicted set, a = p - predicted set.
    """

    name: ClassVar[str] = "badge"
    needs: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})

    def _rank(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        x = pool.embeddings
        a = np.array(pool.proba, dtype=float)
        if pool.multi_label:
            a -= predicted_sets(a)
        else:
            a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
        x_norms = np.asarray(x.multiply(x).sum(axis=1)).ravel() if sparse.issparse(x) else np.einsum("ij,ij->i", x, x)
        norms = np.einsum("ij,ij->i", a, a) * x_norms  # squared lengths of the gradient embeddings
        nearest = np.full(len(a), np.inf)  # squared distance to the nearest picked gradient embedding
        picks = [int(top_indices(norms, 1, rng)[0])]  # BADGE starts from the longest gradient
        for _ in range(n - 1):
            centre = picks[-1]
            distance = norms + norms[centre] - 2.0 * (a @ a[centre]) * _dot_rows(x, _row(x, centre))
            np.minimum(nearest, np.maximum(distance, 0.0), out=nearest)
            nearest[picks] = 0.0
            picks.append(self._sample(nearest, picks, rng))
        return np.asarray(picks)

    @staticmethod
    def _sample(weights: np.ndarray, picks: list[int], rng: np.random.Generator) -> int:
        """A draw proportional to weights (k-means++'s D^2 sampling); uniform over unpicked rows if all are 0."""
        cumulative = np.cumsum(weights)
        if cumulative[-1] > 0:
            return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(weights) - 1))
        unpicked = np.setdiff1d(np.arange(len(weights)), picks)
        return int(rng.choice(unpicked))


@dataclass(frozen=True)
class DensityWeighted(_ScoredStrategy):
    """Information density (Settles & Craven, 2008): uncertainty x (mean similarity to the pool)^beta.

    Uncertainty alone favours outliers, which teach the student little about the rest of the pool.
    With L2-normalized rows the mean cosine similarity of x to the pool is exactly x . mean(pool), so
    density costs one pass and no n x n matrix. It is a global measure (typicality, not local
    crowding); negative similarities count as 0. The uncertainty is the task shape's (see `uncertainty`).
    """

    name: ClassVar[str] = "density_weighted"
    needs: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})
    uncertainty: str = "entropy"
    beta: float = 1.0

    def scores(self, pool: Pool) -> np.ndarray:
        return uncertainty(self.uncertainty, pool) * density(pool.embeddings) ** self.beta


def density(embeddings: Embeddings) -> np.ndarray:
    """Each row's mean cosine similarity to all rows (itself included), floored at 0."""
    centre = np.asarray(embeddings.mean(axis=0)).ravel()
    return np.maximum(_dot_rows(embeddings, centre), 0.0)


STRATEGIES: dict[str, type[_Strategy]] = {
    strategy.name: strategy
    for strategy in (
        RandomSampling,
        LeastConfidence,
        Margin,
        Entropy,
        VoteEntropy,
        StudentLLMDisagreement,
        KCenterGreedy,
        ClusterDiverse,
        BADGE,
        DensityWeighted,
    )
}


def make_strategy(name: str, **params: object) -> QueryStrategy:
    """The strategy registered under `name`, built with `params` (e.g. beta=0.5 for density_weighted)."""
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: {', '.join(STRATEGIES)}") from None
    return strategy(**params)  # type: ignore[call-arg]
