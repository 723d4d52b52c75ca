"""LLM answers per task, kept in Redis so that /predict (any server process) and training read them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from backend.jobs.state import ProjectKeys
from backend.llm.annotator import StoredAnswer


def _key(project_id: int) -> str:
    return ProjectKeys(project_id).llm_answers


def save(conn: Any, project_id: int, answers: Mapping[int, StoredAnswer]) -> None:
    if answers:
        conn.hset(_key(project_id), mapping={str(task): answer.dumps() for task, answer in answers.items()})


def get_many(conn: Any, project_id: int, task_ids: Iterable[int]) -> dict[int, StoredAnswer]:
    ids = [int(t) for t in task_ids]
    if not ids:
        return {}
    raw = conn.hmget(_key(project_id), [str(t) for t in ids])
    return {task: StoredAnswer.loads(value) for task, value in zip(ids, raw, strict=True) if value is not None}


def all_answers(conn: Any, project_id: int) -> dict[int, StoredAnswer]:
    return {int(task): StoredAnswer.loads(value) for task, value in conn.hscan_iter(_key(project_id), count=1000)}


def drop(conn: Any, project_id: int, task_ids: Iterable[int] | None = None) -> None:
    """Forget answers: of some tasks (deleted in LS), or of the whole project."""
    if task_ids is None:
        conn.delete(_key(project_id))
        return
    ids = [str(int(t)) for t in task_ids]
    if ids:
        conn.hdel(_key(project_id), *ids)
