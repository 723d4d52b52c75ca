"""Queueing jobs, coalesced per project and kind: training, fine-tuning, LLM pre-annotation and ranking."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Dependency

from backend.jobs.coalesce import RedisSlots, TrainingCoalescer
from backend.settings import Settings

TRAIN = "train"
PREANNOTATE = "preannotate"
RANK = "rank"
FINETUNE = "finetune"
JOB_FUNCTIONS = {
    TRAIN: "backend.jobs.training.train_project",
    FINETUNE: "backend.jobs.finetune.finetune_project",
    PREANNOTATE: "backend.jobs.preannotate.preannotate_project",
    RANK: "backend.jobs.ranking.rank_project",
}


def job_timeout(settings: Settings, kind: str) -> int:
    return settings.train_job_timeout if kind in (TRAIN, FINETUNE) else settings.llm_job_timeout


def coalescer_for(conn: redis.Redis, settings: Settings, kind: str = TRAIN) -> TrainingCoalescer:
    # A slot outlives the longest job by a margin, so a worker that died cannot block a project forever.
    return TrainingCoalescer(RedisSlots(conn), ttl=job_timeout(settings, kind) + 600, kind=kind)


class JobQueue:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=conn)
        self.finetune_queue = Queue(settings.finetune_queue_name, connection=conn)
        self.coalescers = {kind: coalescer_for(conn, settings, kind) for kind in JOB_FUNCTIONS}

    def request(self, project_id: int, reason: str, kind: str = TRAIN) -> dict[str, Any]:
        """Queue a job of `kind` for `project_id` unless one is already pending; never blocks on it."""
        job_id = f"{kind}-{int(project_id)}-{uuid.uuid4().hex[:12]}"
        coalescer = self.coalescers[kind]
        decision = coalescer.request(project_id, job_id)
        if not decision.enqueue:
            return {"status": "coalesced", "job_id": decision.job_id}
        depends_on = Dependency(jobs=[decision.after], allow_failure=True) if decision.after else None
        queue = self.finetune_queue if kind == FINETUNE else self.queue
        try:
            queue.enqueue_call(
                JOB_FUNCTIONS[kind],
                args=(int(project_id), reason),
                job_id=job_id,
                timeout=job_timeout(self.settings, kind),
                depends_on=depends_on,
                result_ttl=7 * 24 * 3600,
                failure_ttl=30 * 24 * 3600,
                retry=Retry(max=2, interval=[10, 60]),
                description=f"{kind} project {project_id} ({reason})",
            )
        except Exception:
            coalescer.abandon(project_id, job_id)
            raise
        return {"status": "queued", "job_id": job_id, "after": decision.after}

    def counts(self) -> dict[str, int]:
        return {
            "queued": self.queue.count,
            "started": self.queue.started_job_registry.count,
            "deferred": self.queue.deferred_job_registry.count,
            "scheduled": self.queue.scheduled_job_registry.count,
            "finished": self.queue.finished_job_registry.count,
            "failed": self.queue.failed_job_registry.count,
            "finetune_queued": self.finetune_queue.count,
        }
