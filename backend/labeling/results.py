"""Build Label Studio results from labels, and read labels back from annotations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from backend.labeling.config import TaskSpec
from backend.synthetic.provenance import is_synthetic


@dataclass(frozen=True)
class Example:
    task_id: int
    text: str
    labels: tuple[str, ...]
    synthetic: bool = False  # an LLM wrote the text (see backend.synthetic.provenance); a human labelled it


def build_choices_result(spec: TaskSpec, labels: Iterable[str]) -> list[dict[str, Any]]:
    """The `result` list of a prediction that picks `labels` in the spec's <Choices>."""
    chosen = [label for label in labels if label in spec.labels]
    if not chosen:
        return []
    return [
        {
            "from_name": spec.from_name,
            "to_name": spec.to_name,
            "type": "choices",
            "value": {"choices": chosen},
        }
    ]


def labels_from_annotation(spec: TaskSpec, annotation: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The labels a human gave in one annotation; None when cancelled, empty or for another control.

    Labels no longer in the config are dropped rather than trained on.
    """
    if annotation.get("was_cancelled"):
        return None
    for item in annotation.get("result") or []:
        if not isinstance(item, Mapping) or item.get("from_name") != spec.from_name:
            continue
        choices = (item.get("value") or {}).get("choices") or []
        kept = tuple(dict.fromkeys(c for c in choices if c in spec.labels))
        if kept and (spec.multi_label or len(kept) == 1):
            return kept
    return None


def _annotation_rank(annotation: Mapping[str, Any]) -> tuple[bool, str, int]:
    return (
        bool(annotation.get("ground_truth")),
        str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        int(annotation.get("id") or 0),
    )


def task_labels(spec: TaskSpec, task: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The labels of a task: its ground-truth annotation if any, else its most recent usable one."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, Mapping)]
    for annotation in sorted(annotations, key=_annotation_rank, reverse=True):
        labels = labels_from_annotation(spec, annotation)
        if labels is not None:
            return labels
    return None


def training_examples(spec: TaskSpec, tasks: Iterable[Mapping[str, Any]]) -> list[Example]:
    """Labelled examples from LS tasks (with their annotations); tasks without usable text are skipped."""
    examples: list[Example] = []
    for task in tasks:
        labels = task_labels(spec, task)
        if labels is None:
            continue
        text = spec.text_of(task.get("data") or {})
        if text is None:
            continue
        synthetic = is_synthetic(task.get("data") or {})
        examples.append(Example(task_id=int(task["id"]), text=text, labels=labels, synthetic=synthetic))
    return examples
