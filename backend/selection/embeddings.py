"""Dense task embeddings for the diversity strategies when the student has no sentence encoder
(STUDENT_ENCODER=none): TF-IDF reduced by truncated SVD (latent semantic analysis).

Fitted once on the whole pool, labelled and unlabelled tasks together, so their rows are comparable.
k-means, BADGE and density want dense, low-dimensional rows; the student's own TF-IDF features have
hundreds of thousands of columns. With an encoder the rank job uses the tasks' kept sentence embeddings
instead (backend/jobs/embeddings.py): any (n, d) array of L2-normalized rows can stand in for these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import normalize

from backend.selection.diversity import text_features


def svd_embeddings(
    texts_or_features: Sequence[str] | sparse.spmatrix | np.ndarray,
    dim: int = 128,
    seed: int = 0,
    max_fit_rows: int = 20_000,
) -> np.ndarray:
    """(n, dim) float32 embeddings with L2-normalized rows.

    Takes texts (TF-IDF word features are built from them) or an already built feature matrix, such
    as the student's `vectorizer_.transform(texts)`. `dim` shrinks to what a small pool allows.
    The SVD is fitted on at most `max_fit_rows` seeded random rows and then projects all of them:
    the randomized SVD's cost grows with the rows, the directions it finds hardly do.
    """
    is_matrix = sparse.issparse(texts_or_features) or isinstance(texts_or_features, np.ndarray)
    features = texts_or_features if is_matrix else text_features(texts_or_features)
    n_rows, n_columns = features.shape
    components = min(dim, n_rows - 1, n_columns - 1)
    if components < 1:  # one task, or one feature: nothing to reduce
        dense = features.toarray() if sparse.issparse(features) else np.asarray(features)
        return normalize(dense.astype(np.float32))
    features = features.astype(np.float32)
    fit_rows = np.arange(n_rows)
    if n_rows > max_fit_rows:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n_rows, max_fit_rows, replace=False))
    svd = TruncatedSVD(n_components=components, algorithm="randomized", n_iter=4, random_state=seed)
    reduced = svd.fit(features[fit_rows]).transform(features)
    return normalize(reduced).astype(np.float32)
