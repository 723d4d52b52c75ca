"""Bias correction before calibration: the label prior divided out, then whole distributions calibrated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.labeling import Example
from backend.llm.annotator import StoredAnswer, pre_labels
from backend.llm.bias import BatchCalibration, DistributionCalibration
from backend.llm.calibration import (
    Calibrator,
    DistributionCalibrator,
    cross_calibrated_distributions,
    score_distributions,
)
from backend.llm.checks import llm_checks, prior_only, published_distribution_calibration
from backend.llm.routing import AUTO_ACCEPT, REVIEW

LABELS = ("abbreviation", "description", "entity", "location")


def biased_but_informative(n: int, seed: int, sharpness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Distributions that favour the true label, with a strong lean towards label 1 whatever the item;
    `sharpness` above 1 makes them overconfident."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(LABELS), n)
    logits = rng.normal(0, 1, (n, len(LABELS)))
    logits[np.arange(n), truth] += 2.0
    biased = np.exp(sharpness * (logits + np.log([0.05, 0.8, 0.1, 0.05])))
    return biased / biased.sum(axis=1, keepdims=True), truth


def test_the_prior_divides_a_constant_bias_out_exactly() -> None:
    bias = np.array([0.6, 0.3, 0.1])
    # rows whose mean is uniform and whose dot product with the bias is constant: the biased rows' mean
    # is then exactly proportional to the bias
    v = 0.6 * np.cross(np.ones(3), bias)
    unbiased = np.array([np.full(3, 1 / 3) + v, np.full(3, 1 / 3) - v] * 20)
    biased = unbiased * bias / (unbiased * bias).sum(axis=1, keepdims=True)
    assert (biased.argmax(axis=1) == 0).mean() == 0.5 and (unbiased.argmax(axis=1) == 0).mean() == 0

    prior = BatchCalibration(min_count=30).fit(biased)

    np.testing.assert_allclose(prior.prior_, bias, atol=1e-12)
    np.testing.assert_allclose(prior.transform(biased), unbiased, atol=1e-12)


def test_dividing_out_the_prior_recovers_accuracy_from_a_biased_model() -> None:
    distributions, truth = biased_but_informative(600, seed=1)
    corrected = BatchCalibration().fit(distributions).transform(distributions)

    raw, fixed = score_distributions(distributions, truth), score_distributions(corrected, truth)
    assert raw.accuracy is not None and fixed.accuracy is not None
    assert raw.accuracy < 0.5 and fixed.accuracy > raw.accuracy + 0.2, (raw, fixed)


def test_below_the_minimum_count_the_prior_is_the_identity_and_tiny_priors_are_floored() -> None:
    distributions, _ = biased_but_informative(29, seed=2)
    few = BatchCalibration(min_count=30).fit(distributions)
    assert not few.applied and few.to_dict()["prior"] is None
    np.testing.assert_allclose(few.transform(distributions), distributions)

    never_named = np.tile([0.7, 0.3, 0.0], (40, 1))
    floored = BatchCalibration(floor=0.05).fit(never_named)
    assert floored.prior_ is not None and floored.prior_.min() == pytest.approx(0.05 / 1.05)
    with pytest.raises(ValueError):
        BatchCalibration(floor=0.5).fit(never_named)


@pytest.mark.parametrize("method", ["temperature", "vector", "auto"])
def test_calibrated_distributions_have_a_lower_ece_on_held_out_items(method: str) -> None:
    distributions, truth = biased_but_informative(1200, seed=3, sharpness=3.0)  # overconfident
    corrected = BatchCalibration().fit(distributions).transform(distributions)
    calibrator = DistributionCalibrator(method).fit(corrected[:600], truth[:600])

    held_out = calibrator.transform(corrected[600:])
    before, after = score_distributions(corrected[600:], truth[600:]), score_distributions(held_out, truth[600:])
    assert before.ece is not None and after.ece is not None and before.log_loss and after.log_loss
    assert after.ece < before.ece / 2 and after.log_loss < before.log_loss, (before, after)
    assert calibrator.method_ == ("temperature" if method == "temperature" else calibrator.method_)


def test_auto_uses_temperature_below_vector_from_and_the_lower_out_of_fold_loss_above() -> None:
    distributions, truth = biased_but_informative(600, seed=4)
    assert DistributionCalibrator(vector_from=100).fit(distributions[:99], truth[:99]).method_ == "temperature"
    # the bias is left in: only per-label biases can remove it, so vector scaling wins out of fold
    assert DistributionCalibrator(vector_from=100).fit(distributions, truth).method_ == "vector"


def test_vector_scaling_moves_the_argmax_of_a_biased_model() -> None:
    distributions, truth = biased_but_informative(1200, seed=5)
    calibrated = DistributionCalibrator("vector").fit(distributions[:600], truth[:600]).transform(distributions[600:])
    raw, after = score_distributions(distributions[600:], truth[600:]), score_distributions(calibrated, truth[600:])
    assert raw.accuracy is not None and after.accuracy is not None and after.accuracy > raw.accuracy + 0.2


def test_the_distribution_calibrator_is_the_identity_until_it_has_enough_checks_of_two_labels() -> None:
    distributions, truth = biased_but_informative(100, seed=6)
    few = DistributionCalibrator(min_checks=20).fit(distributions[:19], truth[:19])
    one_label = DistributionCalibrator().fit(distributions[:50], np.zeros(50, dtype=int))
    for calibrator in (few, one_label):
        assert calibrator.method_ is None
        np.testing.assert_allclose(calibrator.transform(distributions), distributions)
    with pytest.raises(ValueError):
        DistributionCalibrator("matrix")
    with pytest.raises(ValueError):
        DistributionCalibrator().fit(distributions, truth[:10])


def test_cross_calibrated_distributions_never_score_a_check_with_a_calibrator_that_saw_it() -> None:
    distributions, truth = biased_but_informative(300, seed=7, sharpness=3.0)
    in_sample = DistributionCalibrator("vector").fit(distributions, truth).transform(distributions)
    out_of_fold = cross_calibrated_distributions(distributions, truth, method="vector")
    assert not np.allclose(in_sample, out_of_fold)
    in_loss, out_loss = score_distributions(in_sample, truth).log_loss, score_distributions(out_of_fold, truth).log_loss
    assert in_loss is not None and out_loss is not None and out_loss > in_loss


def test_a_distribution_calibration_survives_json_and_an_unknown_version_loads_as_none() -> None:
    distributions, truth = biased_but_informative(400, seed=8)
    prior = BatchCalibration().fit(distributions)
    calibration = DistributionCalibration(LABELS, prior, DistributionCalibrator().fit(prior.transform(distributions),
                                                                                      truth), 0.8)  # fmt: skip
    restored = DistributionCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))

    assert restored is not None and restored.threshold == 0.8 and restored.calibrator.method_ is not None
    np.testing.assert_allclose(restored.transform(distributions), calibration.transform(distributions))
    assert DistributionCalibration.from_dict({**calibration.to_dict(), "version": 2}) is None
    newer = {**calibration.to_dict(), "prior": {"version": 2, "prior": [1, 0, 0, 0]},
             "calibrator": {"version": 2, "method": "matrix"}}  # fmt: skip
    unknown = DistributionCalibration.from_dict(newer)
    assert unknown is not None and not unknown.active  # parts it cannot read are the identity
    # a model version from before distributions were calibrated: nothing to apply, the old path stays
    assert published_distribution_calibration({"llm_checks": {"checks": 40, "calibrator": None}}) is None
    assert published_distribution_calibration({}) is None


def answers_and_checks(n: int, checked: int, seed: int) -> tuple[dict[int, StoredAnswer], list[Example], np.ndarray]:
    distributions, truth = biased_but_informative(n, seed=seed, sharpness=1.5)
    answers = {}
    for task, row in enumerate(distributions):
        best = int(row.argmax())
        answers[task] = StoredAnswer((LABELS[best],), float(row[best]), "logprobs", "m",
                                     distribution=dict(zip(LABELS, map(float, row), strict=True)))  # fmt: skip
    examples = [Example(task, f"text {task}", (LABELS[truth[task]],)) for task in range(checked)]
    return answers, examples, truth


def test_checks_report_accuracy_and_ece_raw_bias_corrected_and_calibrated() -> None:
    answers, examples, _ = answers_and_checks(900, 300, seed=9)
    report = llm_checks(answers, examples, LABELS)
    section = report["distribution"]

    assert section["checks"] == 300 and section["prior_from"] == 600  # the unlabelled answers only
    stages = section["stages"]
    assert set(stages) == {"raw", "bias_corrected", "calibrated"}
    assert stages["bias_corrected"]["accuracy"] > stages["raw"]["accuracy"] + 0.15
    assert stages["calibrated"]["ece"] < stages["raw"]["ece"]
    assert stages["calibrated"]["log_loss"] < stages["bias_corrected"]["log_loss"]
    assert json.loads(json.dumps(report)) == report  # kept in the model version's meta JSON
    published = published_distribution_calibration({"llm_checks": report})
    assert published is not None and published.calibrated and published.threshold == section["threshold"]


def test_pre_labels_take_the_corrected_argmax_and_only_calibrated_scores_auto_accept() -> None:
    answers, examples, truth = answers_and_checks(900, 300, seed=10)
    report = llm_checks(answers, examples, LABELS, target_precision=0.8)
    published = published_distribution_calibration({"llm_checks": report})
    assert published is not None and published.threshold is not None
    unlabelled = [answers[task] for task in range(300, 900)]

    raw = pre_labels(unlabelled, None, None)
    corrected = pre_labels(unlabelled, None, None, prior_only(answers, LABELS))
    calibrated = pre_labels(unlabelled, None, None, published)

    def accuracy(labels: list) -> float:
        return float(np.mean([label.labels[0] == LABELS[y] for label, y in zip(labels, truth[300:], strict=True)]))

    assert accuracy(corrected) > accuracy(raw) + 0.15 and accuracy(calibrated) > accuracy(raw) + 0.15
    assert {label.route for label in corrected} == {REVIEW} and not any(label.calibrated for label in corrected)
    accepted = [label for label in calibrated if label.route == AUTO_ACCEPT]
    assert accepted and all(label.score >= published.threshold for label in accepted)
    right = [label.labels[0] == LABELS[y] for label, y in zip(calibrated, truth[300:], strict=True)
             if label.route == AUTO_ACCEPT]  # fmt: skip
    assert np.mean(right) >= 0.8  # the gate holds on tasks it did not see


def test_answers_without_a_model_distribution_keep_the_top_confidence_path() -> None:
    answers, examples, _ = answers_and_checks(300, 100, seed=11)
    published = published_distribution_calibration({"llm_checks": llm_checks(answers, examples, LABELS)})
    votes = StoredAnswer(("entity",), 0.6, "votes", "m", distribution={"entity": 0.6, "description": 0.4})
    plain = StoredAnswer(("location",), 0.9, "logprobs", "m")  # the label's tokens could not be located
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1, 200)
    calibrator = Calibrator("platt").fit(conf, rng.random(200) < conf)

    out = pre_labels([votes, plain], calibrator, 0.5, published)

    assert [label.labels for label in out] == [("entity",), ("location",)]
    assert [label.score for label in out] == pytest.approx(list(calibrator.transform([0.6, 0.9])))


def test_a_flat_distribution_keeps_the_answer_and_stays_out_of_the_prior() -> None:
    # the label's tokens were outside the top logprobs: every label equally likely, no argmax to take
    flat = {label: 0.25 for label in LABELS}
    answers, examples, _ = answers_and_checks(300, 100, seed=12)
    with_flat = answers | {1000 + i: StoredAnswer(("entity",), 0.25, "logprobs", "m", distribution=flat)
                           for i in range(300)}  # fmt: skip
    assert prior_only(with_flat, LABELS).prior.prior_ == pytest.approx(prior_only(answers, LABELS).prior.prior_)

    published = published_distribution_calibration({"llm_checks": llm_checks(with_flat, examples, LABELS)})
    out = pre_labels([with_flat[1000]], None, None, published)
    assert out[0].labels == ("entity",) and out[0].score == 0.25 and out[0].route == REVIEW


def test_checks_that_all_came_out_right_cannot_claim_certainty() -> None:
    from backend.llm.calibration import DistributionCalibrator

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 90)
    distributions = np.where(truth[:, None] == np.arange(2), 0.7, 0.3)  # always right, never sure
    calibrator = DistributionCalibrator(method="temperature").fit(distributions, truth)
    top = calibrator.transform(distributions).max(axis=1)
    assert top.max() <= 1 - (1 / 92) / 2 + 1e-9  # 1/(n+2) of the mass stays spread over the 2 labels
    assert top.min() > 0.9  # and the calibrator still sharpens a signal this clean
