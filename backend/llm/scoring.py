"""Scoring labels instead of sampling them: the label distribution from the first answer token. Pure.

A scored prompt asks for the label alone (its "key": the label's own name, or a letter code), so that the
first generated token starts the answer; one forward pass then gives, in that token's top logprobs, the
model's whole distribution over the labels. An alternative token belongs to every key it can start
("Pos" and " positive" both to "Positive": case and leading-space variants are summed).

A token that can start several keys goes to those of them that are not shown whole elsewhere in the list:
where "Negative" is a token of its own, the tokenizer spells "Negative" with it, so "Ne" starts "Neutral"
(SmolLM2 does exactly this). Keys that one token still starts ("Sports" and "Sportswear", "Not spam" and
"Not sure") cannot be told apart by that token. Such label sets are answered with letter codes instead
(A, B, C...), which every tokenizer keeps apart: chosen up front when the labels' first words are equal or
one is a prefix of the other, and on evidence when over 5% of the label mass falls on tokens several keys
still share (a tokenizer may merge what the text rule does not see).

Multi-label answers may be scored one label at a time (LLM_MULTILABEL_SCORING=yesno; JSON answers by
default): a yes/no question about each label, after the item, whose first answer token's top logprobs
give P(yes) (yes_probability); the answer is the set of labels at P(yes) >= 0.5, scored as the
probability of exactly that set under independent labels (label_set), as the multi-label student decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

CODES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
AMBIGUOUS_LIMIT = 0.05  # share of the label mass on shared tokens above which the keys are switched to codes
_FIRST_WORD = re.compile(r"\w+|\S")


def _first_word(label: str) -> str:
    match = _FIRST_WORD.search(label.casefold())
    return match.group() if match else ""


def names_collide(labels: Sequence[str]) -> bool:
    """Whether two labels' first words are equal or one is a prefix of the other: their first tokens may be one."""
    words = [_first_word(label) for label in labels]
    return any(i != j and b.startswith(a) for i, a in enumerate(words) for j, b in enumerate(words))


def scoreable(labels: Sequence[str]) -> bool:
    """Whether a label set can be scored: a letter code for each label when needed, and no empty label."""
    return 1 < len(labels) <= len(CODES) and all(label.strip() for label in labels)


def answer_keys(labels: Sequence[str], coded: bool) -> tuple[str, ...]:
    """What the model answers for each label: the label itself, or its letter code."""
    return tuple(CODES[: len(labels)]) if coded else tuple(label.strip() for label in labels)


def key_matches(token: str, keys: Sequence[str]) -> list[int]:
    """Indices of the keys `token` can start, or that it completes (with trailing punctuation: "A.", "Spam\\n")."""
    piece = token.strip().casefold()
    if not piece:
        return []
    return [i for i, key in enumerate(keys) if key.casefold().startswith(piece) or _completes(piece, key)]


def _completes(piece: str, key: str) -> bool:
    """Whether a (stripped, casefolded) token is the whole key, maybe with punctuation after it."""
    folded = key.casefold()
    return piece.startswith(folded) and not piece[len(folded) :][:1].isalnum()


@dataclass(frozen=True)
class Scored:
    distribution: dict[str, float]  # over the labels, summing to 1
    ambiguous: float  # share of the label mass on tokens that several keys start with


def first_token_distribution(
    top: Sequence[tuple[str, float]], keys: Sequence[str], labels: Sequence[str]
) -> Scored | None:
    """P(label) from the top logprobs (token, logprob) at the first answer token; None if no token starts a key.

    Mass on tokens that start no key is dropped (the model was asked for a key); a token several keys
    start goes to those not shown whole elsewhere, split evenly if still several. A label none of whose
    tokens is shown gets the least probability shown (no unseen token is more likely), so a model is
    never reported surer than its top-k allows.
    """
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys for {len(labels)} labels")
    mass = [0.0] * len(keys)
    seen: set[int] = set()
    shared = 0.0
    pieces = [token.strip().casefold() for token, _ in top]
    whole = {i for piece in pieces if piece for i, key in enumerate(keys) if _completes(piece, key)}
    for (token, logprob), piece in zip(top, pieces, strict=True):
        matches = key_matches(token, keys)
        if len(matches) > 1:  # a key shown whole elsewhere does not start with this shorter token
            matches = [i for i in matches if i not in whole or _completes(piece, keys[i])] or matches
        p = math.exp(logprob)
        if len(matches) > 1:
            shared += p
        for i in matches:
            mass[i] += p / len(matches)
            seen.add(i)
    named = sum(mass)
    if named <= 0:
        return None
    floor = min(math.exp(logprob) for _, logprob in top)
    for i in range(len(keys)):
        if i not in seen:
            mass[i] = floor
    total = sum(mass)
    return Scored({label: m / total for label, m in zip(labels, mass, strict=True)}, shared / named)


# -- multi-label: one yes/no question per label --------------------------------------------------------

YES, NO = "yes", "no"
# how multi-label prompts are answered: one JSON answer (the default), or a yes/no question per label
MultiLabelScoring = Literal["json", "yesno"]


def _yes_or_no(token: str) -> str | None:
    """Which answer a token is: "yes", "no" (any case, leading space, punctuation after it) or neither."""
    word = token.strip().casefold()
    for answer in (YES, NO):
        if word.startswith(answer) and not word[len(answer) :][:1].isalnum():
            return answer
    return None


def yes_probability(top: Sequence[tuple[str, float]]) -> float | None:
    """P(yes) from a yes/no question's first answer token: the top logprobs' "yes" variants ("Yes", " yes",
    "YES.") summed against the "no" variants, renormalised over the two. One of them not shown gets the
    least probability shown (no unseen token is likelier); None when neither is shown (no answer)."""
    mass = {YES: 0.0, NO: 0.0}
    for token, logprob in top:
        answer = _yes_or_no(token)
        if answer is not None:
            mass[answer] += math.exp(logprob)
    if mass[YES] <= 0 and mass[NO] <= 0:
        return None
    floor = min(math.exp(logprob) for _, logprob in top)
    yes, no = mass[YES] or floor, mass[NO] or floor
    return yes / (yes + no)


def label_set(p_yes: Sequence[float], labels: Sequence[str]) -> tuple[tuple[str, ...], float]:
    """The labels at P(yes) >= 0.5 (the likeliest one if none is), and the probability of exactly that set
    under independent labels: the rule the multi-label student decides by (student.model.decide)."""
    if not labels or len(p_yes) != len(labels):
        raise ValueError(f"{len(p_yes)} probabilities for {len(labels)} labels")
    chosen = [p >= 0.5 for p in p_yes]
    if not any(chosen):
        chosen[max(range(len(labels)), key=lambda i: p_yes[i])] = True
    score = math.prod(p if on else 1.0 - p for p, on in zip(p_yes, chosen, strict=True))
    return tuple(label for label, on in zip(labels, chosen, strict=True) if on), score
