"""The Label Studio ML-backend protocol: request parsing and response building. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TRAINING_ACTIONS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATIONS_DELETED",
        "TASKS_DELETED",
        "START_TRAINING",
    }
)
# Actions LS sends to a backend's auto-created webhook that need no work here.
IGNORED_ACTIONS = frozenset(
    {
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
        "REVIEW_CREATED",
        "REVIEW_UPDATED",
        "REVIEWS_DELETED",
    }
)
PROJECT_DELETED = "PROJECT_DELETED"
TASKS_DELETED = "TASKS_DELETED"  # also a training action: the labels of deleted tasks leave the student
TASKS_CREATED = "TASKS_CREATED"  # new tasks to pre-annotate (when the LLM is on)
KNOWN_ACTIONS = TRAINING_ACTIONS | IGNORED_ACTIONS | {PROJECT_DELETED, TASKS_CREATED}
MAX_PROJECT_ID = 2**31 - 1  # LS keys projects by a PostgreSQL/SQLite `integer`: positive, 32-bit


class ProtocolError(ValueError):
    """A request we cannot act on; the message is returned to the caller as JSON."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProjectRef:
    id: int
    uid: str | None = None  # "<id>.<created_at as unix seconds>", as LS sends it to /setup and /predict


def project_ref(value: Any) -> ProjectRef:
    """Read LS's project reference: "12.1700000000", "12", 12 or a webhook's project object."""
    if isinstance(value, Mapping):
        if "id" not in value:
            raise ProtocolError("the project object has no 'id'")
        uid = None
        created = value.get("created_at")
        if isinstance(created, str):
            try:
                stamp = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
                uid = f"{int(value['id'])}.{stamp}"
            except ValueError:
                uid = None
        return ProjectRef(_positive_int(value["id"]), uid)
    if isinstance(value, bool) or value is None:
        raise ProtocolError('\'project\' is required: the LS project id, e.g. "12" or "12.1700000000"')
    if isinstance(value, int):
        return ProjectRef(_positive_int(value))
    if isinstance(value, str):
        head, _, tail = value.strip().partition(".")
        project_id = _positive_int(head)
        return ProjectRef(project_id, f"{project_id}.{tail}" if tail.isdigit() else None)
    raise ProtocolError(f"'project' must be an id or an object, not {type(value).__name__}")


def _positive_int(value: Any) -> int:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if isinstance(value, str) and len(value.strip()) > len(str(MAX_PROJECT_ID)):
        raise ProtocolError(f"not a project id: {shown} (ids are integers from 1 to {MAX_PROJECT_ID})")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"not a project id: {shown}") from None
    if not 0 < number <= MAX_PROJECT_ID:
        raise ProtocolError(f"not a project id: {shown} (ids are integers from 1 to {MAX_PROJECT_ID})")
    return number


def parse_json_body(data: bytes) -> Any:
    """The request body as JSON; any body that is not (bad bytes, bad syntax, nesting too deep) is a 400."""
    if not data.strip():
        raise ProtocolError("the request body must be JSON")
    try:
        return json.loads(data)
    except RecursionError:
        raise ProtocolError("the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise ProtocolError("the request body must be JSON") from None


def deleted_task_ids(body: Mapping[str, Any]) -> list[int]:
    """The task ids of a TASKS_DELETED event: LS sends `"tasks": [{"id": 1}, ...]`. Entries that are not a
    positive id (or an object with one) are skipped: the event still retrains, whatever its payload."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        return []
    ids = set()
    for task in tasks:
        value = task.get("id") if isinstance(task, Mapping) else task
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            ids.add(value)
    return sorted(ids)
