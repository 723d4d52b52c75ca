"""Coalescing and training jobs against a real Redis, with real rq worker processes."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from backend.jobs import stats
from backend.jobs.coalesce import RedisSlots, TrainingCoalescer
from backend.jobs.queue import JobQueue
from backend.server import create_app
from backend.settings import Settings
from tests.helpers import ROOT

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Basic " + base64.b64encode(b"user:secret").decode()}


@pytest.fixture
def live_settings(settings: Settings, redis_url: str, redis_conn: redis.Redis) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url})


def run_worker(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """A real `lsal worker --burst` process: it drains the queue and exits."""
    environment = {
        **os.environ,
        "REDIS_URL": str(settings.redis_url),
        "DATA_DIR": str(settings.data_dir),
        "LABEL_STUDIO_URL": "",
        "LABEL_STUDIO_API_KEY": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "worker", "--burst"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_redis_slots_admit_one_job_under_concurrent_requests(redis_conn: redis.Redis) -> None:
    coalescer = TrainingCoalescer(RedisSlots(redis_conn), ttl=60)
    decisions = []
    barrier = threading.Barrier(16)

    def hammer(i: int) -> None:
        barrier.wait()
        decisions.append(coalescer.request(7, f"job-{i}"))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [d for d in decisions if d.enqueue]
    assert len(winners) == 1
    assert {d.job_id for d in decisions} == {winners[0].job_id}
    assert redis_conn.ttl("lsal:train:7:pending") > 0  # a crashed worker cannot hold the slot forever


def test_a_webhook_burst_queues_one_training(live_settings: Settings, redis_conn: redis.Redis) -> None:
    client = create_app(live_settings).test_client()
    events = ["ANNOTATION_CREATED"] * 20 + ["ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"]
    answers = [
        client.post("/webhook", headers=AUTH, json={"action": action, "project": {"id": 11}, "annotation": {"id": i}})
        for i, action in enumerate(events)
    ]
    assert all(a.status_code == 201 for a in answers)
    statuses = [a.json["status"] for a in answers]
    assert statuses.count("queued") == 1 and statuses.count("coalesced") == len(events) - 1
    queue = Queue(live_settings.queue_name, connection=redis_conn)
    assert queue.count == 1
    job = queue.jobs[0]
    assert job.id == answers[0].json["job_id"]
    assert job.args == (11, "ANNOTATION_CREATED")
    # START_TRAINING has no "annotation" key: still a training request, joined to the pending one
    train = client.post("/webhook", headers=AUTH, json={"action": "START_TRAINING", "project": {"id": 11}})
    assert train.status_code == 201 and train.json["status"] == "coalesced"
    other = client.post("/webhook", headers=AUTH, json={"action": "START_TRAINING", "project": {"id": 12}})
    assert other.json["status"] == "queued"
    assert queue.count == 2


def test_worker_survives_failing_jobs_and_runs_the_next_after_the_running_one(
    live_settings: Settings, redis_conn: redis.Redis
) -> None:
    jobs = JobQueue(redis_conn, live_settings)
    first = jobs.request(21, "ANNOTATION_CREATED")
    jobs.coalescers["train"].started(21, first["job_id"])  # as the job does when a worker picks it up
    second = jobs.request(21, "ANNOTATION_CREATED")
    assert second["status"] == "queued" and second["after"] == first["job_id"]
    assert Job.fetch(second["job_id"], connection=redis_conn).get_status() == JobStatus.DEFERRED
    jobs.coalescers["train"].finished(21, first["job_id"])  # hand the slot back: the worker will take it again

    result = run_worker(live_settings)  # no LS configured: a permanent error, not retried
    assert result.returncode == 0, result.stderr
    a = Job.fetch(first["job_id"], connection=redis_conn)
    b = Job.fetch(second["job_id"], connection=redis_conn)
    assert a.get_status() == JobStatus.FAILED and b.get_status() == JobStatus.FAILED
    assert "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set" in (a.latest_result().exc_string or "")
    assert b.started_at >= a.ended_at  # the dependent job waited for the one before it
    assert jobs.coalescers["train"].state(21) == {"pending": None, "running": None}
    assert stats.training_runs(redis_conn).get("failed") == 2


def test_a_training_job_with_thousands_of_labels_forks_for_its_features_inside_the_worker(
    live_settings: Settings, redis_conn: redis.Redis
) -> None:
    """rq runs each job in a forked work horse; the student forks again for its char features and for its
    calibration probe."""
    job = Queue(live_settings.queue_name, connection=redis_conn).enqueue("tests.helpers.fit_thousands_of_texts")
    result = run_worker(live_settings)
    assert result.returncode == 0, result.stderr
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string
    assert job.return_value()["forks"] == 2
    assert job.return_value()["training_accuracy"] > 0.95


def test_unreachable_label_studio_is_retried_later(live_settings: Settings, redis_conn: redis.Redis) -> None:
    queued = JobQueue(redis_conn, live_settings).request(31, "START_TRAINING")
    result = run_worker(live_settings, LABEL_STUDIO_URL="http://127.0.0.1:1", LABEL_STUDIO_API_KEY="token")
    assert result.returncode == 0, result.stderr
    job = Job.fetch(queued["job_id"], connection=redis_conn)
    assert job.get_status() == JobStatus.SCHEDULED  # back in 10 s, then 60 s
    assert job.retries_left == 1
    assert "cannot reach Label Studio" in stats.project_stats(redis_conn)[31]["last_error"]


def test_embedded_redis_is_shared_and_persistent(tmp_path: Path) -> None:
    from backend.jobs.connection import ensure_embedded_redis, stop_embedded_redis

    directory = tmp_path / "redis"
    url = ensure_embedded_redis(directory)
    assert ensure_embedded_redis(directory) == url  # a second process joins the running server
    redis.Redis.from_url(url).set("kept", "yes")
    stop_embedded_redis(directory)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    url = ensure_embedded_redis(directory)
    try:
        assert redis.Redis.from_url(url).get("kept") == b"yes"
    finally:
        stop_embedded_redis(directory)


def test_setup_hands_ls_access_to_the_workers(live_settings: Settings, redis_conn: redis.Redis) -> None:
    client = create_app(live_settings).test_client()
    body = {"project": "41.1700000000", "hostname": "http://ls.example:8080", "access_token": "tok"}
    assert client.post("/setup", headers=AUTH, json=body).status_code == 200
    deadline = time.monotonic() + 5
    while stats.ls_access(redis_conn, 41) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.ls_access(redis_conn, 41) == ("http://ls.example:8080", "tok")


def test_setup_does_not_wait_for_a_dead_redis(settings: Settings) -> None:
    client = create_app(settings).test_client()  # this Redis refuses connections
    started = time.perf_counter()
    body = {"project": "42.1700000000", "hostname": "http://ls:8080", "access_token": "tok"}
    response = client.post("/setup", headers=AUTH, json=body)
    assert response.status_code == 200 and response.json == {"model_version": "untrained"}
    assert time.perf_counter() - started < 1.0


def test_llm_spending_is_totalled_per_project_and_exposed(live_settings: Settings, redis_conn: redis.Redis) -> None:
    from backend.llm.cost import Price, Usage

    price = Price(0.15, 0.60)
    stats.record_llm_usage(redis_conn, 8, Usage(1_000_000, 0, 10), price)
    total = stats.record_llm_usage(redis_conn, 8, Usage(0, 1_000_000, 10, cached_requests=4), price)
    assert total == pytest.approx(0.75)
    assert stats.llm_spend(redis_conn, 8)["requests"] == 20
    text = create_app(live_settings).test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'lsal_llm_dollars_total{project="8"} 0.75' in text
    assert 'lsal_llm_tokens_total{kind="prompt",project="8"} 1e+06' in text
    assert 'lsal_llm_requests_total{cached="true",project="8"} 4.0' in text
