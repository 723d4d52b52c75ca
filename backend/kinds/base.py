"""The task-kind interface: everything the jobs, the routes and `lsal-ops` need to know about one kind of task.

A kind is a stateless object; what a project's label config says (which control, which text field, which
labels) is its spec, plain frozen data that a kind parses, caches and stores in a model version's metadata.
`Labels` is what one task's answer is, as a human, the student or the LLM gives it: for classification the
tuple of chosen labels; a span kind's would be its tuple of spans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from label_studio_sdk.label_interface import LabelInterface

    from backend.labeling import Example
    from backend.llm.annotator import StoredAnswer
    from backend.llm.client import LLMAnswer, LLMClient
    from backend.llm.cost import Usage
    from backend.llm.prompts import Prompt
    from backend.llm.scoring import MultiLabelScoring
    from backend.selection.pool import TaskVectors
    from backend.selection.strategies import Pool

SpecT = TypeVar("SpecT")
LabelsT = TypeVar("LabelsT")


class Spec(Protocol):
    """What every kind's spec says: the control filled, the object and data field it reads, its labels."""

    @property
    def from_name(self) -> str: ...
    @property
    def to_name(self) -> str: ...
    @property
    def data_key(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    def text_of(self, task_data: dict) -> str | None: ...


class Prediction(Protocol[LabelsT]):
    labels: LabelsT
    score: float  # the calibrated probability that `labels` are right


class Student(Protocol):
    """A kind's model: fitted on texts and their labels, predicting labels with a calibrated score."""

    labels: Sequence[str]
    encoder: str | None  # the sentence encoder whose embeddings it takes beside the texts, if any

    def fit(self, texts: Sequence[str], labels: Sequence[Any], sample_weight: Sequence[float] | None = None,
            embeddings: np.ndarray | None = None) -> Student: ...  # fmt: skip
    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray: ...
    def predict(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> Sequence[Prediction[Any]]: ...


@runtime_checkable
class TaskKind(Protocol[SpecT, LabelsT]):
    """One kind of labelling task, end to end. Each method is thin: the work is in the pure modules it names."""

    name: ClassVar[str]
    predicts: ClassVar[str]  # the controls it predicts, as a user reads them: "<Choices> on a <Text> object"
    spec_type: ClassVar[type]

    # -- the label config -----------------------------------------------------------------------------------

    def recognises(self, interface: LabelInterface) -> bool:
        """Whether the config has a control of this kind (parse may still refuse it, saying why)."""
        ...

    def parse(self, label_config: str) -> SpecT:
        """The spec; UnsupportedLabelConfig with a message fit for a user when the config cannot be served."""
        ...

    def describe(self, spec: SpecT) -> dict[str, Any]:
        """What /validate reports about the control it will predict."""
        ...

    # -- Label Studio annotations and results ---------------------------------------------------------------

    def labels_of(self, spec: SpecT, annotation: Mapping[str, Any]) -> LabelsT | None:
        """The labels of one annotation (or a prediction's `result`); None when cancelled, empty or unusable."""
        ...

    def task_labels(self, spec: SpecT, task: Mapping[str, Any]) -> LabelsT | None:
        """A task's human labels: its ground truth, else its most recent usable annotation."""
        ...

    def examples(self, spec: SpecT, tasks: Iterable[Mapping[str, Any]]) -> list[Example]:
        """Training data from LS tasks with their annotations."""
        ...

    def results(self, spec: SpecT, labels: LabelsT) -> list[dict[str, Any]]:
        """The LS `result` list that shows `labels` in the spec's control; [] when nothing can be shown."""
        ...

    def label_counts(self, spec: SpecT, examples: Iterable[Example]) -> Counter[str]:
        """How often each label occurs in the examples."""
        ...

    def agrees(self, spec: SpecT, predicted: LabelsT, human: LabelsT) -> bool:
        """Whether a predicted answer is right by the human one: what a check against humans counts."""
        ...

    # -- the student ----------------------------------------------------------------------------------------

    def can_fit(self, spec: SpecT, counts: Mapping[str, int]) -> bool:
        """Whether labels in these counts give the student something to learn."""
        ...

    def student(self, spec: SpecT, encoder: str | None = None) -> Student:
        """A new, unfitted student for the spec (with `encoder`'s sentence embeddings as features)."""
        ...

    # -- the LLM --------------------------------------------------------------------------------------------

    def prompts(self, spec: SpecT, texts: Sequence[str], examples: Sequence[Example], k: int = 4,
                instructions: str = "", multilabel_scoring: MultiLabelScoring = "json") -> list[Prompt]:  # fmt: skip
        """One prompt per text, with up to `k` human-labelled examples chosen for it; `multilabel_scoring`
        (LLM_MULTILABEL_SCORING): how a spec with label sets is asked, a kind without them ignores it."""
        ...

    def answer_schema(self, spec: SpecT) -> dict[str, Any]:
        """The JSON schema a structured answer is constrained to."""
        ...

    def parse_answer(self, spec: SpecT, text: str | None) -> LabelsT | None:
        """The labels an answer gives, never off-label; None when it gives none usable."""
        ...

    def estimated_usage(self, client: LLMClient, spec: SpecT, prompt: Prompt) -> Usage:
        """What asking `prompt` costs at most (each request's whole prompt and the completion tokens it asks
        for): for the budget check before a batch is sent."""
        ...

    def annotate(self, client: LLMClient, spec: SpecT, prompts: Sequence[Prompt]) -> list[LLMAnswer | None]:
        """The LLM's answers to the prompts, in order; None where the endpoint stopped answering."""
        ...

    def check(self, spec: SpecT, answers: Mapping[int, StoredAnswer], human: Sequence[Example],
              target_precision: float) -> dict[str, Any]:  # fmt: skip
        """The LLM's answers checked against human labels: calibration, threshold, agreement (JSON-able)."""
        ...

    # -- selection ------------------------------------------------------------------------------------------

    def pool(self, needs: frozenset[str], spec: SpecT, model: Student, texts: Sequence[str], human: Sequence[Example],
             *, vectors: TaskVectors | None = None, answers: Mapping[int, StoredAnswer] | None = None,
             ids: Sequence[int] = ()) -> Pool:  # fmt: skip
        """The per-task signals the query strategies rank the unlabelled `texts` by (what `needs` asks for)."""
        ...

    def mean_confidence(self, spec: SpecT, pool: Pool) -> float | None:
        """The student's mean probability of being right on the pool; None for an empty pool."""
        ...

    def label_value(self, spec: SpecT, labels: LabelsT) -> str:
        """A task's labels as one comparable value, for comparing successive models on the stop set."""
        ...


def prediction_item(kind: TaskKind[Any, Any], spec: Any, labels: Any, score: float, version: str | None
                    ) -> dict[str, Any] | None:  # fmt: skip
    """One task's LS prediction (result, score, model version); None when its result would be empty."""
    result = kind.results(spec, labels)
    return {"result": result, "score": round(score, 6), "model_version": version} if result else None
