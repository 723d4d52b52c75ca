"""Queueing training jobs, coalesced per project."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Dependency

from backend.jobs.coalesce import RedisSlots, TrainingCoalescer
from backend.settings import Settings


def coalescer_for(conn: redis.Redis, settings: Settings) -> TrainingCoalescer:
    # A slot outlives the longest job by a margin, so a worker that died cannot block a project forever.
    return TrainingCoalescer(RedisSlots(conn), ttl=settings.train_job_timeout + 600)


class TrainingQueue:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=conn)
        self.coalescer = coalescer_for(conn, settings)

    def request(self, project_id: int, reason: str) -> dict[str, Any]:
        """Queue a training of `project_id` unless one is already pending; never blocks on training."""
        job_id = f"train-{int(project_id)}-{uuid.uuid4().hex[:12]}"
        decision = self.coalescer.request(project_id, job_id)
        if not decision.enqueue:
            return {"status": "coalesced", "job_id": decision.job_id}
        depends_on = Dependency(jobs=[decision.after], allow_failure=True) if decision.after else None
        try:
            self.queue.enqueue_call(
                "backend.jobs.training.train_project",
                args=(int(project_id), reason),
                job_id=job_id,
                timeout=self.settings.train_job_timeout,
                depends_on=depends_on,
                result_ttl=7 * 24 * 3600,
                failure_ttl=30 * 24 * 3600,
                retry=Retry(max=2, interval=[10, 60]),
                description=f"train project {project_id} ({reason})",
            )
        except Exception:
            self.coalescer.abandon(project_id, job_id)
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
        }
