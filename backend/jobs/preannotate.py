"""The pre-annotation job: the LLM labels a project's unlabelled tasks, in batches, and LS gets each batch.

Per batch: check the dollar budget, build few-shot prompts from human labels, ask the LLM (bounded
concurrency, cached), keep the answers in Redis, count tokens and dollars, and bulk-import the batch's
predictions into LS. A task already answered by the same model is skipped, so a re-run or a retry after
a failure half-way costs nothing for what was done. With no student model and few human labels yet,
the first tasks labelled are a diverse seed (k-center greedy) that the student then trains on: the
cold start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from backend.jobs import llm_answers, stats
from backend.jobs.queue import PREANNOTATE, RANK, TRAIN, JobQueue
from backend.jobs.running import JobContext, read_project, run_project_job
from backend.jobs.state import ProjectState
from backend.llm.annotator import StoredAnswer, few_shot_prompts, pre_label, prediction_item
from backend.llm.cache import RedisCache
from backend.llm.checks import prior_only, published_calibration, published_distribution_calibration
from backend.llm.client import LLMAnswer, LLMClient, LLMConfig
from backend.llm.cost import Budget, BudgetExceeded, Price, Usage, dollars
from backend.llm.prompts import FORMAT_STYLES
from backend.selection.diversity import k_center_greedy, text_features
from backend.settings import Settings

log = logging.getLogger(__name__)


def llm_client(settings: Settings, conn: Any) -> LLMClient | None:
    """The configured endpoint with the Redis cache; None when the LLM is off or not running."""
    if not settings.llm_enabled or settings.llm_url is None:
        return None
    config = LLMConfig(
        base_url=settings.llm_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout=settings.llm_timeout,
        wait_budget=settings.llm_job_wait_seconds,
        concurrency=settings.llm_concurrency,
        # llama-cpp-python's server takes a schema only in its own json_object shape
        formats=("json_object",) if settings.llm_is_local else FORMAT_STYLES,
    )
    return LLMClient(config, cache=RedisCache(conn))


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def run_preannotation(
    project_id: int,
    ctx: JobContext,
    client: LLMClient,
    price: Price,
    on_seed_ready: Callable[[], None] = lambda: None,
    on_done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pre-label the project's unlabelled tasks. `on_done(version)` runs once predictions were pushed; by
    default it makes `version` the one LS shows (the queue, when on, re-ranks instead)."""
    on_done = on_done or (lambda version: ctx.ls.set_model_version(project_id, version))
    settings = ctx.settings
    ctx.progress("reading the label config and tasks")
    project = read_project(ctx.ls, project_id)
    spec, human, pool = project.spec, project.human, project.pool
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
    calibrator, threshold = published_calibration(meta)
    published = published_distribution_calibration(meta)
    # before a training run has published one, the prior comes from the answers so far, batch by batch
    answered = {task: answer for task, answer in llm_answers.all_answers(ctx.conn, project_id).items()
                if answer.model == client.config.model} if published is None else {}  # fmt: skip
    budget = Budget(settings.llm_budget_usd)
    spent = stats.llm_spend(ctx.conn, project_id).get("dollars", 0.0)
    done = failed = pushed = 0
    status, message = "done", ""
    seed_left = len(seed)
    for batch in _batches(todo, settings.llm_batch_size):
        prompts = few_shot_prompts(spec, [text for _, text in batch], human, settings.llm_few_shot)
        estimate = Usage(sum(p.estimated_tokens for p in prompts), client.config.max_tokens * len(prompts))
        try:
            budget.check(spent, dollars(estimate, price))
        except BudgetExceeded as exc:
            status, message = "budget_spent", str(exc)
            break
        results = client.annotate_many(spec, prompts)
        usage = sum((r.usage for r in results if r is not None), Usage())
        spent = stats.record_llm_usage(ctx.conn, project_id, usage, price)
        fresh = _keep(batch, results, client.config.model, seed)
        llm_answers.save(ctx.conn, project_id, fresh)
        version = ctx.store.prediction_version(project_id) or revision
        answered.update(fresh)
        distribution = published or prior_only(answered, spec.labels)
        predictions = []
        for task, answer in fresh.items():
            item = prediction_item(spec, pre_label(answer, calibrator, threshold, distribution), version)
            if item is not None:
                predictions.append({"task": task, **item})
        pushed += ctx.ls.import_predictions(project_id, predictions)
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
    }


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
        return run_preannotation(
            project_id, ctx, client, price, lambda: queue.request(project_id, "llm seed", TRAIN), rerank
        )

    return run_project_job(PREANNOTATE, project_id, work)
