"""`lsal-ops import`: tasks from a file into a project, checked, de-duplicated, batched and resumable.

Each task gets `lsal_key` in its data (the hash of its normalized text, or of the id column given with
--id-field). The keys already in the project are read first, so a second run of the same file imports
nothing and a run that stopped half-way picks up where it stopped. Rows that cannot become tasks are
rejected with their line number and the reason; nothing already imported is ever lost or repeated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import kinds
from backend.kinds import Spec
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.synthetic.provenance import KEY, content_hash, task_key, text_key
from sdk_scripts.readers import InputError, Record, detect_format, open_records


@dataclass(frozen=True)
class FieldMapping:
    """Which file field becomes the config's text field, and which (if any) identifies a row."""

    text_field: str
    data_key: str
    id_field: str | None = None


@dataclass
class ImportSummary:
    imported: int = 0
    already_in_project: int = 0
    repeated_in_file: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    stopped: str | None = None  # why the import stopped before the end of the file

    def lines(self, shown: int = 10) -> list[str]:
        out = [f"imported {self.imported}, skipped {self.already_in_project + self.repeated_in_file} "
               f"({self.already_in_project} already in the project, {self.repeated_in_file} repeated in the file), "
               f"rejected {len(self.rejected)}"]  # fmt: skip
        reasons = Counter(reason.split(":")[0] for _, reason in self.rejected)
        out += [f"  rejected, {reason}: {count}" for reason, count in reasons.most_common()]
        out += [f"  line {line}: {reason}" for line, reason in self.rejected[:shown]]
        if len(self.rejected) > shown:
            out.append(f"  ... and {len(self.rejected) - shown} more")
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
            out.append("run the same command again to resume: tasks already in the project are skipped")
        return out


def to_task(record: Record, mapping: FieldMapping, max_chars: int) -> tuple[dict[str, Any] | None, str]:
    """The task for one record and its key, or (None, the reason it is rejected)."""
    if record.row is None:
        return None, record.error or "unreadable"
    row = record.row
    if mapping.text_field not in row:
        return None, f"no {mapping.text_field!r} field: it has {', '.join(sorted(row)) or 'no fields'}"
    text = row[mapping.text_field]
    if not isinstance(text, str) or not text.strip():
        return (
            None,
            f"empty text: {mapping.text_field!r} is {'empty' if isinstance(text, str) else type(text).__name__}",
        )
    if len(text) > max_chars:
        return None, f"too long: {len(text)} characters, more than --max-chars {max_chars}"
    if mapping.id_field:
        if row.get(mapping.id_field) in (None, ""):
            return None, f"no id: {mapping.id_field!r} is missing or empty"
        key = "id-" + content_hash(str(row[mapping.id_field]))
    else:
        key = text_key(text)
    data = {k: v for k, v in row.items() if k != mapping.text_field}
    data[mapping.data_key] = text
    data[KEY] = key
    return {"data": data}, key


def check_mapping(spec: Spec, header: list[str] | None, text_field: str | None, path: Path) -> str:
    """The file field that holds the text: --text-field, else the config's own field name."""
    field_name = text_field or spec.data_key
    if header is not None and field_name not in header:
        hint = "" if text_field else f" (the label config reads ${spec.data_key}); map a column with --text-field"
        raise InputError(f"{path}: no column {field_name!r}{hint}. Its columns are: {', '.join(header)}")
    return field_name


def keys_of(tasks: Iterable[Mapping[str, Any]], data_key: str) -> set[str]:
    """The keys of tasks already in a project (what a re-run must not create again)."""
    return {key for task in tasks if (key := task_key(task["data"], data_key))}


def import_file(
    ls: LabelStudio,
    project_id: int,
    path: Path,
    fmt: str | None = None,
    encoding: str = "utf-8-sig",
    text_field: str | None = None,
    id_field: str | None = None,
    batch_size: int = 500,
    max_chars: int = 100_000,
    progress: Callable[[Iterable[Record]], Iterable[Record]] = lambda records: records,
) -> ImportSummary:
    """Import `path` into the project. Raises InputError / LabelStudioError / UnsupportedLabelConfig before
    anything is imported; a failure later stops the import with the summary of what was done."""
    header, records = open_records(path, detect_format(path, fmt), encoding)  # the file's own faults first
    spec = kinds.parse(ls.label_config(project_id))
    mapping = FieldMapping(check_mapping(spec, header, text_field, path), spec.data_key, id_field)
    known = keys_of(ls.iter_tasks(project_id), spec.data_key)
    summary = ImportSummary()
    batch: dict[str, Mapping[str, Any]] = {}

    def flush() -> None:
        if batch:
            summary.imported += ls.import_tasks(project_id, list(batch.values()))
            known.update(batch)
            batch.clear()

    seen_in_file: set[str] = set()
    try:
        for record in progress(records):
            task, key_or_reason = to_task(record, mapping, max_chars)
            if task is None:
                summary.rejected.append((record.line, key_or_reason))
            elif key_or_reason in seen_in_file:
                summary.repeated_in_file += 1
            elif key_or_reason in known:
                seen_in_file.add(key_or_reason)
                summary.already_in_project += 1
            else:
                seen_in_file.add(key_or_reason)
                batch[key_or_reason] = task
                if len(batch) >= batch_size:
                    flush()
        flush()
    except (LabelStudioError, InputError) as exc:
        summary.stopped = str(exc)
    return summary
