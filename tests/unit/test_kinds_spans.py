"""The span kind: its config, LS annotations read back, LS results built, its CRF student; pending in the registry."""

from __future__ import annotations

import random

import pytest

from backend import kinds
from backend.kinds.classification import CLASSIFICATION
from backend.kinds.spans import SPANS, NotYetServed, SpanPrediction, SpanSpec
from backend.labeling import UnsupportedLabelConfig
from backend.labeling.config import label_interface
from backend.spans import Span
from backend.spans.span import span_at
from tests.helpers import ROOT

NER = """<View>
  <Text name="tweet" value="$body"/>
  <Labels name="ner" toName="tweet">
    <Label value="PER" hint="a person"/>
    <Label value="LOC" background="#ff0000"/>
    <Label value="Organisation" alias="ORG" background="#00ff00"/>
  </Labels>
</View>"""
CHOICES_AND_LABELS = """<View>
  <Text name="text" value="$text"/>
  <Labels name="ner" toName="text"><Label value="PER"/></Labels>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
</View>"""
LABELS_ON_IMAGE = """<View>
  <Image name="img" value="$image"/>
  <Labels name="ner" toName="img"><Label value="PER"/></Labels>
</View>"""
SPEC = SPANS.parse(NER)


def region(text: str, start: int, end: int, label: str, from_name: str = "ner") -> dict:
    value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
    return {"from_name": from_name, "to_name": "tweet", "type": "labels", "value": value}


def task(task_id: int, text: str, *results: dict, **annotation: object) -> dict:
    return {
        "id": task_id,
        "data": {"body": text},
        "annotations": [{"id": task_id, "result": list(results), **annotation}],
    }


# -- the config


def test_it_recognises_labels_on_text_and_parses_the_spec_with_hints_and_aliases() -> None:
    assert SPANS.recognises(label_interface(NER))
    # LS stores an aliased label by its alias, so the spec names it so, described by the value it shows
    assert (
        SpanSpec("ner", "tweet", "body", ("PER", "LOC", "ORG"), (("PER", "a person"), ("ORG", "Organisation"))) == SPEC
    )
    assert SPEC.text_of({"body": "Ana in Lima"}) == "Ana in Lima"
    assert SPEC.text_of({"body": "  "}) is None and SPEC.text_of({}) is None
    assert SPANS.describe(SPEC) == {"control": "ner", "labels": ["PER", "LOC", "ORG"], "kind": "spans"}


def test_the_shipped_ner_template_is_a_span_config() -> None:
    spec = SPANS.parse((ROOT / "label_configs" / "ner.xml").read_text())
    assert (spec.from_name, spec.to_name, spec.data_key) == ("label", "text", "text")
    assert spec.labels == ("PER", "ORG", "LOC", "MISC")
    assert dict(spec.descriptions)["PER"] == "a person, real or fictional"


# HyperText regions are XPath ranges with offsets into DOM nodes, not into the task text
@pytest.mark.parametrize("config", [LABELS_ON_IMAGE, LABELS_ON_IMAGE.replace("Image", "HyperText")])
def test_labels_on_a_non_text_object_is_not_a_span_config(config: str) -> None:
    assert not SPANS.recognises(label_interface(config))
    with pytest.raises(UnsupportedLabelConfig, match="predicts <Labels> on a <Text> object"):
        SPANS.parse(config)
    with pytest.raises(UnsupportedLabelConfig, match=r"the config has <Labels name='ner'>$"):
        kinds.kind_for(config)


def test_choices_beside_labels_is_classification_and_the_labels_control_is_reported_not_predicted() -> None:
    assert SPANS.recognises(label_interface(CHOICES_AND_LABELS))
    assert kinds.kind_for(CHOICES_AND_LABELS) is CLASSIFICATION
    assert kinds.parse(CHOICES_AND_LABELS).from_name == "sentiment"
    assert kinds.not_predicted(CHOICES_AND_LABELS, kinds.parse(CHOICES_AND_LABELS)) == [
        "the <Labels> on a <Text> object 'ner' is not predicted: this backend fills the "
        "<Choices> on a <Text> object 'sentiment' only"
    ]
    empty_labels = CHOICES_AND_LABELS.replace('<Label value="PER"/>', "")
    [line] = kinds.not_predicted(empty_labels, kinds.parse(empty_labels))
    assert "(<Labels name='ner'> needs at least one <Label> value) is not predicted" in line
    single = (ROOT / "label_configs" / "text_classification_single.xml").read_text()
    assert kinds.not_predicted(single, kinds.parse(single)) == []


def test_the_span_kind_is_pending_until_its_jobs_are_wired() -> None:
    # its LLM half and Pool raise NotYetServed: no user request may reach it, so it is not served
    assert SPANS not in kinds.KINDS and SPANS in kinds.PENDING
    assert isinstance(SPANS, kinds.TaskKind)
    with pytest.raises(UnsupportedLabelConfig, match="<Labels> on a <Text> object is not served yet: LLM pre-anno"):
        kinds.kind_for(NER)
    with pytest.raises(TypeError, match="no registered task kind"):
        kinds.kind_of(SPEC)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda: SPANS.prompts(SPEC, ["a"], []), "LLM pre-annotation of spans is not built yet"),
        (lambda: SPANS.answer_schema(SPEC), "LLM pre-annotation of spans is not built yet"),
        (lambda: SPANS.parse_answer(SPEC, "{}"), "LLM pre-annotation of spans is not built yet"),
        (lambda: SPANS.annotate(None, SPEC, []), "LLM pre-annotation of spans is not built yet"),
        (lambda: SPANS.check(SPEC, {}, [], 0.95), "checking the LLM's spans against humans is not built yet"),
        (lambda: SPANS.pool(frozenset(), SPEC, None, [], []), "Pool is not built yet"),
        (lambda: SPANS.mean_confidence(SPEC, None), "Pool is not built yet"),
    ],
)
def test_what_is_not_built_says_so(call: object, what: str) -> None:
    with pytest.raises(NotYetServed, match=what):
        call()  # type: ignore[operator]


# -- reading annotations


def test_overlapping_regions_and_relations_are_ignored_and_counted() -> None:
    text = "New York City is big"
    relation = {"type": "relation", "from_id": "a", "to_id": "b"}
    tasks = [
        task(1, text, region(text, 0, 13, "LOC"), region(text, 4, 8, "ORG"), relation),
        task(2, "Ana", region("Ana", 0, 3, "PER"), region("Ana", 0, 3, "DATE")),  # DATE: not a label
    ]
    examples, ignored = SPANS.read(SPEC, tasks)
    assert [e.labels for e in examples] == [(span_at(text, 0, 13, "LOC"),), (span_at("Ana", 0, 3, "PER"),)]
    assert ignored == {"overlapping": 1, "relations": 1, "unusable": 1}
    assert SPANS.examples(SPEC, tasks) == examples
    assert SPANS.label_counts(SPEC, examples) == {"LOC": 1, "PER": 1}


def test_unicode_and_repeated_mentions_keep_their_own_offsets() -> None:
    text = "Zoë 👋 met Zoë in Zürich\nthen Zoë left"
    starts = [i for i in range(len(text)) if text.startswith("Zoë", i)]
    assert len(starts) == 3
    results = [region(text, s, s + 3, "PER") for s in starts] + [
        region(text, text.index("Zürich"), text.index("Zürich") + 6, "LOC")
    ]
    [example], ignored = SPANS.read(SPEC, [task(7, text, *results)])
    assert not ignored
    expected = [(starts[0], "PER"), (starts[1], "PER"), (text.index("Zürich"), "LOC"), (starts[2], "PER")]
    assert [(s.start, s.label) for s in example.labels] == expected
    assert all(text[s.start : s.end] == s.text for s in example.labels)


def test_a_region_whose_stored_offsets_miss_its_text_is_realigned_and_counted() -> None:
    text = "hi Ana and Ana"
    moved = region(text, 11, 14, "PER") | {"value": {"start": 10, "end": 13, "text": "Ana", "labels": ["PER"]}}
    [example], ignored = SPANS.read(SPEC, [task(1, text, moved)])
    assert example.labels == (span_at(text, 11, 14, "PER"),)
    assert ignored == {"realigned": 1}


def test_which_annotation_counts_ground_truth_then_newest_and_cancelled_or_missing_text_skipped() -> None:
    text = "Ana in Lima"
    older = {"id": 1, "updated_at": "2026-01-01", "result": [region(text, 0, 3, "PER")]}
    newer = {"id": 2, "updated_at": "2026-02-01", "result": [region(text, 7, 11, "LOC")]}
    cancelled = {"id": 3, "updated_at": "2026-03-01", "was_cancelled": True, "result": []}
    truth = {"id": 4, "updated_at": "2025-01-01", "ground_truth": True, "result": []}
    base = {"id": 9, "data": {"body": text}}
    assert SPANS.task_labels(SPEC, base | {"annotations": [older, newer, cancelled]}) == (span_at(text, 7, 11, "LOC"),)
    assert SPANS.task_labels(SPEC, base | {"annotations": [older, newer, truth]}) == ()  # "no entities" is a label
    assert SPANS.task_labels(SPEC, base | {"annotations": [cancelled]}) is None
    assert SPANS.task_labels(SPEC, {"id": 9, "data": {}, "annotations": [older]}) is None


def test_labels_of_reads_one_annotation_trusting_its_stored_text() -> None:
    text = "Ana in Lima"
    annotation = {"result": [region(text, 0, 3, "PER"), region(text, 7, 11, "LOC", from_name="other"),
                             {"type": "labels", "from_name": "ner", "value": {"start": 0, "end": 5, "text": "Ana",
                                                                               "labels": ["PER"]}}]}  # fmt: skip
    assert SPANS.labels_of(SPEC, annotation) == (Span(0, 3, "PER", "Ana"),)
    assert SPANS.labels_of(SPEC, {"result": []}) == ()
    assert SPANS.labels_of(SPEC, {"was_cancelled": True, "result": annotation["result"]}) is None


# -- building results


def test_results_are_labels_regions_whose_text_is_the_task_text_at_their_offsets() -> None:
    text = "Zoë\nmet Zoë at ACME 🚀 Inc."
    second = text.index("Zoë", 1)
    spans = (span_at(text, second, second + 3, "PER", 0.8), span_at(text, 0, 3, "PER", 0.6),
             span_at(text, text.index("ACME"), len(text), "ORG", 0.5), span_at(text, 4, 7, "DATE", 0.9))  # fmt: skip
    results = SPANS.results(SPEC, spans)
    assert [r["value"]["start"] for r in results] == [0, second, text.index("ACME")]  # DATE left out, text order
    for item in results:
        assert set(item) >= {"from_name", "to_name", "type", "value", "score"}
        assert (item["from_name"], item["to_name"], item["type"]) == ("ner", "tweet", "labels")
        value = item["value"]
        assert text[value["start"] : value["end"]] == value["text"] and len(value["labels"]) == 1
    assert [r["score"] for r in results] == [0.6, 0.8, 0.5]
    item = kinds.prediction_item(SPANS, SPEC, spans, 0.4321, "v1")
    assert item is not None and item["score"] == 0.4321 and item["result"] == results
    assert kinds.prediction_item(SPANS, SPEC, (), 0.9, "v1") is None


def test_agreement_and_label_value_compare_offsets_and_types_only() -> None:
    text = "Ana in Lima"
    a = (span_at(text, 0, 3, "PER", 0.9), span_at(text, 7, 11, "LOC"))
    assert SPANS.agrees(SPEC, a, tuple(reversed(a)))
    assert not SPANS.agrees(SPEC, a, a[:1])
    assert (
        SPANS.label_value(SPEC, a) == SPANS.label_value(SPEC, (a[1], span_at(text, 0, 3, "PER"))) == "0:3:PER;7:11:LOC"
    )
    assert SPANS.can_fit(SPEC, {"PER": 1}) and not SPANS.can_fit(SPEC, {})


# -- the student


PEOPLE = ["Ana", "Bo Li", "Carla", "Dev", "Eun Ji", "@fred"]
PLACES = ["Lima", "Oslo", "New Delhi", "Kyiv", "#Quito", "Rome"]
FRAMES = ["{p} met friends in {c} today", "I saw {p} near {c} .", "{p} flew to {c} !", "why is {p} in {c} ?"]


def _tasks(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        person, place, frame = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(FRAMES)
        text = frame.format(p=person, c=place)
        p, c = text.index(person), text.index(place)
        tasks.append(task(i, text, region(text, p, p + len(person), "PER"), region(text, c, c + len(place), "LOC")))
    return tasks


def test_the_student_trains_on_read_examples_and_predicts_scored_spans() -> None:
    examples = SPANS.examples(SPEC, _tasks(60, seed=0))
    student = SPANS.student(SPEC)
    assert student.encoder is None and tuple(student.labels) == SPEC.labels
    student.fit([e.text for e in examples], [e.labels for e in examples])
    held_out = SPANS.examples(SPEC, _tasks(20, seed=1))
    predictions = student.predict([e.text for e in held_out])
    assert all(isinstance(p, SpanPrediction) for p in predictions)
    right = sum(SPANS.agrees(SPEC, p.labels, e.labels) for p, e in zip(predictions, held_out, strict=True))
    assert right >= 18
    for prediction, example in zip(predictions, held_out, strict=True):
        assert 0 < prediction.score <= 1
        assert all(0 < span.score <= 1 for span in prediction.labels)
        assert all(example.text[s.start : s.end] == s.text for s in prediction.labels)
        assert SPANS.results(SPEC, prediction.labels)
    with pytest.raises(NotYetServed, match="not class probabilities"):
        student.predict_proba(["Ana in Lima"])
    with pytest.raises(NotYetServed, match="cannot weight examples"):
        student.fit([e.text for e in examples], [e.labels for e in examples], sample_weight=[1.0, 0.5] * 30)
    with pytest.raises(NotYetServed, match="no sentence encoder"):
        SPANS.student(SPEC, encoder="some-encoder")
