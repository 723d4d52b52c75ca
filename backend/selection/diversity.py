"""Diverse subsets of a pool: k-center greedy (farthest-first traversal) on L2-normalized features.

Used for the cold-start seed the LLM labels before any human has (LAUD's initialization): the seed
should cover the pool, not repeat its densest corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

START_CHUNK = 256  # labelled rows per product when computing where the labelled set already reaches


def text_features(texts: Sequence[str], max_features: int = 50_000) -> sparse.csr_matrix:
    """TF-IDF word features, rows L2-normalized: cosine similarity is a dot product."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=max_features, dtype=np.float32)
    return normalize(vectorizer.fit_transform(texts)).tocsr()


def k_center_greedy(
    features: sparse.spmatrix | np.ndarray, k: int, already: Sequence[int] = (), seed: int = 0
) -> list[int]:
    """k row indices, each the farthest (cosine distance) from every row chosen before it.

    Starts from `already` (e.g. labelled rows) when given, else from a seeded random row. Rows must be
    L2-normalized. One sparse matrix-vector product per pick: O(k * nnz).
    """
    n = features.shape[0]
    k = min(k, n - len(set(already)))
    if k <= 0:
        return []
    chosen: list[int] = []
    nearest = np.full(n, np.inf)  # distance from each row to its nearest chosen row

    def take(rows: Sequence[int]) -> None:
        similarity = features @ features[list(rows)].T
        similarity = similarity.toarray() if sparse.issparse(similarity) else np.asarray(similarity)
        np.minimum(nearest, 1.0 - similarity.max(axis=1), out=nearest)

    already = [int(row) for row in already]
    for start in range(0, len(already), START_CHUNK):  # one product per chunk, not one per labelled row
        take(already[start : start + START_CHUNK])
    if not len(already):
        first = int(np.random.default_rng(seed).integers(n))
        chosen.append(first)
        take([first])
    while len(chosen) < k:
        candidate = nearest.copy()
        candidate[list(already)] = -np.inf
        candidate[chosen] = -np.inf
        row = int(np.argmax(candidate))
        chosen.append(row)
        take([row])
    return chosen
