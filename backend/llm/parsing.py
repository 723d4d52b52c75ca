"""Reading a label out of whatever the model answered. Pure, defensive, never off-label.

Structured output usually gives `{"label": "Positive"}`; small or unconstrained models also answer
`positive`, `Label: Positive.` or `I think it is Positive because ...`. Anything that cannot be mapped
to exactly the config's labels is None: the caller records a failed answer, it never writes a guess.
Free text that names a label is read as that label only when nothing casts doubt on it: a hedge anywhere
("maybe", "could be", "unsure"), a negation or a question in the sentence that names it ("not Negative",
"Negative? No."), or a sentence that answers it with a negation ("Negative. No.") make it no answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_VALUE = re.compile(r'"labels?"\s*:\s*\[?\s*"')
_STRIP = " \t\r\n\"'`.,;:!()[]{}*"  # not "?": "Negative?" is no answer
_SENTENCE = re.compile(r"[^.!?;\n]*(?:[.!?;\n]+|$)")
_NEGATION = re.compile(
    r"(?<!\w)(?:not|no|nope|never|neither|nor|none|nothing|without|hardly|cannot|wrong|incorrect)(?!\w)|n['\u2019]t(?!\w)",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"(?<!\w)(?:maybe|perhaps|possibly|possible|probably|likely|unlikely|might|could|may|unsure|uncertain|unclear"
    r"|ambiguous|guess|either|seems?|hard to say|difficult to say)(?!\w)",
    re.IGNORECASE,
)
_MASK = "\x00"


def value_offset(text: str) -> int | None:
    """Where the (first) label value starts in a JSON answer, for reading its token logprobs."""
    match = _VALUE.search(text)
    return match.end() if match else None


def _mentions(text: str, labels: Sequence[str]) -> tuple[list[tuple[str, int]], str]:
    """(label, position) of every whole-phrase mention, longest labels first so that "Not spam" is not also
    "Spam"; and the text with those mentions masked, so that a label's own words ("No") are never cues."""
    masked = text
    found: list[tuple[str, int]] = []
    for label in sorted(labels, key=len, reverse=True):
        for match in re.finditer(rf"(?<!\w){re.escape(label)}(?!\w)", masked, re.IGNORECASE):
            found.append((label, match.start()))
            masked = masked[: match.start()] + _MASK * len(label) + masked[match.end() :]
    return found, masked


def _doubted(mentions: Sequence[tuple[str, int]], masked: str) -> bool:
    """Whether anything in the text hedges, negates or questions the labels it mentions."""
    if _HEDGE.search(masked):
        return True
    after_a_label = False
    for sentence in _SENTENCE.finditer(masked):
        named = any(sentence.start() <= at < sentence.end() for _, at in mentions)
        if named and (_NEGATION.search(sentence.group()) or "?" in sentence.group()):
            return True
        if after_a_label and _NEGATION.match(sentence.group().strip()):
            return True  # "Negative. No." answers the label it follows
        after_a_label = after_a_label or named
    return False


def _named(candidate: str, labels: Sequence[str]) -> set[str]:
    """The labels one answer item names: itself (any case), else every label it names as a whole phrase,
    none when the item casts doubt on them."""
    cleaned = candidate.strip(_STRIP)
    if cleaned in labels:
        return {cleaned}
    folded = {label.casefold(): label for label in labels}
    if cleaned.casefold() in folded:
        return {folded[cleaned.casefold()]}
    mentions, masked = _mentions(cleaned, labels)
    if not mentions or _doubted(mentions, masked):
        return set()
    return {label for label, _ in mentions}


def _json_value(text: str) -> Any:
    start, end = text.find("{"), text.rfind("}")
    for candidate in (text, text[start : end + 1] if 0 <= start < end else None):
        if candidate is None:
            continue
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def parse_answer(text: str | None, labels: Sequence[str], multi_label: bool = False) -> tuple[str, ...] | None:
    """The labels the answer names, in config order; None when it names none or, single-label, several."""
    if not text or not text.strip():
        return None
    value = _json_value(text.strip())
    if isinstance(value, dict):
        value = next((value[key] for key in ("label", "labels", "answer", "choice") if key in value), None)
    if value is None:
        value = text
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        return None
    found = set().union(*(_named(item, labels) for item in items))
    if not found or (not multi_label and len(found) != 1):
        return None
    return tuple(label for label in labels if label in found)


def parse_texts(text: str | None, limit: int) -> list[str]:
    """The generated texts of a {"texts": [...]} answer (or a bare list), at most `limit`; [] if none."""
    value = _json_value(text or "")
    if isinstance(value, dict):
        value = value.get("texts")
    if not isinstance(value, list):
        return []
    return [item.strip() for item in value if isinstance(item, str) and item.strip()][:limit]
