from __future__ import annotations

import pytest

from backend.labeling import (
    UnsupportedLabelConfig,
    build_choices_result,
    labels_from_annotation,
    parse_label_config,
    training_examples,
)
from backend.labeling.templates import render
from tests.helpers import MULTI, NO_CHOICES, ROOT, SINGLE, choice


def test_single_choice_config() -> None:
    spec = parse_label_config(SINGLE)
    assert (spec.from_name, spec.to_name, spec.data_key) == ("sentiment", "text", "text")
    assert spec.labels == ("Positive", "Negative")
    assert spec.multi_label is False


def test_multi_choice_config_keeps_hints() -> None:
    spec = parse_label_config(MULTI)
    assert spec.multi_label is True
    assert spec.data_key == "body"
    assert dict(spec.descriptions) == {"Sports": "games and athletes"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (NO_CHOICES, "no supported control"),
        ("<View><Text name='t' value='$t'/>", "cannot be parsed"),
        ("", "empty"),
        (
            "<View><Text name='t' value='$t'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>",
            "at least two",
        ),
        (
            "<View><Image name='i' value='$img'/><Choices name='c' toName='i'>"
            "<Choice value='a'/><Choice value='b'/></Choices></View>",
            "no supported control",
        ),
    ],
)
def test_unsupported_configs_say_why(config: str, message: str) -> None:
    with pytest.raises(UnsupportedLabelConfig, match=message):
        parse_label_config(config)


@pytest.mark.parametrize("name", ["text_classification_single.xml", "text_classification_multi.xml"])
def test_shipped_templates_parse(name: str) -> None:
    spec = parse_label_config((ROOT / "label_configs" / name).read_text())
    assert len(spec.labels) >= 2
    assert spec.multi_label is name.endswith("multi.xml")


def test_render_template_swaps_labels_and_field() -> None:
    template = (ROOT / "label_configs" / "text_classification_single.xml").read_text()
    spec = parse_label_config(render(template, ["ham", "spam", "ham"], text_field="message"))
    assert spec.labels == ("ham", "spam")
    assert spec.data_key == "message"
    with pytest.raises(UnsupportedLabelConfig):
        render(template, ["only"])


def test_result_never_carries_an_off_label_choice() -> None:
    spec = parse_label_config(SINGLE)
    assert build_choices_result(spec, ["Positive"]) == [choice("sentiment", "text", "Positive")]
    assert build_choices_result(spec, ["positive"]) == []
    assert build_choices_result(spec, ["Maybe", "Negative"])[0]["value"]["choices"] == ["Negative"]


def test_labels_from_annotations() -> None:
    spec = parse_label_config(SINGLE)
    good = {"result": [choice("sentiment", "text", "Negative")]}
    assert labels_from_annotation(spec, good) == ("Negative",)
    assert labels_from_annotation(spec, {**good, "was_cancelled": True}) is None
    assert labels_from_annotation(spec, {"result": []}) is None
    assert labels_from_annotation(spec, {"result": [choice("other", "text", "Negative")]}) is None
    assert labels_from_annotation(spec, {"result": [choice("sentiment", "text", "Removed")]}) is None
    # two choices in a single-choice control is not a usable label
    assert labels_from_annotation(spec, {"result": [choice("sentiment", "text", "Positive", "Negative")]}) is None


def test_training_examples_prefer_ground_truth_then_latest() -> None:
    spec = parse_label_config(SINGLE)
    tasks = [
        {
            "id": 1,
            "data": {"text": "fine"},
            "annotations": [
                {"id": 1, "updated_at": "2026-01-02", "result": [choice("sentiment", "text", "Negative")]},
                {"id": 2, "updated_at": "2026-01-01", "ground_truth": True,
                 "result": [choice("sentiment", "text", "Positive")]},
            ],
        },
        {
            "id": 2,
            "data": {"text": "meh"},
            "annotations": [
                {"id": 3, "updated_at": "2026-01-01", "result": [choice("sentiment", "text", "Positive")]},
                {"id": 4, "updated_at": "2026-01-03", "result": [choice("sentiment", "text", "Negative")]},
                {"id": 5, "updated_at": "2026-01-04", "was_cancelled": True, "result": []},
            ],
        },
        {"id": 3, "data": {"other": "x"}, "annotations": [{"result": [choice("sentiment", "text", "Positive")]}]},
        {"id": 4, "data": {"text": "unlabelled"}, "annotations": []},
    ]  # fmt: skip
    examples = training_examples(spec, tasks)
    assert [(e.task_id, e.labels) for e in examples] == [(1, ("Positive",)), (2, ("Negative",))]


def test_a_control_pointing_at_an_object_without_value_is_unsupported_not_a_crash() -> None:
    config = SINGLE.replace(' value="$text"', "")
    with pytest.raises(UnsupportedLabelConfig, match="no supported control"):
        parse_label_config(config)
