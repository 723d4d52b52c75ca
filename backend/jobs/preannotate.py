"""The pre-annotation job: the LLM labels a project's unlabelled tasks, in batches, and LS gets each batch.

Per batch: check the dollar budget, build few-shot prompts from human labels, ask the LLM (bounded
concurrency, cached), keep the answers in Redis, count tokens and dollars, and bulk-import the batch's
predictions into LS. A task already answered by the same model is skipped, so a re-run or a retry after
a failure half-way costs nothing for what was done. With no student model and few human labels yet,
the first tasks labelled are a diverse seed (k-center greedy) that the student then trains on: the
cold start.

With a strong endpoint (LLM_STRONG_BASE_URL) the LLMs form a cascade (llm/cascade.py): only the tasks
whose cheap answer is below the cheap LLM's calibrated threshold (or that got no usable answer) are
asked of the strong LLM, whose answers are kept and checked apart; each stage's tokens, dollars and
seconds, and the stage that answered each task, are kept per project.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend import kinds
from backend.jobs import llm_answers, stats
from backend.jobs.queue import PREANNOTATE, RANK, TRAIN, JobQueue
from backend.jobs.running import JobContext, read_project, run_project_job
from backend.jobs.state import ProjectState
from backend.kinds import Spec
from backend.llm.annotator import PreLabel, StoredAnswer, pre_label, pre_labels
from backend.llm.bias import DistributionCalibration
from backend.llm.calibration import Calibrator
from backend.llm.cascade import (
    ACCEPT,
    ASK,
    CHEAP,
    HUMAN,
    STRONG,
    STUDENT,
    Stage,
    StageCost,
    Step,
    next_step,
    stage_with,
)
from backend.llm.checks import prior_only, published_calibration, published_distribution_calibration
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.cost import FREE, Budget, BudgetExceeded, Price, Usage, dollars
from backend.llm.factory import llm_client
from backend.llm.prompts import Prompt
from backend.llm.routing import AUTO_ACCEPT
from backend.selection.diversity import k_center_greedy, text_features

log = logging.getLogger(__name__)


@dataclass
class LLMStage:
    """One LLM of the cascade in this run: its endpoint, price and the calibration its checks published."""

    name: str
    client: LLMClient
    price: Price
    calibrator: Calibrator | None
    threshold: float | None
    distribution: DistributionCalibration | None = None  # for answers with a label distribution

    @property
    def stage(self) -> Stage:
        # an uncalibrated score has not been checked against humans: it accepts nothing
        if self.distribution is not None and self.distribution.calibrated:
            return stage_with(self.name, self.distribution.threshold)
        calibrated = self.calibrator is not None and self.calibrator.fitted_method is not None
        return stage_with(self.name, self.threshold if calibrated else None)

    def label(self, answer: StoredAnswer) -> PreLabel:
        return pre_label(answer, self.calibrator, self.threshold, self.distribution)


def estimated_usage(client: LLMClient, spec: Spec, prompts: Sequence[Prompt]) -> Usage:
    """A batch's usage at most, before it is sent: each request's whole prompt, and the completion tokens it
    asks for (one for a scored prompt and for each of a yes/no prompt's questions, not `max_tokens`)."""
    kind = kinds.kind_of(spec)
    return sum((kind.estimated_usage(client, spec, p) for p in prompts), Usage())


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def run_preannotation(
    project_id: int,
    ctx: JobContext,
    client: LLMClient,
    price: Price,
    on_seed_ready: Callable[[], None] = lambda: None,
    on_done: Callable[[str], None] | None = None,
    strong: tuple[LLMClient, Price] | None = None,
) -> dict[str, Any]:
    """Pre-label the project's unlabelled tasks. `on_done(version)` runs once predictions were pushed; by
    default it makes `version` the one LS shows (the queue, when on, re-ranks instead). `strong`: the
    cascade's strong LLM and its price, asked only for the tasks the cheap one is unsure of."""
    on_done = on_done or (lambda version: ctx.ls.set_model_version(project_id, version))
    settings = ctx.settings
    ctx.progress("reading the label config and tasks")
    project = read_project(ctx.ls, project_id)
    kind, spec, human, pool = project.kind, project.spec, project.human, project.pool
    known = llm_answers.get_many(ctx.conn, project_id, [task for task, _ in pool])
    # the model that wrote a synthetic task never labels it: humans (or another configured LLM) do
    own = {task for task, generator in project.generators.items() if generator == client.config.model}
    todo = [(task, text) for task, text in pool
            if task not in own and (task not in known or known[task].model != client.config.model)]  # fmt: skip
    skipped = len(pool) - len(todo) - len(own)

    seed: set[int] = set()
    cold = ctx.store.latest_version(project_id) is None and len(human) < settings.min_annotations
    if cold and todo and settings.llm_seed_size > 0 and not any(a.seed for a in known.values()):
        ctx.progress("choosing a diverse cold-start seed")
        picked = k_center_greedy(text_features([text for _, text in todo]), settings.llm_seed_size)
        seed = {todo[i][0] for i in picked}
        todo = [todo[i] for i in picked] + [item for i, item in enumerate(todo) if i not in set(picked)]

    revision = ctx.store.bump_llm_revision(project_id)
    student = ctx.store.latest_version(project_id)
    meta = ctx.store.meta(project_id, student) if student else {}
    published = published_distribution_calibration(meta)
    # before a training run has published one, the prior comes from the answers so far, batch by batch
    answered = {task: answer for task, answer in llm_answers.all_answers(ctx.conn, project_id).items()
                if answer.model == client.config.model} if published is None else {}  # fmt: skip
    cheap = LLMStage(CHEAP, client, price, *published_calibration(meta), published)
    strong_stage = None
    if strong is not None:
        strong_checks = {"llm_checks": meta.get("strong_llm_checks")}
        strong_stage = LLMStage(STRONG, *strong, *published_calibration(strong_checks),
                                published_distribution_calibration(strong_checks))  # fmt: skip
    stages = [cheap.stage] + ([strong_stage.stage] if strong_stage else [])
    routed: Counter[str] = Counter()
    by_student = _student_pass(project_id, ctx, spec, student, meta, todo, revision)
    routed.update(STUDENT for _ in by_student)
    todo = [(task, text) for task, text in todo if task not in by_student]
    budget = Budget(settings.llm_budget_usd)
    spent = stats.llm_spend(ctx.conn, project_id).get("dollars", 0.0)
    done = failed = pushed = 0
    status, message = "done", ""
    seed_left = len(seed)
    for batch in _batches(todo, settings.llm_batch_size):
        prompts = kind.prompts(spec, [text for _, text in batch], human, settings.llm_few_shot,
                               multilabel_scoring=settings.llm_multilabel_scoring)  # fmt: skip
        estimate = estimated_usage(client, spec, prompts)
        try:
            budget.check(spent, dollars(estimate, price))
        except BudgetExceeded as exc:
            status, message = "budget_spent", str(exc)
            break
        started = time.perf_counter()
        results = kind.annotate(client, spec, prompts)
        seconds = time.perf_counter() - started
        usage = sum((r.usage for r in results if r is not None), Usage())
        spent = stats.record_llm_usage(ctx.conn, project_id, usage, price)
        fresh = _keep(batch, results, client.config.model, seed)
        llm_answers.save(ctx.conn, project_id, fresh)
        if published is None:
            answered.update(fresh)
            cheap.distribution = prior_only(answered, spec.labels)
        labels = {task: cheap.label(answer) for task, answer in fresh.items()}
        decided = {task: _decided(next_step(stages, {CHEAP: label.score})) for task, label in labels.items()}
        cost = StageCost()
        cost.add(len(batch), sum(1 for stage in decided.values() if stage == CHEAP), usage, price, seconds)
        decided = {task: stage for task, stage in decided.items() if stage != STRONG}  # the strong pass decides
        stats.record_cascade(ctx.conn, project_id, {CHEAP: cost}, decided)
        routed.update(decided.values())
        # a task on its way to the strong LLM gets its prediction from there
        shown = {task: label for task, label in labels.items() if task in decided}
        pushed += _push(ctx, project_id, spec, shown, ctx.store.prediction_version(project_id) or revision)
        done += len(fresh)
        failed += sum(1 for r in results if r is not None and r.labels is None)
        if any(r is None for r in results):
            status = "llm_unavailable"
            message = f"the LLM endpoint stopped answering: {client.stop_reason}; re-run later"
            break
        seed_left -= sum(1 for task, _ in batch if task in seed)
        if seed and seed_left == 0:
            on_seed_ready()
            seed_left = -1  # once
        ctx.progress(f"{done + failed} of {len(todo)} tasks pre-annotated ({failed} without a usable answer)")
    strong_done = 0
    if strong_stage is not None and status == "done":
        ctx.progress("asking the strong LLM about the tasks the cheap one is unsure of")
        status, message, strong_done, strong_pushed = _strong_pass(
            project_id, ctx, project, cheap, strong_stage, stages, budget, spent, revision, routed
        )
        pushed += strong_pushed
        spent = stats.llm_spend(ctx.conn, project_id).get("dollars", 0.0)
    final_version = ctx.store.prediction_version(project_id)
    if pushed and final_version:
        on_done(final_version)
    return {
        "status": status,
        "message": message,
        "revision": revision,
        "annotated": done,
        "failed": failed,
        "pushed": pushed,
        "skipped": skipped,
        "left_to_humans": len(own),  # synthetic tasks this model wrote
        "seed": len(seed),
        "remaining": max(0, len(todo) - done - failed),
        "dollars": round(spent, 6),
        "strong_annotated": strong_done,
        "routed": dict(routed),  # tasks this run by the stage that answered them, or "human"
    }


def _student_pass(
    project_id: int,
    ctx: JobContext,
    spec: Any,
    version: str | None,
    meta: Mapping[str, Any],
    todo: Sequence[tuple[int, str]],
    revision: str,
) -> set[int]:
    """The cascade's first stage: the student labels the tasks at or above its threshold (chosen on its
    prequential checks); the LLMs are not asked about them. Returns the tasks it took, those of earlier
    runs included."""
    taken = {task for task, stage in stats.cascade_stages(ctx.conn, project_id).items() if stage == STUDENT}
    checks = meta.get("student_checks") or {}
    stage = stage_with(STUDENT, checks.get("threshold"), int(checks.get("checks") or 0))
    asked = [(task, text) for task, text in todo if task not in taken]
    stored = ctx.store.load(project_id, version) if version and stage.gate is not None and asked else None
    if stored is None:
        return taken
    started = time.perf_counter()
    predicted = stored.model.predict([text for _, text in asked])
    seconds = time.perf_counter() - started
    accepted = {task: PreLabel(p.labels, p.score, AUTO_ACCEPT, True)
                for (task, _), p in zip(asked, predicted, strict=True)
                if next_step([stage], {STUDENT: p.score}).action == ACCEPT}  # fmt: skip
    cost = StageCost()
    cost.add(len(asked), len(accepted), Usage(), FREE, seconds)
    stats.record_cascade(ctx.conn, project_id, {STUDENT: cost}, dict.fromkeys(accepted, STUDENT))
    _push(ctx, project_id, spec, accepted, ctx.store.prediction_version(project_id) or revision)
    return taken | set(accepted)


def _decided(step: Step) -> str:
    """The stage whose label an item keeps, STRONG while the strong LLM is still to be asked, or HUMAN."""
    if step.action == ACCEPT and step.stage is not None:
        return step.stage
    return STRONG if step.action == ASK and step.stage == STRONG else HUMAN


def _push(ctx: JobContext, project_id: int, spec: Spec, labels: Mapping[int, PreLabel], version: str) -> int:
    kind = kinds.kind_of(spec)
    predictions = []
    for task, label in labels.items():
        item = kinds.prediction_item(kind, spec, label.labels, label.score, version)
        if item is not None:
            predictions.append({"task": task, **item})
    return ctx.ls.import_predictions(project_id, predictions) if predictions else 0


def _strong_pass(
    project_id: int,
    ctx: JobContext,
    project: Any,
    cheap: LLMStage,
    strong: LLMStage,
    stages: Sequence[Stage],
    budget: Budget,
    spent: float,
    revision: str,
    routed: Counter[str],
) -> tuple[str, str, int, int]:
    """Ask the strong LLM about the pool's tasks whose cheap answer is below the cheap threshold (or that
    have none), unless it answered them already; returns (status, message, answered, pushed)."""
    model = strong.client.config.model
    tasks = [task for task, _ in project.pool]
    cheap_answers = llm_answers.get_many(ctx.conn, project_id, tasks)
    cheap_labels = dict(zip(cheap_answers, pre_labels(list(cheap_answers.values()), cheap.calibrator,
                                                       cheap.threshold, cheap.distribution), strict=True))  # fmt: skip
    known = llm_answers.get_many(ctx.conn, project_id, tasks, STRONG)
    own = {task for task, generator in project.generators.items() if generator == model}
    own |= {task for task, stage in stats.cascade_stages(ctx.conn, project_id).items() if stage == STUDENT}
    todo = [(task, text) for task, text in project.pool
            if task not in own and (task not in known or known[task].model != model)
            and _cheap_step(stages, cheap_labels.get(task)).stage == STRONG]  # fmt: skip
    done = pushed = 0
    for batch in _batches(todo, ctx.settings.llm_batch_size):
        prompts = project.kind.prompts(project.spec, [text for _, text in batch], project.human,
                                       ctx.settings.llm_few_shot,
                                       multilabel_scoring=ctx.settings.llm_multilabel_scoring)  # fmt: skip
        estimate = estimated_usage(strong.client, project.spec, prompts)
        try:
            budget.check(spent, dollars(estimate, strong.price))
        except BudgetExceeded as exc:
            return "budget_spent", str(exc), done, pushed
        started = time.perf_counter()
        results = project.kind.annotate(strong.client, project.spec, prompts)
        seconds = time.perf_counter() - started
        usage = sum((r.usage for r in results if r is not None), Usage())
        spent = stats.record_llm_usage(ctx.conn, project_id, usage, strong.price)
        fresh = _keep(batch, results, model, set())
        llm_answers.save(ctx.conn, project_id, fresh, STRONG)
        labels = {task: strong.label(answer) for task, answer in fresh.items()}
        decided = {}
        for task, _ in batch:
            confidence = {CHEAP: _score(cheap_labels.get(task)), STRONG: _score(labels.get(task))}
            decided[task] = _decided(next_step(stages, confidence))
        cost = StageCost()
        cost.add(len(batch), sum(1 for stage in decided.values() if stage == STRONG), usage, strong.price, seconds)
        stats.record_cascade(ctx.conn, project_id, {STRONG: cost}, decided)
        routed.update(decided.values())
        # the strong answer is shown where there is one, else the cheap one
        shown = {task: labels.get(task) or cheap_labels[task] for task, _ in batch
                 if task in labels or task in cheap_labels}  # fmt: skip
        pushed += _push(ctx, project_id, project.spec, shown, ctx.store.prediction_version(project_id) or revision)
        done += len(fresh)
        if any(r is None for r in results):
            return "llm_unavailable", f"the strong LLM stopped answering: {strong.client.stop_reason}; re-run later", \
                done, pushed  # fmt: skip
        ctx.progress(f"{done} of {len(todo)} unsure tasks answered by the strong LLM")
    return "done", "", done, pushed


def _score(label: PreLabel | None) -> float | None:
    return None if label is None else label.score


def _cheap_step(stages: Sequence[Stage], label: PreLabel | None) -> Step:
    return next_step(stages, {CHEAP: _score(label)})


def _keep(
    batch: Sequence[tuple[int, str]], results: Sequence[LLMAnswer | None], model: str, seed: set[int]
) -> dict[int, StoredAnswer]:
    """The usable answers: on-label, with a confidence. Off-label or unparseable answers are never kept."""
    kept: dict[int, StoredAnswer] = {}
    for (task, text), result in zip(batch, results, strict=True):
        if result is None or not result.labels or result.confidence is None:
            continue
        is_seed = task in seed
        kept[task] = StoredAnswer(result.labels, float(result.confidence), result.method, model, is_seed,
                                  text if is_seed else None, result.distribution)  # fmt: skip
    return kept


def preannotate_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """The rq job."""

    def work(ctx: JobContext) -> dict[str, Any]:
        client = llm_client(ctx.settings, ctx.conn)
        if client is None:
            return {"status": "llm_unavailable", "message": "no LLM: set LLM_BASE_URL, or run `lsal run` with the "
                    "embedded model installed (make llm)"}  # fmt: skip
        price = ctx.settings.llm_price()
        queue = JobQueue(ctx.conn, ctx.settings)
        # with the queue on, it owns the project's model version: it re-ranks with the new pre-labels
        queue_on = ProjectState(ctx.conn).queue_enabled(project_id, ctx.settings.queue_enabled)
        rerank = (lambda _version: queue.request(project_id, "pre-annotated", RANK)) if queue_on else None
        strong_client = llm_client(ctx.settings, ctx.conn, "strong")
        strong = (strong_client, ctx.settings.llm_strong_price()) if strong_client else None
        return run_preannotation(
            project_id, ctx, client, price, lambda: queue.request(project_id, "llm seed", TRAIN), rerank, strong
        )

    return run_project_job(PREANNOTATE, project_id, work)
