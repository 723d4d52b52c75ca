"""The fine-tuning job: after a training publishes the fast student, fine-tune the encoder on the same human
labels in the background, and publish the result as the next version only when it beats the fast student
on held-out labels (backend/student/finetune.py holds the model and the rules).

It waits on a queue of its own, which workers take only when the main queue is empty, and it stops between
batches when the project's next training is queued or published (the next fine-tune takes over), when its
share of TRAIN_JOB_TIMEOUT is spent, or when a job has waited on the main queue for YIELD_AFTER seconds
with no worker to take it (it is then queued again, behind that job); a stopped or losing fine-tune
leaves the fast student in place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis
from redis.exceptions import LockError
from rq import Queue

from backend.jobs.embeddings import ProjectEmbeddings, project_embeddings
from backend.jobs.queue import FINETUNE, TRAIN, JobQueue, coalescer_for, job_timeout
from backend.jobs.running import JobContext, project_lock, read_project, run_project_job
from backend.jobs.state import ProjectKeys
from backend.jobs.training import embeddings_of, request_ranking
from backend.labeling import Example
from backend.student import StudentModel
from backend.student.finetune import (
    FineTunedEncoder,
    FineTunedStudent,
    FineTuneStopped,
    batched_proba,
    should_publish,
    skip_reason,
)

log = logging.getLogger(__name__)

FIT_SHARE = 0.7  # of the job's timeout, for the fit; the rest scores the project's tasks and saves
PUBLISH_LOCK_SECONDS = 120  # how long publishing waits for a running training (which then supersedes it)
META_NOT_COPIED = ("version", "project_id", "saved_at")  # the store writes these for the new version


YIELD_AFTER = 10.0  # seconds a job may wait on the main queue, with no worker taking it, before a fine-tune yields
OUT_OF_TIME = "out of time (TRAIN_JOB_TIMEOUT)"
YIELDED = "another job has waited for a worker: the fine-tune yields and is queued again behind it"


class StopCheck:
    """Whether the fine-tune should stop now, and why: asked between batches, so it must be cheap."""

    def __init__(self, ctx: JobContext, project_id: int, base: str, deadline: float) -> None:
        self.ctx, self.project_id, self.base, self.deadline = ctx, project_id, base, deadline
        self.reason: str | None = None
        self.queue = Queue(ctx.settings.queue_name, connection=ctx.conn)
        self.waiting_since: float | None = None

    def __call__(self) -> bool:
        self.reason = self._reason()
        return self.reason is not None

    def _reason(self) -> str | None:
        if time.monotonic() > self.deadline:
            return OUT_OF_TIME
        latest = self.ctx.store.latest_version(self.project_id)
        if latest != self.base:
            return f"{latest} was published meanwhile"
        try:
            pending = coalescer_for(self.ctx.conn, self.ctx.settings, TRAIN).state(self.project_id)["pending"]
            waiting = self.queue.count > 0
        except redis.RedisError:  # an outage is no reason to throw the work away
            return None
        if pending:
            return "new labels arrived: a training is queued"
        return YIELDED if self._waited_too_long(waiting) else None

    def _waited_too_long(self, waiting: bool) -> bool:
        """A job on the main queue that no worker has taken for YIELD_AFTER seconds (a job that another,
        idle worker takes at once is no reason to yield)."""
        now = time.monotonic()
        self.waiting_since = (self.waiting_since or now) if waiting else None
        return self.waiting_since is not None and now - self.waiting_since >= YIELD_AFTER


def fast_student_right(
    base: StudentModel, examples: Sequence[Example], vectors: np.ndarray | None, tuned: FineTunedEncoder
) -> list[bool]:
    """The fast student, fitted as the published one was but on the fine-tune's training rows, scored on its
    held-out rows: both models judged on the same tasks."""
    assert tuned.train_rows_ is not None and tuned.holdout_rows_ is not None
    train, held = tuned.train_rows_, tuned.holdout_rows_
    student = StudentModel(base.labels, encoder=base.encoder, encoder_weight=base.encoder_weight).fit(
        [examples[i].text for i in train], [examples[i].labels for i in train],
        embeddings=None if vectors is None else vectors[train],
    )  # fmt: skip
    predicted = student.predict([examples[i].text for i in held], None if vectors is None else vectors[held])
    return [p.labels == examples[i].labels for p, i in zip(predicted, held, strict=True)]


def refit_on_all(tuned: FineTunedEncoder, human: Sequence[Example], stop: StopCheck,
                 progress: Callable[[str], None]) -> bool:  # fmt: skip
    """Fine-tune again on every label once the held-out fifth has decided (on TREC-6 at 500 labels: 0.905
    against 0.878, bench/README.md). Out of time, the four-fifths model stays; other stops propagate."""
    progress(f"fine-tuning again on all {len(human)} labels")
    try:
        tuned.refit([e.text for e in human], [e.labels[0] for e in human], stop)
    except FineTuneStopped:
        if stop.reason != OUT_OF_TIME:
            raise
        return False
    return True


def score_tasks(
    tuned: FineTunedEncoder, texts: Sequence[str], stop: Callable[[], bool], progress: Callable[[str], None]
) -> np.ndarray:
    parts = []
    for part in batched_proba(tuned, texts, stop):
        parts.append(part)
        done = sum(len(p) for p in parts)
        progress(f"scoring {len(texts)} tasks with the fine-tuned model: {done} done")
    return np.vstack(parts) if parts else np.zeros((0, len(tuned.labels)))


def compare(stored: Any, human: Sequence[Example], tuned: FineTunedEncoder, mode: str,
            embeddings: ProjectEmbeddings | None, progress: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Both students judged on the fine-tune's held-out fifth, and whether the fine-tuned one is published."""
    vectors = embeddings_of(embeddings, human, progress) if stored.model.encoder else None
    fast_right = fast_student_right(stored.model, human, vectors, tuned)
    return {
        "labels": len(human), "held_out": len(fast_right), "fit_seconds": round(tuned.fit_seconds_, 1),
        "fast_accuracy": round(float(np.mean(fast_right)), 4),
        "finetuned_accuracy": round(tuned.holdout_accuracy_, 4), "temperature": round(tuned.temperature_, 4),
        "published": should_publish(mode, fast_right, tuned.holdout_right_),
    }  # fmt: skip


def publish(ctx: JobContext, project_id: int, stored: Any, model: FineTunedStudent, comparison: dict[str, Any],
            stop: StopCheck) -> dict[str, Any]:  # fmt: skip
    """Save the fine-tuned student as the next version, under the training lock: a training that published
    meanwhile wins, and saves never interleave."""
    after = stored.version
    meta = {k: v for k, v in stored.meta.items() if k not in META_NOT_COPIED}
    meta |= {"reason": f"fine-tuned after {after}", "student": "finetuned", "finetune": comparison,
             "fit_seconds": comparison["fit_seconds"]}  # fmt: skip
    try:
        with project_lock(ctx.conn, ProjectKeys(project_id).job_lock(TRAIN), f"finetune-{uuid.uuid4().hex}",
                          PUBLISH_LOCK_SECONDS):  # fmt: skip
            if stop():
                return {"status": "superseded", "after": after, "message": stop.reason}
            version = ctx.store.save(project_id, model, meta=meta)
    except LockError:
        return {"status": "superseded", "after": after, "message": "a training is running"}
    log.info("project %s: published fine-tuned %s after %s: %s", project_id, version, after, comparison)
    request_ranking(ctx.conn, ctx.settings, project_id, f"fine-tuned {version}")
    return {"status": "published", "version": version, "after": after, **comparison}


def run_finetune(project_id: int, ctx: JobContext, embeddings: ProjectEmbeddings | None) -> dict[str, Any]:
    """Fine-tune on the labels the current version was trained on; publish only when it wins.

    The current version, not the one whose training queued this job: a request that joins a pending
    fine-tune must be served by it with the newest labels."""
    settings, started = ctx.settings, time.monotonic()
    after = ctx.store.latest_version(project_id)
    stored = ctx.store.load(project_id, after) if after else None
    if stored is None or not isinstance(stored.model, StudentModel):
        return {"status": "skipped", "after": after, "message": f"{after or 'no version'} is not a fast student"}
    timeout = job_timeout(settings, FINETUNE)
    stop = StopCheck(ctx, project_id, stored.version, started + FIT_SHARE * timeout)
    project = read_project(ctx.ls, project_id)
    human = project.human
    if sorted(e.task_id for e in human) != sorted(stored.meta.get("task_ids") or ()):
        return {"status": "superseded", "after": after, "message": f"the labels changed since {after}"}
    reason = skip_reason(settings.student_finetune, project.spec.multi_label, len(human),
                         settings.finetune_min_labels, settings.finetune_max_labels)  # fmt: skip
    if reason:
        return {"status": "skipped", "after": after, "message": reason}
    ctx.progress(f"fine-tuning {stored.model.encoder or 'the encoder'} on {len(human)} labels")
    tuned = FineTunedEncoder(project.spec.labels)
    try:
        tuned.fit([e.text for e in human], [e.labels[0] for e in human], stop)
        comparison = compare(stored, human, tuned, settings.student_finetune, embeddings, ctx.progress)
        if not comparison["published"]:
            log.info("project %s: the fine-tune after %s did not win: %s", project_id, after, comparison)
            return {"status": "kept_fast", "after": after, **comparison}
        comparison["refitted"] = refit_on_all(tuned, human, stop, ctx.progress)
        comparison["fit_seconds"] = round(tuned.fit_seconds_, 1)
        stop.deadline = started + 0.95 * timeout
        texts = [e.text for e in human] + [text for _, text in project.pool]
        proba = score_tasks(tuned, texts, stop, ctx.progress)
    except FineTuneStopped:
        if stop.reason == YIELDED:
            JobQueue(ctx.conn, settings).request(project_id, "after yielding", FINETUNE)
        return {"status": "stopped", "after": after, "message": stop.reason}
    result = publish(ctx, project_id, stored, FineTunedStudent(stored.model, texts, proba), comparison, stop)
    return result | {"seconds": round(time.monotonic() - started, 1)}


def finetune_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """The rq job, queued by a training that published a fast student."""
    return run_project_job(
        FINETUNE, project_id, lambda ctx: run_finetune(project_id, ctx, project_embeddings(ctx, project_id))
    )
