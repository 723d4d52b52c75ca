"""`lsal-ops export`: labelled data with its provenance, to JSONL or CSV.

Each row says who labelled it (`label_source`: human; or, only with --with-llm, prediction: the backend's
pre-label no human has checked, the LLM's or the student's, whichever was likelier, named by its
model_version) and where the task came from (`task_source`: imported or synthetic, with the generator,
target label and batch of a synthetic one).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from backend import kinds
from backend.kinds import Spec, TaskKind
from backend.synthetic import provenance as prov

COLUMNS = ["task_id", "text", "labels", "label_source", "annotator", "model_version", "score", "task_source",
           "synthetic_generator", "synthetic_target", "synthetic_batch", "lsal_key"]  # fmt: skip


def _prediction_labels(kind: TaskKind[Any, Any], spec: Spec, prediction: Mapping[str, Any]) -> Any:
    return kind.labels_of(spec, {"result": prediction.get("result") or []})


def export_rows(spec: Spec, tasks: Iterable[Mapping[str, Any]], with_llm: bool = False) -> Iterator[dict[str, Any]]:
    """One row per labelled task: its human label, else (with_llm) its most confident pre-label."""
    kind = kinds.kind_of(spec)
    for task in tasks:
        data = task.get("data") or {}
        text = spec.text_of(data)
        if text is None:
            continue
        row: dict[str, Any] = {
            "task_id": task["id"], "text": text, "task_source": prov.source_of(data),
            "synthetic_generator": prov.generator_of(data), "synthetic_target": data.get(prov.TARGET),
            "synthetic_batch": data.get(prov.BATCH), "lsal_key": data.get(prov.KEY),
            "annotator": None, "model_version": None, "score": None,
        }  # fmt: skip
        labels = kind.task_labels(spec, task)
        if labels is not None:
            done = [a for a in task.get("annotations") or [] if kind.labels_of(spec, a) == labels]
            yield row | {"labels": list(labels), "label_source": "human",
                         "annotator": done[-1].get("completed_by") if done else None}  # fmt: skip
            continue
        if not with_llm:
            continue
        scored = [(p, found) for p in task.get("predictions") or [] if (found := _prediction_labels(kind, spec, p))]
        if scored:
            best, found = max(scored, key=lambda item: float(item[0].get("score") or 0))
            yield row | {"labels": list(found), "label_source": "prediction",
                         "model_version": best.get("model_version"), "score": best.get("score")}  # fmt: skip


def write_rows(rows: Iterable[dict[str, Any]], path: Path, fmt: str) -> Counter[str]:
    """Write rows as JSONL or CSV (labels joined by "|"); counts by label and task source."""
    counts: Counter[str] = Counter()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        for row in rows:
            counts[f"{row['label_source']}/{row['task_source']}"] += 1
            if writer:
                writer.writerow(row | {"labels": "|".join(row["labels"])})
            else:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return counts
