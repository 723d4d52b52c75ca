from __future__ import annotations

import pytest

from backend.labeling import parse_label_config
from backend.labeling.predictions import predict_tasks
from backend.server.protocol import ProtocolError, project_ref
from backend.student import StudentModel
from tests.helpers import NEGATIVE, POSITIVE, SINGLE


@pytest.mark.parametrize(
    ("value", "expected_id", "expected_uid"),
    [
        ("12.1700000000", 12, "12.1700000000"),
        ("12", 12, None),
        (12, 12, None),
        ({"id": 5, "created_at": "2026-11-22T04:26:13.230032Z"}, 5, "5.1795321573"),
        ({"id": 5, "created_at": "not a date"}, 5, None),
    ],
)
def test_project_refs(value: object, expected_id: int, expected_uid: str | None) -> None:
    ref = project_ref(value)
    assert (ref.id, ref.uid) == (expected_id, expected_uid)


@pytest.mark.parametrize("value", [None, "", "abc", -1, 0, True, {"title": "x"}, [1], "1.5.x"])
def test_bad_project_refs(value: object) -> None:
    if value == "1.5.x":
        assert project_ref(value).uid is None  # a malformed timestamp is ignored, the id is still good
        return
    with pytest.raises(ProtocolError):
        project_ref(value)


def test_predict_keeps_one_item_per_task_in_order() -> None:
    spec = parse_label_config(SINGLE)
    model = StudentModel(spec.labels).fit(POSITIVE + NEGATIVE, [("Positive",)] * 6 + [("Negative",)] * 6)
    tasks = [
        {"id": 1, "data": {"text": "love it, wonderful"}},
        {"id": 2, "data": {}},  # missing field
        "not a task",
        {"id": 4, "data": {"text": "   "}},
        {"id": 5, "data": {"text": "hate it, terrible"}},
        {"id": 6, "data": {"text": ["not", "a", "string"]}},
    ]
    results = predict_tasks(tasks, spec, model, "v1-x")
    assert len(results) == len(tasks)
    assert [r != [] for r in results] == [True, False, False, False, True, False]
    assert results[0]["result"][0]["value"]["choices"] == ["Positive"]
    assert results[4]["result"][0]["value"]["choices"] == ["Negative"]
    assert results[0]["model_version"] == "v1-x"
    assert results[0]["score"] != results[4]["score"]


def test_predict_without_a_model_returns_empty_items() -> None:
    spec = parse_label_config(SINGLE)
    assert predict_tasks([{"data": {"text": "x"}}] * 3, spec, None, None) == [[], [], []]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"tasks": [{"id": 3}, {"id": 1}, {"id": 3}]}, [1, 3]),  # what LS 1.23 sends
        ({"tasks": [2, "7", {"id": "5"}]}, [2, 5, 7]),
        ({"tasks": [{"id": None}, {"title": "x"}, True, -4, 0, 1.5, "x", [9], {"id": 8}]}, [8]),
        ({"tasks": {"id": 1}}, []),
        ({}, []),
    ],
)
def test_deleted_task_ids_are_read_defensively(body: dict, expected: list[int]) -> None:
    from backend.server.protocol import deleted_task_ids

    assert deleted_task_ids(body) == expected
