"""lsal-ops import and export without LS: readers, bad input, de-duplication, resuming, provenance rows.

LS is an in-memory stand-in with the three calls the importer makes; tests/e2e/test_ops.py runs the
same commands against a real Label Studio.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from backend.labeling import UnsupportedLabelConfig, parse_label_config
from backend.labelstudio import LabelStudioError
from backend.synthetic.provenance import KEY, Provenance, synthetic_task, text_key
from sdk_scripts.exporting import export_rows, write_rows
from sdk_scripts.importing import import_file
from sdk_scripts.readers import InputError, detect_format, open_records
from tests.helpers import SINGLE, choice


class FakeLS:
    def __init__(self, config: str = SINGLE, fail_on_batch: int | None = None) -> None:
        self.config = config
        self.tasks: list[dict[str, Any]] = []
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def label_config(self, project_id: int) -> str:
        return self.config

    def iter_tasks(self, project_id: int):
        yield from ({"id": i + 1, "data": t["data"], "total_annotations": 0} for i, t in enumerate(self.tasks))

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        self.batches += 1
        if self.batches == self.fail_on_batch:
            raise LabelStudioError("importing: Label Studio answered 503", transient=True)
        self.tasks += tasks
        return len(tasks)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_import_maps_the_column_keys_each_task_and_skips_repeats(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "id,review,stars\n1,Great film,5\n2,Awful plot,1\n3,great FILM!,5\n4,,3\n")
    ls = FakeLS()
    summary = import_file(ls, 1, csv, text_field="review", batch_size=1)  # type: ignore[arg-type]
    assert summary.imported == 2 and summary.repeated_in_file == 1 and summary.already_in_project == 0
    assert summary.rejected == [(5, "empty text: 'review' is empty")]
    assert ls.tasks[0]["data"] == {"id": "1", "stars": "5", "text": "Great film", KEY: text_key("Great film")}
    again = import_file(ls, 1, csv, text_field="review")  # type: ignore[arg-type]
    assert again.imported == 0 and again.already_in_project == 2 and again.repeated_in_file == 1
    assert len(ls.tasks) == 2
    assert "imported 0, skipped 3 (2 already in the project, 1 repeated in the file), rejected 1" in again.lines()[0]


def test_an_id_column_identifies_rows_instead_of_their_text(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "t.jsonl", '{"uid": 1, "text": "same"}\n{"uid": 2, "text": "same"}\n{"text": "x"}\n')
    ls = FakeLS()
    summary = import_file(ls, 1, jsonl, id_field="uid")  # type: ignore[arg-type]
    assert summary.imported == 2 and summary.rejected == [(3, "no id: 'uid' is missing or empty")]


def test_a_missing_text_column_is_named_with_the_columns_there_are(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "body,stars\nnice,5\n")
    with pytest.raises(InputError, match=r"no column 'text' \(the label config reads \$text\).*body, stars"):
        import_file(FakeLS(), 1, csv)  # type: ignore[arg-type]


def test_malformed_jsonl_lines_are_rejected_by_line_and_the_rest_imported(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "t.jsonl", '{"text": "one"}\n{"text": "two"\n\n[1, 2]\n{"data": {"text": "three"}}\n')
    ls = FakeLS()
    summary = import_file(ls, 1, jsonl)  # type: ignore[arg-type]
    assert summary.imported == 2 and [t["data"]["text"] for t in ls.tasks] == ["one", "three"]
    assert summary.rejected[0][0] == 2 and summary.rejected[0][1].startswith("malformed JSON:")
    assert summary.rejected[1] == (4, "expected an object, found list")


def test_a_file_in_another_encoding_is_refused_before_anything_is_imported(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "text\nfine\ncaf\u00e9 cr\u00e8me\n", encoding="cp1252")
    ls = FakeLS()
    with pytest.raises(InputError, match=r"not utf-8-sig: byte 0xe9 at offset \d+ \(line 3\).*--encoding"):
        import_file(ls, 1, csv)  # type: ignore[arg-type]
    assert ls.tasks == []
    summary = import_file(ls, 1, csv, encoding="cp1252")  # type: ignore[arg-type]
    assert summary.imported == 2 and ls.tasks[1]["data"]["text"] == "caf\u00e9 cr\u00e8me"


def test_bad_files_and_configs_get_precise_messages(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        import_file(FakeLS(), 1, tmp_path / "missing.csv")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format(tmp_path / "tasks.txt")
    broken = write(tmp_path / "t.json", '[{"text": "a"},')
    with pytest.raises(InputError, match="malformed JSON at line 1"):
        import_file(FakeLS(), 1, broken)  # type: ignore[arg-type]
    empty = write(tmp_path / "e.csv", "")
    with pytest.raises(InputError, match="empty"):
        import_file(FakeLS(), 1, empty)  # type: ignore[arg-type]
    no_choices = '<View><Text name="text" value="$text"/><TextArea name="a" toName="text"/></View>'
    with pytest.raises(UnsupportedLabelConfig):
        import_file(FakeLS(no_choices), 1, write(tmp_path / "ok.csv", "text\na\n"))  # type: ignore[arg-type]


def test_an_import_that_fails_half_way_keeps_what_it_did_and_resumes(tmp_path: Path) -> None:
    rows = "\n".join(json.dumps({"text": f"review number {i}"}) for i in range(10))
    jsonl = write(tmp_path / "t.jsonl", rows + "\n")
    ls = FakeLS(fail_on_batch=3)
    first = import_file(ls, 1, jsonl, batch_size=3)  # type: ignore[arg-type]
    assert first.imported == 6 and first.stopped and "503" in first.stopped and len(ls.tasks) == 6
    assert any("run the same command again" in line for line in first.lines())
    second = import_file(ls, 1, jsonl, batch_size=3)  # type: ignore[arg-type]
    assert second.imported == 4 and second.already_in_project == 6 and not second.stopped
    assert sorted(t["data"]["text"] for t in ls.tasks) == sorted(f"review number {i}" for i in range(10))


def test_a_huge_field_is_rejected_by_length_not_by_the_csv_module(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "text\n" + '"' + "word " * 60_000 + '"\nshort one\n')
    summary = import_file(FakeLS(), 1, csv, max_chars=100_000)  # type: ignore[arg-type]
    assert summary.imported == 1
    assert summary.rejected == [(2, "too long: 300000 characters, more than --max-chars 100000")]


def test_a_50_mb_file_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "a fairly ordinary review of a film " * 14}) + "\n"
    with path.open("w") as handle:
        for _ in range(50 * 2**20 // len(line) + 1):
            handle.write(line)
    assert path.stat().st_size >= 50 * 2**20
    tracemalloc.start()
    _, records = open_records(path, "jsonl")
    count = sum(1 for record in records if record.row is not None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 50 * 2**20 // len(line) + 1
    assert peak < 8 * 2**20, f"reading a 50 MB file peaked at {peak / 2**20:.1f} MB"


def test_export_rows_say_who_labelled_and_where_the_task_came_from(tmp_path: Path) -> None:
    spec = parse_label_config(SINGLE)
    synthetic = synthetic_task("text", "A made-up happy review", Provenance("gen", "Positive", "syn-1", "h"))
    prediction = {"result": [choice("sentiment", "text", "Negative")], "score": 0.8, "model_version": "student+llm1"}
    tasks = [
        {"id": 1, "data": {"text": "real and labelled", KEY: "k1"},
         "annotations": [{"result": [choice("sentiment", "text", "Positive")], "completed_by": 7}], "predictions": []},
        {"id": 2, **synthetic, "annotations": [{"result": [choice("sentiment", "text", "Positive")],
                                                "completed_by": 8}], "predictions": []},
        {"id": 3, "data": {"text": "only a pre-label"}, "annotations": [], "predictions": [prediction]},
        {"id": 4, "data": {"text": "cancelled"}, "annotations": [{"was_cancelled": True, "result": []}],
         "predictions": []},
    ]  # fmt: skip
    rows = list(export_rows(spec, tasks))
    assert [(r["task_id"], r["label_source"], r["task_source"]) for r in rows] == [
        (1, "human", "imported"), (2, "human", "synthetic")]  # fmt: skip
    assert rows[0]["annotator"] == 7
    assert rows[1]["synthetic_generator"] == "gen" and rows[1]["synthetic_batch"] == "syn-1"
    with_llm = list(export_rows(spec, tasks, with_llm=True))
    assert with_llm[-1]["task_id"] == 3 and with_llm[-1]["label_source"] == "prediction"
    assert with_llm[-1]["score"] == 0.8

    counts = write_rows(iter(with_llm), tmp_path / "out.csv", "csv")
    assert counts == {"human/imported": 1, "human/synthetic": 1, "prediction/imported": 1}
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0].startswith("task_id,text,labels,label_source") and len(lines) == 4
    write_rows(iter(rows), tmp_path / "out.jsonl", "jsonl")
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first["labels"] == ["Positive"] and first["lsal_key"] == "k1"
