"""Confidence from what the model said: token logprobs, or agreement over samples. Pure.

With logprobs, the answer's label value is located in the generated text and the label distribution
is read from the alternatives the endpoint returns at each token of that value: an alternative that
only one label can continue goes to that label; the generated token is followed while several labels
share it ("Sport" for "Sports" and "Sportswear"); an alternative several labels share, which the
model did not take, is split evenly among them (the endpoint gives no deeper view); and mass on text
that no label starts with is dropped before normalizing: under constrained decoding that is what
the grammar does, since llama.cpp and vLLM report logprobs from before the constraint.

A label whose first token is not among the returned alternatives is not given zero: every unseen
token is at most as likely as the least likely alternative shown, and that bound is what it gets.
Without it, a model that puts 0.3% on "Positive" and nothing visible on "Negative" would be reported
100% sure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

VALUE_END = '"'


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = field(default=())


def _value(text: str) -> tuple[str, bool]:
    """The label text so far, and whether it has ended (a closing quote was generated)."""
    head, quote, _ = text.partition(VALUE_END)
    return head, bool(quote)


def _consistent(labels: Sequence[str], text: str) -> list[str]:
    value, ended = _value(text)
    return [label for label in labels if (label == value if ended else label.startswith(value))]


def label_distribution(
    tokens: Sequence[TokenLogprob], value_start: int, labels: Sequence[str]
) -> dict[str, float] | None:
    """P(label) from token logprobs, given where in the generated text the label value starts.

    Returns None when the tokens do not reach the value or no alternative names a label.
    """
    offset = 0
    first = None
    for i, token in enumerate(tokens):
        if offset + len(token.token) > value_start:
            first = i
            break
        offset += len(token.token)
    if first is None:
        return None
    lead = tokens[first].token[: value_start - offset]
    mass: Counter[str] = Counter()
    branch = 1.0  # probability of the generated path up to the current token
    generated = ""
    candidates = list(labels)
    unseen_bound = 0.0
    missing: list[str] = []
    for j in range(first, len(tokens)):
        token = tokens[j]
        alternatives = dict(token.top)
        alternatives.setdefault(token.token, token.logprob)
        piece = token.token[len(lead) :] if j == first else token.token
        for alt, logprob in alternatives.items():
            if j == first:
                if not alt.startswith(lead):
                    continue
                alt = alt[len(lead) :]
            if alt == piece:
                continue
            matching = _consistent(candidates, generated + alt)
            for label in matching:
                mass[label] += branch * math.exp(logprob) / len(matching)
        if j == first:
            shown = [alt[len(lead) :] for alt in alternatives if alt.startswith(lead)]
            unseen = [label for label in labels if not any(_consistent([label], alt) for alt in shown)]
            if unseen and token.top:
                unseen_bound = min(math.exp(lp) for _, lp in token.top)
                missing = unseen
        branch *= math.exp(token.logprob)
        generated += piece
        candidates = _consistent(candidates, generated)
        ended = _value(generated)[1]
        if len(candidates) == 1:  # the rest of the value is forced: its tokens say nothing more
            mass[candidates[0]] += branch
            break
        if not candidates:
            break
        if ended:
            break
    else:
        exact = [label for label in candidates if label == _value(generated)[0]]
        if exact:
            mass[exact[0]] += branch
    if sum(mass.values()) <= 0:
        return None
    for label in missing:
        mass[label] += unseen_bound
    total = sum(mass.values())
    return {label: mass[label] / total for label in labels}


def vote_distribution(answers: Sequence[tuple[str, ...] | None], labels: Sequence[str]) -> dict[str, float] | None:
    """Self-consistency for single-label answers: the share of k samples that gave each label.

    Unparseable samples count against every label (they are part of k), so a model that often fails
    to answer is not reported as sure.
    """
    if not answers:
        return None
    votes = Counter(answer[0] for answer in answers if answer)
    return {label: votes[label] / len(answers) for label in labels}


def set_agreement(answers: Sequence[tuple[str, ...] | None]) -> tuple[tuple[str, ...] | None, float]:
    """Multi-label self-consistency: the most frequent label set and the share of samples giving it."""
    sets = Counter(tuple(sorted(answer)) for answer in answers if answer)
    if not sets:
        return None, 0.0
    best, count = sets.most_common(1)[0]
    return best, count / len(answers)
