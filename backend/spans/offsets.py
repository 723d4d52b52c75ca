"""LLM mentions -> character offsets in the exact task text. Pure.

An LLM names entities by their words ("Paris", LOC), not by offsets. `map_mentions` finds each one in
the text, so that every span it returns satisfies `text[span.start:span.end] == span.text`, the invariant
Label Studio needs to show a region where it belongs. The rules, in order:

1. **Labels.** A mention's label must be one of the config's labels; a label that differs only in case or
   surrounding spaces ("loc" for "LOC") is mapped to it, anything else is off-label and dropped.
2. **The k-th occurrence.** The model lists mentions in reading order, so the k-th time it names the same
   words (whatever the label, off-label namings included) means the k-th occurrence of them in the text.
   A mention named more often than it occurs is dropped as not found.
3. **Exact first.** Occurrences are searched case-sensitively, as written (spaces around the mention
   stripped), preferring whole-word matches: "US" is not found inside "USA" when a free-standing "US"
   exists. Only when there are fewer exact occurrences than k does the fallback run:
4. **Loose fallback.** Case-insensitive, any run of whitespace (newlines included) for a space, typographic
   quotes and dashes equal to their ASCII forms, composed or decomposed accents alike. The span's text
   is then the task text's own spelling ("Paris" in the text for "PARIS" in the answer). Counted as
   `fuzzy`. Mentions found by neither are hallucinated: dropped, counted as `not_found`.
5. **Overlaps.** Found spans that overlap are resolved by `resolve_overlaps`: the longest wins, then the
   first in the text; the others are dropped and counted as `overlapping`.

Offsets are Python string indices: code points, which is what LS stores (not the browser's UTF-16
units), so an emoji before a mention shifts it by one, not two.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from backend.spans.span import Span, resolve_overlaps, span_at


@dataclass(frozen=True)
class Mention:
    """What the LLM answered: the mention's words and its label, with a confidence if it gave one."""

    text: str
    label: str
    score: float | None = None


@dataclass(frozen=True)
class MentionMapping:
    spans: list[Span]  # kept, non-overlapping, in text order
    not_found: list[Mention] = field(default_factory=list)  # hallucinated, empty, or named too often
    off_label: list[Mention] = field(default_factory=list)
    overlapping: list[Span] = field(default_factory=list)  # found, then dropped for overlapping a kept span
    fuzzy: int = 0  # kept spans found only by the loose fallback

    @property
    def dropped(self) -> int:
        return len(self.not_found) + len(self.off_label) + len(self.overlapping)


def map_mentions(text: str, mentions: Iterable[Mention], labels: Sequence[str]) -> MentionMapping:
    """The spans of `mentions` in `text` under the rules of this module's docstring."""
    canonical = _label_lookup(labels)
    exact_seen: dict[str, int] = {}
    loose_seen: dict[str, int] = {}
    found: list[Span] = []
    fuzzy_ids: set[int] = set()
    not_found: list[Mention] = []
    off_label: list[Mention] = []
    for mention in mentions:
        words = mention.text.strip()
        exact_k = exact_seen[words] = exact_seen.get(words, 0) + 1
        loose_k = loose_seen[_loose_key(words)] = loose_seen.get(_loose_key(words), 0) + 1
        label = mention.label if mention.label in labels else canonical.get(mention.label.strip().casefold())
        if label is None:
            off_label.append(mention)
            continue
        located = _kth(_exact_occurrences(text, words), exact_k) if words else None
        fuzzy = located is None and bool(words)
        if fuzzy:
            located = _kth(_loose_occurrences(text, words), loose_k)
        if located is None:
            not_found.append(mention)
            continue
        span = span_at(text, located[0], located[1], label, mention.score)
        found.append(span)
        if fuzzy:
            fuzzy_ids.add(id(span))
    kept, overlapping = resolve_overlaps(found)
    return MentionMapping(kept, not_found, off_label, overlapping, sum(id(span) in fuzzy_ids for span in kept))


def _label_lookup(labels: Sequence[str]) -> dict[str, str]:
    """casefolded label -> the config's label, for labels that stay distinct once casefolded."""
    lookup: dict[str, str] = {}
    clashes: set[str] = set()
    for label in labels:
        key = label.strip().casefold()
        if key in lookup and lookup[key] != label:
            clashes.add(key)
        lookup[key] = label
    return {key: label for key, label in lookup.items() if key not in clashes}


def _kth(occurrences: list[tuple[int, int]], k: int) -> tuple[int, int] | None:
    return occurrences[k - 1] if len(occurrences) >= k else None


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _whole_word(text: str, start: int, end: int) -> bool:
    """No word character runs on across either edge of text[start:end] (edges that are punctuation,
    like the '#' of a hashtag, always count as whole)."""
    before = start == 0 or not (_is_word_char(text[start - 1]) and _is_word_char(text[start]))
    after = end == len(text) or not (_is_word_char(text[end - 1]) and _is_word_char(text[end]))
    return before and after


def _prefer_whole_words(text: str, matches: list[tuple[int, int]]) -> list[tuple[int, int]]:
    whole = [(s, e) for s, e in matches if _whole_word(text, s, e)]
    return whole or matches


def _exact_occurrences(text: str, words: str) -> list[tuple[int, int]]:
    return _prefer_whole_words(text, [m.span() for m in re.finditer(re.escape(words), text)])


# Characters an LLM writes in place of what the text has (or the other way round).
_EQUIVALENT = ("'\u2019\u2018\u02bc\u2032", '"\u201c\u201d\u201e\u2033', "-\u2010\u2011\u2012\u2013\u2014\u2212")
_CLASS_OF = {char: "[" + re.escape(group) + "]" for group in _EQUIVALENT for char in group}


def _loose_pattern(words: str) -> str:
    pieces = ["".join(_CLASS_OF.get(char) or re.escape(char) for char in piece) for piece in words.split()]
    return r"\s+".join(pieces)


def _loose_occurrences(text: str, words: str) -> list[tuple[int, int]]:
    forms = dict.fromkeys(unicodedata.normalize(form, words) for form in ("NFC", "NFD"))
    pattern = "|".join(f"(?:{_loose_pattern(form)})" for form in forms)
    matches = [m.span() for m in re.finditer(pattern, text, flags=re.IGNORECASE) if m.end() > m.start()]
    return _prefer_whole_words(text, matches)


def _loose_key(words: str) -> str:
    """What two namings share when the loose fallback would find them at the same places."""
    folded = unicodedata.normalize("NFC", " ".join(words.split())).casefold()
    return "".join(group[0] if (group := _group_of(char)) else char for char in folded)


def _group_of(char: str) -> str | None:
    return next((group for group in _EQUIVALENT if char in group), None)
