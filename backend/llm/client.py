"""The LLM's task logic: labels for a task (annotate, annotate_many) and new texts (generate), over the
transport (transport.py: the openai SDK, retries, circuit breaker, wait budget, cache, structured-output
fallback), which knows nothing of labels. factory.py builds the client from the settings.

Confidence comes from logprobs or, without them, from k samples. A scored prompt
(prompts.build_prompt(scored=True)) is answered in one forward pass: one token, whose top logprobs give the
distribution over the labels (scoring.py); a yes/no prompt (multi-label with LLM_MULTILABEL_SCORING=yesno)
asks one question per label after the item, each a one-token request whose top logprobs give P(yes).
Batches are sent grouped by prompt prefix (an item's questions one after another), so that a server's
prefix cache reuses the instructions, few-shot turns and item from one request to the next.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.labeling import TaskSpec
from backend.llm.confidence import TokenLogprob, label_distribution, set_agreement, vote_distribution
from backend.llm.cost import Usage, repeated_usage
from backend.llm.parsing import parse_answer, parse_texts, value_offset
from backend.llm.prompts import Prompt, answer_schema, generation_schema
from backend.llm.scoring import AMBIGUOUS_LIMIT, first_token_distribution, label_set, yes_probability
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
    "YesNo",
    "attempt_timeout",
    "prefix_order",
    "yes_no_answer",
]

log = logging.getLogger(__name__)


@dataclass
class LLMAnswer:
    labels: tuple[str, ...] | None
    confidence: float | None  # raw: the model's own probability of `labels`, before calibration
    # over the labels (summing to 1); for "yesno" each label's own P(yes)
    distribution: dict[str, float] | None
    method: str  # "scored", "yesno", "logprobs", "votes" or "none"
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

    def estimated_usage(self, spec: TaskSpec, prompt: Prompt) -> Usage:
        """What `annotate` spends on `prompt` at most, before it is sent: each request's whole prompt and the
        completion tokens it asks for. A scored single-label prompt is one request for one token (its first
        token carries the label distribution), a yes/no prompt one such request per label, a JSON answer one
        request for `max_tokens`; where the endpoint gives no logprobs, the JSON prompt is sampled `samples`
        times."""
        if not self._logprobs:
            asked = prompt.fallback or prompt
            return repeated_usage(asked.estimated_tokens, self.config.max_tokens, self.config.samples)
        if prompt.questions:
            return repeated_usage(prompt.estimated_tokens, 1, len(prompt.questions))
        scored = prompt.keys and not spec.multi_label
        return repeated_usage(prompt.estimated_tokens, 1 if scored else self.config.max_tokens, 1)

    def annotate(self, spec: TaskSpec, prompt: Prompt) -> LLMAnswer:
        """Labels and raw confidence for one prompt; errors come back in the answer, never raised,
        except CircuitOpen, which tells a batch to stop early."""
        if prompt.questions:
            return self._annotate_yes_no(spec, prompt)
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
        scored = first_token_distribution(_first_token_top(completion), prompt.keys, spec.labels)
        if scored is not None and scored.ambiguous > AMBIGUOUS_LIMIT and prompt.coded is not None:
            log.info("labels %s share first tokens; asking by letter codes", list(spec.labels))
            self._coded.add(tuple(spec.labels))
            return self._score(spec, prompt.coded, usage, texts)
        if scored is None:
            return LLMAnswer(None, None, None, "scored", usage, texts, error="no top token starts a label"), usage
        best = max(spec.labels, key=lambda label: scored.distribution[label])
        return LLMAnswer((best,), scored.distribution[best], scored.distribution, "scored", usage, texts), usage

    def _annotate_yes_no(self, spec: TaskSpec, prompt: Prompt) -> LLMAnswer:
        """A yes/no prompt's questions one after another (the JSON fallback once the endpoint shows it gives
        no logprobs)."""
        asked: list[YesNo] = []
        for i in range(len(prompt.questions) if self._logprobs else 0):
            asked.append(self._ask(prompt, i))
            if asked[-1].no_logprobs:
                break
        return yes_no_answer(spec, asked) or self._fallback(spec, prompt, asked)

    def _ask(self, prompt: Prompt, i: int) -> YesNo:
        """P(yes) for label i of a yes/no prompt, from its one answer token's top logprobs; a failed request
        comes back as an error, except CircuitOpen."""
        try:
            completion, cached = self._complete(prompt.asking(i), self.config.temperature, 0, None, 1)
        except CircuitOpen:
            raise
        except Exception as exc:  # one bad answer must not stop a batch or kill a worker
            return YesNo(None, Usage(), "", error=f"{type(exc).__name__}: {exc}")
        usage = _usage(completion, cached)
        if not completion.tokens:
            self._logprobs = False
            return YesNo(None, usage, completion.text, no_logprobs=True)
        return YesNo(yes_probability(_first_token_top(completion)), usage, completion.text)

    def _fallback(self, spec: TaskSpec, prompt: Prompt, asked: Sequence[YesNo]) -> LLMAnswer:
        """A yes/no prompt the endpoint answered without logprobs: its JSON prompt, asked as `annotate` asks
        one, with the usage of the questions already sent added."""
        usage = sum((a.usage for a in asked), Usage())
        texts = [a.text for a in asked]
        if prompt.fallback is None:
            return LLMAnswer(None, None, None, "none", usage, texts, error="the endpoint gives no logprobs")
        answer = self.annotate(spec, prompt.fallback)
        answer.usage = usage + answer.usage
        answer.texts = texts + answer.texts
        return answer

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
        share the longest prefix a server can keep cached; a yes/no prompt's questions are requests of their
        own, sent one after another (they share the item too). Answered in the prompts' order."""
        order = prefix_order(prompts)
        ordered = [prompts[i] for i in order]
        if self._logprobs and any(prompt.questions for prompt in ordered):
            answers = self._annotate_questions(spec, ordered, progress)
        else:
            answers = self.transport.map(lambda prompt: self.annotate(spec, prompt), ordered, progress)
        results: list[LLMAnswer | None] = [None] * len(prompts)
        for position, i in enumerate(order):
            results[i] = answers[position]
        return results

    def _annotate_questions(
        self, spec: TaskSpec, prompts: Sequence[Prompt], progress: Callable[[int, int], None] | None
    ) -> list[LLMAnswer | None]:
        """Every yes/no question of every prompt as a request of its own, in order, through the transport's
        bounded pool; a prompt without questions is one request, answered whole. `progress` counts prompts."""
        requests = [(n, i) for n, prompt in enumerate(prompts) for i in range(len(prompt.questions) or 1)]
        left = [len(prompt.questions) or 1 for prompt in prompts]
        finished = 0
        lock = threading.Lock()

        def ask(request: tuple[int, int]) -> YesNo | LLMAnswer:
            nonlocal finished
            n, i = request
            result = self._ask(prompts[n], i) if prompts[n].questions else self.annotate(spec, prompts[n])
            with lock:
                left[n] -= 1
                finished += left[n] == 0
                if left[n] == 0 and progress is not None:
                    progress(finished, len(prompts))
            return result

        outcomes = self.transport.map(ask, requests)
        by_prompt: list[list[YesNo | LLMAnswer | None]] = [[] for _ in prompts]
        for (n, _), outcome in zip(requests, outcomes, strict=True):
            by_prompt[n].append(outcome)
        answers: list[LLMAnswer | None] = [None] * len(prompts)
        unscored: list[int] = []
        for n, got in enumerate(by_prompt):
            if any(outcome is None for outcome in got):  # the circuit opened before all were asked
                continue
            if not prompts[n].questions:
                answers[n] = got[0]  # type: ignore[assignment]
                continue
            answers[n] = yes_no_answer(spec, got)  # type: ignore[arg-type]
            if answers[n] is None:
                unscored.append(n)
        fallbacks = self.transport.map(lambda n: self._fallback(spec, prompts[n], by_prompt[n]), unscored)  # type: ignore[arg-type]
        for n, answer in zip(unscored, fallbacks, strict=True):
            answers[n] = answer
        return answers


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


def _first_token_top(completion: Completion) -> list[tuple[str, float]]:
    """The first answer token's top logprobs, the token generated among them even where the endpoint left
    it out."""
    first = completion.tokens[0]
    top = dict(first.top)
    top.setdefault(first.token, first.logprob)
    return list(top.items())


@dataclass
class YesNo:
    """One yes/no question's outcome: P(yes) (None: neither answer among the top tokens), what it cost."""

    p_yes: float | None
    usage: Usage
    text: str
    error: str | None = None
    no_logprobs: bool = False  # the endpoint answered without logprobs: the JSON fallback answers instead


def yes_no_answer(spec: TaskSpec, asked: Sequence[YesNo]) -> LLMAnswer | None:
    """A multi-label answer from one yes/no question per label (in label order): the labels at P(yes) >= 0.5
    (the likeliest if none is), scored as the probability of exactly that set (scoring.label_set), each
    label's P(yes) as the distribution. None when the endpoint gave no logprobs (or nothing was asked)."""
    if not asked or any(a.no_logprobs for a in asked):
        return None
    usage = sum((a.usage for a in asked), Usage())
    texts = [a.text for a in asked]
    failed = next((a.error for a in asked if a.error), None)
    if failed is not None:
        return LLMAnswer(None, None, None, "none", usage, texts, error=failed)
    unanswered = [label for label, a in zip(spec.labels, asked, strict=True) if a.p_yes is None]
    if unanswered:
        return LLMAnswer(None, None, None, "yesno", usage, texts,
                         error=f"neither yes nor no among the top tokens for {unanswered}")  # fmt: skip
    p_yes = [float(a.p_yes) for a in asked]  # type: ignore[arg-type]
    labels, score = label_set(p_yes, spec.labels)
    return LLMAnswer(labels, score, dict(zip(spec.labels, p_yes, strict=True)), "yesno", usage, texts)


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
