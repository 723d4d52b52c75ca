"""Pre-labels from stored LLM answers, few-shot prompts per batch, the checks report, the cold-start seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.jobs.preannotate import estimated_usage
from backend.labeling import Example, parse_label_config
from backend.labeling.predictions import predict_tasks
from backend.llm.annotator import (
    StoredAnswer,
    few_shot_prompts,
    pre_label,
    pre_labels,
    prediction_item,
    scores_distribution,
)
from backend.llm.calibration import Calibrator, cross_calibrated, expected_calibration_error
from backend.llm.checks import llm_checks
from backend.llm.client import LLMClient, LLMConfig, YesNo, yes_no_answer
from backend.llm.cost import Usage
from backend.llm.routing import AUTO_ACCEPT, REVIEW
from backend.selection.diversity import k_center_greedy, text_features
from backend.settings import Settings
from backend.student import StudentModel
from tests.helpers import MULTI, NEGATIVE, POSITIVE, SINGLE

SPEC = parse_label_config(SINGLE)


def overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw confidences that claim 0.9 where the model is right 60% of the time, and 0.6 where it is 30%."""
    rng = np.random.default_rng(seed)
    conf = np.where(rng.random(n) < 0.5, 0.9, 0.6) + rng.normal(0, 0.02, n)
    right = rng.random(n) < np.where(conf > 0.75, 0.6, 0.3)
    return conf, right


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_a_calibrator_survives_json_and_cross_fitting_lowers_ece(method: str) -> None:
    conf, right = overconfident()
    calibrator = Calibrator(method).fit(conf, right)
    restored = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    probe = np.linspace(0.05, 0.95, 19)
    assert restored.fitted_method == method
    assert np.allclose(restored.transform(probe), calibrator.transform(probe))
    after = cross_calibrated(conf, right, method=method)
    assert expected_calibration_error(after, right) < expected_calibration_error(conf, right) / 2


def test_an_unfitted_calibrator_round_trips_as_the_identity() -> None:
    restored = Calibrator.from_dict(Calibrator().fit([0.9] * 5, [True] * 5).to_dict())
    assert restored.fitted_method is None
    assert restored.transform([0.3])[0] == pytest.approx(0.3)


def test_pre_labels_use_the_calibrated_score_and_only_calibrated_ones_auto_accept() -> None:
    answer = StoredAnswer(("Positive",), 0.9, "logprobs", "m")
    raw = pre_label(answer, None, threshold=0.5)
    assert (raw.score, raw.calibrated, raw.route) == (0.9, False, REVIEW)
    conf, right = overconfident()
    calibrator = Calibrator("platt").fit(conf, right)
    calibrated = pre_label(answer, calibrator, threshold=0.5)
    assert calibrated.calibrated and 0.5 < calibrated.score < 0.75  # right ~60% of the time at 0.9 raw
    assert calibrated.route == AUTO_ACCEPT
    assert pre_label(answer, calibrator, threshold=0.7).route == REVIEW
    item = prediction_item(SPEC, calibrated, "v1+llm1")
    assert item is not None and item["result"][0]["value"]["choices"] == ["Positive"]
    assert item["model_version"] == "v1+llm1"


def test_stored_answers_round_trip() -> None:
    answer = StoredAnswer(("A", "B"), 0.42, "votes", "model-x", seed=True, text="some text",
                          distribution={"A": 0.42, "B": 0.58})  # fmt: skip
    assert StoredAnswer.loads(answer.dumps()) == answer


def test_few_shot_prompts_pick_similar_examples_and_never_the_text_itself() -> None:
    examples = [Example(i, text, ("Positive",)) for i, text in enumerate(POSITIVE)]
    examples += [Example(100 + i, text, ("Negative",)) for i, text in enumerate(NEGATIVE)]
    texts = ["terrible, hate it, awful", POSITIVE[0]]
    prompts = few_shot_prompts(SPEC, texts, examples, k=3, token_budget=500)
    assert len(prompts) == 2
    for prompt in prompts:
        labels = {next(e.labels[0] for e in examples if e.task_id == t) for t in prompt.examples}
        assert labels == {"Positive", "Negative"}  # every label covered
        assert len(prompt.examples) == 3
    # the closest example comes last; a labelled copy of the item itself is never shown
    assert prompts[0].examples[-1] >= 100
    assert 0 not in prompts[1].examples
    assert few_shot_prompts(SPEC, texts, [], k=3)[0].examples == ()


def test_checks_report_calibration_threshold_and_agreement() -> None:
    conf, right = overconfident(300)
    answers, examples = {}, []
    for i, (c, r) in enumerate(zip(conf, right, strict=True)):
        answers[i] = StoredAnswer(("Positive",), float(c), "logprobs", "m")
        examples.append(Example(i, f"t{i}", ("Positive",) if r else ("Negative",)))
    report = llm_checks(answers, examples, SPEC.labels, target_precision=0.95)
    assert report["checks"] == 300
    assert report["ece_calibrated"] < report["ece_raw"]
    assert report["calibrator"]["method"] == "isotonic"
    assert report["threshold"] is None  # right at most ~60% of the time: nothing auto-accepts
    rows = {row["label"]: row for row in report["agreement"]}
    assert rows["Positive"]["predicted"] == 300 and rows["Positive"]["agreed"] == int(right.sum())
    json.dumps(report)  # kept in a model version's metadata
    few = llm_checks(dict(list(answers.items())[:5]), examples[:5], SPEC.labels)
    assert few["checks"] == 5 and few["calibrator"] is None and few["ece_calibrated"] is None


def test_predict_prefers_the_more_likely_right_of_student_and_llm() -> None:
    model = StudentModel(SPEC.labels).fit(POSITIVE + NEGATIVE, [("Positive",)] * 6 + [("Negative",)] * 6)
    tasks = [{"id": 1, "data": {"text": "love it, great"}}, {"id": 2, "data": {"text": "hate it"}},
             {"id": 3, "data": {"text": "meh"}}, {"id": 4, "data": {}}]  # fmt: skip
    student_score = model.predict(["hate it"])[0].score
    conf, right = overconfident()
    calibrator = Calibrator("platt").fit(conf, right)
    llm = {
        1: pre_label(StoredAnswer(("Negative",), 0.99, "logprobs", "m"), None, None),  # uncalibrated: student wins
        2: pre_label(StoredAnswer(("Positive",), 0.9, "logprobs", "m"), calibrator, None),
    }
    results = predict_tasks(tasks, SPEC, model, "v2+llm1", llm)
    assert results[0]["result"][0]["value"]["choices"] == ["Positive"]
    chosen = results[1]
    expected = "Positive" if llm[2].score >= student_score else "Negative"
    assert chosen["result"][0]["value"]["choices"] == [expected]
    assert results[2]["model_version"] == "v2+llm1" and results[3] == []
    # no student yet: the LLM's pre-label, calibrated or not
    no_student = predict_tasks(tasks, SPEC, None, "untrained+llm1", llm)
    assert no_student[0]["result"][0]["value"]["choices"] == ["Negative"] and no_student[0]["score"] == 0.99
    assert no_student[2] == [] and no_student[3] == []


def test_k_center_greedy_covers_the_clusters_and_picks_the_outlier() -> None:
    texts = ["red apple fruit"] * 30 + ["blue ocean water"] * 30 + ["green grass field"] * 30 + ["quantum flux"]
    chosen = k_center_greedy(text_features(texts), 4, seed=1)
    assert len(chosen) == len(set(chosen)) == 4
    assert {texts[i] for i in chosen} == set(texts)
    # starting from rows already labelled, it goes where they are not
    more = k_center_greedy(text_features(texts), 2, already=[0, 30])
    assert {texts[i] for i in more} == {"green grass field", "quantum flux"}
    # asking for more rows than are left gives what is left, never a repeat
    assert sorted(k_center_greedy(text_features(texts[:3]), 10, already=[0])) == [1, 2]


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_pre_labels_calibrate_a_batch_as_one_by_one_would(method: str) -> None:
    rng = np.random.default_rng(0)
    confidence = rng.random(400)
    calibrator = Calibrator(method=method).fit(confidence, rng.random(400) < confidence)
    answers = [StoredAnswer(("a",), float(c), "logprobs", "m") for c in rng.random(300)]
    batch = pre_labels(answers, calibrator, threshold=0.7)
    assert batch == [pre_label(answer, calibrator, 0.7) for answer in answers]
    assert {label.route for label in batch} == {"review", "auto_accept"}
    unchecked = pre_labels(answers, None, threshold=0.7)  # no calibrator yet: raw scores, all to review
    assert [label.score for label in unchecked] == [a.confidence for a in answers]
    assert {label.route for label in unchecked} == {"review"} and pre_labels([], calibrator, 0.7) == []


def test_a_batch_estimate_counts_the_completion_tokens_each_request_asks_for() -> None:
    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", max_tokens=64, samples=5))
    examples = [Example(1, POSITIVE[0], ("Positive",)), Example(2, NEGATIVE[0], ("Negative",))]
    scored = few_shot_prompts(SPEC, POSITIVE[1:4], examples, k=2)
    estimate = estimated_usage(client, SPEC, scored)
    # a scored request asks for the first answer token only, not the client's 64
    assert estimate.completion_tokens == 3
    assert estimate.prompt_tokens == sum(p.estimated_tokens for p in scored)
    assert estimated_usage(client, SPEC, few_shot_prompts(SPEC, POSITIVE[1:3], examples, scored=False)) \
        .completion_tokens == 2 * 64  # fmt: skip
    multi = parse_label_config(MULTI)
    asked = few_shot_prompts(multi, POSITIVE[1:3], examples[:1], k=1, multilabel_scoring="yesno")
    # multi-label, yes/no: a one-token request per label (3), each sending the whole prompt
    assert estimated_usage(client, multi, asked) == Usage(3 * sum(p.estimated_tokens for p in asked), 2 * 3, 2 * 3)
    # multi-label by default: one JSON request for `max_tokens`, scored or not
    as_json = few_shot_prompts(multi, POSITIVE[1:2], [])
    assert estimated_usage(client, multi, as_json) == Usage(as_json[0].estimated_tokens, 64, 1)
    client._logprobs = False  # what an endpoint that refused logprobs leaves: each prompt is sampled 5 times
    assert estimated_usage(client, SPEC, scored) == Usage(5 * sum(p.estimated_tokens for p in scored), 3 * 5 * 64,
                                                          3 * 5)  # fmt: skip
    json_tokens = sum(p.fallback.estimated_tokens for p in asked if p.fallback)
    assert estimated_usage(client, multi, asked) == Usage(5 * json_tokens, 2 * 5 * 64, 2 * 5)  # the JSON prompt


def test_llm_multilabel_scoring_chooses_json_or_yes_no_prompts_for_multi_label_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    multi = parse_label_config(MULTI)
    examples = [Example(1, POSITIVE[0], ("Sports",))]
    assert Settings().llm_multilabel_scoring == "json"
    [as_json] = few_shot_prompts(multi, POSITIVE[1:2], examples, multilabel_scoring=Settings().llm_multilabel_scoring)
    assert as_json.questions == () and as_json.fallback is None and '"labels"' in as_json.messages[0]["content"]
    monkeypatch.setenv("LLM_MULTILABEL_SCORING", "yesno")
    chosen = Settings().llm_multilabel_scoring
    [yes_no] = few_shot_prompts(multi, POSITIVE[1:2], examples, multilabel_scoring=chosen)
    assert chosen == "yesno" and len(yes_no.questions) == 3 and yes_no.fallback is not None
    # single-label prompts are scored by their first token either way
    [single] = few_shot_prompts(SPEC, POSITIVE[1:2], [], multilabel_scoring=chosen)
    assert single.questions == () and single.keys
    monkeypatch.setenv("LLM_MULTILABEL_SCORING", "maybe")
    with pytest.raises(ValueError, match="llm_multilabel_scoring"):
        Settings()


def test_a_yes_no_answer_decides_a_set_and_never_feeds_the_single_label_distribution_path() -> None:
    multi = parse_label_config(MULTI)
    asked = [YesNo(p, Usage(40, 1, 1), t) for p, t in ((0.8, "yes"), (0.3, "no"), (0.6, "Yes"))]
    answer = yes_no_answer(multi, asked)
    assert answer is not None and answer.method == "yesno" and answer.labels == ("Sports", "Tech")
    assert answer.confidence == pytest.approx(0.8 * 0.7 * 0.6)
    assert answer.distribution == pytest.approx({"Sports": 0.8, "Politics": 0.3, "Tech": 0.6})
    assert answer.usage == Usage(120, 3, 3) and answer.texts == ["yes", "no", "Yes"]
    unanswered = yes_no_answer(multi, [*asked[:2], YesNo(None, Usage(40, 1, 1), "The")])
    assert unanswered is not None and unanswered.labels is None and "Tech" in (unanswered.error or "")
    failed = yes_no_answer(multi, [*asked[:2], YesNo(None, Usage(), "", error="APITimeoutError: slow")])
    assert failed is not None and failed.labels is None and failed.error == "APITimeoutError: slow"
    assert yes_no_answer(multi, [YesNo(None, Usage(40, 1, 1), "yes", no_logprobs=True)]) is None  # JSON instead
    # one label chosen, but its P(yes) per label is no distribution over labels to divide a prior out of
    single = StoredAnswer(("Sports",), 0.5, "yesno", "m", distribution={"Sports": 0.9, "Politics": 0.2, "Tech": 0.1})
    assert not scores_distribution(single)
    assert scores_distribution(StoredAnswer(("Sports",), 0.9, "scored", "m", distribution={"Sports": 0.9, "Tech": 0.1}))
