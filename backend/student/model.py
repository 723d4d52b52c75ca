"""A fast text classifier: TF-IDF word and character n-grams into a calibrated linear model.

A linear SVM with temperature scaling fitted on out-of-fold scores. Side by side on 4,452 TREC-6
labels, it fit in 1.6 s against 20 s for logistic regression (lbfgs, C=10), with the same accuracy
(0.86) and calibration (ECE 0.04); bench/README.md has its training and prediction times. The n-grams
are TfidfVectorizer's, counted 3-5x faster by WordNgramTfidf and CharNgramTfidf below.

Follows scikit-learn's conventions loosely (fit returns self, predict_proba columns in `labels` order),
but takes label names rather than encoded targets, because that is what Label Studio speaks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeVar

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.svm import LinearSVC

from backend.student.encoder import NO_ENCODER, embed_texts

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LabelPrediction:
    labels: tuple[str, ...]
    score: float


def decide(proba: np.ndarray, labels: Sequence[str], multi_label: bool) -> LabelPrediction:
    """Turn one row of probabilities into labels and the probability that they are right.

    Single label: the argmax and its probability. Multi-label: every label at p >= 0.5 (the top one if
    none is), scored as the probability of that exact set under independent labels.
    """
    if not multi_label:
        best = int(np.argmax(proba))
        return LabelPrediction((labels[best],), float(proba[best]))
    chosen = proba >= 0.5
    if not chosen.any():
        chosen[int(np.argmax(proba))] = True
    score = float(np.prod(np.where(chosen, proba, 1.0 - proba)))
    return LabelPrediction(tuple(label for label, on in zip(labels, chosen, strict=True) if on), score)


FORK_FITS_FROM = 300  # labels; below, the out-of-fold fits take less time than forking for them


def _can_fork() -> bool:
    # a daemonic process (a multiprocessing pool's worker) may not have children
    linux_fork = sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()
    return linux_fork and _cpus() > 1 and not multiprocessing.current_process().daemon


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_fork(function: Callable[[], T], side_by_side: bool = True) -> Callable[[], T]:
    """Start function() in a forked child and return a call that waits for its result.

    Why processes and not threads: liblinear draws its coordinate order from one random state per
    process, so two fits in threads draw from it in turn, in whatever order the threads interleave, and
    the same labels give slightly different models. A fork starts in milliseconds and shares the
    features copy-on-write; only the result comes back, pickled. Without fork (or with one core, or
    `side_by_side` false) the function runs here, when its result is asked for; if the child dies (out
    of memory, killed), too.
    """
    if not (side_by_side and _can_fork()):
        return function
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        try:
            writer.send((True, function()))
        except BaseException as exc:  # whatever it was, the parent raises it
            writer.send((False, exc))

    process = context.Process(target=child, daemon=True)
    process.start()
    writer.close()

    def result() -> T:
        try:
            ok, value = reader.recv()
        except EOFError:
            log.warning("a forked child died without an answer; doing its work in this process")
            return function()
        finally:
            reader.close()
            process.join()
        if not ok:
            raise value
        return value

    return result


def fit_temperature(logits: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature T that minimizes the (weighted) log loss of softmax(logits / T) on held-out rows."""
    weights = np.ones(len(target)) if weights is None else np.asarray(weights, dtype=float)

    def nll(log_t: float) -> float:
        logp = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-(weights * logp[np.arange(len(target)), target]).sum() / weights.sum())

    best = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded")
    return float(np.exp(best.x))


class TemperatureScaledSVC:
    """A linear SVM whose scores become probabilities through one temperature fitted out of fold.

    Scores on texts the scoring model did not see (cross-validation; from `holdout_from` labels on, one
    held-out third) set the temperature, so it reflects how the model does on new texts. Then the
    probabilities are shrunk toward uniform by 1/(n+2) for n held-out checks, the rule of succession:
    nothing justifies more confidence than that. Without it, a few perfectly separated labels drive the
    temperature to zero and every score to 1.0.
    """

    def __init__(self, C: float, folds: int, holdout_from: int = 2000, tol: float = 1e-2) -> None:
        self.C = C
        self.folds = folds
        self.holdout_from = holdout_from
        self.tol = tol

    def fit(self, features: sparse.spmatrix, y: Sequence[str], sample_weight: np.ndarray | None = None):
        y_arr = np.asarray(y)
        weights = np.ones(len(y_arr)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.svm_ = self._svm()
        if len(y_arr) >= self.holdout_from:
            held, held_scores = self._fit_with_holdout(features, y_arr, weights)
        else:
            held, held_scores = np.arange(len(y_arr)), self._fit_with_folds(features, y_arr, weights)
        self.classes_ = self.svm_.classes_
        logits = self._logits(held_scores)
        target = np.searchsorted(self.classes_, y_arr[held])
        self.temperature_ = fit_temperature(logits, target, weights[held])
        self.shrink_ = 1.0 / (len(held) + 2)
        return self

    def _fit_with_folds(self, features: sparse.spmatrix, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Every example scored by a model that did not see it; then the final fit on all of them."""
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=0)
        folds = list(splitter.split(np.zeros(len(y)), y))

        def fold_scores(train: np.ndarray, test: np.ndarray) -> Callable[[], np.ndarray]:
            return lambda: (
                self._svm()
                .fit(features[train], y[train], sample_weight=weights[train])
                .decision_function(features[test])
            )

        side_by_side = len(y) >= FORK_FITS_FROM
        waiting = [in_fork(fold_scores(train, test), side_by_side) for train, test in folds]
        self.svm_.fit(features, y, sample_weight=weights)
        scores = [wait() for wait in waiting]
        out = np.empty((len(y), *scores[0].shape[1:]))
        for (_, test), fold in zip(folds, scores, strict=True):
            out[test] = fold
        return out

    def _fit_with_holdout(
        self, features: sparse.spmatrix, y: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """With thousands of labels one held-out third fixes one temperature just as well, and the two
        fits (on two thirds, and the final one on all) run side by side: one fit's wall time, not four."""
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=1 / 3, random_state=0)
        train, held = next(splitter.split(np.zeros(len(y)), y))
        probe = in_fork(lambda: self._svm().fit(features[train], y[train], sample_weight=weights[train])
                        .decision_function(features[held]))  # fmt: skip
        self.svm_.fit(features, y, sample_weight=weights)
        return held, probe()

    def _svm(self) -> LinearSVC:
        # tol=1e-2 rather than liblinear's 1e-4: ~25% faster on 10k 20 Newsgroups posts, with the same
        # test accuracy and temperature (0.861, 0.139)
        # a fixed seed for liblinear's coordinate order: the same labels give the same model, every time
        return LinearSVC(C=self.C, tol=self.tol, random_state=0)

    @staticmethod
    def _logits(decision: np.ndarray) -> np.ndarray:
        return np.column_stack([np.zeros(len(decision)), decision]) if decision.ndim == 1 else decision

    def predict_proba(self, features: sparse.spmatrix) -> np.ndarray:
        proba = softmax(self._logits(self.svm_.decision_function(features)) / self.temperature_, axis=1)
        return (1.0 - self.shrink_) * proba + self.shrink_ / proba.shape[1]


class TextHead(TransformerMixin, BaseEstimator):
    """The first `n_chars` characters of each text.

    Character n-grams are what make the student good on short texts (questions, messages, titles);
    on long documents the words carry the signal and character n-grams of the whole text cost most of
    the training time (20 Newsgroups, 10k labels: 68 of 113 s), so they read only each text's head.
    """

    def __init__(self, n_chars: int = 300) -> None:
        self.n_chars = n_chars

    def fit(self, texts: Sequence[str], y: object = None) -> TextHead:
        return self

    def transform(self, texts: Sequence[str]) -> list[str]:
        return [text[: self.n_chars] for text in texts]


# The tokens of TfidfVectorizer(token_pattern=r"(?u)\b\w+\b"), its default but for one-letter words:
# runs of word characters always lie between word boundaries, and without the \b this is ~25% faster.
_TOKEN = re.compile(r"\w+")

# Both vectorizers number their columns from the most frequent n-gram down: the SVM's updates then
# mostly hit one compact, cache-friendly part of its weight vectors, and it fits ~10% faster than with
# the columns in name order.


def _rows(ends: list[int]) -> np.ndarray:
    """The row of each item, from the running end of each row's items."""
    return np.repeat(np.arange(len(ends) - 1), np.diff(ends))


class WordNgramTfidf(TransformerMixin, BaseEstimator):
    """TF-IDF of word unigrams and bigrams, the `max_features` most frequent kept.

    The features of TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=...) on _TOKEN's
    tokens, counted ~4x faster: a token becomes an integer id once and a bigram is a pair of
    ids, so counting is one numpy sort of integers, where TfidfVectorizer builds a string for every
    bigram, looks each up in a dict and sorts them all by name (millions for 10k posts). Ties at the cut
    are broken differently, so a few of the rarest kept features differ.
    """

    def __init__(self, max_features: int | None = 200_000) -> None:
        self.max_features = max_features

    def fit(self, texts: Sequence[str], y: object = None) -> WordNgramTfidf:
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: Sequence[str], y: object = None) -> sparse.csr_matrix:
        vocabulary: defaultdict[str, int] = defaultdict()
        vocabulary.default_factory = vocabulary.__len__  # a new token gets the next id
        tokens, ends = self._token_ids(texts, lambda words: map(vocabulary.__getitem__, words))
        self.vocabulary_ = dict(vocabulary)
        key, row, count = self._ngram_counts(tokens, ends)
        if not len(key):
            raise ValueError("empty vocabulary: the texts have no words")
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])  # where each distinct key starts
        frequency = np.add.reduceat(count, first)
        by_frequency = key[first][np.argsort(-frequency, kind="stable")[: self.max_features]]
        # keys_ sorted, to be searched; columns_[i] is keys_[i]'s column, numbered by frequency
        self.columns_ = np.argsort(by_frequency)
        self.keys_ = by_frequency[self.columns_]
        self.tfidf_ = TfidfTransformer(sublinear_tf=True)
        return self.tfidf_.fit_transform(self._matrix(key, row, count, len(texts)))

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        get = self.vocabulary_.get
        # get(word, -1) called from C for each word rather than through a Python lambda: ~15% faster
        tokens, ends = self._token_ids(texts, lambda words: map(get, words, repeat(-1)))
        return self.tfidf_.transform(self._matrix(*self._ngram_counts(tokens, ends), len(texts)))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        tokens = np.empty(len(self.vocabulary_), dtype=object)
        tokens[list(self.vocabulary_.values())] = list(self.vocabulary_)
        n = len(tokens)
        unigram = self.keys_ < n
        first, second = np.divmod(self.keys_[~unigram] - n, n)
        names = np.empty(len(self.keys_), dtype=object)
        names[self.columns_] = np.concatenate([tokens[self.keys_[unigram]], tokens[first] + " " + tokens[second]])
        return names

    @staticmethod
    def _token_ids(
        texts: Sequence[str], token_ids: Callable[[list[str]], Iterable[int]]
    ) -> tuple[np.ndarray, list[int]]:
        ids = array("q")  # int64, without a list of Python ints to convert
        ends = [0]
        for text in texts:
            ids.extend(token_ids(_TOKEN.findall(text.lower())))
            ends.append(len(ids))
        return np.frombuffer(ids, dtype=np.int64), ends

    def _ngram_counts(self, tokens: np.ndarray, ends: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key, row, count): how often each unigram and bigram occurs in each text, sorted by key, then row.

        A unigram's key is its token id; bigram (a, b)'s is n + a * n + b for a vocabulary of n. Tokens out
        of the vocabulary (id -1) are left out.
        """
        n, width = len(self.vocabulary_), max(len(ends) - 1, 1)
        if (n + 1) * n * width >= 2**63:
            raise ValueError(f"{width} texts over {n} distinct words: too many to count in 64 bits")
        rows = _rows(ends)
        known = tokens >= 0
        pair = known[:-1] & known[1:] & (rows[:-1] == rows[1:])
        keys = np.concatenate([tokens[known], n + tokens[:-1][pair] * n + tokens[1:][pair]])
        rows = np.concatenate([rows[known], rows[:-1][pair]])
        # sorting one int64 per occurrence (key, then row) is much faster than sorting pairs
        key_and_row, count = np.unique(keys * width + rows, return_counts=True)
        key, row = np.divmod(key_and_row, width)
        return key, row, count

    def _matrix(self, key: np.ndarray, row: np.ndarray, count: np.ndarray, n_texts: int) -> sparse.csr_matrix:
        at = np.searchsorted(self.keys_, key)
        found = self.keys_[np.minimum(at, len(self.keys_) - 1)] == key
        values, column = count[found].astype(np.float32), self.columns_[at[found]]
        return sparse.csr_matrix((values, (row[found], column)), shape=(n_texts, len(self.keys_)))


def _char_wb_ngrams(vocabulary: Sequence[str] | None = None) -> CountVectorizer:
    return CountVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), lowercase=False, vocabulary=vocabulary, dtype=np.float32
    )


def _count_by_id(rows: Iterable[Iterable[str]]) -> tuple[sparse.csr_matrix, list[str]]:
    """Rows x distinct items counts, the items numbered as they first appear, and the items."""
    ids: defaultdict[str, int] = defaultdict()
    ids.default_factory = ids.__len__  # a new item gets the next id
    columns: list[int] = []
    ends = [0]
    for items in rows:
        columns.extend(map(ids.__getitem__, items))
        ends.append(len(columns))
    ones = np.ones(len(columns), dtype=np.float32)
    counts = sparse.csr_matrix((ones, columns, ends), shape=(len(ends) - 1, len(ids)))
    counts.sum_duplicates()
    return counts, list(ids)


class CharNgramTfidf(TransformerMixin, BaseEstimator):
    """TF-IDF of character 2-5-grams within words (analyzer="char_wb"), made once per distinct word.

    A text's char_wb n-grams are the sum of its words' (each padded with a space), so the counts are
    (texts x words) @ (words x n-grams): the n-grams of "the" are made once, not at each occurrence. The
    features of TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=...,
    max_features=...) in a fraction of the time; ties at the `max_features` cut may be broken differently.
    """

    def __init__(self, min_df: int = 1, max_features: int | None = None) -> None:
        self.min_df = min_df
        self.max_features = max_features

    def fit(self, texts: Sequence[str], y: object = None) -> CharNgramTfidf:
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: Sequence[str], y: object = None) -> sparse.csr_matrix:
        word_counts, words = _count_by_id(text.lower().split() for text in texts)
        ngram_counts, ngrams = _count_by_id(map(_char_wb_ngrams().build_analyzer(), words))
        counts = (word_counts @ ngram_counts).tocsr()
        kept = np.flatnonzero(np.bincount(counts.indices, minlength=counts.shape[1]) >= self.min_df)
        frequency = np.asarray(counts.sum(axis=0)).ravel()
        kept = kept[np.argsort(-frequency[kept], kind="stable")[: self.max_features]]  # by frequency
        # a fixed vocabulary: fitting on nothing only checks and indexes it
        self.ngrams_ = _char_wb_ngrams([ngrams[i] for i in kept]).fit([])
        # the kept n-grams of every word seen in fitting: at prediction most words are among them, and
        # looking their rows up beats analyzing them again (100 20 Newsgroups posts: 15 -> 9 ms)
        self.word_rows_ = {word: i for i, word in enumerate(words)}
        self.word_ngrams_ = ngram_counts[:, kept].tocsr()
        self.tfidf_ = TfidfTransformer(sublinear_tf=True)
        return self.tfidf_.fit_transform(counts[:, kept])

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        word_counts, words = _count_by_id(text.lower().split() for text in texts)
        return self.tfidf_.transform((word_counts @ self._word_ngrams(words)).tocsr())

    def _word_ngrams(self, words: list[str]) -> sparse.csr_matrix:
        """words x kept n-grams: rows of the words seen in fitting looked up, the others analyzed."""
        known_rows = getattr(self, "word_rows_", None)  # absent in models pickled before it existed
        if known_rows is None:
            return self.ngrams_.transform(words)
        rows = np.fromiter((known_rows.get(word, -1) for word in words), dtype=np.int64, count=len(words))
        new = np.flatnonzero(rows < 0)
        if not len(new):
            return self.word_ngrams_[rows]
        stacked = sparse.vstack([self.word_ngrams_[rows[rows >= 0]], self.ngrams_.transform([words[i] for i in new])])
        # stacked holds the known words first, then the new ones: put each back in its place
        order = np.concatenate([np.flatnonzero(rows >= 0), new])
        return stacked.tocsr()[np.argsort(order)]

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return self.ngrams_.get_feature_names_out()


PARALLEL_FEATURES_FROM = 2000  # documents; below, a second process costs more than it saves


def _vectorizer(max_char_features: int, n_documents: int, char_head: int) -> FeatureUnion:
    char = CharNgramTfidf(min_df=2 if n_documents >= 50 else 1, max_features=max_char_features)
    return FeatureUnion([("word", WordNgramTfidf(max_features=200_000)),
                         ("char", make_pipeline(TextHead(char_head), char))])  # fmt: skip


def _fit_transform_part(part: Any, texts: Sequence[str]) -> tuple[Any, sparse.csr_matrix]:
    return part, part.fit_transform(texts)


def _fit_transform(union: FeatureUnion, texts: Sequence[str]) -> sparse.csr_matrix:
    """union.fit_transform, the char half in a forked process on thousands of texts.

    Both halves are Python-bound (the GIL). A fork starts in milliseconds with everything imported, where
    joblib's worker processes start a fresh interpreter: ~1 s, paid again in every training job, since
    rq runs each job in a new process (10k 20 Newsgroups posts: features 1.9 s in one process, 2.8 s with
    FeatureUnion(n_jobs=2) from cold).
    """
    if len(texts) < PARALLEL_FEATURES_FROM or not _can_fork():
        return union.fit_transform(texts)
    (word_name, word), (char_name, char) = union.transformer_list
    char_job = in_fork(lambda: _fit_transform_part(char, texts))
    word_features = word.fit_transform(texts)
    char, char_features = char_job()
    union.transformer_list = [(word_name, word), (char_name, char)]
    return sparse.hstack([word_features, char_features], format="csr")


class StudentModel:
    """Text classifier over a fixed label set, single- or multi-label."""

    encoder: str | None = None  # class-level defaults: models pickled before the encoder existed still load
    encoder_weight: float = 1.0

    def __init__(
        self,
        labels: Sequence[str],
        multi_label: bool = False,
        C: float = 0.5,
        max_char_features: int = 100_000,
        calibration_folds: int = 3,
        char_head: int = 300,
        encoder: str | None = None,
        encoder_weight: float = 1.0,
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.labels = tuple(labels)
        self.multi_label = multi_label
        self.C = C
        self.max_char_features = max_char_features
        self.calibration_folds = calibration_folds
        self.char_head = char_head
        self.encoder = None if encoder in (None, NO_ENCODER) else encoder
        self.encoder_weight = encoder_weight
        self.vectorizer_: FeatureUnion | None = None
        self.classifier_: object | None = None
        self.classes_: tuple[str, ...] = ()
        self.n_examples_: int = 0

    def fit(
        self,
        texts: Sequence[str],
        targets: Sequence[Sequence[str]],
        sample_weight: Sequence[float] | None = None,
        extra_texts: Sequence[str] = (),
        embeddings: np.ndarray | None = None,
    ) -> StudentModel:
        """Fit on labelled texts; `extra_texts` (the unlabelled pool) only shape the vocabulary and idf.

        With an `encoder`, `embeddings` are the texts' sentence embeddings, one row per text (a project's
        cached ones); without them the texts are encoded here.
        """
        if len(texts) != len(targets):
            raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
        unknown = {label for target in targets for label in target} - set(self.labels)
        if unknown:
            raise ValueError(f"targets use labels that are not in the config: {sorted(unknown)}")
        corpus = list(texts) + list(extra_texts)
        self.vectorizer_ = _vectorizer(self.max_char_features, len(corpus), self.char_head)
        features = self._with_embeddings(_fit_transform(self.vectorizer_, corpus)[: len(texts)], texts, embeddings)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.n_examples_ = len(texts)
        if self.multi_label:
            self._fit_multi_label(features, targets, weights)
        else:
            self._fit_single_label(features, [target[0] for target in targets], weights)
        return self

    def _fit_single_label(self, features: sparse.spmatrix, y: list[str], weights: np.ndarray | None) -> None:
        counts = Counter(y)
        if len(counts) < 2:
            raise ValueError("training needs at least two distinct labels")
        self.classes_ = tuple(sorted(counts))
        folds = min(self.calibration_folds, min(counts.values()))
        classifier: object
        if folds >= 2:
            # Temperature scaling: one parameter, so it holds up on the few labels an annotation
            # project starts with, and it keeps the argmax unchanged.
            classifier = TemperatureScaledSVC(C=self.C, folds=folds)
        else:
            # A class with one example cannot be cross-validated: plain logistic regression instead.
            classifier = LogisticRegression(C=10 * self.C, max_iter=2000)
        classifier.fit(features, y, sample_weight=weights)
        self.classifier_ = classifier

    def _fit_multi_label(
        self, features: sparse.spmatrix, targets: Sequence[Sequence[str]], weights: np.ndarray | None
    ) -> None:
        """One binary logistic regression per label; a label that is always on (or off) is a constant."""
        y = np.array([[label in target for label in self.labels] for target in targets], dtype=int)
        if not (y.any(axis=0) & ~y.all(axis=0)).any():
            raise ValueError("training needs at least one label that is sometimes on and sometimes off")
        per_label: list[LogisticRegression | float] = []
        for column in y.T:
            if column.min() == column.max():
                per_label.append(float(column[0]))
            else:
                model = LogisticRegression(C=10 * self.C, solver="liblinear", random_state=0)
                per_label.append(model.fit(features, column, sample_weight=weights))
        self.classes_ = self.labels
        self.classifier_ = per_label

    def _with_embeddings(
        self, features: sparse.csr_matrix, texts: Sequence[str], embeddings: np.ndarray | None
    ) -> sparse.csr_matrix:
        """The TF-IDF rows, followed by the weighted sentence embedding when the model has an encoder."""
        if self.encoder is None:
            return features
        if embeddings is None:
            embeddings = embed_texts(self.encoder, texts)
        if embeddings.shape[0] != len(texts):
            raise ValueError(f"{len(texts)} texts but {embeddings.shape[0]} embeddings")
        dense = sparse.csr_matrix(self.encoder_weight * np.asarray(embeddings, dtype=np.float64))
        return sparse.hstack([features, dense], format="csr")

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """Probabilities with one column per label of the config, in `labels` order."""
        if self.vectorizer_ is None or self.classifier_ is None:
            raise RuntimeError("the model is not fitted")
        out = np.zeros((len(texts), len(self.labels)))
        if not len(texts):
            return out
        features = self._with_embeddings(self.vectorizer_.transform(texts), texts, embeddings)
        if self.multi_label:
            for j, model in enumerate(self.classifier_):  # type: ignore[attr-defined]
                out[:, j] = model if isinstance(model, float) else model.predict_proba(features)[:, 1]
            return out
        proba = self.classifier_.predict_proba(features)  # type: ignore[attr-defined]
        column = {label: i for i, label in enumerate(self.labels)}
        for j, cls in enumerate(self.classifier_.classes_):  # type: ignore[attr-defined]
            out[:, column[cls]] = proba[:, j]
        return out

    def predict(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> list[LabelPrediction]:
        proba = self.predict_proba(texts, embeddings)
        return [decide(row, self.labels, self.multi_label) for row in proba]
