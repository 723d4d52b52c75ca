"""LLM answers per task, kept in Redis so that /predict (any server process) and training read them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from backend.jobs.state import ProjectKeys
from backend.llm.annotator import StoredAnswer
from backend.llm.cascade import CHEAP, STRONG


def _key(project_id: int, stage: str = CHEAP) -> str:
    """The cheap LLM's answers and the strong LLM's are kept apart: each is checked against humans alone."""
    keys = ProjectKeys(project_id)
    if stage not in (CHEAP, STRONG):
        raise ValueError(f"no LLM answers for stage {stage!r}")
    return keys.strong_llm_answers if stage == STRONG else keys.llm_answers


def save(conn: Any, project_id: int, answers: Mapping[int, StoredAnswer], stage: str = CHEAP) -> None:
    if answers:
        conn.hset(_key(project_id, stage), mapping={str(task): answer.dumps() for task, answer in answers.items()})


def get_many(conn: Any, project_id: int, task_ids: Iterable[int], stage: str = CHEAP) -> dict[int, StoredAnswer]:
    ids = [int(t) for t in task_ids]
    if not ids:
        return {}
    raw = conn.hmget(_key(project_id, stage), [str(t) for t in ids])
    return {task: StoredAnswer.loads(value) for task, value in zip(ids, raw, strict=True) if value is not None}


def all_answers(conn: Any, project_id: int, stage: str = CHEAP) -> dict[int, StoredAnswer]:
    found = conn.hscan_iter(_key(project_id, stage), count=1000)
    return {int(task): StoredAnswer.loads(value) for task, value in found}


def drop(conn: Any, project_id: int, task_ids: Iterable[int] | None = None) -> None:
    """Forget answers, both LLMs': of some tasks (deleted in LS), or of the whole project."""
    keys = [_key(project_id, CHEAP), _key(project_id, STRONG)]
    if task_ids is None:
        conn.delete(*keys)
        return
    ids = [str(int(t)) for t in task_ids]
    if ids:
        for key in keys:
            conn.hdel(key, *ids)
