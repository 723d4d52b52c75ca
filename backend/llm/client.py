"""The LLM's task logic: labels for a task (annotate, annotate_many) and new texts (generate), over the
transport (transport.py: the openai SDK, retries, circuit breaker, wait budget, cache, structured-output
fallback), which knows nothing of labels. factory.py builds the client from the settings.

Confidence comes from logprobs or, without them, from k samples. A scored prompt
(prompts.build_prompt(scored=True)) is answered in one forward pass: one token, whose top logprobs give the
distribution over the labels (scoring.py); batches are sent grouped by prompt prefix, so that a server's
prefix cache reuses the instructions and few-shot turns from one request to the next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.labeling import TaskSpec
from backend.llm.confidence import TokenLogprob, label_distribution, set_agreement, vote_distribution
from backend.llm.cost import Usage
from backend.llm.parsing import parse_answer, parse_texts, value_offset
from backend.llm.prompts import Prompt, answer_schema, generation_schema
from backend.llm.scoring import AMBIGUOUS_LIMIT, first_token_distribution
from backend.llm.transport import (
    Cache,
    ChatTransport,
    CircuitBreaker,
    CircuitOpen,
    Completion,
    TransportConfig,
    WaitBudget,
    WaitBudgetSpent,
    attempt_timeout,
)

# what callers imported from here before the transport moved out
__all__ = [
    "Cache",
    "CircuitBreaker",
    "CircuitOpen",
    "Completion",
    "LLMAnswer",
    "LLMClient",
    "LLMConfig",
    "WaitBudget",
    "WaitBudgetSpent",
    "attempt_timeout",
    "prefix_order",
]

log = logging.getLogger(__name__)


@dataclass
class LLMAnswer:
    labels: tuple[str, ...] | None
    confidence: float | None  # raw: the model's own probability of `labels`, before calibration
    distribution: dict[str, float] | None
    method: str  # "scored", "logprobs", "votes" or "none"
    usage: Usage
    texts: list[str]
    error: str | None = None


@dataclass
class LLMConfig(TransportConfig):
    """The transport's endpoint and limits, and how the task logic asks."""

    temperature: float = 0.0
    max_tokens: int = 64
    samples: int = 5  # self-consistency samples when the endpoint returns no logprobs
    sample_temperature: float = 0.8


class LLMClient:
    def __init__(self, config: LLMConfig, cache: Cache | None = None, breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self.transport = ChatTransport(config, cache, breaker)
        self._coded: set[tuple[str, ...]] = set()  # label sets whose names share first tokens: answered by codes

    @property
    def cache(self) -> Cache | None:
        return self.transport.cache

    @cache.setter
    def cache(self, cache: Cache | None) -> None:
        self.transport.cache = cache

    @property
    def stop_reason(self) -> str | None:
        """Why the last batch stopped early (circuit open, wait budget spent); None when it did not."""
        return self.transport.stop_reason

    @property
    def _logprobs(self) -> bool:
        # the transport's: False once the endpoint refused logprobs or answered without them
        return self.transport.logprobs

    @_logprobs.setter
    def _logprobs(self, value: bool) -> None:
        self.transport.logprobs = value

    # -- one request ------------------------------------------------------------------------------

    def _complete(
        self,
        messages: list[dict[str, str]],
        temperature: float,
        salt: int,
        schema: dict[str, Any] | None,
        max_tokens: int | None = None,
    ) -> tuple[Completion, bool]:
        """One chat completion (or its cached copy, then True), constrained to `schema`, free text without."""
        return self.transport.complete(messages, temperature, salt, schema, max_tokens or self.config.max_tokens)

    # -- one task ---------------------------------------------------------------------------------

    def completion_tokens(self, spec: TaskSpec, prompt: Prompt) -> int:
        """The completion tokens `annotate` asks for on `prompt`: one for a scored single-label prompt (its
        first token carries the label distribution), `max_tokens` for a JSON answer, and `max_tokens` for
        each of the samples where the endpoint gives no logprobs."""
        if not self._logprobs:
            return self.config.samples * self.config.max_tokens
        return 1 if prompt.keys and not spec.multi_label else self.config.max_tokens

    def annotate(self, spec: TaskSpec, prompt: Prompt) -> LLMAnswer:
        """Labels and raw confidence for one prompt; errors come back in the answer, never raised,
        except CircuitOpen, which tells a batch to stop early."""
        usage = Usage()
        texts: list[str] = []
        # a scored prompt asks for the bare key, which a JSON grammar would forbid
        schema = None if prompt.keys else answer_schema(spec)
        try:
            if prompt.keys and self._logprobs and not spec.multi_label:
                scored, usage = self._score(spec, prompt, usage, texts)
                if scored is not None:
                    return scored
            if self._logprobs and not prompt.keys:
                first, cached = self._complete(prompt.messages, self.config.temperature, 0, schema)
                usage += _usage(first, cached)
                texts.append(first.text)
                labels = parse_answer(first.text, spec.labels, spec.multi_label)
                if first.tokens:  # the endpoint gives logprobs: more samples would cost k times as much
                    return _logprob_answer(spec, first, labels, usage, texts)
                answers, start = [labels], 1
            else:  # no logprobs: ask k samples and measure agreement
                answers, start = [], 0
            for salt in range(start, self.config.samples):
                temperature = self.config.temperature if salt == 0 else self.config.sample_temperature
                sample, cached = self._complete(prompt.messages, temperature, salt, schema)
                usage += _usage(sample, cached)
                texts.append(sample.text)
                answers.append(_parse_keyed(sample.text, spec, prompt.keys))
        except CircuitOpen:
            raise
        except Exception as exc:  # one bad answer must not stop a batch or kill a worker
            return LLMAnswer(None, None, None, "none", usage, texts, error=f"{type(exc).__name__}: {exc}")
        if spec.multi_label:
            best, share = set_agreement(answers)
            return LLMAnswer(best, share if best else None, None, "votes", usage, texts,
                             error=None if best else "no parseable answer")  # fmt: skip
        votes = vote_distribution(answers, spec.labels)
        if not votes or max(votes.values()) == 0:
            return LLMAnswer(None, None, votes, "votes", usage, texts, error="no answer named a label")
        best_label = max(spec.labels, key=lambda label: votes[label])
        return LLMAnswer((best_label,), votes[best_label], votes, "votes", usage, texts)

    def _score(self, spec: TaskSpec, prompt: Prompt, usage: Usage, texts: list[str]) -> tuple[LLMAnswer | None, Usage]:
        """The label distribution from the first answer token of a scored prompt, and the usage so far; no
        answer when the endpoint returned no logprobs (the caller samples instead). Label names that turn
        out to share first tokens are asked again, and from then on, by letter codes."""
        if prompt.coded is not None and tuple(spec.labels) in self._coded:
            prompt = prompt.coded
        completion, cached = self._complete(prompt.messages, self.config.temperature, 0, None, 1)
        usage += _usage(completion, cached)
        texts.append(completion.text)
        if not completion.tokens:
            self._logprobs = False
            return None, usage
        first = completion.tokens[0]
        top = dict(first.top)
        top.setdefault(first.token, first.logprob)
        scored = first_token_distribution(list(top.items()), prompt.keys, spec.labels)
        if scored is not None and scored.ambiguous > AMBIGUOUS_LIMIT and prompt.coded is not None:
            log.info("labels %s share first tokens; asking by letter codes", list(spec.labels))
            self._coded.add(tuple(spec.labels))
            return self._score(spec, prompt.coded, usage, texts)
        if scored is None:
            return LLMAnswer(None, None, None, "scored", usage, texts, error="no top token starts a label"), usage
        best = max(spec.labels, key=lambda label: scored.distribution[label])
        return LLMAnswer((best,), scored.distribution[best], scored.distribution, "scored", usage, texts), usage

    def generate(
        self, prompt: Prompt, count: int, max_tokens: int = 1024, temperature: float = 0.9, salt: int = 0
    ) -> tuple[list[str], Usage, str | None]:
        """Up to `count` new texts for a generation prompt, its usage and an error (None when it worked).

        Sampled warm for variety; `salt` tells samples of the same prompt apart, so the cache keeps them
        distinct and a re-run with the same salt gets the same texts back."""
        try:
            completion, cached = self._complete(
                prompt.messages, temperature, salt, generation_schema(count), max_tokens
            )
        except CircuitOpen:
            raise
        except Exception as exc:
            log.warning("generation failed: %s", exc)
            return [], Usage(), f"{type(exc).__name__}: {exc}"
        texts = parse_texts(completion.text, count)
        return texts, _usage(completion, cached), None if texts else "the answer held no texts"

    def annotate_many(
        self, spec: TaskSpec, prompts: Sequence[Prompt], progress: Callable[[int, int], None] | None = None
    ) -> list[LLMAnswer | None]:
        """Annotate in parallel (bounded); a None item was not attempted because the circuit opened.

        Sent in prompt-prefix order (instructions, labels, few-shot turns), so that consecutive requests
        share the longest prefix a server can keep cached; answered in the prompts' order."""
        order = prefix_order(prompts)
        answers = self.transport.map(lambda prompt: self.annotate(spec, prompt), [prompts[i] for i in order], progress)
        results: list[LLMAnswer | None] = [None] * len(prompts)
        for position, i in enumerate(order):
            results[i] = answers[position]
        return results


def _usage(completion: Completion, cached: bool) -> Usage:
    if cached:
        return Usage(0, 0, 1, cached_requests=1)
    return Usage(completion.prompt_tokens, completion.completion_tokens, 1)


def _logprob_answer(
    spec: TaskSpec, first: Completion, labels: tuple[str, ...] | None, usage: Usage, texts: list[str]
) -> LLMAnswer:
    """The answer and its confidence from one completion's logprobs: the label distribution where the
    label value can be located, else the probability of the generated answer as a whole."""
    if labels is None:
        return LLMAnswer(None, None, None, "logprobs", usage, texts, error="the answer named no label")
    offset = value_offset(first.text)
    if not spec.multi_label and offset is not None:
        distribution = label_distribution(first.tokens, offset, spec.labels)
        if distribution is not None:
            return LLMAnswer(labels, distribution[labels[0]], distribution, "logprobs", usage, texts)
    return LLMAnswer(labels, _sequence_probability(first.tokens), None, "logprobs", usage, texts)


def prefix_order(prompts: Sequence[Prompt]) -> list[int]:
    """Indices of `prompts` sorted by prefix (stable): the same prefixes together, and neighbours sharing the
    longest part of theirs (same instructions, then the same first examples) next to each other."""
    return sorted(range(len(prompts)), key=lambda i: prompts[i].prefix())


def _parse_keyed(text: str, spec: TaskSpec, keys: Sequence[str]) -> tuple[str, ...] | None:
    """The labels a sampled answer names: by JSON or label names, or, for a coded prompt, by its codes."""
    if not keys or tuple(keys) == tuple(label.strip() for label in spec.labels):
        return parse_answer(text, spec.labels, spec.multi_label)
    named = parse_answer(text, keys, spec.multi_label)
    label_of = dict(zip(keys, spec.labels, strict=True))
    return tuple(label_of[key] for key in named) if named else None


def _sequence_probability(tokens: Sequence[TokenLogprob]) -> float:
    return float(math.exp(sum(t.logprob for t in tokens)))
