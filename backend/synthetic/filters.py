"""Quality filters for generated texts: length, exact and near duplicates, and label consistency. Pure.

Near duplicates are found by cosine similarity of character 3-5-gram vectors (hashed, so nothing is
fitted and a 100k pool costs one sparse product per chunk). Each rejected text keeps its reason, so a
dry run and the final summary can say why a text did not make it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

from backend.synthetic.provenance import normalize_text

NEAR_DUPLICATE = 0.9  # cosine of char 3-5-grams above which two texts say the same thing
_VECTORIZER = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2**20, alternate_sign=False)


@dataclass(frozen=True)
class Rejected:
    text: str
    reason: str


@dataclass
class Filtered:
    kept: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.rejected:
            kind = item.reason.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def vectors(texts: Sequence[str]) -> sparse.csr_matrix:
    return _VECTORIZER.transform([normalize_text(t) for t in texts]).tocsr()


def max_similarity(candidates: sparse.csr_matrix, pool: sparse.csr_matrix, chunk: int = 20_000) -> np.ndarray:
    """For each candidate row, its highest cosine similarity to any pool row (0 for an empty pool)."""
    best = np.zeros(candidates.shape[0])
    for start in range(0, pool.shape[0], chunk):
        block = (candidates @ pool[start : start + chunk].T).toarray()
        if block.size:
            best = np.maximum(best, block.max(axis=1))
    return best


def filter_texts(
    candidates: Iterable[str],
    pool: Sequence[str],
    min_chars: int = 20,
    max_chars: int = 2000,
    near_duplicate: float = NEAR_DUPLICATE,
) -> Filtered:
    """Keep texts of a sane length that repeat neither the pool nor an earlier kept candidate."""
    out = Filtered()
    seen = {normalize_text(t) for t in pool}
    sized: list[str] = []
    for raw in candidates:
        text = raw.strip() if isinstance(raw, str) else ""
        if len(text) < min_chars:
            out.rejected.append(Rejected(text, f"too short: {len(text)} characters, fewer than {min_chars}"))
        elif len(text) > max_chars:
            out.rejected.append(Rejected(text, f"too long: {len(text)} characters, more than {max_chars}"))
        elif normalize_text(text) in seen:
            out.rejected.append(Rejected(text, "exact duplicate: of a project task or an earlier candidate"))
        else:
            seen.add(normalize_text(text))
            sized.append(text)
    if not sized:
        return out
    candidate_vectors = vectors(sized)
    to_pool = max_similarity(candidate_vectors, vectors(pool)) if pool else np.zeros(len(sized))
    among = (candidate_vectors @ candidate_vectors.T).toarray()
    kept_rows: list[int] = []
    for i, text in enumerate(sized):
        if to_pool[i] >= near_duplicate:
            out.rejected.append(Rejected(text, f"near duplicate: cosine {to_pool[i]:.2f} to a project task"))
            continue
        closest = max((among[i, j] for j in kept_rows), default=0.0)
        if closest >= near_duplicate:
            out.rejected.append(Rejected(text, f"near duplicate: cosine {closest:.2f} to another generated text"))
            continue
        kept_rows.append(i)
        out.kept.append(text)
    return out


def consistent(shares: Mapping[str, float], target: str, min_agreement: float = 0.6) -> tuple[bool, str]:
    """Whether an LLM labelling a text gives `target` a probability of at least `min_agreement`; with a
    reason if not. `shares` is its label distribution (logprobs, or the share of sampled answers).

    This is a filter, never a label: what the LLM says here is not stored and not shown to annotators.
    """
    if not any(p > 0 for p in shares.values()):
        return False, "inconsistent: the LLM gave no usable label"
    share = shares.get(target, 0.0)
    if share < min_agreement:
        others = sorted(label for label, p in shares.items() if label != target and p > 0)
        return False, f"inconsistent: labelled {target} with probability {share:.0%} (also {', '.join(others)})"
    return True, ""
