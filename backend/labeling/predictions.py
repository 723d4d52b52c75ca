"""Which prediction each task gets: the student's, the LLM's, or none. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from backend import kinds
from backend.kinds import Spec

if TYPE_CHECKING:
    from backend.llm.annotator import PreLabel


def task_ids(tasks: Sequence[Any]) -> list[int]:
    return [int(t["id"]) for t in tasks if isinstance(t, Mapping) and isinstance(t.get("id"), int)]


def predict_tasks(
    tasks: Sequence[Any],
    spec: Spec,
    model: Any | None,
    version: str | None,
    llm: Mapping[int, PreLabel] | None = None,
    embed: Callable[[Sequence[int | None], Sequence[str]], Any] | None = None,
) -> list[dict[str, Any] | list[Any]]:
    """One item per task, in order. A task we cannot predict gets `[]` (no prediction for it).

    An empty list is LS's "this task has no predictions": nothing is saved for it, the other items
    keep their places, and the task is asked for again once a model exists. A prediction with an empty
    result, by contrast, would be stored and shown to annotators as an empty pre-label.

    `llm` holds the LLM's pre-labels by task id. One is served where there is no student prediction, or
    where it is calibrated against humans and at least as likely to be right as the student's: both
    scores are calibrated probabilities of being right, so the higher one is the better pre-label.

    `embed(task_ids, texts)` gives the tasks' sentence embeddings when the student uses an encoder (the
    project's kept ones); without it the student encodes the texts itself.
    """
    llm = llm or {}
    kind = kinds.kind_of(spec)
    texts: list[str] = []
    rows: list[int] = []
    for i, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, Mapping) else None
        text = spec.text_of(data) if isinstance(data, Mapping) else None
        if text is not None:
            texts.append(text)
            rows.append(i)
    results: list[dict[str, Any] | list[Any]] = [[] for _ in tasks]
    student: Sequence[Any] = [None] * len(texts)
    if model is not None and texts:
        ids = [task_id if isinstance(task_id := tasks[row].get("id"), int) else None for row in rows]
        vectors = embed(ids, texts) if embed is not None and getattr(model, "encoder", None) else None
        student = model.predict(texts, vectors) if vectors is not None else model.predict(texts)
    for row, prediction in zip(rows, student, strict=True):
        task_id = tasks[row].get("id")
        pre = llm.get(task_id) if isinstance(task_id, int) else None
        if pre is not None and (prediction is None or (pre.calibrated and pre.score >= prediction.score)):
            labels, score = pre.labels, pre.score
        elif prediction is not None:
            labels, score = prediction.labels, prediction.score
        else:
            continue
        item = kinds.prediction_item(kind, spec, labels, score, version)
        if item is not None:
            results[row] = item
    return results
