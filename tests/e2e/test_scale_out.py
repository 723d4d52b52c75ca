"""Scale-out as the README describes it, on this machine: one `lsal serve`, two `lsal worker` processes (as on
two hosts: each its own DATA_DIR), one Redis, one shared MODEL_DIR, and a real Label Studio on PostgreSQL.

Three projects of 600 labelled news posts and stories each get a burst of training requests at once (webhooks,
as LS sends them, plus labels added in LS while the first trainings run). What rq recorded for every training
job (worker, start, end) must show trainings of different projects running on both workers side by side,
trainings of one project never overlapping, and each project's last model trained on exactly the labels LS
holds. The same burst is then run against one worker, and both wall times are printed (not asserted: the
machine is shared and noisy).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

from backend.datasets import Dataset, newsgroups20, reuters_r8
from backend.student import ModelStore
from tests.fixtures.services import (
    BackendProcess,
    LabelStudioServer,
    annotate,
    connected_project,
    free_port,
    lsal_process,
    stop_process,
    tail_of,
    wait_for,
)
from tests.helpers import choice

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LABELLED = 600  # per project, imported with their annotations: each training reads them all from LS
LABELLED_IN_BURST = 3  # per project and burst, in LS while its first training runs
REQUESTS_AT_ONCE = 4  # per project and burst, webhooks sent together
QUEUE = "lsal"


@dataclass(frozen=True)
class Interval:
    job_id: str
    project: int
    worker: str
    started: datetime
    ended: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.started < other.ended and other.started < self.ended


@dataclass
class Project:
    id: int
    data: Dataset
    unlabelled: list[tuple[int, str]]  # (task id, gold label) still to label during bursts
    labelled: set[int] = field(default_factory=set)


@dataclass
class ScaledOut:
    """One server and any number of workers, each its own process with its own DATA_DIR, sharing Redis and models."""

    server: BackendProcess
    env: dict[str, str]
    directory: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def add_worker(self) -> None:
        name = f"worker-{len(self.workers) + 1}"
        directory = self.directory / name
        self.workers.append(_lsal("worker", {**self.env, "DATA_DIR": str(directory)}, directory))
        self._wait_for_workers()

    def stop_worker(self) -> None:
        stop_process(self.workers.pop())
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        conn = redis.Redis.from_url(self.env["REDIS_URL"])
        wait_for(lambda: Worker.count(connection=conn, queue=Queue(QUEUE, connection=conn)) == len(self.workers),
                 timeout=60, what=f"{len(self.workers)} rq workers on the queue\n{self.logs()}")  # fmt: skip

    def logs(self) -> str:
        return "\n".join(tail_of(path, 30) for path in sorted(self.directory.glob("*/*.log")))


def _lsal(command: str, env: dict[str, str], directory: Path) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    return lsal_process(command, env, directory / f"{command}.log")


@pytest.fixture
def scaled_out(
    label_studio_postgres: LabelStudioServer, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> Iterator[ScaledOut]:
    port = free_port()
    auth = ("lsal", "backend-password")
    secret = "webhook-secret-for-tests"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(tmp_path / "shared-models"),
        "LABEL_STUDIO_URL": label_studio_postgres.url,
        "LABEL_STUDIO_API_KEY": label_studio_postgres.token,
        "BASIC_AUTH_USER": auth[0],
        "BASIC_AUTH_PASS": auth[1],
        "WEBHOOK_SECRET": secret,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_WORKERS": "1",
        "QUEUE_NAME": QUEUE,
        "MIN_ANNOTATIONS": "10",
        "LLM_ENABLED": "false",
        "QUEUE_ENABLED": "false",  # trainings alone: no rank job after each
        # the TF-IDF student: a first training would otherwise spend ~2 minutes encoding its 600 news stories
        # (bench/results/encoder.md), which says nothing about how trainings spread over workers
        "STUDENT_ENCODER": "none",
    }
    server_dir = tmp_path / "server"
    process = _lsal("serve", {**env, "DATA_DIR": str(server_dir)}, server_dir)
    server = BackendProcess(f"http://127.0.0.1:{port}", auth, secret, server_dir, server_dir / "serve.log", process)
    backend = ScaledOut(server, env, tmp_path)
    try:
        wait_for(lambda: server.get("/health").status_code == 200, timeout=60, what="`lsal serve` /health")
        yield backend
    finally:
        try:
            while backend.workers:
                backend.stop_worker()
        finally:  # a failed test may leave a worker that will not deregister: the server still goes
            for worker in backend.workers:
                stop_process(worker)
            stop_process(process)


def _tasks(data: Dataset, labelled: int, unlabelled: int) -> list[dict]:
    """`labelled` random stories with their annotation, then `unlabelled` more with their gold label kept aside."""
    tasks = []
    for n, i in enumerate(random.Random(f"{data.name}-{data.split}").sample(range(len(data)), labelled + unlabelled)):
        task: dict = {"data": {"text": data.texts[i], "gold": data.labels[i]}}
        if n < labelled:
            task["annotations"] = [{"result": [choice("label", "text", data.labels[i])]}]
        tasks.append(task)
    return tasks


def _project(label_studio: LabelStudioServer, backend: ScaledOut, data: Dataset) -> Project:
    spare = 2 * LABELLED_IN_BURST
    project_id, _ = connected_project(label_studio, backend.server, data.classes, _tasks(data, LABELLED, spare))
    tasks = list(label_studio.sdk().tasks.list(project=project_id, fields="task_only", page_size=500))
    assert len(tasks) == LABELLED + spare
    labelled = {int(t.id) for t in tasks if t.total_annotations}
    unlabelled = [(int(t.id), str(t.data["gold"])) for t in tasks if not t.total_annotations]
    assert len(labelled) == LABELLED and len(unlabelled) == spare
    return Project(project_id, data, unlabelled, labelled)


def _labelled_in_ls(label_studio: LabelStudioServer, project_id: int) -> set[int]:
    tasks = label_studio.sdk().tasks.list(project=project_id, fields="task_only", page_size=500)
    return {int(t.id) for t in tasks if t.total_annotations}


def _training_job_ids(conn: redis.Redis) -> set[str]:
    queue = Queue(QUEUE, connection=conn)
    return {job_id for job_id in queue.finished_job_registry.get_job_ids() if job_id.startswith("train-")}


def _idle(conn: redis.Redis) -> bool:
    queue = Queue(QUEUE, connection=conn)
    busy = queue.count + queue.started_job_registry.count + queue.deferred_job_registry.count
    return busy + queue.scheduled_job_registry.count == 0


def _burst(label_studio: LabelStudioServer, backend: ScaledOut, projects: list[Project]) -> datetime:
    """For every project at once: several training webhooks together, then, once its training runs, labels added
    in LS (LS sends their webhooks). Returns when the burst was sent; its trainings may still be running."""
    failures: list[BaseException] = []

    def one(project: Project) -> None:
        try:
            body = {"action": "ANNOTATION_CREATED", "project": {"id": project.id}, "annotation": {"id": 0}}
            answers = [backend.server.post("/webhook", body) for _ in range(REQUESTS_AT_ONCE)]
            assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
            first = Job.fetch(answers[0].json()["job_id"], connection=redis.Redis.from_url(backend.env["REDIS_URL"]))
            wait_for(lambda: first.get_status(refresh=True) != JobStatus.QUEUED, timeout=120,
                     what=f"project {project.id}'s first training to start", interval=0.05)  # fmt: skip
            for _ in range(LABELLED_IN_BURST):
                task_id, gold = project.unlabelled.pop()
                annotate(label_studio, task_id, gold)
                project.labelled.add(task_id)
        except BaseException as exc:
            failures.append(exc)

    started = datetime.now(UTC)
    threads = [threading.Thread(target=one, args=(project,)) for project in projects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return started


def _settle(conn: redis.Redis, store: ModelStore, projects: list[Project], backend: ScaledOut) -> None:
    """Wait until no training is queued or running and every project's model has all of its labels."""

    def settled() -> bool:
        if not _idle(conn):
            return False
        latest = {p.id: store.latest_version(p.id) for p in projects}
        return all(v and len(store.meta(p.id, v)["task_ids"]) == len(p.labelled) for p, v in zip(
            projects, latest.values(), strict=True))  # fmt: skip

    wait_for(settled, timeout=300, what=f"every project trained on all its labels\n{backend.logs()}", interval=0.2)
    time.sleep(1.5)  # a webhook LS sent late would show here as a new job
    assert _idle(conn)


def _intervals(conn: redis.Redis, job_ids: set[str]) -> list[Interval]:
    intervals = []
    for job in Job.fetch_many(sorted(job_ids), connection=conn):
        assert job is not None and job.get_status() == JobStatus.FINISHED
        assert job.return_value()["status"] == "trained", job.return_value()
        assert job.worker_name and job.started_at and job.ended_at
        intervals.append(Interval(job.id, int(job.args[0]), job.worker_name, job.started_at, job.ended_at))
    return intervals


def _run(
    label_studio: LabelStudioServer, backend: ScaledOut, conn: redis.Redis, projects: list[Project]
) -> tuple[list[Interval], float]:
    """One burst, settled: the trainings it ran and the seconds from its first request to its last training's end."""
    store = ModelStore(Path(backend.env["MODEL_DIR"]))
    before = _training_job_ids(conn)
    started = _burst(label_studio, backend, projects)
    _settle(conn, store, projects, backend)
    assert not Queue(QUEUE, connection=conn).failed_job_registry.get_job_ids()
    intervals = _intervals(conn, _training_job_ids(conn) - before)
    for project in projects:
        assert _labelled_in_ls(label_studio, project.id) == project.labelled  # what LS holds, nothing else
        version = store.latest_version(project.id)
        assert version is not None
        meta = store.meta(project.id, version)
        assert set(meta["task_ids"]) == project.labelled and meta["labelled"] == len(project.labelled)  # none lost
        assert backend.server.setup_version(project.id) == version  # the server reads the workers' models
    wall = (max(i.ended for i in intervals) - started).total_seconds()
    return intervals, wall


def _assert_one_project_at_a_time(intervals: list[Interval]) -> None:
    for project in {i.project for i in intervals}:
        runs = sorted((i for i in intervals if i.project == project), key=lambda i: i.started)
        assert len(runs) >= 2  # the burst's first training, then the one its new labels queued
        for before, after in itertools.pairwise(runs):
            assert after.started >= before.ended, f"project {project}: {before} overlaps {after}"


def test_two_workers_train_projects_side_by_side_and_each_project_one_at_a_time(
    label_studio_postgres: LabelStudioServer, scaled_out: ScaledOut, redis_conn: redis.Redis
) -> None:
    label_studio = label_studio_postgres
    corpora = [newsgroups20("train"), newsgroups20("test"), reuters_r8()]
    projects = [_project(label_studio, scaled_out, data) for data in corpora]
    scaled_out.add_worker()
    scaled_out.add_worker()
    assert _idle(redis_conn) and not _training_job_ids(redis_conn)  # importing queued nothing

    two, wall_two = _run(label_studio, scaled_out, redis_conn, projects)
    workers = {i.worker for i in two}
    assert len(workers) == 2, two
    side_by_side = [
        (a, b) for a in two for b in two if a.project < b.project and a.worker != b.worker and a.overlaps(b)
    ]
    assert side_by_side, f"no two projects trained at the same time on both workers: {two}"
    _assert_one_project_at_a_time(two)

    scaled_out.stop_worker()
    one, wall_one = _run(label_studio, scaled_out, redis_conn, projects)
    assert len({i.worker for i in one}) == 1 and {i.worker for i in one} <= workers
    _assert_one_project_at_a_time(one)

    for count, intervals, wall in ((2, two, wall_two), (1, one, wall_one)):
        busy = sum((i.ended - i.started).total_seconds() for i in intervals)
        print(
            f"\n{count} worker(s): {len(intervals)} trainings of 3 projects x {LABELLED}+ labels in {wall:.1f} s from "
            f"the first request ({busy:.1f} s of training jobs, {busy / wall:.2f} at a time on average)"
        )
    print(f"one worker / two workers, wall time: {wall_one / wall_two:.2f}")
