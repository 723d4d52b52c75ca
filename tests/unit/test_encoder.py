"""The sentence encoder (the real all-MiniLM-L6-v2 from PyPI), its memory cache and the student's use of it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from backend.settings import Settings, settings_error
from backend.student import StudentModel
from backend.student.encoder import (
    EmbeddingCache,
    EncoderUnavailable,
    check_available,
    embed_texts,
    get_encoder,
    text_digest,
)
from tests.helpers import NEGATIVE, POSITIVE, CountingEncoder


def test_the_real_encoder_gives_unit_rows_that_place_paraphrases_together() -> None:
    texts = ["How far is the Moon from the Earth?", "What is the distance between the Earth and the Moon?",
             "Who wrote the novel Moby Dick?", "The stock market fell sharply on Monday."]  # fmt: skip
    vectors = get_encoder("minilm").encode(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.7 and similarity[0, 1] > similarity[0, 2] + 0.4 and similarity[0, 3] < 0.3


def test_batches_sorted_by_length_come_back_in_the_callers_order() -> None:
    encoder = get_encoder("minilm")
    texts = ["a long sentence about the weather in the mountains this week", "short", "a medium one here"]
    forward, backward = encoder.encode(texts), encoder.encode(texts[::-1])
    assert np.allclose(forward, backward[::-1], atol=1e-5)
    assert np.allclose(encoder.encode(texts[1:2]), forward[1:2], atol=1e-5)  # padding does not change a row


def test_the_memory_cache_encodes_each_text_once_and_stays_within_its_bytes() -> None:
    encoder = CountingEncoder()
    cache = EmbeddingCache(max_bytes=10 * 384 * 2)  # ten float16 rows
    first = cache.embed(encoder, ["a", "b", "a"])
    assert encoder.encoded == ["a", "b"] and np.array_equal(first[0], first[2])
    again = cache.embed(encoder, ["b", "a"])
    assert encoder.encoded == ["a", "b"] and np.array_equal(again, first[[1, 0]])
    cache.embed(encoder, [f"t{i}" for i in range(20)])
    assert len(cache) == 10  # the least recently used went first
    cache.embed(encoder, ["a"])
    assert encoder.encoded.count("a") == 2


def test_digests_change_with_the_text() -> None:
    assert text_digest("Paris") == text_digest("Paris") != text_digest("Paris ")
    assert len(text_digest("\ud800 lone surrogate")) == 16  # whatever LS sends, it has a key


def test_unknown_or_missing_encoders_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EncoderUnavailable, match="unknown encoder 'bert'"):
        check_available("bert")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(EncoderUnavailable, match=r"needs torch: pip install torch==2\.13\.0.*STUDENT_ENCODER=none"):
        check_available("minilm")
    with pytest.raises(Exception) as raised:
        Settings(student_encoder="minilm")
    assert "STUDENT_ENCODER" in settings_error(raised.value) and "torch" in settings_error(raised.value)
    assert Settings(student_encoder="none").student_encoder == "none"


def test_a_student_with_the_encoder_learns_what_tfidf_cannot_see() -> None:
    # no word of the test sentences occurs in training: only the sentence embeddings carry the meaning
    train = ["I love this, wonderful and great", "delighted, what a fantastic day", "superb, I adore it",
             "I hate this, terrible and awful", "dreadful, what a miserable day", "horrible, I despise it"]  # fmt: skip
    targets = [("Positive",)] * 3 + [("Negative",)] * 3
    test = ["an excellent, joyful experience", "a disgusting, painful experience"]
    plain = StudentModel(["Positive", "Negative"], C=5.0).fit(train, targets)
    encoded = StudentModel(["Positive", "Negative"], C=5.0, encoder="minilm", encoder_weight=2.0).fit(train, targets)
    assert [p.labels[0] for p in encoded.predict(test)] == ["Positive", "Negative"]
    assert encoded.predict_proba(test)[[0, 1], [0, 1]].min() > plain.predict_proba(test)[[0, 1], [0, 1]].min()


def test_given_embeddings_are_the_ones_encoded_and_pickles_keep_the_encoder_by_name() -> None:
    texts, targets = POSITIVE + NEGATIVE, [("Positive",)] * len(POSITIVE) + [("Negative",)] * len(NEGATIVE)
    vectors = embed_texts("minilm", texts)
    given = StudentModel(["Positive", "Negative"], encoder="minilm").fit(texts, targets, embeddings=vectors)
    encoded = StudentModel(["Positive", "Negative"], encoder="minilm").fit(texts, targets)
    assert np.allclose(given.predict_proba(texts, vectors), encoded.predict_proba(texts))
    restored = pickle.loads(pickle.dumps(given))
    assert restored.encoder == "minilm" and np.allclose(restored.predict_proba(texts), given.predict_proba(texts))
    assert b"torch" not in pickle.dumps(given)  # the weights are not in the model file
    with pytest.raises(ValueError, match="2 texts but 3 embeddings"):
        given.predict_proba(texts[:2], vectors[:3])


def test_a_model_pickled_before_the_encoder_existed_still_predicts() -> None:
    texts, targets = POSITIVE + NEGATIVE, [("Positive",)] * len(POSITIVE) + [("Negative",)] * len(NEGATIVE)
    model = StudentModel(["Positive", "Negative"]).fit(texts, targets)
    del model.__dict__["encoder"], model.__dict__["encoder_weight"]  # what an old pickle holds
    restored = pickle.loads(pickle.dumps(model))
    assert restored.encoder is None and restored.predict(texts)[0].labels == ("Positive",)
