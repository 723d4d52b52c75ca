"""The LLM client: the openai SDK against any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp).

Retries with backoff and jitter on 408/409/429/5xx and timeouts, honouring Retry-After, are the SDK's
own (`max_retries`, few: the breaker is there); on top of that: a circuit breaker so that a dead endpoint
fails fast instead of stalling a queue, a wait budget that bounds the time a client (one job) spends on
requests that fail or hang, bounded concurrency for batches, a response cache, structured output with a
fallback for endpoints that refuse it, and confidence from logprobs or, without them, from k samples.
A scored prompt (prompts.build_prompt(scored=True)) is answered in one forward pass: one token, whose top
logprobs give the distribution over the labels (scoring.py); batches are sent grouped by prompt prefix,
so that a server's prefix cache reuses the instructions and few-shot turns from one request to the next.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import openai

from backend.labeling import TaskSpec
from backend.llm.confidence import TokenLogprob, label_distribution, set_agreement, vote_distribution
from backend.llm.cost import Usage
from backend.llm.parsing import parse_answer, parse_texts, value_offset
from backend.llm.prompts import FORMAT_STYLES, Prompt, generation_schema, prompt_key, response_format
from backend.llm.scoring import AMBIGUOUS_LIMIT, first_token_distribution

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_ATTEMPT_TIMEOUT = 0.1


class CircuitOpen(RuntimeError):
    """The endpoint failed repeatedly; calls are refused until the cool-down has passed."""


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive failures -> one trial call after `cooldown` seconds."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    def before_call(self) -> None:
        with self._lock:
            if self.opened_at is None:
                return
            waited = self.clock() - self.opened_at
            if waited < self.cooldown:
                raise CircuitOpen(
                    f"the LLM endpoint failed {self.failures} times in a row; retrying in "
                    f"{self.cooldown - waited:.0f} s"
                )
            self.opened_at = self.clock()  # half-open: let this one call through, hold the others

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = self.clock()


class WaitBudgetSpent(CircuitOpen):
    """The client spent its wait budget on requests that failed or hung; it asks nothing more."""


class WaitBudget:
    """Seconds a client may spend in all on requests that fail (time-outs, refused connections, 5xx),
    summed over concurrent requests; None: no bound. Successful requests spend nothing."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self._lock = threading.Lock()

    def remaining(self) -> float | None:
        with self._lock:
            return None if self.seconds is None else max(0.0, self.seconds - self.spent)

    def check(self) -> None:
        if self.remaining() == 0:
            raise WaitBudgetSpent(
                f"requests failed or hung for {self.spent:.1f} s, the wait budget is {self.seconds} s"
            )

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.spent += seconds


def attempt_timeout(timeout: float, remaining: float | None, retries: int) -> float:
    """Seconds each attempt of a request may take, so that the request with all its retries fits in what
    is left of the wait budget (the SDK's pauses between retries aside)."""
    if remaining is None:
        return timeout
    return max(MIN_ATTEMPT_TIMEOUT, min(timeout, remaining / (retries + 1)))


class Cache(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...


@dataclass
class Completion:
    """What we keep of one chat completion (also what the cache stores)."""

    text: str
    tokens: list[TokenLogprob] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str) -> Completion:
        data = json.loads(raw)
        tokens = [TokenLogprob(t["token"], t["logprob"], tuple(tuple(a) for a in t["top"])) for t in data["tokens"]]
        return cls(data["text"], tokens, data["prompt_tokens"], data["completion_tokens"])


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
class LLMConfig:
    base_url: str
    model: str
    api_key: str = "not-needed"
    timeout: float = 60.0
    max_retries: int = 2
    wait_budget: float | None = None  # seconds this client may spend on failing requests in all (WaitBudget)
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 64
    top_logprobs: int = 20
    samples: int = 5  # self-consistency samples when the endpoint returns no logprobs
    sample_temperature: float = 0.8
    # structured output styles to try, in order, until the endpoint accepts one (see prompts.response_format)
    formats: tuple[str, ...] = FORMAT_STYLES


class LLMClient:
    def __init__(self, config: LLMConfig, cache: Cache | None = None, breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self.cache = cache
        self.breaker = breaker or CircuitBreaker()
        self.sdk = openai.OpenAI(
            base_url=config.base_url, api_key=config.api_key, timeout=config.timeout, max_retries=config.max_retries
        )
        self.wait = WaitBudget(config.wait_budget)
        self.stop_reason: str | None = None  # why a batch stopped early (circuit open, wait budget spent)
        self._formats = list(config.formats)
        self._logprobs = True
        self._coded: set[tuple[str, ...]] = set()  # label sets whose names share first tokens: answered by codes

    # -- one request ------------------------------------------------------------------------------

    def _complete(
        self,
        messages: list[dict[str, str]],
        spec: TaskSpec | None,
        temperature: float,
        salt: int,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        structured: bool = True,
    ) -> tuple[Completion, bool]:
        """One chat completion (or its cached copy): the answer constrained to `spec`'s labels, or to
        `schema` when given; free text when not `structured`."""
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens or self.config.max_tokens}
        if self._logprobs:
            params.update(logprobs=True, top_logprobs=self.config.top_logprobs)
        if self._formats and structured:
            params["response_format"] = response_format(spec, self._formats[0], schema)
        key = prompt_key(self.config.model, messages, {**params, "sample": salt})
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return Completion.loads(hit), True
        self.breaker.before_call()
        self.wait.check()
        timeout = attempt_timeout(self.config.timeout, self.wait.remaining(), self.config.max_retries)
        started = time.monotonic()
        try:
            response = self.sdk.chat.completions.create(  # type: ignore[arg-type]
                model=self.config.model, messages=messages, timeout=timeout, **params
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
            if self._formats and _refuses(exc, ("response_format", "json_schema")):
                refused = self._formats.pop(0)
                log.warning(
                    "the endpoint refuses %s output; trying %s", refused, self._formats[0] if self._formats else "none"
                )
                return self._complete(messages, spec, temperature, salt, schema, max_tokens, structured)
            if self._logprobs and _refuses(exc, ("logprob",)):
                log.warning("the endpoint refuses logprobs; confidence will come from agreement over samples")
                self._logprobs = False
                return self._complete(messages, spec, temperature, salt, schema, max_tokens, structured)
            if isinstance(exc, openai.InternalServerError):
                self._failed(started)
            else:
                self.breaker.success()  # the endpoint answered: a bad request is ours, not an outage
            raise
        except Exception:  # timeouts, refused connections, 5xx after the SDK's retries, garbage bodies
            self._failed(started)
            raise
        try:
            completion = _completion(response)
        except (AttributeError, IndexError, TypeError, ValueError):
            self._failed(started)
            raise
        self.breaker.success()
        if self.cache is not None:
            self.cache.set(key, completion.dumps())
        return completion, False

    def _failed(self, started: float) -> None:
        self.breaker.failure()
        self.wait.spend(time.monotonic() - started)

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
        structured = not prompt.keys  # a scored prompt asks for the bare key, which a JSON grammar would forbid
        try:
            if prompt.keys and self._logprobs and not spec.multi_label:
                scored, usage = self._score(spec, prompt, usage, texts)
                if scored is not None:
                    return scored
            if self._logprobs and not prompt.keys:
                first, cached = self._complete(prompt.messages, spec, self.config.temperature, 0)
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
                sample, cached = self._complete(prompt.messages, spec, temperature, salt, structured=structured)
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
        completion, cached = self._complete(prompt.messages, spec, self.config.temperature, 0, None, 1, False)
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
                prompt.messages, None, temperature, salt, generation_schema(count), max_tokens
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
        answers = self._map(lambda prompt: self.annotate(spec, prompt), [prompts[i] for i in order], progress)
        results: list[LLMAnswer | None] = [None] * len(prompts)
        for position, i in enumerate(order):
            results[i] = answers[position]
        return results

    def _map(
        self, call: Callable[[Prompt], T], prompts: Sequence[Prompt], progress: Callable[[int, int], None] | None = None
    ) -> list[T | None]:
        results: list[T | None] = [None] * len(prompts)
        stop = threading.Event()
        done = 0
        lock = threading.Lock()

        def work(i: int) -> None:
            nonlocal done
            if stop.is_set():
                return
            try:
                results[i] = call(prompts[i])
            except CircuitOpen as exc:
                log.error("stopping this batch: %s", exc)
                self.stop_reason = str(exc)
                stop.set()
                return
            with lock:
                done += 1
                if progress is not None:
                    progress(done, len(prompts))

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            list(pool.map(work, range(len(prompts))))
        return results


# llama-cpp-python answers 500, with the validation error, to a parameter it does not know (OpenAI and vLLM
# answer 400); a 500 without such words is an outage, whatever parameter its message mentions
_REFUSED_IN_500 = ("validation", "input should be", "literal_error", "not supported", "unsupported", "not implemented")


def _refuses(exc: openai.APIStatusError, parameter: tuple[str, ...]) -> bool:
    """Whether the endpoint refuses a request parameter for good, not just failed while serving it."""
    message = str(exc).lower()
    if not any(name in message for name in parameter):
        return False
    return not isinstance(exc, openai.InternalServerError) or any(word in message for word in _REFUSED_IN_500)


def _completion(response: Any) -> Completion:
    choice = response.choices[0]
    text = choice.message.content or ""
    tokens: list[TokenLogprob] = []
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    for item in content:
        top = tuple((alt.token, float(alt.logprob)) for alt in (item.top_logprobs or []))
        tokens.append(TokenLogprob(item.token, float(item.logprob), top))
    usage = getattr(response, "usage", None)
    return Completion(
        text,
        tokens,
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
    )


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
