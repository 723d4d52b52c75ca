"""The span student: a linear-chain CRF over token features, with a confidence for every span. Pure.

`CRFStudent` follows scikit-learn's conventions: parameters in `__init__`, learned state with a trailing
underscore, input checks in `fit`. CRFsuite (`sklearn-crfsuite`) trains the weights (L-BFGS with
elastic-net penalties); inference is done here in numpy from those weights, because CRFsuite exposes
token marginals but not what a span's confidence needs:

- **The span marginal** (`span_confidence="marginal"`, the default): the probability, summed over all
  tag sequences, that exactly this span is an entity of this type: its first token starts an `X` entity
  (`B-X`, or an `I-X` that `bio.repair_bio` would read as one), the rest continue it, and the next token
  does not. One forward-backward pass gives it for every span of a text. `"product"` (the product of the
  predicted tags' token marginals) and `"min"` (their minimum) are the usual shortcuts, kept to compare.
- **The best sequence's probability** P(y*|x), for MNLP (Shen et al., 2017) and as the task's chance of
  being wholly right, and **token marginals** for token entropy.
- **Temperature** (`calibration="temperature"`): every potential divided by one T, fitted on out-of-fold
  potentials (`folds` extra fits) to maximise the held-out gold sequences' likelihood, as the
  classification student scales its SVM scores. The best path does not change; probabilities do. Off by
  default: on WNUT-16 (bench/README.md) it made the best path's probability better calibrated against
  "the whole task is right" (ECE 0.115 -> 0.042 at 500 tweets, 0.084 -> 0.053 at 1,915) but not the span
  marginals (0.055 -> 0.088, 0.109 -> 0.095), and it costs 3 more fits (34 s -> 84 s at 2,000 tweets).

Which span confidence: on WNUT-16's held-out tweets the span marginal's ECE was 0.055-0.109 (100-160
predicted spans, so +-0.03 or so), the product's 0.096 and the min's 0.096-0.115; over the random-sampling
runs at 500 and 1,000 tweets the marginal averaged 0.078-0.079, the product 0.090-0.129, the min
0.065-0.095. The marginal is the one with a meaning (a probability over all taggings), at or near the best.

The model keeps only its weights (a dict of attributes, a weight matrix and a transition matrix), so it
pickles without CRFsuite's temporary model file and predicts without it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycrfsuite
import sklearn_crfsuite
from scipy import sparse
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold

from backend.spans.bio import OUTSIDE, Token, bio_to_spans, spans_to_bio, tokenize
from backend.spans.span import Span, check_spans

SPAN_CONFIDENCES = ("marginal", "product", "min")
CALIBRATIONS = ("temperature", "none")
_URL = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)
_BATCH = 256  # sequences per padded batch: bounded memory, little padding once sorted by length


# --- features ---------------------------------------------------------------------------------------------


def _shape(word: str) -> str:
    """Xxxx -> Xx, 2010 -> d, @Foo_1 -> @Xx_d: each run of one character class as one symbol."""
    classes = ("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return re.sub(r"(.)\1+", r"\1", "".join(classes))


def _word_features(word: str) -> dict[str, Any]:
    lower = word.lower()
    core = lower[1:] if lower[:1] in "@#" and len(lower) > 1 else lower
    flags = {
        "title": word.istitle(),
        "upper": word.isupper(),
        "digit": word.isdigit(),
        "has_digit": any(c.isdigit() for c in word),
        "punct": not any(c.isalnum() for c in word),
        "mention": word.startswith("@") and len(word) > 1,
        "hashtag": word.startswith("#") and len(word) > 1,
        "url": bool(_URL.match(word)),
    }
    features: dict[str, Any] = {
        "w": lower,
        "core": core,
        "shape": _shape(word),
        "p2": core[:2],
        "p3": core[:3],
        "s2": core[-2:],
        "s3": core[-3:],
        "s4": core[-4:],
    }
    features.update({name: True for name, on in flags.items() if on})
    return features


def token_features(tokens: Sequence[Token]) -> list[dict[str, Any]]:
    """CRFsuite feature dicts: the token's own features, its neighbours' at +-1 (form, shape, case) and
    +-2 (form), and sentence edges."""
    own = [_word_features(t.text) for t in tokens]
    rows = []
    for i, features in enumerate(own):
        row: dict[str, Any] = {"bias": 1.0, **features}
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if not 0 <= j < len(tokens):
                row["BOS" if offset < 0 else "EOS"] = True
                continue
            row[f"{offset}:w"] = own[j]["w"]
            if abs(offset) == 1:
                row[f"{offset}:shape"] = own[j]["shape"]
                row.update({f"{offset}:{flag}": True for flag in ("title", "upper", "punct") if own[j].get(flag)})
        rows.append(row)
    return rows


def logsumexp(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """log(sum(exp(values))) along `axis`, stable, -inf where every value is -inf (scipy's, without its
    per-call overhead, which dominated inference on short tweets)."""
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(values - peak), axis=axis, keepdims=True)) + peak
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


# --- potentials and inference -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Potentials:
    """A CRF's weights: state weights per attribute (rows) and tag (columns), and tag-to-tag transitions."""

    tags: list[str]
    attributes: dict[str, int]
    state: np.ndarray  # (attributes, tags)
    transitions: np.ndarray  # (tags, tags): from row to column

    @classmethod
    def from_crf(cls, crf: sklearn_crfsuite.CRF) -> Potentials:
        tags = list(crf.classes_)
        column = {tag: k for k, tag in enumerate(tags)}
        attributes: dict[str, int] = {}
        for attribute, _ in crf.state_features_:
            attributes.setdefault(attribute, len(attributes))
        state = np.zeros((len(attributes), len(tags)))
        for (attribute, tag), weight in crf.state_features_.items():
            state[attributes[attribute], column[tag]] = weight
        transitions = np.zeros((len(tags), len(tags)))
        for (before, after), weight in crf.transition_features_.items():
            transitions[column[before], column[after]] = weight
        return cls(tags, attributes, state, transitions)

    def emissions(self, sequences: Sequence[Sequence[dict[str, Any]]]) -> list[np.ndarray]:
        """Each sequence's (tokens, tags) state scores, its attributes named as CRFsuite names them
        (pycrfsuite.ItemSequence); one sparse product for all of them."""
        rows, columns, values, bounds = [], [], [], [0]
        lookup = self.attributes.get
        for features in sequences:
            for row, item in enumerate(pycrfsuite.ItemSequence(list(features)).items(), start=bounds[-1]):
                for attribute, value in item.items():
                    column = lookup(attribute)
                    if column is not None:
                        rows.append(row)
                        columns.append(column)
                        values.append(value)
            bounds.append(bounds[-1] + len(features))
        active = sparse.csr_matrix((values, (rows, columns)), shape=(bounds[-1], len(self.attributes)))
        scores = np.asarray(active @ self.state)
        return [scores[start:end] for start, end in itertools.pairwise(bounds)]


@dataclass
class _Lattice:
    """Forward-backward over one padded batch of sequences, at one temperature."""

    emissions: np.ndarray  # (n, T, K), already divided by the temperature; zeros past each length
    transitions: np.ndarray  # (K, K), likewise
    lengths: np.ndarray  # (n,)

    def forward(self) -> tuple[np.ndarray, np.ndarray]:
        """alpha (n, T, K) carried past each sequence's end, and log Z (n,)."""
        steps = self.emissions.shape[1]
        alpha = np.empty_like(self.emissions)
        alpha[:, 0] = self.emissions[:, 0]
        for t in range(1, steps):
            step = logsumexp(alpha[:, t - 1, :, None] + self.transitions[None], axis=1) + self.emissions[:, t]
            alpha[:, t] = np.where((t < self.lengths)[:, None], step, alpha[:, t - 1])
        return alpha, logsumexp(alpha[:, -1], axis=1)

    def backward(self) -> np.ndarray:
        steps = self.emissions.shape[1]
        beta = np.zeros_like(self.emissions)
        for t in range(steps - 2, -1, -1):
            after = self.emissions[:, t + 1] + beta[:, t + 1]
            step = logsumexp(self.transitions[None] + after[:, None, :], axis=2)
            beta[:, t] = np.where((t < self.lengths - 1)[:, None], step, 0.0)
        return beta

    def viterbi(self) -> list[np.ndarray]:
        n, steps, k = self.emissions.shape
        delta = self.emissions[:, 0].copy()
        back = np.zeros((n, steps, k), dtype=np.intp)
        for t in range(1, steps):
            scores = delta[:, :, None] + self.transitions[None]
            back[:, t] = scores.argmax(axis=1)
            delta = np.where((t < self.lengths)[:, None], scores.max(axis=1) + self.emissions[:, t], delta)
        paths = []
        for i, length in enumerate(self.lengths):
            path = np.zeros(length, dtype=np.intp)
            if length:
                path[-1] = delta[i].argmax()
                for t in range(length - 1, 0, -1):
                    path[t - 1] = back[i, t, path[t]]
            paths.append(path)
        return paths

    def path_scores(self, paths: Sequence[np.ndarray]) -> np.ndarray:
        scores = np.zeros(len(paths))
        for i, path in enumerate(paths):
            if len(path):
                steps = np.arange(len(path))
                scores[i] = self.emissions[i, steps, path].sum() + self.transitions[path[:-1], path[1:]].sum()
        return scores


def _pad(emissions: Sequence[np.ndarray], n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(e) for e in emissions], dtype=np.intp)
    padded = np.zeros((len(emissions), max(1, int(lengths.max(initial=0))), n_tags))
    for i, e in enumerate(emissions):
        padded[i, : len(e)] = e
    return padded, lengths


def _batches(lengths: Sequence[int]) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + _BATCH] for i in range(0, len(order), _BATCH)]


def sequence_nll(
    emissions: Sequence[np.ndarray], transitions: np.ndarray, gold: Sequence[np.ndarray], temperature: float
) -> float:
    """Mean negative log-likelihood of the gold tag paths with every potential divided by `temperature`."""
    total = 0.0
    for batch in _batches([len(e) for e in emissions]):
        padded, lengths = _pad([emissions[i] / temperature for i in batch], transitions.shape[0])
        lattice = _Lattice(padded, transitions / temperature, lengths)
        _, log_z = lattice.forward()
        total += float((log_z - lattice.path_scores([gold[i] for i in batch]))[lengths > 0].sum())
    return total / max(1, len(emissions))


# --- the student ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceOutput:
    """What the student says about one text."""

    tokens: list[Token]
    tags: list[str]  # the best tag path, as decoded (before any I- repair)
    spans: list[Span]  # the path's entities, each scored by the student's span confidence
    marginals: np.ndarray  # (tokens, tags) each token's tag distribution, columns in the model's `tags_` order
    sequence_logprob: float  # log P(best path | text); 0.0 for a text without tokens

    @property
    def sequence_probability(self) -> float:
        return float(np.exp(self.sequence_logprob))


class CRFStudent(BaseEstimator):
    """A linear-chain CRF tagging tokens with BIO tags, trained from texts and their gold spans."""

    def __init__(
        self,
        c1: float = 0.1,
        c2: float = 0.1,
        max_iterations: int = 100,
        span_confidence: str = "marginal",
        calibration: str = "none",
        folds: int = 3,
        random_state: int = 0,
    ) -> None:
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations
        self.span_confidence = span_confidence
        self.calibration = calibration
        self.folds = folds
        self.random_state = random_state

    # -- fitting

    def fit(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> CRFStudent:
        self._check_params()
        texts, spans = self._check_training_data(texts, spans)
        tokens = [tokenize(text) for text in texts]
        features = [token_features(t) for t in tokens]
        tags, misaligned = [], 0
        for token_list, span_list in zip(tokens, spans, strict=True):
            sequence, cut = spans_to_bio(token_list, span_list)
            tags.append(sequence)
            misaligned += cut
        self.misaligned_spans_ = misaligned  # gold spans that cut a token: trained on the whole tokens
        self.potentials_ = Potentials.from_crf(self._train(features, tags))
        self.tags_ = self.potentials_.tags
        self.labels_ = sorted({tag[2:] for tag in self.tags_ if tag != OUTSIDE})
        self.temperature_ = self._fit_temperature(features, tags) if self.calibration == "temperature" else 1.0
        self.n_texts_ = len(texts)
        return self

    def _check_params(self) -> None:
        if self.span_confidence not in SPAN_CONFIDENCES:
            raise ValueError(f"span_confidence must be one of {SPAN_CONFIDENCES}, not {self.span_confidence!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {self.calibration!r}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, not {self.folds!r}")

    @staticmethod
    def _check_training_data(
        texts: Sequence[str], spans: Sequence[Sequence[Span]]
    ) -> tuple[list[str], list[list[Span]]]:
        texts, spans = list(texts), [list(s) for s in spans]
        if len(texts) != len(spans):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
        if not texts:
            raise ValueError("no texts to train on")
        for i, (text, span_list) in enumerate(zip(texts, spans, strict=True)):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a str")
            check_spans(text, span_list)
        if not any(tokenize(text) for text in texts):
            raise ValueError("no text has a token to tag")
        return texts, spans

    def _train(self, features: Sequence[list[dict[str, Any]]], tags: Sequence[list[str]]) -> sklearn_crfsuite.CRF:
        crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs", c1=self.c1, c2=self.c2, max_iterations=self.max_iterations, all_possible_transitions=True
        )
        kept = [i for i, row in enumerate(features) if row]
        crf.fit([features[i] for i in kept], [tags[i] for i in kept])
        return crf

    def _fit_temperature(self, features: Sequence[list[dict[str, Any]]], tags: Sequence[list[str]]) -> float:
        """Out of fold: each fold's model scores the texts it did not see; one T fits them all. Too few
        texts to hold any out (fewer than 2 per fold): T stays 1."""
        usable = [i for i, row in enumerate(features) if row]
        if len(usable) < 2 * int(self.folds):
            return 1.0
        emissions, gold, transitions = [], [], []
        splitter = KFold(n_splits=int(self.folds), shuffle=True, random_state=self.random_state)
        for train, held in splitter.split(usable):
            fold = Potentials.from_crf(
                self._train([features[usable[i]] for i in train], [tags[usable[i]] for i in train])
            )
            column = {tag: k for k, tag in enumerate(fold.tags)}
            # a tag this fold never saw has no potential to score its text with
            rows = [usable[i] for i in held if all(tag in column for tag in tags[usable[i]])]
            for row, scores in zip(rows, fold.emissions([features[row] for row in rows]), strict=True):
                emissions.append((scores, len(transitions)))
                gold.append(np.array([column[tag] for tag in tags[row]], dtype=np.intp))
            transitions.append(fold.transitions)
        if not emissions:
            return 1.0
        return _fit_fold_temperature(emissions, transitions, gold)

    # -- predicting

    def _check_fitted(self) -> None:
        if not hasattr(self, "potentials_"):
            raise NotFittedError("this CRFStudent is not fitted yet: call fit first")

    def analyse(self, texts: Sequence[str]) -> list[SequenceOutput]:
        """Tokens, best path, scored spans, token marginals and the best path's probability, per text."""
        self._check_fitted()
        tokens = [tokenize(text) for text in texts]
        t = self.temperature_
        emissions = [e / t for e in self.potentials_.emissions([token_features(tokens_i) for tokens_i in tokens])]
        transitions = self.potentials_.transitions / t
        outputs: list[SequenceOutput | None] = [None] * len(texts)
        for batch in _batches([len(e) for e in emissions]):
            padded, lengths = _pad([emissions[i] for i in batch], len(self.tags_))
            lattice = _Lattice(padded, transitions, lengths)
            alpha, log_z = lattice.forward()
            beta = lattice.backward()
            paths = lattice.viterbi()
            best = lattice.path_scores(paths) - log_z
            for j, i in enumerate(batch):
                n = int(lengths[j])
                marginals = np.exp(alpha[j, :n] + beta[j, :n] - log_z[j])
                outputs[i] = self._output(
                    texts[i],
                    tokens[i],
                    paths[j],
                    marginals,
                    _SpanLattice(padded[j, :n], transitions, alpha[j, :n], beta[j, :n], log_z[j]),
                    float(best[j]) if n else 0.0,
                )
        return [o for o in outputs if o is not None]

    def predict(self, texts: Sequence[str]) -> list[list[Span]]:
        """Each text's predicted spans, each with its confidence as `score`."""
        return [output.spans for output in self.analyse(texts)]

    def _output(
        self,
        text: str,
        tokens: list[Token],
        path: np.ndarray,
        marginals: np.ndarray,
        lattice: _SpanLattice,
        sequence_logprob: float,
    ) -> SequenceOutput:
        tags = [self.tags_[k] for k in path]
        spans, _ = bio_to_spans(text, tokens, tags)
        starting_at = {token.start: i for i, token in enumerate(tokens)}
        ending_at = {token.end: i for i, token in enumerate(tokens)}
        scored = []
        for span in spans:
            first, last = starting_at[span.start], ending_at[span.end]
            scored.append(span.with_score(self._confidence(span.label, first, last, path, marginals, lattice)))
        return SequenceOutput(tokens, tags, scored, marginals, sequence_logprob)

    def _confidence(
        self, label: str, first: int, last: int, path: np.ndarray, marginals: np.ndarray, lattice: _SpanLattice
    ) -> float:
        steps = np.arange(first, last + 1)
        own = marginals[steps, path[steps]]
        if self.span_confidence == "product":
            value = float(np.prod(own))
        elif self.span_confidence == "min":
            value = float(own.min())
        else:
            column = {tag: k for k, tag in enumerate(self.tags_)}
            value = lattice.span_probability(first, last, column.get(f"B-{label}"), column.get(f"I-{label}"))
        return float(min(1.0, max(value, np.finfo(float).tiny)))


def _fit_fold_temperature(
    emissions: list[tuple[np.ndarray, int]], transitions: list[np.ndarray], gold: list[np.ndarray]
) -> float:
    """fit_temperature over held-out texts scored by several fold models (each with its transitions)."""

    def nll(log_t: float) -> float:
        total, count = 0.0, 0
        for fold, fold_transitions in enumerate(transitions):
            rows = [i for i, (_, f) in enumerate(emissions) if f == fold]
            if rows:
                mean = sequence_nll(
                    [emissions[i][0] for i in rows], fold_transitions, [gold[i] for i in rows], float(np.exp(log_t))
                )
                total, count = total + mean * len(rows), count + len(rows)
        return total / max(1, count)

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(result.x))


@dataclass
class _SpanLattice:
    """One sequence's forward-backward tables, to score spans exactly."""

    emissions: np.ndarray  # (n, K)
    transitions: np.ndarray  # (K, K)
    alpha: np.ndarray  # (n, K)
    beta: np.ndarray  # (n, K)
    log_z: float

    def span_probability(self, first: int, last: int, begin: int | None, inside: int | None) -> float:
        """P(tokens first..last are exactly one entity of the label whose tags are `begin`, `inside`).

        The entity opens with B-X, or with an I-X after a token that is not X (which reads as B-X); it
        runs on with I-X through `last`; the token after `last`, if any, is not I-X.
        """
        e, tr = self.emissions, self.transitions
        own = [k for k in (begin, inside) if k is not None]
        starts = []
        for opener in own:
            if first == 0:
                head = e[0, opener]
            elif opener == begin:
                head = logsumexp(self.alpha[first - 1] + tr[:, opener]) + e[first, opener]
            else:  # I-X opens an entity only after a tag that is not X
                before = np.array([k for k in range(len(e[0])) if k not in own], dtype=np.intp)
                head = logsumexp(self.alpha[first - 1, before] + tr[before, opener]) + e[first, opener]
            starts.append((head, opener))
        total = -np.inf
        for head, opener in starts:
            if last > first and inside is None:
                continue
            score, previous = head, opener
            for t in range(first + 1, last + 1):
                score += tr[previous, inside] + e[t, inside]
                previous = inside
            total = np.logaddexp(total, score + self._tail(last, previous, inside))
        return float(np.exp(total - self.log_z))

    def _tail(self, last: int, previous: int, inside: int | None) -> float:
        if last == len(self.emissions) - 1:
            return 0.0
        after = [k for k in range(self.emissions.shape[1]) if k != inside]
        return float(
            logsumexp(self.transitions[previous, after] + self.emissions[last + 1, after] + self.beta[last + 1, after])
        )
