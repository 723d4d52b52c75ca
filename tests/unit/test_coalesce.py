"""The coalescing rules, against an in-memory slot store (the Redis store is tested in integration)."""

from __future__ import annotations

from backend.jobs.coalesce import TrainingCoalescer


class DictSlots:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def set_if_absent(self, key: str, value: str, ttl: int) -> bool:
        if key in self.data:
            return False
        self.data[key] = value
        return True

    def set(self, key: str, value: str, ttl: int) -> None:
        self.data[key] = value

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def delete_if_equals(self, key: str, value: str) -> bool:
        if self.data.get(key) == value:
            del self.data[key]
            return True
        return False


def test_a_burst_queues_one_job() -> None:
    coalescer = TrainingCoalescer(DictSlots(), ttl=60)
    decisions = [coalescer.request(1, f"job-{i}") for i in range(50)]
    assert decisions[0].enqueue and decisions[0].after is None
    assert not any(d.enqueue for d in decisions[1:])
    assert {d.job_id for d in decisions} == {"job-0"}


def test_while_running_exactly_one_more_waits_for_it() -> None:
    coalescer = TrainingCoalescer(DictSlots(), ttl=60)
    coalescer.request(1, "a")
    coalescer.started(1, "a")
    assert coalescer.state(1) == {"pending": None, "running": "a"}
    second = coalescer.request(1, "b")
    assert second.enqueue and second.after == "a"
    assert [coalescer.request(1, f"c{i}").enqueue for i in range(10)] == [False] * 10
    coalescer.finished(1, "a")
    coalescer.started(1, "b")
    assert coalescer.state(1) == {"pending": None, "running": "b"}
    coalescer.finished(1, "b")
    assert coalescer.state(1) == {"pending": None, "running": None}


def test_projects_do_not_share_slots() -> None:
    coalescer = TrainingCoalescer(DictSlots(), ttl=60)
    assert coalescer.request(1, "a").enqueue
    assert coalescer.request(2, "b").enqueue
    assert not coalescer.request(1, "c").enqueue


def test_a_stale_finish_does_not_free_another_jobs_slot() -> None:
    coalescer = TrainingCoalescer(DictSlots(), ttl=60)
    coalescer.request(1, "a")
    coalescer.started(1, "a")
    coalescer.request(1, "b")
    coalescer.started(1, "b")  # b took over (a's slot expired, say)
    coalescer.finished(1, "a")
    assert coalescer.state(1)["running"] == "b"


def test_abandoned_request_frees_the_pending_slot() -> None:
    coalescer = TrainingCoalescer(DictSlots(), ttl=60)
    coalescer.request(1, "a")
    coalescer.abandon(1, "a")
    assert coalescer.request(1, "b").enqueue
