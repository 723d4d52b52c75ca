"""Tokens and dollars. Pure: a price table, usage arithmetic and a budget that says no in time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float


# List prices (USD per 1M tokens) as published by the providers; override with LLM_PRICES.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
}
FREE = Price(0.0, 0.0)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cached_requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.requests + other.requests,
            self.cached_requests + other.cached_requests,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def repeated_usage(prompt_tokens: int, completion_tokens: int, requests: int) -> Usage:
    """The usage of `requests` requests, each of `prompt_tokens` prompt and `completion_tokens` completion
    tokens (k yes/no questions about one item, k samples of one prompt)."""
    return Usage(prompt_tokens * requests, completion_tokens * requests, requests)


def price_for(model: str, prices: Mapping[str, Price] | None = None, local: bool = False) -> Price:
    """The model's price; a local model is free; an unknown hosted model is an error, not a silent $0."""
    if local:
        return FREE
    table = {**DEFAULT_PRICES, **(prices or {})}
    if model in table:
        return table[model]
    # "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini": the longest known prefix wins
    matches = [name for name in table if model.startswith(name)]
    if matches:
        return table[max(matches, key=len)]
    raise KeyError(f"no price for model {model!r}: add it to LLM_PRICES (USD per 1M input/output tokens)")


def dollars(usage: Usage, price: Price) -> float:
    return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000


def parse_prices(text: str) -> dict[str, Price]:
    """LLM_PRICES: "model=input/output,model2=input/output", USD per million tokens."""
    prices: dict[str, Price] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, pair = item.partition("=")
        inp, slash, out = pair.partition("/")
        try:
            if not (sep and slash and name.strip()):
                raise ValueError
            prices[name.strip()] = Price(float(inp), float(out))
        except ValueError:
            raise ValueError(f"LLM_PRICES item {item!r} is not model=input/output (USD per 1M tokens)") from None
    return prices


class BudgetExceeded(RuntimeError):
    pass


@dataclass(frozen=True)
class Budget:
    """A dollar limit; `None` means no limit."""

    limit: float | None

    def remaining(self, spent: float) -> float:
        return float("inf") if self.limit is None else max(0.0, self.limit - spent)

    def check(self, spent: float, next_cost: float) -> None:
        """Raise before a call that would take spending past the limit."""
        if self.limit is not None and spent + next_cost > self.limit:
            raise BudgetExceeded(
                f"the LLM budget of ${self.limit:.2f} is spent (${spent:.4f} used; the next call would cost "
                f"about ${next_cost:.4f})"
            )
