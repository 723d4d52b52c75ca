"""A project's task embeddings in a real Redis: each task encoded once, again when its text changes, and
/predict serving from them."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import redis

from backend.jobs.embeddings import ProjectEmbeddings
from backend.jobs.state import ProjectKeys
from backend.server import create_app
from backend.settings import Settings
from backend.student import ModelStore, StudentModel
from tests.helpers import NEGATIVE, POSITIVE, SINGLE, CountingEncoder

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Basic " + base64.b64encode(b"user:secret").decode()}


def test_each_task_is_encoded_once_and_again_when_its_text_changes(redis_conn: redis.Redis) -> None:
    encoder = CountingEncoder()
    kept = ProjectEmbeddings(redis_conn, 31, encoder)
    first = kept.of([1, 2, 3], ["alpha", "beta", "gamma"])
    assert encoder.encoded == ["alpha", "beta", "gamma"] and kept.count() == 3
    progress: list[tuple[int, int]] = []
    again = kept.of([3, 1, 2, 4], ["gamma", "alpha", "beta changed", "delta"], lambda d, t: progress.append((d, t)))
    assert encoder.encoded[3:] == ["beta changed", "delta"] and progress[-1] == (2, 2)
    assert np.array_equal(again[[1, 0]], first[[0, 2]])  # read back exactly as returned the first time
    assert np.array_equal(again[2], encoder.encode(["beta changed"])[0].astype(np.float16).astype(np.float32))
    # other projects and other encoders keep their own
    assert ProjectEmbeddings(redis_conn, 32, encoder).count() == 0
    assert redis_conn.hlen(ProjectKeys(31).embeddings("minilm")) == 4


def test_a_task_without_an_id_is_encoded_and_not_kept(redis_conn: redis.Redis) -> None:
    encoder = CountingEncoder()
    kept = ProjectEmbeddings(redis_conn, 33, encoder)
    rows = kept.of([None, 5, None], ["x", "y", "x"])
    assert kept.count() == 1 and np.array_equal(rows[0], rows[2]) and len(encoder.encoded) == 3
    with pytest.raises(ValueError, match="2 task ids but 1 texts"):
        kept.of([1, 2], ["one"])


def test_predict_serves_an_encoder_student_from_the_kept_embeddings(
    settings: Settings, redis_url: str, redis_conn: redis.Redis
) -> None:
    live = settings.model_copy(update={"redis_url": redis_url})
    texts = POSITIVE + NEGATIVE
    # weighted so that the embedding decides: what the student reads shows in its labels
    model = StudentModel(["Positive", "Negative"], encoder="minilm", encoder_weight=5.0).fit(
        texts, [("Positive",)] * len(POSITIVE) + [("Negative",)] * len(NEGATIVE)
    )
    ModelStore(live.models_path).save(34, model)
    client = create_app(live).test_client()
    tasks = [{"id": 100 + i, "data": {"text": text}} for i, text in enumerate(texts)]
    body = {"tasks": tasks, "project": "34.1", "label_config": SINGLE}

    response = client.post("/predict", headers=AUTH, json=body)
    assert response.status_code == 200, response.json
    labels = [r["result"][0]["value"]["choices"][0] for r in response.json["results"]]
    assert labels == ["Positive"] * len(POSITIVE) + ["Negative"] * len(NEGATIVE)
    key = ProjectKeys(34).embeddings("minilm")
    assert sorted(int(t) for t in redis_conn.hkeys(key)) == [t["id"] for t in tasks]
    first, last = (redis_conn.hget(key, str(t["id"])) for t in (tasks[0], tasks[-1]))
    # the kept rows are what the student reads: task 0 under the last (negative) task's vector
    redis_conn.hset(key, str(tasks[0]["id"]), first[:16] + last[16:])
    swapped = client.post("/predict", headers=AUTH, json=body).json["results"]
    assert swapped[0]["result"][0]["value"]["choices"] == ["Negative"] and swapped[1:] == response.json["results"][1:]
    # a row whose digest does not match the task's text is encoded again, not trusted
    redis_conn.hset(key, str(tasks[0]["id"]), last[:16] + last[16:])
    assert client.post("/predict", headers=AUTH, json=body).json["results"] == response.json["results"]
    kept_again = redis_conn.hget(key, str(tasks[0]["id"]))
    assert kept_again[:16] == first[:16]  # its own digest, and its own vector (batch padding moves the last bits)
    assert np.allclose(np.frombuffer(kept_again[16:], np.float16), np.frombuffer(first[16:], np.float16), atol=2e-3)


def test_a_long_encoding_keeps_what_it_did_when_it_is_cut_off(
    redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backend.jobs.embeddings as embeddings

    monkeypatch.setattr(embeddings, "KEEP_EVERY", 4)
    encoder = CountingEncoder()
    calls = []

    def encode_then_die(texts, progress=None):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        if len(calls) == 3:
            raise TimeoutError("the job's time is up")
        return CountingEncoder.encode(encoder, texts, progress)

    monkeypatch.setattr(encoder, "encode", encode_then_die)
    kept = ProjectEmbeddings(redis_conn, 35, encoder)
    with pytest.raises(TimeoutError):
        kept.of(list(range(10)), [f"task {i}" for i in range(10)])
    assert kept.count() == 8  # two chunks of four were kept before the third was cut off
    monkeypatch.undo()
    resumed = CountingEncoder()
    ProjectEmbeddings(redis_conn, 35, resumed).of(list(range(10)), [f"task {i}" for i in range(10)])
    assert resumed.encoded == ["task 8", "task 9"]
