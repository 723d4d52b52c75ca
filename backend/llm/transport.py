"""Chat completions from any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp): the transport,
which knows nothing of labels or tasks (client.py asks it for those).

Retries with backoff and jitter on 408/409/429/5xx and timeouts, honouring Retry-After, are the SDK's
own (`max_retries`, few: the breaker is there); on top of that: a circuit breaker so that a dead endpoint
fails fast instead of stalling a queue, a wait budget that bounds the time a transport (one job) spends
on requests that fail or hang, bounded concurrency for batches, a response cache, and structured output
and logprobs that fall back, for good, when the endpoint refuses them (json_schema -> json_object -> none).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import openai

from backend.llm.confidence import TokenLogprob
from backend.llm.prompts import FORMAT_STYLES, prompt_key, response_format

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")
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
    """The transport spent its wait budget on requests that failed or hung; it asks nothing more."""


class WaitBudget:
    """Seconds a transport may spend in all on requests that fail (time-outs, refused connections, 5xx),
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
class TransportConfig:
    base_url: str
    model: str
    api_key: str = "not-needed"
    timeout: float = 60.0
    max_retries: int = 2
    wait_budget: float | None = None  # seconds this transport may spend on failing requests in all (WaitBudget)
    concurrency: int = 4
    top_logprobs: int = 20
    # structured output styles to try, in order, until the endpoint accepts one (see prompts.response_format)
    formats: tuple[str, ...] = FORMAT_STYLES


class ChatTransport:
    """One endpoint and model: chat completions, cached, behind the breaker and the wait budget."""

    def __init__(
        self, config: TransportConfig, cache: Cache | None = None, breaker: CircuitBreaker | None = None
    ) -> None:
        self.config = config
        self.cache = cache
        self.breaker = breaker or CircuitBreaker()
        self.sdk = openai.OpenAI(
            base_url=config.base_url, api_key=config.api_key, timeout=config.timeout, max_retries=config.max_retries
        )
        self.wait = WaitBudget(config.wait_budget)
        self.stop_reason: str | None = None  # why a batch stopped early (circuit open, wait budget spent)
        self.formats = list(config.formats)  # the styles still to try; the first is the one in use
        self.logprobs = True  # False once the endpoint refused them or answered without them

    def complete(
        self,
        messages: list[dict[str, str]],
        temperature: float,
        salt: int,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> tuple[Completion, bool]:
        """One chat completion, or its cached copy (then True): constrained to the JSON `schema` while the
        endpoint takes a structured-output style, free text when `schema` is None. `salt` tells samples
        of the same request apart in the cache."""
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if self.logprobs:
            params.update(logprobs=True, top_logprobs=self.config.top_logprobs)
        if self.formats and schema is not None:
            params["response_format"] = response_format(None, self.formats[0], schema)
        key = prompt_key(self.config.model, messages, {**params, "sample": salt})
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return Completion.loads(hit), True
        completion = self._request(messages, params)
        if completion is None:  # the endpoint refused a parameter for good: ask again without it
            return self.complete(messages, temperature, salt, schema, max_tokens)
        if self.cache is not None:
            self.cache.set(key, completion.dumps())
        return completion, False

    def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion | None:
        """The request itself; None when the endpoint refused a structured-output style or logprobs, which
        are then dropped."""
        self.breaker.before_call()
        self.wait.check()
        timeout = attempt_timeout(self.config.timeout, self.wait.remaining(), self.config.max_retries)
        started = time.monotonic()
        try:
            response = self.sdk.chat.completions.create(  # type: ignore[arg-type]
                model=self.config.model, messages=messages, timeout=timeout, **params
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
            if self.formats and _refuses(exc, ("response_format", "json_schema")):
                refused = self.formats.pop(0)
                log.warning(
                    "the endpoint refuses %s output; trying %s", refused, self.formats[0] if self.formats else "none"
                )
                return None
            if self.logprobs and _refuses(exc, ("logprob",)):
                log.warning("the endpoint refuses logprobs; confidence will come from agreement over samples")
                self.logprobs = False
                return None
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
        return completion

    def _failed(self, started: float) -> None:
        self.breaker.failure()
        self.wait.spend(time.monotonic() - started)

    def map(
        self, call: Callable[[Item], T], items: Sequence[Item], progress: Callable[[int, int], None] | None = None
    ) -> list[T | None]:
        """`call` on every item, `concurrency` at a time, in the items' order; an item left None was not
        attempted because the circuit opened (`stop_reason` says why)."""
        results: list[T | None] = [None] * len(items)
        stop = threading.Event()
        done = 0
        lock = threading.Lock()

        def work(i: int) -> None:
            nonlocal done
            if stop.is_set():
                return
            try:
                results[i] = call(items[i])
            except CircuitOpen as exc:
                log.error("stopping this batch: %s", exc)
                self.stop_reason = str(exc)
                stop.set()
                return
            with lock:
                done += 1
                if progress is not None:
                    progress(done, len(items))

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            list(pool.map(work, range(len(items))))
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
