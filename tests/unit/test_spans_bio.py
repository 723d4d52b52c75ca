"""Tokens with offsets, BIO tags <-> spans, and LS `labels` results read back and built."""

from __future__ import annotations

import itertools
import random

import pytest

from backend.spans import Span
from backend.spans.bio import (
    Token,
    bio_to_spans,
    labels_results,
    repair_bio,
    spans_from_results,
    spans_to_bio,
    tokenize,
)
from backend.spans.span import check_spans, span_at


def _texts(tokens: list[Token]) -> list[str]:
    return [t.text for t in tokens]


def test_tweet_tokens_stay_whole() -> None:
    text = "@paulwalk It's the view... http://bit.ly/x1. #tag in the U.S. for 30,000 :) 👍🏽 🇧🇷 &amp; I 'm !!!"
    assert _texts(tokenize(text)) == [
        "@paulwalk", "It's", "the", "view", "...", "http://bit.ly/x1", ".", "#tag", "in", "the", "U.S.", "for",
        "30,000", ":)", "👍🏽", "🇧🇷", "&amp;", "I", "'m", "!!!",
    ]  # fmt: skip


def test_combining_marks_stay_inside_their_word() -> None:
    assert _texts(tokenize("Mu\u0308ller and हिन्दी, cafe\u0301.")) == [
        "Mu\u0308ller",
        "and",
        "हिन्दी",
        ",",
        "cafe\u0301",
        ".",
    ]


@pytest.mark.parametrize("seed", range(100))
def test_tokens_keep_their_offsets_and_cover_every_non_space(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab C1 é\u0301\n\t.,:)@#&;'-/🙂👍🏽🇧🇷\u200dhttp://x.y "
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
    tokens = tokenize(text)
    assert all(text[t.start : t.end] == t.text and t.text.strip() == t.text and t.text for t in tokens)
    assert all(a.end <= b.start for a, b in itertools.pairwise(tokens))
    covered = "".join(t.text for t in tokens)
    assert covered == "".join(text.split())


def test_an_i_tag_that_continues_nothing_starts_an_entity() -> None:
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "I-ORG", "O", "I-LOC"]
    repaired, count = repair_bio(tags)
    assert repaired == ["O", "B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG", "O", "B-LOC"]
    assert count == 3


def test_a_malformed_tag_is_refused() -> None:
    for bad in ("PER", "B-", "X-PER", "b-PER"):
        with pytest.raises(ValueError, match="not a BIO tag"):
            repair_bio(["O", bad])


def test_tags_become_spans_with_offsets_in_the_text() -> None:
    text = "Tim  Cook\nleft Apple Inc today"
    tokens = tokenize(text)
    tags = ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O"]
    spans, repaired = bio_to_spans(text, tokens, tags)
    assert [(s.start, s.end, s.label, s.text) for s in spans] == [
        (0, 9, "PER", "Tim  Cook"),
        (15, 24, "ORG", "Apple Inc"),
    ]
    assert repaired == 0
    assert bio_to_spans(text, tokens, ["I-PER", "B-PER", "O", "O", "I-ORG", "O"])[0] == [
        span_at(text, 0, 3, "PER"), span_at(text, 5, 9, "PER"), span_at(text, 21, 24, "ORG")]  # fmt: skip
    with pytest.raises(ValueError, match="6 tokens but 2 tags"):
        bio_to_spans(text, tokens, ["O", "O"])


@pytest.mark.parametrize("seed", range(100))
def test_valid_tags_survive_the_round_trip_through_spans(seed: int) -> None:
    rng = random.Random(seed)
    text = " ".join(rng.choice(["a", "Bb", "@c", "#d", "ée", "🙂", "..."]) for _ in range(rng.randint(0, 30)))
    tokens = tokenize(text)
    tags, previous = [], "O"
    for _ in tokens:
        label = rng.choice(["PER", "LOC"])
        choice = rng.random()
        if choice < 0.5:
            tag = "O"
        elif choice < 0.75 or previous == "O":
            tag = f"B-{label}"
        else:
            tag = f"I-{previous[2:]}"
        tags.append(tag)
        previous = tag
    spans, repaired = bio_to_spans(text, tokens, tags)
    check_spans(text, spans)
    assert repaired == 0
    assert spans_to_bio(tokens, spans) == (tags, 0)


def test_a_span_that_cuts_a_token_grows_to_it_and_is_counted() -> None:
    text = "the New Yorker and Ohio"
    tokens = tokenize(text)
    tags, misaligned = spans_to_bio(tokens, [span_at(text, 4, 12, "ORG"), span_at(text, 19, 23, "LOC")])
    assert tags == ["O", "B-ORG", "I-ORG", "O", "B-LOC"]
    assert misaligned == 1
    assert spans_to_bio(tokens, [span_at(text, 3, 4, "LOC")]) == (["O"] * 5, 1)  # only a space: tags nothing


def _region(start: int, end: int, text: str, labels: list[str], from_name: str = "label") -> dict:
    return {"id": f"r{start}", "from_name": from_name, "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": text, "labels": labels}}  # fmt: skip


def test_human_regions_are_read_back_and_what_cannot_be_used_is_counted() -> None:
    text = "🙂 Angela Merkel met Macron in Paris."
    results = [
        _region(2, 15, "Angela Merkel", ["PER"]),
        _region(9, 15, "Merkel", ["PER"]),  # inside the longer region: overlapping
        _region(20, 26, "Macron", ["PER", "ORG"]),  # two labels on one region: unusable
        _region(30, 35, "Paris", ["LOC"]),
        _region(31, 36, "Paris", ["LOC"]),  # stored off by one: found at its nearest place, overlaps the first
        _region(0, 99, "x", ["LOC"]),  # past the end: unusable
        _region(20, 26, "Macron", ["MISC"]),  # not a label of the config: unusable
        _region(2, 8, "Angela", ["PER"], from_name="other"),  # another control: not ours
        {"type": "relation", "from_id": "r2", "to_id": "r30", "direction": "right"},
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}},
        "junk",
    ]
    reading = spans_from_results(results, text, from_name="label", labels=["PER", "LOC", "ORG"])
    assert [(s.start, s.end, s.label, s.text) for s in reading.spans] == [
        (2, 15, "PER", "Angela Merkel"), (30, 35, "LOC", "Paris")]  # fmt: skip
    assert (reading.overlapping, reading.relations, reading.unusable, reading.realigned) == (2, 1, 3, 1)
    assert reading.note() == "ignored 2 overlapping region(s), 1 relation(s), 3 unusable region(s)"
    assert spans_from_results([_region(2, 8, "Angela", ["PER"])], text).note() is None


def test_a_region_whose_text_is_nowhere_in_the_task_is_unusable() -> None:
    reading = spans_from_results([_region(0, 3, "Bob", ["PER"])], "Tim is here")
    assert reading.spans == [] and reading.unusable == 1


def test_predicted_regions_are_built_and_read_back_unchanged() -> None:
    text = "Zoë Saldaña 🎬 in\nSão Paulo"
    spans = [span_at(text, 17, 26, "LOC", 0.61), span_at(text, 0, 11, "PER", 0.9)]
    results = labels_results(spans, "label", "text")
    assert [r["value"] for r in results] == [
        {"start": 0, "end": 11, "text": "Zoë Saldaña", "labels": ["PER"]},
        {"start": 17, "end": 26, "text": "São Paulo", "labels": ["LOC"]},
    ]
    assert [r["score"] for r in results] == [0.9, 0.61]
    assert len({r["id"] for r in results}) == 2 and all(r["type"] == "labels" for r in results)
    assert spans_from_results(results, text, "label").spans == sorted(spans, key=lambda s: s.start)
    assert "score" not in labels_results([Span(0, 3, "PER", "Zoë")], "label", "text")[0]
