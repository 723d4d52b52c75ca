"""The task-kind registry, and the classification kind against the code it hands over to."""

from __future__ import annotations

import numpy as np
import pytest

from backend import kinds
from backend.kinds.classification import CLASSIFICATION
from backend.labeling import (
    UnsupportedLabelConfig,
    build_choices_result,
    labels_from_annotation,
    parse_label_config,
    training_examples,
)
from backend.llm.annotator import StoredAnswer, few_shot_prompts
from backend.llm.checks import llm_checks
from backend.llm.parsing import parse_answer
from backend.llm.prompts import answer_schema
from backend.selection.pool import build_pool, predict_proba
from backend.student import StudentModel
from tests.helpers import MULTI, NEGATIVE, NO_CHOICES, POSITIVE, ROOT, SINGLE, choice


def _task(task_id: int, text: str, *labels: str, key: str = "text", control: str = "sentiment") -> dict:
    annotation = {"id": task_id, "updated_at": "2026-01-01", "result": [choice(control, key, *labels)]}
    return {"id": task_id, "data": {key: text}, "annotations": [annotation]}


SINGLE_TASKS = [_task(i, t, "Positive") for i, t in enumerate(POSITIVE)] + [
    _task(10 + i, t, "Negative") for i, t in enumerate(NEGATIVE)
]
MULTI_TASKS = [
    _task(i, text, *labels, key="body", control="topics")
    for i, (text, labels) in enumerate(
        [
            ("the match went to extra time", ("Sports",)),
            ("the striker scored twice", ("Sports",)),
            ("parliament passed the budget", ("Politics",)),
            ("the minister resigned today", ("Politics",)),
            ("a new phone chip is faster", ("Tech",)),
            ("the app update fixed the bug", ("Tech",)),
            ("the club's stadium gets a new app", ("Sports", "Tech")),
            ("the senate debates the chip subsidy", ("Politics", "Tech")),
        ]
    )
]
UNSEEN = ["love it, wonderful quality", "awful, I hate this", "it arrived on a Tuesday"]


@pytest.mark.parametrize("config", [SINGLE, MULTI])
def test_the_registry_recognises_classification_single_and_multi_label(config: str) -> None:
    assert kinds.kind_for(config) is CLASSIFICATION
    spec = kinds.parse(config)
    assert spec == parse_label_config(config)
    assert kinds.kind_of(spec) is CLASSIFICATION


@pytest.mark.parametrize("name", ["text_classification_single.xml", "text_classification_multi.xml"])
def test_the_shipped_templates_are_classification(name: str) -> None:
    config = (ROOT / "label_configs" / name).read_text()
    assert kinds.kind_for(config).name == "classification"
    assert kinds.parse(config).multi_label is name.endswith("multi.xml")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (NO_CHOICES, "no supported control: this backend predicts <Choices> on a <Text> object; "
                     "the config has <Labels name='ner'>"),
        ("", "the label config is empty"),
        ("<View><Text name='t' value='$t'/>", "cannot be parsed"),
        ("<View><Image name='i' value='$img'/><Choices name='c' toName='i'><Choice value='a'/><Choice value='b'/>"
         "</Choices></View>", "no supported control: .* the config has <Choices name='c'>"),
    ],
)  # fmt: skip
def test_the_registry_refuses_what_no_kind_serves_and_says_why(config: str, message: str) -> None:
    with pytest.raises(UnsupportedLabelConfig, match=message):
        kinds.kind_for(config)
    with pytest.raises(UnsupportedLabelConfig, match=message):
        kinds.parse(config)


def test_a_recognised_control_that_cannot_be_served_is_refused_by_its_kind() -> None:
    config = "<View><Text name='t' value='$t'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>"
    assert kinds.kind_for(config) is CLASSIFICATION
    with pytest.raises(UnsupportedLabelConfig, match="needs at least two <Choice> values, has 1"):
        kinds.parse(config)


def test_every_registered_kind_has_the_whole_interface() -> None:
    assert kinds.KINDS and all(isinstance(kind, kinds.TaskKind) for kind in kinds.KINDS)
    assert len({kind.name for kind in kinds.KINDS}) == len(kinds.KINDS)


def test_kind_of_refuses_what_is_no_spec() -> None:
    with pytest.raises(TypeError, match="no registered task kind"):
        kinds.kind_of({"labels": ["a", "b"]})


def _before(config: str, tasks: list[dict]) -> list[dict | None]:
    """What the code before the kinds produced: the label config, examples, student, results, by hand."""
    spec = parse_label_config(config)
    examples = training_examples(spec, tasks)
    model = StudentModel(spec.labels, multi_label=spec.multi_label).fit(
        [e.text for e in examples], [e.labels for e in examples]
    )
    items = []
    for prediction in model.predict(UNSEEN):
        result = build_choices_result(spec, prediction.labels)
        items.append({"result": result, "score": round(prediction.score, 6), "model_version": "v1"} if result else None)
    return items


def _through_the_kind(config: str, tasks: list[dict]) -> list[dict | None]:
    kind = kinds.kind_for(config)
    spec = kind.parse(config)
    examples = kind.examples(spec, tasks)
    assert kind.can_fit(spec, kind.label_counts(spec, examples))
    model = kind.student(spec).fit([e.text for e in examples], [e.labels for e in examples])
    return [kinds.prediction_item(kind, spec, p.labels, p.score, "v1") for p in model.predict(UNSEEN)]


@pytest.mark.parametrize(("config", "tasks"), [(SINGLE, SINGLE_TASKS), (MULTI, MULTI_TASKS)])
def test_annotation_to_results_round_trip_equals_the_code_before_the_kinds(config: str, tasks: list[dict]) -> None:
    after = _through_the_kind(config, tasks)
    assert after == _before(config, tasks)
    assert all(item is not None and item["result"][0]["type"] == "choices" for item in after)


def test_single_label_predictions_read_back_as_the_labels_they_show() -> None:
    kind, spec = CLASSIFICATION, kinds.parse(SINGLE)
    items = _through_the_kind(SINGLE, SINGLE_TASKS)
    assert [kind.labels_of(spec, item) for item in items[:2]] == [("Positive",), ("Negative",)]  # type: ignore[arg-type]


def test_reading_annotations_back() -> None:
    kind, spec = CLASSIFICATION, kinds.parse(SINGLE)
    task = _task(1, "fine", "Negative")
    assert kind.labels_of(spec, task["annotations"][0]) == labels_from_annotation(spec, task["annotations"][0])
    assert kind.task_labels(spec, task) == ("Negative",)
    assert kind.examples(spec, [task, {"id": 2, "data": {"text": "x"}, "annotations": []}]) == training_examples(
        spec, [task]
    )


def test_counts_fit_and_agreement() -> None:
    single, multi = kinds.parse(SINGLE), kinds.parse(MULTI)
    counts = CLASSIFICATION.label_counts(multi, training_examples(multi, MULTI_TASKS))
    assert counts == {"Sports": 3, "Politics": 3, "Tech": 4}
    assert not CLASSIFICATION.can_fit(single, {"Positive": 5})
    assert CLASSIFICATION.can_fit(multi, {"Tech": 5})  # each label's model sees it on and off
    assert CLASSIFICATION.agrees(multi, ("Tech", "Sports"), ("Sports", "Tech"))
    assert not CLASSIFICATION.agrees(multi, ("Tech",), ("Sports", "Tech"))
    assert CLASSIFICATION.label_value(multi, ("Tech", "Sports")) == CLASSIFICATION.label_value(
        multi, ("Sports", "Tech")
    )
    assert CLASSIFICATION.describe(multi) == {"control": "topics", "labels": ["Sports", "Politics", "Tech"],
                                              "multi_label": True}  # fmt: skip


def test_the_llm_parts_are_the_llm_modules() -> None:
    for config in (SINGLE, MULTI):
        spec = kinds.parse(config)
        assert CLASSIFICATION.answer_schema(spec) == answer_schema(spec)
        answer = '{"labels": ["Tech"]}' if spec.multi_label else "Label: Positive."
        assert CLASSIFICATION.parse_answer(spec, answer) == parse_answer(answer, spec.labels, spec.multi_label)
        assert CLASSIFICATION.parse_answer(spec, "maybe Positive") is None
    spec = kinds.parse(SINGLE)
    examples = training_examples(spec, SINGLE_TASKS)
    assert CLASSIFICATION.prompts(spec, UNSEEN, examples, 2) == few_shot_prompts(spec, UNSEEN, examples, 2)


def test_checks_against_humans_are_llm_checks() -> None:
    spec = kinds.parse(SINGLE)
    human = training_examples(spec, SINGLE_TASKS)
    answers = {e.task_id: StoredAnswer(("Positive",), 0.9 if e.task_id < 10 else 0.6, "logprobs", "m")
               for e in human}  # fmt: skip
    report = CLASSIFICATION.check(spec, answers, human, 0.95)
    assert report == llm_checks(answers, human, spec.labels, 0.95)
    assert report["checks"] == 12 and report["accuracy"] == 0.5


@pytest.mark.parametrize(("config", "tasks"), [(SINGLE, SINGLE_TASKS), (MULTI, MULTI_TASKS)])
def test_the_pool_and_its_confidence(config: str, tasks: list[dict]) -> None:
    spec = kinds.parse(config)
    human = training_examples(spec, tasks)
    model = StudentModel(spec.labels, multi_label=spec.multi_label).fit([e.text for e in human],
                                                                        [e.labels for e in human])  # fmt: skip
    needs = frozenset({"proba", "embeddings", "labelled_embeddings"})
    pool = CLASSIFICATION.pool(needs, spec, model, UNSEEN, human)
    expected = build_pool(needs, spec, predict_proba(model, UNSEEN), UNSEEN, human)
    assert np.array_equal(pool.proba, expected.proba) and pool.multi_label is spec.multi_label
    assert np.allclose(pool.embeddings, expected.embeddings)
    predictions = model.predict(UNSEEN)
    assert CLASSIFICATION.mean_confidence(spec, pool) == pytest.approx(np.mean([p.score for p in predictions]))
    assert CLASSIFICATION.mean_confidence(spec, build_pool(frozenset(), spec, np.zeros((0, 2)), [], human)) is None


class _LabelsOnText:
    """A stand-in second kind: enough of TaskKind for the registry to recognise and name it."""

    name = "spans"
    predicts = "<Labels> on a <Text> object"
    spec_type = tuple

    def recognises(self, interface: object) -> bool:
        return any(control.tag == "Labels" for control in interface.controls)  # type: ignore[attr-defined]

    def parse(self, label_config: str) -> tuple:
        return ("ner",)


def test_a_registered_kind_is_recognised_and_named_in_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _LabelsOnText()
    monkeypatch.setattr(kinds, "KINDS", (CLASSIFICATION, spans))
    assert kinds.kind_for(NO_CHOICES) is spans and kinds.parse(NO_CHOICES) == ("ner",)
    assert kinds.kind_of(("ner",)) is spans
    assert kinds.kind_for(SINGLE) is CLASSIFICATION
    image = "<View><Image name='i' value='$img'/><RectangleLabels name='r' toName='i'><Label value='a'/>" \
            "</RectangleLabels></View>"  # fmt: skip
    with pytest.raises(UnsupportedLabelConfig, match="predicts <Choices> on a <Text> object or <Labels> on a <Text>"):
        kinds.kind_for(image)
