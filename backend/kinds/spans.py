"""Named entities: a <Labels> control on a <Text> object, its regions character spans of the task text.

What is built: the config (recognised, parsed into a SpanSpec with label descriptions), human annotations
read back into training examples (backend/spans/bio.py; overlapping regions and relations left out and
counted), LS `labels` results built from spans, and the student (the CRF of backend/spans/crf.py behind
the Student interface). What is not: the LLM half (prompts, answer schema and parser, annotate, the
check against humans) and the query strategies' Pool. Those methods raise NotYetServed naming what is
missing, and the registry keeps this kind out of its served list (backend/kinds/__init__.py) until the
jobs are wired, so no user request reaches them.

A config with both <Choices> and <Labels> on the same text is classification's: the registry reports
the <Labels> control as not predicted (`kinds.not_predicted`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backend.labeling import Example
from backend.labeling import config as ls_config
from backend.labeling.config import UnsupportedLabelConfig
from backend.spans.bio import SpanReading, labels_results, spans_from_results
from backend.spans.crf import CRFStudent
from backend.spans.span import Span, resolve_overlaps
from backend.synthetic.provenance import is_synthetic

if TYPE_CHECKING:
    from label_studio_sdk.label_interface import LabelInterface

log = logging.getLogger(__name__)

Labels = tuple[Span, ...]
LABELS_ON_TEXT = "<Labels> on a <Text> object"
IGNORED_KINDS = ("overlapping", "relations", "unusable", "realigned")


class NotYetServed(NotImplementedError):
    """A part of the span kind that is not built yet: the message says which."""


@dataclass(frozen=True)
class SpanSpec:
    """A span-labelling task: which <Labels> control we fill, on which text field, with which labels."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]
    descriptions: tuple[tuple[str, str], ...] = ()  # (label, its `hint`, else the value an alias stands for)

    def text_of(self, task_data: dict) -> str | None:
        """The task's text, or None when the configured field is missing or not text."""
        value = task_data.get(self.data_key)
        if isinstance(value, str) and value.strip():
            return value
        return None


@dataclass(frozen=True)
class SpanPrediction:
    labels: Labels  # the spans, each scored by the student's span confidence
    score: float  # the probability that the whole span set is right (the best tag path's probability)


def _labels_controls(interface: LabelInterface) -> Iterable[tuple[Any, Any, str]]:
    """(control, object, data key) for each <Labels> on a plain <Text>: HyperText regions are XPath ranges."""
    return ((c, o, k) for c, o, k in ls_config.controls_on_text(interface, "Labels") if o.tag == "Text")


def _descriptions(control: Any) -> tuple[tuple[str, str], ...]:
    """(label, description) from each <Label>'s `hint`, else, for an aliased label, the value it shows.

    LS stores a label's `alias` in results when it has one, so the SDK (and the spec) name labels by it.
    `background` is a colour, not a meaning: it is not read.
    """
    found = []
    for label, attrs in (control.labels_attrs or {}).items():
        shown = str(attrs.attr.get("value") or "")
        description = attrs.attr.get("hint") or (shown if shown and shown != label else "")
        if description:
            found.append((label, str(description)))
    return tuple(found)


class SpanStudent:
    """The CRF behind the kind's Student interface: fitted on texts and span tuples, predicting spans."""

    encoder: str | None = None  # token features only: no sentence embeddings

    def __init__(self, labels: Sequence[str], crf: CRFStudent | None = None) -> None:
        self.labels = tuple(labels)
        self.crf = crf if crf is not None else CRFStudent()

    def fit(self, texts: Sequence[str], labels: Sequence[Sequence[Span]], sample_weight: Sequence[float] | None = None,
            embeddings: np.ndarray | None = None) -> SpanStudent:  # fmt: skip
        if sample_weight is not None and len(set(sample_weight)) > 1:
            raise NotYetServed("the span student cannot weight examples yet (CRFsuite has no sample weights)")
        if embeddings is not None:
            raise NotYetServed("the span student takes no sentence embeddings")
        known = [[span for span in spans if span.label in self.labels] for spans in labels]
        self.crf.fit(texts, known)
        return self

    def predict(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> list[SpanPrediction]:
        return [SpanPrediction(tuple(output.spans), output.sequence_probability) for output in self.crf.analyse(texts)]

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        raise NotYetServed("span students give span scores, not class probabilities; the span Pool is not built yet")


class SpanKind:
    name: ClassVar[str] = "spans"
    predicts: ClassVar[str] = LABELS_ON_TEXT
    spec_type: ClassVar[type] = SpanSpec
    missing: ClassVar[str] = "LLM pre-annotation, the span checks and the span query strategies are not built yet"

    # -- the label config

    def recognises(self, interface: LabelInterface) -> bool:
        return next(iter(_labels_controls(interface)), None) is not None

    def parse(self, label_config: str) -> SpanSpec:
        interface = ls_config.label_interface(label_config)
        for control, obj, data_key in _labels_controls(interface):
            labels = tuple(control.labels)
            if not labels:
                raise UnsupportedLabelConfig(f"<Labels name={control.name!r}> needs at least one <Label> value")
            return SpanSpec(control.name, obj.name, data_key, labels, _descriptions(control))
        raise ls_config.no_supported_control(interface, [LABELS_ON_TEXT])

    def describe(self, spec: SpanSpec) -> dict[str, Any]:
        return {"control": spec.from_name, "labels": list(spec.labels), "kind": self.name}

    # -- Label Studio annotations and results

    def labels_of(self, spec: SpanSpec, annotation: Mapping[str, Any]) -> Labels | None:
        """The spans of one annotation, trusting each region's stored text (no task text here: `read`
        checks offsets against it). () for a submitted annotation without regions: it says "no entities"."""
        if annotation.get("was_cancelled"):
            return None
        found = []
        for item in annotation.get("result") or []:
            if not isinstance(item, Mapping) or item.get("type") != "labels" or item.get("from_name") != spec.from_name:
                continue
            span = _stored_span(item.get("value"), spec.labels)
            if span is not None:
                found.append(span)
        return tuple(resolve_overlaps(found)[0])

    def task_labels(self, spec: SpanSpec, task: Mapping[str, Any]) -> Labels | None:
        reading = self._task_reading(spec, task)
        return tuple(reading.spans) if reading is not None else None

    def read(self, spec: SpanSpec, tasks: Iterable[Mapping[str, Any]]) -> tuple[list[Example], Counter[str]]:
        """Training examples from LS tasks, and how many regions and relations were left out, by why."""
        examples: list[Example] = []
        ignored: Counter[str] = Counter()
        for task in tasks:
            reading = self._task_reading(spec, task)
            data = task.get("data") or {}
            text = spec.text_of(data)
            if reading is None or text is None:
                continue
            ignored.update({what: getattr(reading, what) for what in IGNORED_KINDS})
            labels: Any = tuple(reading.spans)  # Example.labels holds a kind's Labels: spans here
            examples.append(Example(task_id=int(task["id"]), text=text, labels=labels, synthetic=is_synthetic(data)))
        return examples, +ignored

    def examples(self, spec: SpanSpec, tasks: Iterable[Mapping[str, Any]]) -> list[Example]:
        examples, ignored = self.read(spec, tasks)
        if ignored:
            log.info("span annotations: left out %s", ", ".join(f"{n} {what}" for what, n in sorted(ignored.items())))
        return examples

    def _task_reading(self, spec: SpanSpec, task: Mapping[str, Any]) -> SpanReading | None:
        """The spans of a task's ground truth, else of its most recent submitted annotation."""
        text = spec.text_of(task.get("data") or {})
        if text is None:
            return None
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, Mapping)]
        for annotation in sorted(annotations, key=_annotation_rank, reverse=True):
            if not annotation.get("was_cancelled"):
                return spans_from_results(annotation.get("result") or [], text, spec.from_name, spec.labels)
        return None

    def results(self, spec: SpanSpec, labels: Labels) -> list[dict[str, Any]]:
        return labels_results([span for span in labels if span.label in spec.labels], spec.from_name, spec.to_name)

    def label_counts(self, spec: SpanSpec, examples: Iterable[Example]) -> Counter[str]:
        return Counter(span.label for example in examples for span in example.labels)

    def agrees(self, spec: SpanSpec, predicted: Labels, human: Labels) -> bool:
        return {span.key for span in predicted} == {span.key for span in human}

    # -- the student

    def can_fit(self, spec: SpanSpec, counts: Mapping[str, int]) -> bool:
        return any(n > 0 for n in counts.values())  # one entity type against O is a tagging to learn

    def student(self, spec: SpanSpec, encoder: str | None = None) -> SpanStudent:
        if encoder is not None:
            raise NotYetServed("the span student takes no sentence encoder")
        return SpanStudent(spec.labels)

    # -- the LLM and selection: not built yet

    def prompts(self, spec: SpanSpec, *args: Any, **kwargs: Any) -> Any:
        raise NotYetServed("LLM pre-annotation of spans is not built yet (no span prompt)")

    def answer_schema(self, spec: SpanSpec) -> dict[str, Any]:
        raise NotYetServed("LLM pre-annotation of spans is not built yet (no span answer schema)")

    def parse_answer(self, spec: SpanSpec, text: str | None) -> Labels | None:
        raise NotYetServed("LLM pre-annotation of spans is not built yet (no span answer parser)")

    def estimated_usage(self, client: Any, spec: SpanSpec, prompt: Any) -> Any:
        raise NotYetServed("LLM pre-annotation of spans is not built yet (no span cost estimate)")

    def annotate(self, client: Any, spec: SpanSpec, prompts: Sequence[Any]) -> Any:
        raise NotYetServed("LLM pre-annotation of spans is not built yet")

    def check(self, spec: SpanSpec, answers: Mapping[int, Any], human: Sequence[Example],
              target_precision: float) -> dict[str, Any]:  # fmt: skip
        raise NotYetServed("checking the LLM's spans against humans is not built yet")

    def pool(self, needs: frozenset[str], spec: SpanSpec, model: Any, texts: Sequence[str], human: Sequence[Example],
             **kwargs: Any) -> Any:  # fmt: skip
        raise NotYetServed("the span query strategies' Pool is not built yet")

    def mean_confidence(self, spec: SpanSpec, pool: Any) -> float | None:
        raise NotYetServed("the span query strategies' Pool is not built yet")

    def label_value(self, spec: SpanSpec, labels: Labels) -> str:
        return ";".join(f"{start}:{end}:{label}" for start, end, label in sorted(span.key for span in labels))


def _stored_span(value: Any, labels: Sequence[str]) -> Span | None:
    """The span a `labels` region stores, when it has one known label and offsets that fit its text."""
    if not isinstance(value, Mapping):
        return None
    names, start, end, text = value.get("labels"), value.get("start"), value.get("end"), value.get("text")
    if not (isinstance(names, list) and len(names) == 1 and names[0] in labels):
        return None
    if not (isinstance(start, int) and isinstance(end, int) and isinstance(text, str)):
        return None
    return Span(start, end, names[0], text) if 0 <= start < end == start + len(text) else None


def _annotation_rank(annotation: Mapping[str, Any]) -> tuple[bool, str, int]:
    return (
        bool(annotation.get("ground_truth")),
        str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        int(annotation.get("id") or 0),
    )


SPANS = SpanKind()
