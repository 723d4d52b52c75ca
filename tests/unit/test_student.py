from __future__ import annotations

import os
import pickle
from collections.abc import Callable

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from backend.student import ModelStore, StudentModel, decide
from backend.student.model import CharNgramTfidf, WordNgramTfidf
from tests.helpers import NEGATIVE, POSITIVE


def count_forks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each in_fork call of the student's really started a child."""
    from backend.student import model as student_model

    started: list[bool] = []
    real = student_model.in_fork

    def counted(function: Callable[[], object], side_by_side: bool = True) -> Callable[[], object]:
        started.append(side_by_side and student_model._can_fork())
        return real(function, side_by_side)

    monkeypatch.setattr(student_model, "in_fork", counted)
    return started


# Repeated words and bigrams, one-letter words, case, digits, punctuation, accents, odd whitespace, an
# empty text and one without words: what the vectorizers must treat as TfidfVectorizer does.
CORPUS = [
    *POSITIVE,
    *NEGATIVE,
    "The the THE: a b c a b",
    "Ünïcode café, naïve façade; café au lait",
    "tabs\tand\nnewlines  and   spaces\r\n",
    "it's 3.14 or 42, isn't it? 42!",
    "",
    "... !!! ???",
    "x",
    "love love love it, great great",
]
UNSEEN = ["a wonderful café we love", "never seen words zzz qqq", "", "THE the quality, the value"]


def _fitted() -> StudentModel:
    texts = POSITIVE + NEGATIVE
    targets = [("Positive",)] * len(POSITIVE) + [("Negative",)] * len(NEGATIVE)
    return StudentModel(["Positive", "Negative", "Neutral"]).fit(texts, targets)


def test_single_label_predictions_follow_the_text_and_scores_vary() -> None:
    model = _fitted()
    predictions = model.predict(["love it, great and wonderful", "hate it, awful and terrible", "a chair"])
    assert predictions[0].labels == ("Positive",)
    assert predictions[1].labels == ("Negative",)
    scores = [p.score for p in predictions]
    assert all(0.0 < s <= 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == 3
    # the unseen label gets a column of zeros, and each row is a distribution
    proba = model.predict_proba(["love it"])
    assert proba.shape == (1, 3) and proba[0, 2] == 0.0
    assert proba.sum() == pytest.approx(1.0)


def test_multi_label_with_sample_weights() -> None:
    texts = [
        "football match goal",
        "election vote parliament",
        "football and election",
        "new laptop chip",
        "goal in the match",
        "parliament debate vote",
        "chip and laptop launch",
        "match vote",
    ]
    targets = [("Sports",), ("Politics",), ("Sports", "Politics"), ("Tech",),
               ("Sports",), ("Politics",), ("Tech",), ("Sports", "Politics")]  # fmt: skip
    model = StudentModel(["Sports", "Politics", "Tech", "Never"], multi_label=True).fit(
        texts, targets, sample_weight=[1.0] * 7 + [0.5]
    )
    proba = model.predict_proba(["football goal"])
    assert proba.shape == (1, 4)
    assert proba[0, 3] == 0.0  # a label never seen on is a constant 0
    prediction = model.predict(["football goal"])[0]
    assert "Sports" in prediction.labels
    assert 0.0 < prediction.score < 1.0


def test_decide_multi_label_scores_the_whole_set() -> None:
    labels = ["a", "b", "c"]
    prediction = decide(np.array([0.9, 0.2, 0.6]), labels, multi_label=True)
    assert prediction.labels == ("a", "c")
    assert prediction.score == pytest.approx(0.9 * 0.8 * 0.6)
    # nothing above 0.5: the most likely label alone
    assert decide(np.array([0.1, 0.4, 0.3]), labels, multi_label=True).labels == ("b",)
    single = decide(np.array([0.2, 0.5, 0.3]), labels, multi_label=False)
    assert (single.labels, single.score) == (("b",), 0.5)


@pytest.mark.parametrize(
    ("texts", "targets", "message"),
    [
        (["a", "b"], [("Positive",), ("Positive",)], "two distinct labels"),
        (["a"], [("Positive",), ("Negative",)], "1 texts but 2 targets"),
        (["a", "b"], [("Positive",), ("Other",)], "not in the config"),
    ],
)
def test_fit_refuses_what_it_cannot_learn(texts: list[str], targets: list[tuple[str, ...]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StudentModel(["Positive", "Negative"]).fit(texts, targets)


def test_unfitted_model_says_so() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        StudentModel(["a", "b"]).predict(["x"])


def test_store_versions_are_atomic_monotonic_and_pruned(tmp_path) -> None:
    store = ModelStore(tmp_path, keep=2)
    assert store.load(7) is None and store.latest_version(7) is None
    model = _fitted()
    versions = [store.save(7, model, {"labelled": n}) for n in (10, 20, 30)]
    assert [v.split("-")[0] for v in versions] == ["v1", "v2", "v3"]
    assert store.latest_version(7) == versions[-1]
    assert store.versions(7) == versions[1:]  # the oldest was pruned
    loaded = store.load(7)
    assert loaded is not None and loaded.version == versions[-1] and loaded.meta["labelled"] == 30
    assert loaded.model.predict(["love it"])[0].labels == ("Positive",)
    assert not list((tmp_path / "project-7").glob("*.tmp"))
    assert store.projects() == [7]
    # a restarted process continues the sequence from disk
    assert ModelStore(tmp_path, keep=2).save(7, model).startswith("v4-")
    with pytest.raises(ValueError):
        store.load(7, "../../etc/passwd")


def test_store_survives_a_crash_mid_write(tmp_path, monkeypatch) -> None:
    store = ModelStore(tmp_path)
    first = store.save(1, _fitted())

    def explode(*_: object, **__: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dumps", explode)
    with pytest.raises(OSError):
        store.save(1, _fitted())
    monkeypatch.undo()
    assert store.latest_version(1) == first
    assert store.load(1) is not None


def test_recreated_project_archives_old_models(tmp_path) -> None:
    store = ModelStore(tmp_path)
    assert store.bind_project_uid(3, "3.1000") is False
    store.save(3, _fitted())
    assert store.bind_project_uid(3, "3.1000") is False
    assert store.bind_project_uid(3, "3.2000") is True  # same id, new LS project
    assert store.latest_version(3) is None
    assert list(tmp_path.glob("archived-project-3-*"))


def _by_name(matrix: sparse.spmatrix, names: np.ndarray) -> np.ndarray:
    """The matrix's columns in the order of their sorted names, dense."""
    return matrix.toarray()[:, np.argsort(names)]


def test_word_ngrams_are_tfidf_vectorizers_features() -> None:
    reference = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    expected = reference.fit_transform(CORPUS)
    words = WordNgramTfidf(max_features=None)
    features = words.fit_transform(CORPUS)
    names = words.get_feature_names_out()
    assert sorted(names) == list(reference.get_feature_names_out())
    np.testing.assert_allclose(_by_name(features, names), expected.toarray(), rtol=1e-6)
    # unseen words and bigrams are left out, as in TfidfVectorizer
    np.testing.assert_allclose(
        _by_name(words.transform(UNSEEN), names), reference.transform(UNSEEN).toarray(), rtol=1e-6
    )


def test_word_ngrams_keep_the_most_frequent() -> None:
    counts = CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b")
    frequency = np.asarray(counts.fit_transform(CORPUS).sum(axis=0)).ravel()
    names = counts.get_feature_names_out()
    words = WordNgramTfidf(max_features=10).fit(CORPUS)
    kept = set(words.get_feature_names_out())
    assert len(kept) == 10
    kept_frequency = frequency[[name in kept for name in names]]
    assert kept_frequency.min() >= frequency[[name not in kept for name in names]].max()
    assert {"love", "it", "great", "the"} <= kept
    assert words.transform(UNSEEN).shape == (len(UNSEEN), 10)


def _untied_cut(at_least: int) -> int:
    """A max_features with no tie at the cut: TfidfVectorizer breaks ties in no documented order."""
    counts = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2).fit_transform(CORPUS)
    frequency = np.sort(np.asarray(counts.sum(axis=0)).ravel())[::-1]
    return next(k for k in range(at_least, len(frequency)) if frequency[k - 1] > frequency[k])


@pytest.mark.parametrize("cut", [False, True])
def test_char_ngrams_are_tfidf_vectorizers_features(cut: bool) -> None:
    max_features = _untied_cut(20) if cut else None
    reference = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=max_features
    )
    expected = reference.fit_transform(CORPUS)
    chars = CharNgramTfidf(min_df=2, max_features=max_features)
    features = chars.fit_transform(CORPUS)
    names = chars.get_feature_names_out()
    assert sorted(names) == list(reference.get_feature_names_out())
    assert features.shape[1] == (max_features or len(reference.vocabulary_))
    np.testing.assert_allclose(_by_name(features, names), expected.toarray(), rtol=1e-6)
    np.testing.assert_allclose(
        _by_name(chars.transform(UNSEEN), names), reference.transform(UNSEEN).toarray(), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("vectorizer", "counts"),
    [
        (WordNgramTfidf(max_features=None), CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b")),
        (CharNgramTfidf(min_df=2), CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2)),
    ],
)
def test_columns_go_from_the_most_frequent_down(
    vectorizer: WordNgramTfidf | CharNgramTfidf, counts: CountVectorizer
) -> None:
    """The SVM fits faster when its most used weights sit together (see model.py)."""
    names = vectorizer.fit(CORPUS).get_feature_names_out()
    total = counts.fit_transform(CORPUS).sum(axis=0).A1
    frequency = dict(zip(counts.get_feature_names_out(), total, strict=True))
    in_column_order = np.array([frequency[name] for name in names])
    assert (np.diff(in_column_order) <= 0).all() and in_column_order[0] > in_column_order[-1]


def test_a_pickled_model_predicts_the_same() -> None:
    model = _fitted()
    texts = ["love it", "awful", "a chair", ""]
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(texts), model.predict_proba(texts))


def test_large_label_sets_calibrate_on_a_held_out_third() -> None:
    from backend.datasets import trec6
    from backend.llm.calibration import expected_calibration_error

    data = trec6()
    order = np.random.default_rng(0).permutation(len(data))
    train, test = order[:3000], order[3000:4500]
    model = StudentModel(data.classes).fit([data.texts[i] for i in train], [(data.labels[i],) for i in train])
    assert model.classifier_.shrink_ == pytest.approx(1 / (1000 + 2))  # 1,000 held-out checks
    predictions = model.predict([data.texts[i] for i in test])
    correct = [p.labels[0] == data.labels[i] for p, i in zip(predictions, test, strict=True)]
    assert np.mean(correct) > 0.8
    assert expected_calibration_error([p.score for p in predictions], correct) < 0.06


def test_prediction_version_joins_the_llm_revision(tmp_path) -> None:
    store = ModelStore(tmp_path)
    assert store.prediction_version(3) is None and store.llm_revision(3) is None
    assert store.bump_llm_revision(3) == "llm1"
    assert store.prediction_version(3) == "untrained+llm1"
    version = store.save(3, _fitted())
    assert store.prediction_version(3) == f"{version}+llm1"
    assert store.bump_llm_revision(3) == "llm2"
    assert store.prediction_version(3) == f"{version}+llm2"
    assert store.latest_version(3) == version  # the student's own version is unchanged


def test_from_thousands_of_labels_the_temperature_comes_from_one_held_out_third() -> None:
    from backend.student.model import TemperatureScaledSVC

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 40))
    y = rng.integers(0, 4, size=2400)
    features = sparse.csr_matrix(centers[y] + rng.normal(scale=2.0, size=(2400, 40)))
    labels = np.array(["a", "b", "c", "d"])[y]
    model = TemperatureScaledSVC(C=0.5, folds=3, holdout_from=2000).fit(features, labels)
    assert list(model.classes_) == ["a", "b", "c", "d"] and model.shrink_ == pytest.approx(1 / (800 + 2))
    proba = model.predict_proba(features)
    assert np.allclose(proba.sum(axis=1), 1) and 0.3 < proba.max(axis=1).mean() < 0.99
    assert pickle.loads(pickle.dumps(model)).predict_proba(features[:5]) == pytest.approx(proba[:5])


@pytest.mark.parametrize("n", [100, 300, 2100])  # folds in this process, folds forked, the probe forked
def test_the_same_labels_give_the_same_model(n: int) -> None:
    """liblinear keeps one random state per process: fits side by side in threads made this fail ~half
    the time; in forked children it cannot."""
    rng = np.random.default_rng(1)
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "meh"]
    texts = [" ".join(rng.choice(words, 6)) + f" {i}" for i in range(n)]
    labels = [("Positive",) if sum(w in t for w in ("good", "great", "nice")) > 1 else ("Negative",) for t in texts]
    first = StudentModel(["Positive", "Negative"]).fit(texts, labels).predict_proba(texts)
    second = StudentModel(["Positive", "Negative"]).fit(texts, labels).predict_proba(texts)
    assert np.array_equal(first, second)


def test_on_thousands_of_texts_the_features_are_computed_in_two_processes_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend.student import model as student_model

    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(2100)]
    labels = [("a",) if "w1" in t.split() or "w2" in t.split() else ("b",) for t in texts]
    forks = count_forks(monkeypatch)
    parallel = StudentModel(["a", "b"]).fit(texts, labels, extra_texts=texts[:50])
    assert forks == [True, True]  # the char features, and the calibration probe beside the final fit
    monkeypatch.setattr(student_model, "PARALLEL_FEATURES_FROM", 10**9)
    sequential = StudentModel(["a", "b"]).fit(texts, labels, extra_texts=texts[:50])
    assert forks == [True, True, True]  # the probe alone
    # the same fitted vectorizer and features; liblinear's sums may differ in the last bits
    assert (parallel.vectorizer_.transform(texts[:200]) != sequential.vectorizer_.transform(texts[:200])).nnz == 0
    fitted_union = student_model._vectorizer(100_000, len(texts), 300).fit(texts + texts[:50])
    assert (parallel.vectorizer_.transform(texts) != fitted_union.transform(texts)).nnz == 0
    assert np.allclose(parallel.predict_proba(texts[:200]), sequential.predict_proba(texts[:200]), atol=1e-6)


def test_char_ngrams_of_words_seen_in_fitting_are_looked_up_with_the_same_result() -> None:
    chars = CharNgramTfidf(min_df=2).fit(CORPUS)
    mixed = [*UNSEEN, CORPUS[0], "", "entirely novel vocabulary " + CORPUS[1]]
    looked_up = chars.transform(mixed)
    assert set(chars.word_rows_) >= {word for text in CORPUS for word in text.lower().split()}
    del chars.word_rows_  # as a model pickled before the lookup existed: every word analyzed
    analyzed = chars.transform(mixed)
    assert looked_up.shape == analyzed.shape and (looked_up != analyzed).nnz == 0


PARENT = os.getpid()


def _dies_in_a_child(part: object, texts: object, real: Callable[[object, object], object]) -> object:
    if os.getpid() != PARENT:
        os._exit(1)  # as a child killed for its memory would end
    return real(part, texts)


def test_if_the_features_child_dies_its_half_is_computed_in_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from backend.student import model as student_model

    rng = np.random.default_rng(4)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(2100)]
    labels = [("a",) if "w1" in t.split() else ("b",) for t in texts]
    real = student_model._fit_transform_part
    monkeypatch.setattr(student_model, "_fit_transform_part", lambda part, texts: _dies_in_a_child(part, texts, real))
    survived = StudentModel(["a", "b"]).fit(texts, labels)
    assert "child died without an answer" in caplog.text
    fitted_union = student_model._vectorizer(100_000, len(texts), 300).fit(texts)
    assert (survived.vectorizer_.transform(texts) != fitted_union.transform(texts)).nnz == 0
