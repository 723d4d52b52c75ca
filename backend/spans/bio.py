"""Tokens with offsets, BIO tags <-> spans, and Label Studio `labels` results read and built. Pure.

The student tags tokens; Label Studio stores character spans. This module converts between the two:

- `tokenize` splits a text into tokens that keep their character offsets, with the tokens tweets have
  (URLs, @user, #tag, HTML entities, emoticons, emoji with their modifiers) kept whole.
- `spans_to_bio` tags tokens from spans (a span that cuts a token grows to cover it, and is counted);
  `bio_to_spans` turns tags back into spans, repairing invalid sequences the CoNLL way: an `I-X` that
  does not continue an `X` entity (after `O`, or after `B-Y`/`I-Y`) starts a new `X` entity, as if it were
  `B-X`. Viterbi paths of a CRF and hand-made tag files both produce such tags.
- `spans_from_results` reads a human annotation's `labels` regions back into spans; `labels_results`
  builds a prediction's regions. Overlapping regions and relations are left out and counted, so the
  caller can say so (`SpanReading.note`).
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.spans.span import Span, resolve_overlaps, span_at

OUTSIDE = "O"


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""
    (?:https?://|www\.)\S+?(?=[.,!?;:)\]"'\u201d\u2019]*(?:\s|$))   # a URL, without the punctuation after it
    | [@#]\w+                                   # @user, #tag
    | &(?:[A-Za-z]+|\#\d+);                     # an HTML entity left in the text (&amp;)
    | (?:[A-Za-z]\.){2,}                        # U.S., N.J.
    | \d+(?:[.,:/]\d+)+                         # 30,000  14:30  39.45  1/2
    | \w+(?:['\u2019\-]\w+)*                    # words, don't, O'Donoghue, pre-show
    | ['\u2019]\w+                              # 's 'm n't as the corpus splits them
    | [:;=8][\-o*']?[)(\]\[dDpP/\\|]            # :) ;-) :D :P :/
    | [\U0001F1E6-\U0001F1FF]{2}                # a flag: two regional indicators
    | ([^\w\s])\1+                              # a run of one punctuation mark: ... !!! --
    | [^\w\s](?:[\ufe0f\u20e3\U0001F3FB-\U0001F3FF]|\u200d[^\w\s]\ufe0f?)*  # a symbol or emoji, its modifiers
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    """The text's tokens with their offsets (`text[t.start:t.end] == t.text`); whitespace is never a token.

    A combining mark joins the token before it, and a word going on right after it ("Mu\u0308ller" stays
    one word in decomposed text, as do Indic words with vowel signs).
    """
    tokens: list[Token] = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        if tokens and tokens[-1].end == start and _continues(text[start - 1], text[start]):
            start = tokens.pop().start
        tokens.append(Token(text[start:end], start, end))
    return tokens


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def _continues(before: str, first: str) -> bool:
    """Whether a token starting with `first` right after `before` is the same word."""
    return _is_mark(first) or (_is_mark(before) and (first.isalnum() or first == "_"))


def _parse_tag(tag: str) -> tuple[str, str | None]:
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, dash, label = tag.partition("-")
    if not dash or prefix not in ("B", "I") or not label:
        raise ValueError(f"not a BIO tag: {tag!r} (expected O, B-<label> or I-<label>)")
    return prefix, label


def repair_bio(tags: Sequence[str]) -> tuple[list[str], int]:
    """Tags with every `I-X` that continues no `X` entity turned into `B-X`, and how many were."""
    repaired, count, current = [], 0, None
    for tag in tags:
        prefix, label = _parse_tag(tag)
        if prefix == "I" and label != current:
            tag, prefix, count = f"B-{label}", "B", count + 1
        repaired.append(tag)
        current = label
    return repaired, count


def bio_to_spans(text: str, tokens: Sequence[Token], tags: Sequence[str]) -> tuple[list[Span], int]:
    """The spans the tags mark (from their first token's start to their last token's end) and the number
    of tags repaired on the way (see `repair_bio`)."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    repaired, count = repair_bio(tags)
    spans: list[Span] = []
    open_at: tuple[int, int, str] | None = None  # (start, end, label) of the entity being read
    for token, tag in zip(tokens, repaired, strict=True):
        prefix, label = _parse_tag(tag)
        if prefix == "I" and open_at is not None:
            open_at = (open_at[0], token.end, open_at[2])
            continue
        if open_at is not None:
            spans.append(span_at(text, *open_at))
        open_at = (token.start, token.end, label) if prefix == "B" and label is not None else None
    if open_at is not None:
        spans.append(span_at(text, *open_at))
    return spans, count


def spans_to_bio(tokens: Sequence[Token], spans: Iterable[Span]) -> tuple[list[str], int]:
    """One tag per token, and how many spans did not fall on token boundaries.

    A span tags every token it overlaps (so one that cuts a token grows to the token's edges); a span
    that overlaps no token, or only tokens an earlier span took, tags nothing. Both are counted.
    """
    tags = [OUTSIDE] * len(tokens)
    starts = [t.start for t in tokens]
    misaligned = 0
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        covered = []
        for i in range(_first_token_ending_after(tokens, starts, span.start), len(tokens)):
            if tokens[i].start >= span.end:
                break
            if tags[i] == OUTSIDE:
                covered.append(i)
        if not covered:
            misaligned += 1
            continue
        if tokens[covered[0]].start != span.start or tokens[covered[-1]].end != span.end:
            misaligned += 1
        for position, i in enumerate(covered):
            tags[i] = f"{'B' if position == 0 else 'I'}-{span.label}"
    return tags, misaligned


def _first_token_ending_after(tokens: Sequence[Token], starts: list[int], offset: int) -> int:
    i = max(0, bisect.bisect_right(starts, offset) - 1)
    while i < len(tokens) and tokens[i].end <= offset:
        i += 1
    return i


# --- Label Studio results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanReading:
    """The spans read from one annotation's results, and what was left out."""

    spans: list[Span]
    overlapping: int = 0  # regions dropped because they overlap a longer (or earlier) one
    relations: int = 0  # relation items: not used
    unusable: int = 0  # labels regions with no single known label, bad offsets, or text not in the task
    realigned: int = 0  # regions whose stored offsets missed their text, found nearby

    def note(self) -> str | None:
        """A line for the caller's log or report, or None when nothing was left out."""
        parts = [f"{n} {what}" for n, what in ((self.overlapping, "overlapping region(s)"),
                                               (self.relations, "relation(s)"),
                                               (self.unusable, "unusable region(s)")) if n]  # fmt: skip
        return f"ignored {', '.join(parts)}" if parts else None


def spans_from_results(
    results: Iterable[Any], text: str, from_name: str | None = None, labels: Sequence[str] | None = None
) -> SpanReading:
    """The `labels` regions of `from_name` (any control when None) in an annotation's `result` list.

    A region counts when it has exactly one label (one of `labels`, when given) and offsets into `text`.
    Where its stored `text` differs from `text[start:end]` it is looked for at the nearest place it
    occurs (and counted as realigned) or left out. Overlapping regions are resolved like the LLM's.
    """
    found: list[Span] = []
    relations = unusable = realigned = 0
    for item in results:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "relation":
            relations += 1
            continue
        if item.get("type") != "labels" or (from_name is not None and item.get("from_name") != from_name):
            continue
        span, moved = _region_span(item.get("value"), text, labels)
        if span is None:
            unusable += 1
        else:
            found.append(span)
            realigned += moved
    kept, dropped = resolve_overlaps(found)
    return SpanReading(kept, len(dropped), relations, unusable, realigned)


def _region_span(value: Any, text: str, labels: Sequence[str] | None) -> tuple[Span | None, bool]:
    if not isinstance(value, Mapping):
        return None, False
    names = value.get("labels")
    start, end = value.get("start"), value.get("end")
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
        return None, False
    if labels is not None and names[0] not in labels:
        return None, False
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        return None, False
    stored = value.get("text")
    if not isinstance(stored, str) or text[start:end] == stored:
        return span_at(text, start, end, names[0]), False
    nearest = _nearest_occurrence(text, stored, start)
    if nearest is None:
        return None, False
    return span_at(text, nearest, nearest + len(stored), names[0]), True


def _nearest_occurrence(text: str, needle: str, near: int) -> int | None:
    if not needle:
        return None
    places = [m.start() for m in re.finditer(re.escape(needle), text)]
    return min(places, key=lambda p: (abs(p - near), p)) if places else None


def region_id(span: Span) -> str:
    """A region id stable for the same span of the same task (LS keys regions by it; relations use it)."""
    return hashlib.sha1(f"{span.start}:{span.end}:{span.label}".encode()).hexdigest()[:10]


def labels_results(spans: Iterable[Span], from_name: str, to_name: str) -> list[dict[str, Any]]:
    """A prediction's `result` list: one `labels` region per span, with its score when it has one."""
    results = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        item: dict[str, Any] = {
            "id": region_id(span),
            "from_name": from_name,
            "to_name": to_name,
            "type": "labels",
            "value": {"start": span.start, "end": span.end, "text": span.text, "labels": [span.label]},
        }
        if span.score is not None:
            item["score"] = float(span.score)
        results.append(item)
    return results
