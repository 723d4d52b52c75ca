"""The CRF student: it learns a toy set, its numpy inference is CRFsuite's, its span confidences are exact."""

from __future__ import annotations

import itertools
import pickle
import random

import numpy as np
import pytest
import sklearn_crfsuite
from sklearn.exceptions import NotFittedError

from backend.spans import Span
from backend.spans.bio import Token, bio_to_spans, spans_to_bio, tokenize
from backend.spans.crf import CRFStudent, Potentials, _Lattice, _SpanLattice, token_features
from backend.spans.span import span_at

PEOPLE = ["Alice", "Bob", "Carol Smith", "Dan", "Eve Jones", "@frank"]
PLACES = ["Paris", "London", "New York", "Rome", "#Berlin", "Oslo"]
FRAMES = ["{p} met friends in {c} today", "I saw {p} near {c} .", "{p} flew to {c} !", "why is {p} in {c} ?",
          "{c} loves {p}", "lol {p} and {c} http://t.co/x1"]  # fmt: skip


def _toy(n: int, seed: int) -> tuple[list[str], list[list[Span]]]:
    rng = random.Random(seed)
    texts, spans = [], []
    for _ in range(n):
        person, place, frame = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(FRAMES)
        text = frame.format(p=person, c=place)
        found = [span_at(text, text.index(person), text.index(person) + len(person), "PER"),
                 span_at(text, text.index(place), text.index(place) + len(place), "LOC")]  # fmt: skip
        texts.append(text)
        spans.append(sorted(found, key=lambda s: s.start))
    return texts, spans


@pytest.fixture(scope="module")
def toy_model() -> CRFStudent:
    texts, spans = _toy(60, seed=0)
    return CRFStudent(calibration="none", max_iterations=60).fit(texts, spans)


def _keys(spans: list[Span]) -> list[tuple[int, int, str]]:
    return [s.key for s in spans]


def test_it_learns_a_toy_set_and_scores_every_span_in_0_1(toy_model: CRFStudent) -> None:
    texts, gold = _toy(30, seed=1)
    predicted = toy_model.predict(texts)
    assert [_keys(p) for p in predicted] == [_keys(g) for g in gold]
    scores = [s.score for spans in predicted for s in spans]
    assert all(score is not None and 0.0 < score <= 1.0 for score in scores)
    assert toy_model.labels_ == ["LOC", "PER"]
    assert set(toy_model.tags_) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}


def test_outputs_carry_marginals_and_the_best_paths_probability(toy_model: CRFStudent) -> None:
    texts = ["Bob flew to Oslo !", "nothing to see here", "   "]
    outputs = toy_model.analyse(texts)
    assert [len(o.tokens) for o in outputs] == [5, 4, 0]
    for output in outputs:
        assert output.marginals.shape == (len(output.tokens), len(toy_model.tags_))
        assert np.allclose(output.marginals.sum(axis=1), 1.0)
        assert 0.0 < output.sequence_probability <= 1.0
    assert outputs[1].spans == [] and outputs[2].spans == [] and outputs[2].sequence_logprob == 0.0
    # the best path is at least as likely as any one token's tag on it
    first = outputs[0]
    on_path = first.marginals[np.arange(5), [toy_model.tags_.index(t) for t in first.tags]]
    assert first.sequence_probability <= on_path.min() + 1e-9


def test_numpy_inference_is_crfsuites_own(toy_model: CRFStudent) -> None:
    texts, spans = _toy(60, seed=0)
    tokens = [tokenize(t) for t in texts]
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=60, all_possible_transitions=True)
    crf.fit([token_features(t) for t in tokens], [spans_to_bio(t, s)[0] for t, s in zip(tokens, spans, strict=True)])
    assert Potentials.from_crf(crf).tags == toy_model.tags_
    probe = ["Eve Jones met friends in Rome today", "Dan and Oslo", "who is Carol ?"]
    for text, output in zip(probe, toy_model.analyse(probe), strict=True):
        features = token_features(tokenize(text))
        assert crf.predict_single(features) == output.tags
        expected = crf.predict_marginals_single(features)
        got = [{tag: output.marginals[t, k] for k, tag in enumerate(toy_model.tags_)} for t in range(len(features))]
        for row_expected, row_got in zip(expected, got, strict=True):
            assert row_got == pytest.approx(row_expected, abs=1e-5)  # CRFsuite's dump rounds weights to 6 places
        crf.tagger_.set(features)
        assert output.sequence_probability == pytest.approx(crf.tagger_.probability(output.tags), abs=1e-5)


TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]


def _random_lattice(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray, _SpanLattice]:
    emissions, transitions = rng.normal(0, 1.5, (length, len(TAGS))), rng.normal(0, 1.5, (len(TAGS), len(TAGS)))
    lattice = _Lattice(emissions[None], transitions, np.array([length]))
    alpha, log_z = lattice.forward()
    beta = lattice.backward()
    return emissions, transitions, _SpanLattice(emissions, transitions, alpha[0], beta[0], float(log_z[0]))


@pytest.mark.parametrize("seed", range(5))
def test_the_span_marginal_is_the_probability_summed_over_every_tag_sequence(seed: int) -> None:
    """Brute force: all 5^4 tag sequences of a 4-token text, each read into spans with the I- repair."""
    rng = np.random.default_rng(seed)
    text = "a b c d"
    tokens = [Token(w, i * 2, i * 2 + 1) for i, w in enumerate(text.split())]
    emissions, transitions, span_lattice = _random_lattice(rng, len(tokens))
    weight: dict[tuple[int, int, str], float] = {}
    total = 0.0
    for path in itertools.product(range(len(TAGS)), repeat=len(tokens)):
        score = np.exp(emissions[np.arange(len(tokens)), path].sum() + transitions[path[:-1], path[1:]].sum())
        total += score
        for span in bio_to_spans(text, tokens, [TAGS[k] for k in path])[0]:
            weight[span.key] = weight.get(span.key, 0.0) + score
    for first, last in itertools.combinations_with_replacement(range(len(tokens)), 2):
        for label in ("A", "B"):
            key = (tokens[first].start, tokens[last].end, label)
            exact = span_lattice.span_probability(first, last, TAGS.index(f"B-{label}"), TAGS.index(f"I-{label}"))
            assert exact == pytest.approx(weight.get(key, 0.0) / total, rel=1e-9, abs=1e-12)


def test_a_label_without_an_inside_tag_scores_single_tokens_only() -> None:
    _, _, span_lattice = _random_lattice(np.random.default_rng(7), 3)
    assert span_lattice.span_probability(0, 1, TAGS.index("B-A"), None) == 0.0
    assert 0.0 < span_lattice.span_probability(1, 1, TAGS.index("B-A"), None) < 1.0


def test_product_and_min_confidences_are_the_tags_marginals(toy_model: CRFStudent) -> None:
    text = ["Carol Smith flew to New York !"]
    output = toy_model.analyse(text)[0]
    by_mode = {}
    for mode in ("marginal", "product", "min"):
        model = pickle.loads(pickle.dumps(toy_model))
        model.span_confidence = mode
        by_mode[mode] = [s.score for s in model.predict(text)[0]]
    tags = [toy_model.tags_.index(t) for t in output.tags]
    on_path = output.marginals[np.arange(len(tags)), tags]
    assert by_mode["product"] == pytest.approx([on_path[0] * on_path[1], on_path[4] * on_path[5]])
    assert by_mode["min"] == pytest.approx([min(on_path[:2]), min(on_path[4:6])])
    assert all(m <= p + 1e-12 for m, p in zip(by_mode["marginal"], by_mode["min"], strict=True))


def test_temperature_changes_probabilities_never_the_best_path() -> None:
    texts, spans = _toy(40, seed=2)
    plain = CRFStudent(calibration="none", max_iterations=30).fit(texts, spans)
    scaled = CRFStudent(calibration="temperature", folds=2, max_iterations=30).fit(texts, spans)
    assert scaled.temperature_ > 0.0 and scaled.temperature_ != 1.0
    probe, _ = _toy(10, seed=3)
    before, after = plain.analyse(probe), scaled.analyse(probe)
    assert [o.tags for o in before] == [o.tags for o in after]
    assert [o.sequence_logprob for o in before] != pytest.approx([o.sequence_logprob for o in after])
    tiny = CRFStudent(calibration="temperature", folds=3, max_iterations=10).fit(texts[:5], spans[:5])
    assert tiny.temperature_ == 1.0  # too few texts to hold any out


def test_a_fitted_model_pickles_without_crfsuite_files(toy_model: CRFStudent) -> None:
    restored = pickle.loads(pickle.dumps(toy_model))
    probe, _ = _toy(5, seed=4)
    assert restored.predict(probe) == toy_model.predict(probe)

    def scores(model: CRFStudent) -> list[float | None]:
        return [span.score for spans in model.predict(probe) for span in spans]

    assert scores(restored) == scores(toy_model)
    assert restored.get_params()["span_confidence"] == "marginal"


def test_fit_checks_its_input() -> None:
    texts, spans = _toy(4, seed=5)
    with pytest.raises(ValueError, match="4 texts but 3 span lists"):
        CRFStudent().fit(texts, spans[:3])
    with pytest.raises(ValueError, match="no texts"):
        CRFStudent().fit([], [])
    with pytest.raises(ValueError, match="does not match"):
        CRFStudent().fit(["Bob is here"], [[Span(0, 3, "PER", "Rob")]])
    with pytest.raises(ValueError, match="no text has a token"):
        CRFStudent().fit(["  ", ""], [[], []])
    with pytest.raises(TypeError, match="not a str"):
        CRFStudent().fit([b"Bob"], [[]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="span_confidence"):
        CRFStudent(span_confidence="mean").fit(texts, spans)
    with pytest.raises(ValueError, match="calibration"):
        CRFStudent(calibration="isotonic").fit(texts, spans)
    with pytest.raises(NotFittedError):
        CRFStudent().predict(["Bob"])


def test_a_gold_span_that_cuts_a_token_is_counted() -> None:
    texts, spans = _toy(10, seed=6)
    texts.append("the New Yorker said so")
    spans.append([span_at(texts[-1], 4, 12, "LOC")])
    model = CRFStudent(calibration="none", max_iterations=10).fit(texts, spans)
    assert model.misaligned_spans_ == 1
