"""The Span value: a labelled stretch of a task's text, by character (code point) offsets. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """`text[start:end] == span.text` in the task text it belongs to; `end` is exclusive, as in LS.

    Two spans are equal when offsets, label and text are: `score` (a confidence in (0, 1], or None) is
    carried along but never compared.
    """

    start: int
    end: int
    label: str
    text: str
    score: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a span needs 0 <= start < end, got {self.start}..{self.end}")
        if len(self.text) != self.end - self.start:
            raise ValueError(f"span text {self.text!r} is not {self.end - self.start} characters long")

    @property
    def key(self) -> tuple[int, int, str]:
        """What entity-level scoring compares: offsets and type."""
        return (self.start, self.end, self.label)

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def with_score(self, score: float | None) -> Span:
        return Span(self.start, self.end, self.label, self.text, score)


def span_at(text: str, start: int, end: int, label: str, score: float | None = None) -> Span:
    """The span of `text` from start to end, its text cut from `text` (so it always matches)."""
    if end > len(text):
        raise ValueError(f"span {start}..{end} runs past the end of a {len(text)}-character text")
    return Span(start, end, label, text[start:end], score)


def resolve_overlaps(spans: Iterable[Span]) -> tuple[list[Span], list[Span]]:
    """Keep a set of non-overlapping spans; return (kept in text order, dropped in the order given).

    The rule: the longest span wins; among equally long ones the one that starts first; among those
    (the same stretch, twice) the one given first. NER spans in LS do not nest, and the longer mention
    usually holds the shorter ("New York City" over "York").
    """
    given = list(spans)
    order = sorted(range(len(given)), key=lambda i: (-(given[i].end - given[i].start), given[i].start, i))
    kept: list[Span] = []
    dropped_at: set[int] = set()
    for i in order:
        if any(given[i].overlaps(other) for other in kept):
            dropped_at.add(i)
        else:
            kept.append(given[i])
    return sorted(kept, key=lambda s: (s.start, s.end)), [given[i] for i in sorted(dropped_at)]


def check_spans(text: str, spans: Sequence[Span]) -> None:
    """Raise a ValueError unless every span lies in `text` and its text is `text[start:end]`."""
    for span in spans:
        if span.end > len(text) or text[span.start : span.end] != span.text:
            raise ValueError(f"span {span.start}..{span.end} {span.text!r} does not match the task text")
