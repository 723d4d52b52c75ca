"""LLM mentions mapped to offsets: every span produced satisfies text[start:end] == span.text."""

from __future__ import annotations

import itertools
import random

import pytest

from backend.spans import Span, resolve_overlaps
from backend.spans.offsets import Mention, map_mentions
from backend.spans.span import check_spans

LABELS = ["PER", "LOC", "ORG"]


def _where(text: str, mapping_spans: list[Span]) -> list[tuple[int, int, str, str]]:
    check_spans(text, mapping_spans)
    return [(s.start, s.end, s.label, s.text) for s in mapping_spans]


def test_a_mention_named_twice_is_its_first_and_second_occurrence() -> None:
    text = "Paris is not Paris, Texas."
    result = map_mentions(text, [Mention("Paris", "LOC"), Mention("Paris", "LOC")], LABELS)
    assert _where(text, result.spans) == [(0, 5, "LOC", "Paris"), (13, 18, "LOC", "Paris")]
    assert result.dropped == 0 and result.fuzzy == 0


def test_a_mention_named_once_is_its_first_occurrence_and_the_kth_counts_any_label() -> None:
    text = "Jordan met Jordan in Jordan."
    once = map_mentions(text, [Mention("Jordan", "PER")], LABELS)
    assert _where(text, once.spans) == [(0, 6, "PER", "Jordan")]
    three = map_mentions(text, [Mention("Jordan", "PER"), Mention("Jordan", "PER"), Mention("Jordan", "LOC")], LABELS)
    assert [(s.start, s.label) for s in three.spans] == [(0, "PER"), (11, "PER"), (21, "LOC")]


def test_named_more_often_than_it_occurs_is_not_found() -> None:
    text = "Obama spoke."
    result = map_mentions(text, [Mention("Obama", "PER"), Mention("Obama", "PER")], LABELS)
    assert _where(text, result.spans) == [(0, 5, "PER", "Obama")]
    assert result.not_found == [Mention("Obama", "PER")]


def test_hallucinated_and_empty_mentions_are_dropped_and_counted() -> None:
    text = "Angela Merkel visited Paris."
    mentions = [Mention("Berlin", "LOC"), Mention("  ", "LOC"), Mention("Paris", "LOC")]
    result = map_mentions(text, mentions, LABELS)
    assert _where(text, result.spans) == [(22, 27, "LOC", "Paris")]
    assert result.not_found == mentions[:2]
    assert result.dropped == 2


def test_off_label_mentions_are_dropped_and_a_label_differing_in_case_is_mapped() -> None:
    text = "Apple sells apples in Cupertino."
    result = map_mentions(text, [Mention("Apple", "FRUIT"), Mention("Cupertino", " loc ")], LABELS)
    assert result.off_label == [Mention("Apple", "FRUIT")]
    assert _where(text, result.spans) == [(22, 31, "LOC", "Cupertino")]


def test_labels_that_clash_once_casefolded_are_only_matched_exactly() -> None:
    text = "Ada wrote."
    assert map_mentions(text, [Mention("Ada", "per")], ["PER", "Per"]).off_label == [Mention("Ada", "per")]
    assert [s.label for s in map_mentions(text, [Mention("Ada", "Per")], ["PER", "Per"]).spans] == ["Per"]


def test_whole_words_are_preferred_over_matches_inside_a_word() -> None:
    text = "USA and US agree; USB too."
    result = map_mentions(text, [Mention("US", "LOC")], LABELS)
    assert _where(text, result.spans) == [(8, 10, "LOC", "US")]
    inside = "the USAF base"  # no free-standing "US": a match inside a word is still a match
    assert _where(inside, map_mentions(inside, [Mention("US", "LOC")], LABELS).spans) == [(4, 6, "LOC", "US")]


def test_the_exact_spelling_wins_before_the_case_insensitive_fallback() -> None:
    text = "paris hilton was in Paris."
    exact = map_mentions(text, [Mention("Paris", "LOC")], LABELS)
    assert _where(text, exact.spans) == [(20, 25, "LOC", "Paris")] and exact.fuzzy == 0
    loose = map_mentions(text, [Mention("PARIS HILTON", "PER")], LABELS)
    assert _where(text, loose.spans) == [(0, 12, "PER", "paris hilton")] and loose.fuzzy == 1


def test_unicode_offsets_are_code_points() -> None:
    text = "🎉🎉 Ünïcödé fans of Zoë Saldaña in São Paulo 🇧🇷!"
    result = map_mentions(text, [Mention("Zoë Saldaña", "PER"), Mention("São Paulo", "LOC")], LABELS)
    assert _where(text, result.spans) == [(19, 30, "PER", "Zoë Saldaña"), (34, 43, "LOC", "São Paulo")]
    assert text.encode("utf-16-le")[2 * 34 : 2 * 43].decode("utf-16-le") != "São Paulo"  # not UTF-16 units


def test_decomposed_accents_newlines_and_typographic_quotes_are_found_loosely() -> None:
    decomposed = "Cafe\u0301 Mu\u0308ller opened."
    result = map_mentions(decomposed, [Mention("Café Müller", "ORG")], LABELS)
    assert _where(decomposed, result.spans) == [(0, 13, "ORG", "Cafe\u0301 Mu\u0308ller")] and result.fuzzy == 1
    wrapped = "He flew to New\nYork on\r\nMonday with Macy\u2019s staff."
    result = map_mentions(wrapped, [Mention("New York", "LOC"), Mention("Macy's", "ORG")], LABELS)
    assert _where(wrapped, result.spans) == [(11, 19, "LOC", "New\nYork"), (36, 42, "ORG", "Macy\u2019s")]
    assert result.fuzzy == 2


def test_overlapping_mentions_keep_the_longest_then_the_first() -> None:
    text = "The New York City marathon"
    result = map_mentions(text, [Mention("York", "ORG"), Mention("New York City", "LOC")], LABELS)
    assert _where(text, result.spans) == [(4, 17, "LOC", "New York City")]
    assert [(s.text, s.label) for s in result.overlapping] == [("York", "ORG")]
    tie = "Jo Lee Mo"
    result = map_mentions(tie, [Mention("Lee Mo", "PER"), Mention("Jo Lee", "PER")], LABELS)
    assert _where(tie, result.spans) == [(0, 6, "PER", "Jo Lee")]
    assert [s.text for s in result.overlapping] == ["Lee Mo"]


def test_the_same_stretch_named_with_two_labels_keeps_the_first_named() -> None:
    kept, dropped = resolve_overlaps([Span(0, 4, "ORG", "Ford"), Span(0, 4, "PER", "Ford")])
    assert [s.label for s in kept] == ["ORG"] and [s.label for s in dropped] == ["PER"]


def test_scores_travel_with_the_spans() -> None:
    result = map_mentions("Tim Cook at Apple", [Mention("Apple", "ORG", 0.8)], LABELS)
    assert result.spans[0].score == 0.8


# --- properties over random texts --------------------------------------------------------------------

ALPHABET = "abcAB xyzé\u0301ßİ🙂👍🏽\n\t.,'#@-_0" + "\u2019"
SEPARATORS = [" ", "  ", "\n", ", ", " 🙂 ", "\t", " - ", "\r\n"]
WORDS = ["ann", "Ann", "bo", "São", "Zoë", "x1", "naïve", "🙂ok", "#tag", "@me", "Bo Ann", "ann-bo"]


@pytest.mark.parametrize("seed", range(300))
def test_every_span_matches_the_text_whatever_the_mentions(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 80)))
    mentions = []
    for _ in range(rng.randint(0, 8)):
        if text and rng.random() < 0.7:
            start = rng.randrange(len(text))
            words = text[start : start + rng.randint(1, 12)]
            words = words.upper() if rng.random() < 0.2 else words
        else:
            words = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
        mentions.append(Mention(words, rng.choice([*LABELS, "misc"])))
    result = map_mentions(text, mentions, LABELS)
    check_spans(text, result.spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(result.spans))
    assert len(result.spans) + result.dropped == len(mentions)
    assert all(span.label in LABELS for span in result.spans)


@pytest.mark.parametrize("seed", range(200))
def test_mentions_listed_in_reading_order_land_exactly_where_they_were(seed: int) -> None:
    """A text of words and separators; the model names every occurrence of some words, in order."""
    rng = random.Random(seed)
    pieces, text = [], ""
    for _ in range(rng.randint(1, 25)):
        text += rng.choice(SEPARATORS) if text else ""
        word = rng.choice(WORDS)
        pieces.append((len(text), word))
        text += word
    chosen = set(rng.sample(sorted(set(WORDS)), rng.randint(1, 4)))
    expected, mentions = [], []
    for start, word in pieces:
        if word in chosen:
            label = LABELS[WORDS.index(word) % 3]
            expected.append((start, start + len(word), label, word))
            mentions.append(Mention(word, label))
    result = map_mentions(text, mentions, LABELS)
    found = _where(text, result.spans)
    # "Bo Ann" holds "Ann", "ann-bo" holds "ann" and "bo": a chosen word that also stands inside another
    # word of the text is what the k-th rule cannot tell apart, so only texts without one come back exactly.
    present = {word for _, word in pieces}
    nested = any(a != b and a.casefold() in b.casefold() for a in chosen for b in present)
    if not nested:
        assert found == expected
        assert result.dropped == 0
