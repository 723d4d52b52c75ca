"""The Label Studio ML-backend protocol: request parsing and response building. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.labeling import TaskSpec, build_choices_result

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
        "TASKS_CREATED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
        "REVIEW_CREATED",
        "REVIEW_UPDATED",
        "REVIEWS_DELETED",
    }
)
PROJECT_DELETED = "PROJECT_DELETED"
KNOWN_ACTIONS = TRAINING_ACTIONS | IGNORED_ACTIONS | {PROJECT_DELETED}


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
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"not a project id: {value!r}") from None
    if number <= 0:
        raise ProtocolError(f"not a project id: {value!r}")
    return number


def predict_tasks(
    tasks: Sequence[Any], spec: TaskSpec, model: Any | None, version: str | None
) -> list[dict[str, Any] | list[Any]]:
    """One item per task, in order. A task we cannot predict gets `[]` (no prediction for it).

    An empty list is LS's "this task has no predictions": nothing is saved for it, the other items
    keep their places, and the task is asked for again once a model exists. A prediction with an empty
    result, by contrast, would be stored and shown to annotators as an empty pre-label.
    """
    texts: list[str] = []
    rows: list[int] = []
    for i, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, Mapping) else None
        text = spec.text_of(data) if isinstance(data, Mapping) else None
        if text is not None:
            texts.append(text)
            rows.append(i)
    results: list[dict[str, Any] | list[Any]] = [[] for _ in tasks]
    if model is None or not texts:
        return results
    for row, prediction in zip(rows, model.predict(texts), strict=True):
        result = build_choices_result(spec, prediction.labels)
        if result:
            results[row] = {"result": result, "score": round(prediction.score, 6), "model_version": version}
    return results
