"""The owner of every Redis key the backend writes: each key is named here and nowhere else.

Per project (`ProjectKeys`): the LLM answers per task (the strong LLM's apart), the tasks' sentence
embeddings (one hash per encoder), the cascade's
per-stage totals and the stage that answered each task, the job outcomes and LLM spend, how to reach
LS, the queue choice, the published queue and its history (current batch, stop signals, rounds, stop
set, batch number), and the coalescing slots and locks of its jobs. Server-wide (module constants):
the job outcome counters, the sets of projects with stats, and the LLM response cache.

`ProjectState.forget` lets go of a project (deleted in LS, or its id re-bound to a new LS project);
`ProjectState.drop` lets go of some of its tasks (deleted in LS). Neither touches the coalescing slots
or the job locks: those belong to jobs in flight (a lock is released by the token of the job that took
it: deleting it would fail that job at release and let a second one run beside it) and they expire on
their own (job timeout + 600 s). So a job already running when its project is forgotten may still
write its own outcome (a stats entry, a queue round) after `forget`; the next job starts from nothing.

The LLM response cache is not per-project state: it is keyed by the hash of (model, prompt, parameters),
and an answer depends on nothing else, so two projects asking the same thing share it. It feeds no
training (training reads the per-project answers), so a deleted task's text left in it teaches no one;
its entries expire after 90 days.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from backend.student.encoder import ENCODERS

PREFIX = "lsal"
STATS_PROJECTS = f"{PREFIX}:stats:projects"  # projects with job outcomes
LLM_PROJECTS = f"{PREFIX}:stats:llm_projects"  # projects with LLM spend
LLM_CACHE_PREFIX = f"{PREFIX}:llm:cache:"
QUEUE_PARTS = ("current", "signals", "rounds", "stop_set", "number")


def runs_counter(name: str) -> str:
    """The server-wide hash counting one kind of job's runs by outcome (e.g. training_runs)."""
    return f"{PREFIX}:stats:{name}"


@dataclass(frozen=True)
class ProjectKeys:
    """The names of one project's keys."""

    project_id: int

    @property
    def _id(self) -> int:
        return int(self.project_id)

    @property
    def llm_answers(self) -> str:  # hash: task id -> StoredAnswer JSON
        return f"{PREFIX}:llm:{self._id}:answers"

    @property
    def strong_llm_answers(self) -> str:  # hash: task id -> StoredAnswer JSON of the cascade's strong LLM
        return f"{PREFIX}:llm:{self._id}:answers:strong"

    @property
    def cascade_spend(self) -> str:  # hash: "<stage>:<field>" -> running total (items, accepted, tokens, ...)
        return f"{PREFIX}:stats:cascade:{self._id}"

    @property
    def cascade_stage(self) -> str:  # hash: task id -> the cascade stage whose label was accepted, or "human"
        return f"{PREFIX}:cascade:{self._id}:stage"

    def embeddings(self, encoder: str) -> str:  # hash: task id -> text digest (16 bytes) + float16 embedding
        return f"{PREFIX}:embeddings:{self._id}:{encoder}"

    @property
    def stats(self) -> str:  # hash: the last outcome of each kind of job
        return f"{PREFIX}:stats:project:{self._id}"

    @property
    def llm_spend(self) -> str:  # hash: tokens, requests, dollars
        return f"{PREFIX}:stats:llm:{self._id}"

    @property
    def ls_access(self) -> str:  # hash: url, api_key (what /setup was told)
        return f"{PREFIX}:project:{self._id}:ls"

    @property
    def queue_choice(self) -> str:  # "1" or "0": does LS serve this project's ranking
        return f"{PREFIX}:project:{self._id}:queue"

    def queue(self, part: str) -> str:
        if part not in QUEUE_PARTS:
            raise ValueError(f"no queue key {part!r}; known: {', '.join(QUEUE_PARTS)}")
        return f"{PREFIX}:queue:{self._id}:{part}"

    def job_slot(self, kind: str, slot: str) -> str:  # string with a TTL: the pending or running job id
        return f"{PREFIX}:{kind}:{self._id}:{slot}"

    def job_lock(self, kind: str) -> str:  # redis-py lock with a TTL
        return f"{PREFIX}:{kind}:{self._id}:lock"

    def forgettable(self) -> list[str]:
        """Every key `forget` deletes: all but the job slots and locks (see the module docstring)."""
        return [self.llm_answers, self.strong_llm_answers, self.cascade_spend, self.cascade_stage, self.stats,
                self.llm_spend, self.ls_access, self.queue_choice,
                *(self.queue(part) for part in QUEUE_PARTS),
                *(self.embeddings(name) for name in ENCODERS)]  # fmt: skip


def without_tasks(ids: Iterable[int], gone: set[int]) -> list[int]:
    return [task for task in ids if task not in gone]


class ProjectState:
    """Reads and lets go of per-project state on a redis-py client."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def forget(self, project_id: int) -> int:
        """Everything the project left in Redis but its jobs' slots and locks; returns the keys deleted."""
        keys = ProjectKeys(project_id)
        pipe = self.conn.pipeline()
        pipe.delete(*keys.forgettable())
        pipe.srem(STATS_PROJECTS, int(project_id))
        pipe.srem(LLM_PROJECTS, int(project_id))
        return int(pipe.execute()[0])

    def drop(self, project_id: int, task_ids: Iterable[int]) -> None:
        """What the project keeps per task, for tasks deleted in LS: their LLM answers (the seed ones would
        keep training the student), their embeddings, and their place in the stop set and in the published
        queue's order."""
        gone = {int(t) for t in task_ids}
        if not gone:
            return
        keys = ProjectKeys(project_id)
        fields = [str(t) for t in sorted(gone)]
        for key in (keys.llm_answers, keys.strong_llm_answers, keys.cascade_stage,
                    *(keys.embeddings(name) for name in ENCODERS)):  # fmt: skip
            self.conn.hdel(key, *fields)
        self._edit_json(keys.queue("stop_set"), lambda ids: without_tasks(ids, gone))
        self._edit_json(keys.queue("current"), lambda queue: {**queue, "order": without_tasks(queue["order"], gone)})

    def _edit_json(self, key: str, edit: Any) -> None:
        """Rewrite one JSON value unless it is absent, retried if a job writes it meanwhile."""
        from redis.exceptions import WatchError  # here: the pure modules that name keys import no Redis

        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return
                    pipe.multi()
                    pipe.set(key, json.dumps(edit(json.loads(raw))))
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def queue_enabled(self, project_id: int, default: bool) -> bool:
        """Whether LS serves the project's ranking: its own choice, else the server-wide QUEUE_ENABLED."""
        raw = self.conn.get(ProjectKeys(project_id).queue_choice)
        return default if raw is None else raw in (b"1", "1")

    def set_queue_enabled(self, project_id: int, enabled: bool) -> None:
        self.conn.set(ProjectKeys(project_id).queue_choice, "1" if enabled else "0")
