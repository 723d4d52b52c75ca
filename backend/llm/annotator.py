"""From tasks to LLM pre-labels: few-shot prompts for a batch, and the answer we keep per task. No I/O.

Few-shot examples are human-labelled tasks chosen per item: the most similar one of each label first
(coverage), then the most similar of the rest, within a token budget (prompts.select_examples).
Similarity is TF-IDF cosine, computed for the whole batch in one sparse product. Single-label prompts
are scored: the label distribution comes from the first answer token (scoring.py). Multi-label prompts
ask for JSON, or with LLM_MULTILABEL_SCORING=yesno each label's P(yes) from a one-token yes/no question.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from backend.labeling import Example, TaskSpec, build_choices_result
from backend.llm.bias import DistributionCalibration, informative
from backend.llm.calibration import Calibrator
from backend.llm.prompts import Prompt, build_prompt, select_examples
from backend.llm.routing import route
from backend.llm.scoring import MultiLabelScoring


@dataclass(frozen=True)
class StoredAnswer:
    """What the LLM said about one task, kept (in Redis) until the task is pre-labelled again."""

    labels: tuple[str, ...]
    confidence: float  # raw: the model's own probability, before calibration against humans
    method: str  # "scored", "yesno", "logprobs" or "votes"
    model: str
    seed: bool = False  # part of the cold-start seed the student may train on
    text: str | None = None  # kept for seed answers only: training reads them without asking LS
    # over the labels, where logprobs or votes gave one; "yesno": each label's own P(yes), not summing to 1
    distribution: dict[str, float] | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> StoredAnswer:
        data = json.loads(raw)
        return cls(tuple(data["labels"]), float(data["confidence"]), data["method"], data["model"],
                   bool(data.get("seed", False)), data.get("text"), data.get("distribution"))  # fmt: skip


@dataclass(frozen=True)
class PreLabel:
    """An LLM answer as a reviewer sees it: labels, the calibrated probability they are right, a route."""

    labels: tuple[str, ...]
    score: float
    route: str
    calibrated: bool


def scores_distribution(answer: StoredAnswer) -> bool:
    """Whether the answer's distribution is the model's own over single labels (read from logprobs) and not
    flat, which the prior and the distribution calibrator apply to; vote shares, label sets (a yes/no answer
    of one label too: its P(yes) per label is no distribution over labels) and flat distributions keep the
    top-confidence path."""
    single = answer.method not in ("votes", "yesno") and len(answer.labels) == 1
    return single and informative(answer.distribution)


def pre_labels(
    answers: Sequence[StoredAnswer],
    calibrator: Calibrator | None,
    threshold: float | None,
    distribution: DistributionCalibration | None = None,
) -> list[PreLabel]:
    """The answers as reviewers see them, calibrated in one call: 1-6 µs an answer, against 50-90 µs
    calibrating them one by one (20k answers, Platt or isotonic).

    An answer with a label distribution, when `distribution` has a prior or a fitted calibrator, gets the
    corrected distribution's argmax as its label and that label's probability as its score, gated by
    `distribution.threshold`; the others get their own label, the top confidence through `calibrator`,
    gated by `threshold`.
    """
    out: list[PreLabel | None] = [None] * len(answers)
    if distribution is not None and distribution.active:
        rows = [i for i, answer in enumerate(answers) if scores_distribution(answer)]
        best = distribution.apply([answers[i].distribution or {} for i in rows])
        # only scores fitted on human checks may auto-accept
        gate = distribution.threshold if distribution.calibrated else None
        for i, (label, score) in zip(rows, best, strict=True):
            out[i] = PreLabel((label,), score, route(score, gate), distribution.calibrated)
    rest = [i for i, label in enumerate(out) if label is None]
    calibrated = calibrator is not None and calibrator.fitted_method is not None
    raw = [answers[i].confidence for i in rest]
    scores = calibrator.transform(raw) if calibrated and rest else raw  # type: ignore[union-attr]
    # an uncalibrated score has not been checked against humans: it never auto-accepts
    gate = threshold if calibrated else None
    for i, score in zip(rest, scores, strict=True):
        out[i] = PreLabel(answers[i].labels, float(score), route(float(score), gate), calibrated)
    return [label for label in out if label is not None]


def pre_label(
    answer: StoredAnswer,
    calibrator: Calibrator | None,
    threshold: float | None,
    distribution: DistributionCalibration | None = None,
) -> PreLabel:
    return pre_labels([answer], calibrator, threshold, distribution)[0]


def prediction_item(spec: TaskSpec, label: PreLabel, version: str) -> dict | None:
    result = build_choices_result(spec, label.labels)
    return {"result": result, "score": round(label.score, 6), "model_version": version} if result else None


def few_shot_prompts(
    spec: TaskSpec,
    texts: Sequence[str],
    examples: Sequence[Example],
    k: int = 4,
    token_budget: int = 600,
    instructions: str = "",
    scored: bool = True,
    multilabel_scoring: MultiLabelScoring = "json",
) -> list[Prompt]:
    """One prompt per text, each with up to `k` human-labelled examples chosen for it; `scored`: answered by
    the label alone, its distribution read from one token (single-label), or, multi-label with
    `multilabel_scoring="yesno"`, by a yes/no question per label (the JSON prompt kept for endpoints
    without logprobs); multi-label prompts ask for JSON otherwise."""
    ask = partial(build_prompt, spec, instructions=instructions, scored=scored, multilabel_scoring=multilabel_scoring)
    if k <= 0 or not examples:
        return [ask(text) for text in texts]
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=50_000)
    vectorizer.fit([e.text for e in examples] + list(texts))
    similarity = (vectorizer.transform(texts) @ vectorizer.transform([e.text for e in examples]).T).toarray()
    prompts = []
    for text, row in zip(texts, similarity, strict=True):
        # a task is never its own example (a text labelled by a human is not pre-labelled, but be sure)
        candidates = [(e, s) for e, s in zip(examples, row, strict=True) if e.text != text]
        shots = select_examples([e for e, _ in candidates], np.array([s for _, s in candidates]), k, token_budget)
        prompts.append(ask(text, shots))
    return prompts
