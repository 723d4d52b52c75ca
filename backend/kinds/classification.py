"""Text classification: a <Choices> control (single or multiple choice) on a <Text> object.

Every method hands over to the module that does the work: labeling/ (config, results), student/model.py,
llm/ (prompts, parsing, the client's annotate, checks) and selection/pool.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from backend.labeling import Example, TaskSpec
from backend.labeling import config as ls_config
from backend.labeling import results as ls_results
from backend.llm import checks as llm_checks
from backend.llm import parsing as llm_parsing
from backend.llm import prompts as llm_prompts
from backend.llm.annotator import StoredAnswer, few_shot_prompts
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.cost import Usage
from backend.llm.prompts import Prompt
from backend.llm.scoring import MultiLabelScoring
from backend.selection import pool as selection_pool
from backend.selection.pool import TaskVectors
from backend.selection.strategies import Pool, predicted_set_probability
from backend.student import StudentModel

if TYPE_CHECKING:
    from label_studio_sdk.label_interface import LabelInterface

Labels = tuple[str, ...]


class Classification:
    name: ClassVar[str] = "classification"
    predicts: ClassVar[str] = ls_config.CHOICES_ON_TEXT
    spec_type: ClassVar[type] = TaskSpec

    def recognises(self, interface: LabelInterface) -> bool:
        return next(ls_config.controls_on_text(interface, "Choices"), None) is not None

    def parse(self, label_config: str) -> TaskSpec:
        return ls_config.parse_label_config(label_config)

    def describe(self, spec: TaskSpec) -> dict[str, Any]:
        return {"control": spec.from_name, "labels": list(spec.labels), "multi_label": spec.multi_label}

    def labels_of(self, spec: TaskSpec, annotation: Mapping[str, Any]) -> Labels | None:
        return ls_results.labels_from_annotation(spec, annotation)

    def task_labels(self, spec: TaskSpec, task: Mapping[str, Any]) -> Labels | None:
        return ls_results.task_labels(spec, task)

    def examples(self, spec: TaskSpec, tasks: Iterable[Mapping[str, Any]]) -> list[Example]:
        return ls_results.training_examples(spec, tasks)

    def results(self, spec: TaskSpec, labels: Labels) -> list[dict[str, Any]]:
        return ls_results.build_choices_result(spec, labels)

    def label_counts(self, spec: TaskSpec, examples: Iterable[Example]) -> Counter[str]:
        return Counter(label for example in examples for label in example.labels)

    def agrees(self, spec: TaskSpec, predicted: Labels, human: Labels) -> bool:
        return set(predicted) == set(human)

    def can_fit(self, spec: TaskSpec, counts: Mapping[str, int]) -> bool:
        # one label is enough for multi-label: each label's model sees it on some tasks and off on others
        return len(counts) >= 2 or (spec.multi_label and len(counts) >= 1)

    def student(self, spec: TaskSpec, encoder: str | None = None) -> StudentModel:
        return StudentModel(spec.labels, multi_label=spec.multi_label, encoder=encoder)

    def prompts(self, spec: TaskSpec, texts: Sequence[str], examples: Sequence[Example], k: int = 4,
                instructions: str = "", multilabel_scoring: MultiLabelScoring = "json") -> list[Prompt]:  # fmt: skip
        return few_shot_prompts(spec, texts, examples, k, instructions=instructions,
                                multilabel_scoring=multilabel_scoring)  # fmt: skip

    def answer_schema(self, spec: TaskSpec) -> dict[str, Any]:
        return llm_prompts.answer_schema(spec)

    def parse_answer(self, spec: TaskSpec, text: str | None) -> Labels | None:
        return llm_parsing.parse_answer(text, spec.labels, spec.multi_label)

    def estimated_usage(self, client: LLMClient, spec: TaskSpec, prompt: Prompt) -> Usage:
        return client.estimated_usage(spec, prompt)

    def annotate(self, client: LLMClient, spec: TaskSpec, prompts: Sequence[Prompt]) -> list[LLMAnswer | None]:
        return client.annotate_many(spec, prompts)

    def check(self, spec: TaskSpec, answers: Mapping[int, StoredAnswer], human: Sequence[Example],
              target_precision: float) -> dict[str, Any]:  # fmt: skip
        return llm_checks.llm_checks(answers, human, spec.labels, target_precision)

    def pool(self, needs: frozenset[str], spec: TaskSpec, model: Any, texts: Sequence[str], human: Sequence[Example],
             *, vectors: TaskVectors | None = None, answers: Mapping[int, StoredAnswer] | None = None,
             ids: Sequence[int] = ()) -> Pool:  # fmt: skip
        proba = selection_pool.predict_proba(model, texts, vectors.pool if vectors is not None else None)
        return selection_pool.build_pool(needs, spec, proba, texts, human, vectors=vectors, answers=answers, ids=ids)

    def mean_confidence(self, spec: TaskSpec, pool: Pool) -> float | None:
        proba = pool.proba
        if proba is None or not len(proba):
            return None
        return float((predicted_set_probability(proba) if spec.multi_label else proba.max(axis=1)).mean())

    def label_value(self, spec: TaskSpec, labels: Labels) -> str:
        return selection_pool.label_value(labels, spec.multi_label)


CLASSIFICATION = Classification()
