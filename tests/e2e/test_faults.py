"""Faults: Redis dies in the middle of a training, with a Redis this test starts and kills itself.

The backend runs as `lsal run` starts it (gunicorn + a worker) against that Redis and a real Label
Studio. While Redis is down, /predict must keep answering from memory; once it is back, the training
that was cut off must complete (rq's retry re-runs it) and a newly queued job must run promptly.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from rq.job import Job

from backend.datasets import trec6
from backend.jobs.connection import redis_server_binary
from tests.fixtures.services import (
    BackendProcess,
    LabelStudioServer,
    backend_for,
    connected_project,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.e2e

N_LABELLED = 150
OUTAGE_SECONDS = 40.0  # longer than rq's 30 s between heartbeats, and than the job's reading of LS


class OwnRedis:
    """A redis-server on a TCP port of its own, durable (AOF, fsync always) so a SIGKILL loses nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                   str(self.directory), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        with open(self.directory / "redis.log", "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), timeout=20, what="our own Redis")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def _labelled_project(label_studio: LabelStudioServer, backend: BackendProcess) -> tuple[int, str]:
    data = trec6()
    order = random.Random(11).sample(range(len(data)), N_LABELLED)
    project_id, _ = connected_project(label_studio, backend, data.classes)
    tasks = [{"data": {"text": data.texts[i]}, "annotations": [{"result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [data.labels[i]]}}]}]}
        for i in order]  # fmt: skip
    label_studio.sdk().projects.import_tasks(id=project_id, request=tasks)
    return project_id, data.texts[order[0]]


def _poll_predict(backend: BackendProcess, body: dict, stop: threading.Event, seen: list[tuple[int, bool]]) -> None:
    while not stop.is_set():
        try:
            response = requests.post(f"{backend.url}/predict", auth=backend.auth, json=body, timeout=5)
            seen.append((response.status_code, bool(response.json()["results"][0])))
        except requests.RequestException as exc:  # a refused connection is the failure this test looks for
            seen.append((0, False))
            print("predict failed:", exc)
        time.sleep(0.2)


def _wait_job(conn: redis.Redis, job_id: str, statuses: tuple[str, ...], what: str, timeout: float = 240) -> None:
    wait_for(lambda: Job.fetch(job_id, connection=conn).get_status() in statuses, timeout=timeout, what=what,
             interval=0.2)  # fmt: skip


def test_a_redis_outage_during_a_training_stops_neither_predict_nor_the_job(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    own = OwnRedis(tmp_path / "redis")
    own.start()
    # one task per LS page: reading the labels takes seconds, so Redis dies while the job works
    env = {"REDIS_URL": own.url, "LLM_ENABLED": "false", "QUEUE_ENABLED": "false", "LS_PAGE_SIZE": "1",
           "MIN_ANNOTATIONS": "10"}  # fmt: skip
    try:
        with backend_for(label_studio, tmp_path / "backend", env) as backend:
            conn = redis.Redis.from_url(own.url)
            project_id, text = _labelled_project(label_studio, backend)
            train = {"action": "START_TRAINING", "project": {"id": project_id}}
            _wait_job(conn, backend.post("/webhook", train).json()["job_id"], ("finished",),
                      f"the first training\n{backend.log_tail()}")  # fmt: skip
            before = backend.setup_version(project_id)
            assert before.startswith("v")

            job_id = backend.post("/webhook", train).json()["job_id"]
            _wait_job(conn, job_id, ("started",), "the second training to start", timeout=60)
            seen: list[tuple[int, bool]] = []
            stop = threading.Event()
            config = label_studio.sdk().projects.get(id=project_id).label_config
            body = {"project": str(project_id), "label_config": config, "tasks": [{"id": 1, "data": {"text": text}}]}
            poller = threading.Thread(target=_poll_predict, args=(backend, body, stop, seen), daemon=True)
            poller.start()
            own.kill()
            time.sleep(OUTAGE_SECONDS)
            own.start()
            back_at = time.time()

            # a job queued now runs promptly (a project LS does not have: it fails at once, which is running)
            probe = backend.post("/webhook", {"action": "START_TRAINING", "project": {"id": 999_999}}).json()
            _wait_job(conn, probe["job_id"], ("finished", "failed"), f"a job queued after Redis returned\n"
                      f"{backend.log_tail()}", timeout=120)  # fmt: skip
            probe_ran_after = time.time() - back_at
            _wait_job(conn, job_id, ("finished",), f"the interrupted training to complete\n{backend.log_tail()}")
            job = Job.fetch(job_id, connection=conn)
            stop.set()
            poller.join(timeout=10)
            failed = sum(status != 200 for status, _ in seen)
            print(f"\nRedis down {OUTAGE_SECONDS:.0f} s; /predict calls {len(seen)}, non-200 {failed}; a job queued "
                  f"after Redis returned ran in {probe_ran_after:.1f} s; the interrupted training finished "
                  f"{job.ended_at.timestamp() - back_at:.1f} s after Redis returned")  # fmt: skip

            assert job.ended_at.timestamp() > back_at  # it was cut off: it could only finish once Redis returned
            assert seen and all(status == 200 and served for status, served in seen), seen
            assert backend.setup_version(project_id) != before
            assert backend.metric("lsal_labelled_tasks", project=str(project_id)) == N_LABELLED  # no label lost
            assert backend.process.poll() is None  # `lsal run` is still up
    finally:
        if own.process is not None and own.process.poll() is None:
            own.process.terminate()
            own.process.wait(timeout=20)
