"""What every project job shares: coalescing slots, a per-project lock, progress, outcome statistics."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import LockError
from rq import get_current_job

from backend import kinds
from backend.jobs import stats
from backend.jobs.connection import connect
from backend.jobs.queue import coalescer_for, job_timeout
from backend.jobs.state import ProjectKeys
from backend.kinds import Spec, TaskKind
from backend.labeling import Example
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings, get_settings
from backend.student import ModelStore
from backend.synthetic.provenance import generator_of

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    settings: Settings
    conn: redis.Redis
    store: ModelStore
    ls: LabelStudio
    progress: Callable[[str], None]


@dataclass
class ProjectTasks:
    """What both LLM and ranking jobs read first: the task spec, the human labels, the unlabelled pool."""

    spec: Spec
    human: list[Example]
    pool: list[tuple[int, str]]  # (task id, text) of tasks with text and no annotation
    generators: dict[int, str] = field(default_factory=dict)  # synthetic pool task id -> the model that wrote it

    @property
    def kind(self) -> TaskKind[Any, Any]:
        return kinds.kind_of(self.spec)


def read_project(ls: LabelStudio, project_id: int) -> ProjectTasks:
    label_config = ls.label_config(project_id)
    kind = kinds.kind_for(label_config)
    spec = kind.parse(label_config)
    human = kind.examples(spec, ls.iter_annotated_tasks(project_id))
    labelled = {e.task_id for e in human}
    pool: list[tuple[int, str]] = []
    generators: dict[int, str] = {}
    for task in ls.iter_tasks(project_id):
        task_id = int(task["id"])
        if task["total_annotations"] or task_id in labelled or (text := spec.text_of(task["data"])) is None:
            continue
        pool.append((task_id, text))
        if generator := generator_of(task["data"]):
            generators[task_id] = generator
    return ProjectTasks(spec, human, pool, generators)


def label_studio_for(settings: Settings, conn: redis.Redis, project_id: int) -> LabelStudio:
    """LS from the environment; else what LS itself told us at /setup (hostname and token)."""
    if settings.label_studio_url and settings.label_studio_api_key:
        return LabelStudio(settings.label_studio_url, settings.label_studio_api_key, settings.ls_page_size)
    remembered = stats.ls_access(conn, project_id)
    if remembered:
        return LabelStudio(remembered[0], remembered[1], settings.ls_page_size)
    return LabelStudio(settings.label_studio_url or "", settings.label_studio_api_key or "")


@contextmanager
def project_lock(conn: redis.Redis, name: str, job_id: str, timeout: int) -> Iterator[None]:
    """One job of a kind per project at a time. The lock's token is the job id: a run of the same job that
    lost Redis before it could release the lock (rq retries it under the same id) takes it back at once
    instead of waiting out the lock's timeout."""
    lock = conn.lock(name, timeout=timeout, blocking_timeout=timeout, thread_local=False)
    if conn.get(name) == job_id.encode():
        log.warning("%s: taking back the lock an interrupted run of job %s left", name, job_id)
        conn.delete(name)
    if not lock.acquire(token=job_id):
        raise LockError(f"{name} is still held after {timeout} s")
    try:
        yield
    finally:
        lock.release()


def run_project_job(kind: str, project_id: int, work: Callable[[JobContext], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` as the job of `kind` for the project: one at a time, its outcome recorded either way."""
    settings = get_settings()
    job = get_current_job()
    conn: redis.Redis = job.connection if job is not None else connect(settings)
    job_id = job.id if job is not None else f"inline-{uuid.uuid4().hex[:12]}"
    coalescer = coalescer_for(conn, settings, kind)
    coalescer.started(project_id, job_id)

    def progress(message: str) -> None:
        if job is not None:
            job.meta["progress"] = message
            job.save_meta()

    try:
        with project_lock(conn, ProjectKeys(project_id).job_lock(kind), job_id, job_timeout(settings, kind)):
            store = ModelStore(settings.models_path, keep=settings.keep_model_versions)
            ls = label_studio_for(settings, conn, project_id)
            result = work(JobContext(settings, conn, store, ls, progress))
    except Exception as exc:
        stats.record_job(conn, kind, project_id, {"status": "failed", "error": str(exc)})
        if job is not None and not (isinstance(exc, LabelStudioError) and exc.transient):
            job.retries_left = 0  # a refused key or an unsupported config fails the same way next time
        raise
    finally:
        coalescer.finished(project_id, job_id)
    stats.record_job(conn, kind, project_id, result)
    return result
