"""Synthetic tasks where the student is weak: plan, generate, filter, push to LS with provenance.

`plan_generation` reads nothing and calls nothing: from the project's human labels it picks the targets,
builds the prompts and bounds the cost, which is all a dry run shows. `generate` then asks the LLM,
filters what comes back (length, duplicates against the project and each other, texts the LLM cannot
itself label as their target) and imports the rest in batches. Each task's key is the hash of its text
and its batch id is the hash of the inputs, so a re-run finds what an earlier run created: nothing is
created twice, and a run that failed half-way resumes. With the same LLM cache the same inputs give the
same texts back.

The generating model never labels what it wrote: `check` answers are used to filter, never stored or
shown, and the pre-annotation job skips tasks whose generator is its own model.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backend.labeling import Example, TaskSpec
from backend.llm.client import LLMClient
from backend.llm.cost import Price, Usage, dollars
from backend.llm.prompts import Prompt, build_prompt, generation_prompt
from backend.llm.transport import CircuitOpen
from backend.synthetic.assess import weakest
from backend.synthetic.filters import Filtered, Rejected, consistent, filter_texts
from backend.synthetic.provenance import Provenance, batch_id, content_hash, synthetic_task, text_key
from backend.synthetic.targets import Target

CHECK_CALLS_BOUND = 5  # one call with logprobs, up to LLMConfig.samples calls without


@dataclass(frozen=True)
class GenerateOptions:
    targets: int = 3  # how many weak labels / confused pairs to write for
    per_target: int = 10  # texts asked for per target (before filtering)
    per_call: int = 5  # texts per LLM request
    examples: int = 4  # real examples of the target in each prompt
    label: str | None = None  # write for this label only, whatever the assessment says
    check: bool = True  # keep only texts the LLM itself labels as their target (filtering, never labelling)
    min_agreement: float = 0.6  # the LLM's probability (or share of sampled votes) for the target
    min_chars: int = 20
    max_chars: int = 1000
    max_tokens_per_call: int = 1024
    max_dollars: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class PlannedCall:
    target: Target
    prompt: Prompt
    salt: int
    count: int


@dataclass
class GenerationPlan:
    generator: str
    batch: str
    targets: list[Target]
    calls: list[PlannedCall]
    max_usage: Usage  # an upper bound: every call answering at its token limit, every check answered
    max_dollars: float

    def lines(self) -> list[str]:
        out = [f"generator {self.generator}, batch {self.batch}: {len(self.calls)} requests"]
        for target in self.targets:
            asked = sum(c.count for c in self.calls if c.target == target)
            out.append(f"  {target}: {asked} texts ({target.reason})")
        out.append(f"cost at most {self.max_usage.prompt_tokens} prompt + {self.max_usage.completion_tokens} "
                   f"completion tokens, ${self.max_dollars:.4f}")  # fmt: skip
        return out


@dataclass
class GenerationReport:
    plan: GenerationPlan
    generated: int = 0
    filtered: Filtered = field(default_factory=Filtered)
    created: int = 0
    already_in_project: int = 0
    failed_calls: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    tasks: list[dict[str, Any]] = field(default_factory=list)  # what was (or, in a dry run, would be) pushed

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{n} {why}" for why, n in self.filtered.reasons().items()) or "none"
        return [
            f"generated {self.generated} texts, kept {len(self.filtered.kept)}, rejected {len(self.filtered.rejected)} "
            f"({reasons})",
            f"created {self.created} tasks, {self.already_in_project} already in the project",
            f"spent {self.usage.prompt_tokens} prompt + {self.usage.completion_tokens} completion tokens, "
            f"${self.dollars:.4f}",
        ] + [f"failed request: {error}" for error in self.failed_calls]


def plan_generation(
    spec: TaskSpec,
    project_id: int,
    human: Sequence[Example],
    generator: str,
    price: Price,
    options: GenerateOptions = GenerateOptions(),
) -> GenerationPlan:
    """Targets, prompts and the cost bound for one generation batch. Raises ValueError when there is
    nothing sensible to ask for."""
    real = [e for e in human if not e.synthetic]
    if options.label is not None:
        if options.label not in spec.labels:
            raise ValueError(f"--label {options.label!r} is not a label of the config: {', '.join(spec.labels)}")
        targets = [Target(options.label, None, 0.0, "asked for")]
    else:
        targets = weakest(spec, real, [e for e in human if e.synthetic], options.targets, options.seed)
    if not targets:
        raise ValueError("no weak label to write for: every label is well covered and recalled")
    rng = random.Random(options.seed)
    calls: list[PlannedCall] = []
    for target in targets:
        own = [e.text for e in real if target.label in e.labels]
        other = [e.text for e in real if target.contrast and target.contrast in e.labels]
        remaining = options.per_target
        for salt in range(math.ceil(options.per_target / max(1, options.per_call))):
            count = min(options.per_call, remaining)
            remaining -= count
            shown = rng.sample(own, min(options.examples, len(own)))
            contrast = rng.sample(other, min(2, len(other)))
            prompt = generation_prompt(spec, target.label, count, shown, target.contrast, contrast)
            calls.append(PlannedCall(target, prompt, salt, count))
    checks = options.per_target * len(targets) * CHECK_CALLS_BOUND if options.check else 0
    check_tokens = 120 + options.max_chars // 4  # a label prompt around one text, answered in a few tokens
    usage = Usage(
        prompt_tokens=sum(c.prompt.estimated_tokens for c in calls) + checks * check_tokens,
        completion_tokens=len(calls) * options.max_tokens_per_call + checks * 16,
    )
    batch = batch_id(project_id, generator, targets, options.per_target, options.seed)
    return GenerationPlan(generator, batch, targets, calls, usage, dollars(usage, price))


def generate(
    plan: GenerationPlan,
    spec: TaskSpec,
    client: LLMClient,
    price: Price,
    project_texts: Sequence[str],
    existing_keys: set[str],
    push: Callable[[list[dict[str, Any]]], int] | None,
    options: GenerateOptions = GenerateOptions(),
    push_batch: int = 100,
    progress: Callable[[str], None] = lambda message: None,
) -> GenerationReport:
    """Run the plan. `push` imports tasks into LS (None: a dry run that calls nothing and pushes nothing).
    Raises ValueError when the plan's cost bound exceeds `options.max_dollars`."""
    report = GenerationReport(plan)
    if options.max_dollars is not None and plan.max_dollars > options.max_dollars:
        raise ValueError(f"this batch may cost up to ${plan.max_dollars:.4f}, over --max-dollars "
                         f"{options.max_dollars}; ask for fewer texts or raise the limit")  # fmt: skip
    if push is None:
        return report
    candidates: list[tuple[Target, str, str]] = []  # (target, text, prompt hash), in the plan's order
    answers, down = _ask(plan.calls, client, options.max_tokens_per_call, progress)
    for call, answer in zip(plan.calls, answers, strict=True):
        if answer is None:
            continue
        texts, usage, error = answer
        report.usage += usage
        if error:
            report.failed_calls.append(f"{call.target}: {error}")
        prompt_hash = content_hash(call.prompt.messages)
        candidates += [(call.target, text, prompt_hash) for text in texts]
    if down is not None:  # the endpoint is down: keep what came back, say what did not
        report.failed_calls.append(f"{sum(a is None for a in answers)} requests not sent: {down}")
    report.generated = len(candidates)
    # what an earlier run of the same batch already created is recognised by its key, not re-judged
    fresh: list[tuple[Target, str, str]] = []
    seen: set[str] = set()
    repeated: list[Rejected] = []
    for target, text, prompt_hash in candidates:
        key = text_key(text)
        if key in seen:
            repeated.append(Rejected(text, "exact duplicate: of another generated text"))
        elif key in existing_keys:
            report.already_in_project += 1
        else:
            fresh.append((target, text, prompt_hash))
        seen.add(key)
    report.filtered = filter_texts([text for _, text, _ in fresh], project_texts, options.min_chars,
                                   options.max_chars)  # fmt: skip
    report.filtered.rejected[:0] = repeated
    kept = set(report.filtered.kept)
    chosen = [(target, text, prompt_hash) for target, text, prompt_hash in fresh if text.strip() in kept]
    if options.check and chosen:
        progress(f"checking {len(chosen)} texts: can the LLM label them as their target?")
        chosen = _consistent(chosen, spec, client, options, report)
    tasks = [synthetic_task(spec.data_key, text, Provenance(plan.generator, target.label, plan.batch, prompt_hash,
                                                            target.contrast))
             for target, text, prompt_hash in chosen]  # fmt: skip
    report.tasks = tasks
    for start in range(0, len(tasks), push_batch):
        progress(f"importing tasks {start + 1}-{min(start + push_batch, len(tasks))} of {len(tasks)}")
        report.created += push(tasks[start : start + push_batch])
        existing_keys.update(t["data"]["lsal_key"] for t in tasks[start : start + push_batch])
    report.dollars = dollars(report.usage, price)
    return report


Answer = tuple[list[str], Usage, str | None]


def _ask(
    calls: Sequence[PlannedCall], client: LLMClient, max_tokens: int, progress: Callable[[str], None]
) -> tuple[list[Answer | None], CircuitOpen | None]:
    """Every request, up to the client's concurrency at a time (LLM_CONCURRENCY), answers in the plan's
    order; after the circuit opens nothing more is sent (None) and the error comes back."""
    answers: list[Answer | None] = [None] * len(calls)
    down: list[CircuitOpen] = []
    finished = 0
    lock = threading.Lock()

    def ask(i: int) -> None:
        nonlocal finished
        if down:
            return
        try:
            answers[i] = client.generate(calls[i].prompt, calls[i].count, max_tokens, salt=calls[i].salt)
        except CircuitOpen as exc:
            down.append(exc)
            return
        with lock:
            finished += 1
            progress(f"request {finished}/{len(calls)}: {calls[i].count} texts for {calls[i].target}")

    workers = max(1, int(getattr(getattr(client, "config", None), "concurrency", 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(ask, range(len(calls))))
    return answers, down[0] if down else None


def _consistent(
    chosen: list[tuple[Target, str, str]],
    spec: TaskSpec,
    client: LLMClient,
    options: GenerateOptions,
    report: GenerationReport,
) -> list[tuple[Target, str, str]]:
    """Those texts the LLM labels as their target with probability `min_agreement` or more (its logprobs,
    or the share of its sampled answers). The answers only filter: they are not kept anywhere, so the
    generator never labels what it wrote."""
    kept: list[tuple[Target, str, str]] = []
    prompts = [build_prompt(spec, text) for _, text, _ in chosen]
    answers = client.annotate_many(spec, prompts)
    for (target, text, prompt_hash), answer in zip(chosen, answers, strict=True):
        if answer is None:  # not kept: a text nobody checked could be anything
            report.filtered.rejected.append(Rejected(text, "unchecked: the LLM stopped answering"))
            continue
        report.usage += answer.usage
        shares = _label_shares(answer.distribution, answer.labels, target.label)
        ok, reason = consistent(shares, target.label, options.min_agreement)
        if ok:
            kept.append((target, text, prompt_hash))
        else:
            report.filtered.rejected.append(Rejected(text, reason))
    report.filtered.kept = [text for _, text, _ in kept]
    return kept


def _label_shares(
    distribution: dict[str, float] | None, labels: tuple[str, ...] | None, target: str
) -> dict[str, float]:
    """An answer's label distribution; without one, all of it on its answer (a multi-label answer counts
    for the target when it names it)."""
    if distribution:
        return distribution
    if not labels:
        return {}
    return {target if target in labels else labels[0]: 1.0}
