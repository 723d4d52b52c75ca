"""Coalescing training requests: at most one training running and one pending per project.

A burst of webhook events (an annotator submitting quickly, a bulk import of annotations) must not
queue a training per event. Each project has two slots: `pending` (a queued job that has not started)
and `running`. A request while a job is pending joins it; a request while one runs queues exactly one
more, which rq holds back until the running one ends (whatever its outcome). A job moves itself from
pending to running *before* it reads any labels, so a request that joins the pending job is always
seen by it.

The logic is written against a four-method slot store so it can be tested without Redis; RedisSlots
is the production store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backend.jobs.state import ProjectKeys


class SlotStore(Protocol):
    def set_if_absent(self, key: str, value: str, ttl: int) -> bool: ...
    def set(self, key: str, value: str, ttl: int) -> None: ...
    def get(self, key: str) -> str | None: ...
    def delete_if_equals(self, key: str, value: str) -> bool: ...


@dataclass(frozen=True)
class Decision:
    enqueue: bool
    job_id: str
    after: str | None = None  # the running job the new one must wait for


class TrainingCoalescer:
    def __init__(self, store: SlotStore, ttl: int, kind: str = "train") -> None:
        self.store = store
        self.ttl = ttl
        self.kind = kind  # one pair of slots per project and kind of job (training, pre-annotation)

    def _key(self, project_id: int, slot: str) -> str:
        return ProjectKeys(project_id).job_slot(self.kind, slot)

    def request(self, project_id: int, new_job_id: str) -> Decision:
        """Either claim the pending slot for `new_job_id` (enqueue it) or join the job that holds it."""
        if self.store.set_if_absent(self._key(project_id, "pending"), new_job_id, self.ttl):
            return Decision(True, new_job_id, after=self.store.get(self._key(project_id, "running")))
        pending = self.store.get(self._key(project_id, "pending"))
        if pending is None:  # it started between our two reads: try once more
            return self.request(project_id, new_job_id)
        return Decision(False, pending)

    def abandon(self, project_id: int, job_id: str) -> None:
        """Free the pending slot of a job that could not be enqueued."""
        self.store.delete_if_equals(self._key(project_id, "pending"), job_id)

    def started(self, project_id: int, job_id: str) -> None:
        # Order matters: claim `running` before freeing `pending`, so that no request in between sees
        # both slots empty and queues a job that would run beside this one.
        self.store.set(self._key(project_id, "running"), job_id, self.ttl)
        self.store.delete_if_equals(self._key(project_id, "pending"), job_id)

    def finished(self, project_id: int, job_id: str) -> None:
        self.store.delete_if_equals(self._key(project_id, "running"), job_id)

    def state(self, project_id: int) -> dict[str, str | None]:
        return {slot: self.store.get(self._key(project_id, slot)) for slot in ("pending", "running")}


_DELETE_IF_EQUALS = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class RedisSlots:
    """SlotStore on a redis-py client (duck-typed: this module imports no Redis)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._delete_if_equals = client.register_script(_DELETE_IF_EQUALS)

    def set_if_absent(self, key: str, value: str, ttl: int) -> bool:
        return bool(self.client.set(key, value, nx=True, ex=ttl))

    def set(self, key: str, value: str, ttl: int) -> None:
        self.client.set(key, value, ex=ttl)

    def get(self, key: str) -> str | None:
        value = self.client.get(key)
        return value.decode() if isinstance(value, bytes) else value

    def delete_if_equals(self, key: str, value: str) -> bool:
        return bool(self._delete_if_equals(keys=[key], args=[value]))
