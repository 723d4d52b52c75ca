"""The rq worker, made to ride out a Redis outage instead of quitting, and the loop that brings it back.

rq's worker quits when Redis goes away at the wrong moment: the horse monitor's heartbeat raises, and
so does the bookkeeping after a job whose horse lost Redis. Its dequeue loop does retry, but with a
back-off that doubles to 60 s, so a job queued after Redis returned could wait half a minute; and its
scheduler process (which re-enqueues retries) dies with Redis and is revived only at the next 10-minute
maintenance. Here:

- heartbeats during a job tolerate an outage (the horse keeps working: most of a training needs no Redis);
- reconnect attempts back off from 1 s to at most `RECONNECT_MAX_WAIT` s, each logged;
- a dead scheduler is revived as soon as Redis answers, its stale lock released first;
- when the worker loop itself dies, `run_worker` waits for Redis, fails the interrupted job the way rq
  fails a job whose horse died (so its retry policy re-runs it) and starts a fresh worker.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
RECONNECT_MAX_WAIT = 4.0  # seconds between attempts at most: a queued job runs within ~5 s of Redis's return
POLL_INTERVAL = 5  # seconds a blocking dequeue waits before the worker looks after its scheduler again


class ResilientWorker(Worker):
    max_connection_wait_time = RECONNECT_MAX_WAIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: tuple[Job, Queue, Any] | None = None  # (job, queue, execution) while a horse works

    @property
    def dequeue_timeout(self) -> int:
        return POLL_INTERVAL

    def prepare_execution(self, job: Job) -> Any:
        execution = super().prepare_execution(job)
        self.running = (job, self.queue_class(job.origin, connection=self.connection), execution)
        return execution

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)
        self.running = None  # left set when the bookkeeping around the horse raised: see `recover`

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_DOWN as exc:
            self.log.warning("Worker %s: Redis unreachable while job %s runs (%s); the job goes on", self.name,
                             job.id, exc)  # fmt: skip

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or self.scheduler_died()

    def scheduler_died(self) -> bool:
        process = self.scheduler._process if self.scheduler is not None else None
        return process is not None and not process.is_alive()  # is_alive() also reaps the dead process

    def run_maintenance_tasks(self) -> None:
        if self.scheduler_died():
            self.log.warning("Worker %s: the scheduler process died; starting it again", self.name)
            self.scheduler.release_locks()  # only its own: another worker's scheduler keeps its lock
            self.scheduler._process = None
            self.scheduler.acquire_locks(auto_start=True)
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()

    def recover(self) -> None:
        """After a crash of the work loop and once Redis answers: stop the scheduler, settle the job."""
        try:
            self.unsubscribe()  # teardown skips it when registering the worker's death raised
        except Exception as exc:  # a best effort: the pubsub thread may already be gone
            self.log.debug("Worker %s: unsubscribe: %s", self.name, exc)
        if self.scheduler is not None:
            process = self.scheduler._process
            if process is not None and process.is_alive():
                process.terminate()
            if process is not None:
                process.join(timeout=10)
            self.scheduler.release_locks()
        if self.running is None:
            return
        job, queue, execution = self.running
        self.running = None
        try:
            status = job.get_status()
        except (NoSuchJobError, InvalidJobOperation, *REDIS_DOWN) as exc:  # e.g. Redis came back without it
            self.log.warning("Worker %s: job %s cannot be settled (%s)", self.name, job.id, exc)
            return
        if status == JobStatus.STARTED:
            self.log.warning("Worker %s: job %s was cut off from Redis; failing it so that its retry runs",
                             self.name, job.id)  # fmt: skip
            self.handle_job_failure(job, queue, exc_string="the worker lost Redis while the job ran",
                                    execution=execution)  # fmt: skip


def wait_for_redis(conn: redis.Redis, stop: threading.Event, max_wait: float = RECONNECT_MAX_WAIT) -> bool:
    """Block until Redis answers (True) or `stop` is set (False); attempts back off from 1 s to `max_wait`."""
    wait, down_since = 1.0, time.monotonic()
    while not stop.is_set():
        try:
            conn.ping()
            log.info("Redis is back after %.1f s", time.monotonic() - down_since)
            return True
        except REDIS_DOWN as exc:
            log.warning("Redis unreachable (%s); next attempt in %.0f s", exc, wait)
        stop.wait(wait)
        wait = min(wait * 2, max_wait)
    return False


def run_worker(conn: redis.Redis, queue_names: Sequence[str], burst: bool = False, logging_level: str = "INFO") -> int:
    """Work until asked to stop; a worker loop that dies of a Redis outage is replaced once Redis returns.

    `queue_names` in priority order: a job waits until the queues before its own are empty."""
    stop = threading.Event()
    while True:
        worker = ResilientWorker(list(queue_names), connection=conn)
        crashed: BaseException | None = None
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except REDIS_DOWN as exc:
            crashed = exc
        # rq installs its own handlers in work(); between workers, ours
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        if stop.is_set() or worker._shutdown_requested_date is not None or (burst and crashed is None):
            return 0
        log.warning("the worker loop ended (%s); starting a new one once Redis answers", crashed or "see above")
        if not wait_for_redis(conn, stop):
            return 0
        worker.recover()
