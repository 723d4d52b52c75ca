"""The active-learning queue: rank the unlabelled pool with the project's strategy, and make LS serve it.

How LS 1.23 picks the next task (projects/functions/next_task.py): with "Uncertainty sampling" it takes
the unlabelled tasks that have a prediction at `project.model_version`, lowest score first. Its editor
and Data Manager also show only the predictions at `project.model_version`. So the queue is published
as predictions at a queue version of its own, for the strategy's top `QUEUE_SIZE` tasks only, each the
task's honest pre-label with its calibrated score (the one /predict would serve): no number LS shows is
anything but a probability of being right. LS serves the batch least-confident first, which is the order
the backend publishes; the strategy decides which tasks are in the batch. When the batch is used up
before the next ranking, LS falls back to random order until the next retraining re-ranks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from backend.jobs import llm_answers, stats
from backend.jobs.embeddings import ProjectEmbeddings
from backend.jobs.queue import RANK
from backend.jobs.running import JobContext, read_project, run_project_job
from backend.jobs.state import ProjectKeys, ProjectState
from backend.kinds import Spec, TaskKind
from backend.labeling import Example
from backend.labeling.predictions import predict_tasks
from backend.llm.annotator import pre_labels
from backend.llm.checks import published_calibration, published_distribution_calibration
from backend.selection.pool import TaskVectors
from backend.selection.pool import bootstrap_committee as bootstrap_committee  # the rank job's committee, re-exported
from backend.selection.stopping import Round, StoppingConfig, evaluate
from backend.selection.strategies import check_applies, make_strategy
from backend.settings import Settings
from backend.student import StudentModel

log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
STOP_SET_SIZE = 500
FALLBACK = "margin"  # needs only the student's probabilities, which a ranking always has; any task shape
QUEUE_OFF = (
    "the queue is off for this project (lsal-ops connect --no-queue, or QUEUE_ENABLED=false): "
    "LS's model version and sampling are left alone"
)


def _key(project_id: int, what: str) -> str:
    return ProjectKeys(project_id).queue(what)


def published_queue(conn: Any, project_id: int) -> dict[str, Any] | None:
    raw = conn.get(_key(project_id, "current"))
    return json.loads(raw) if raw else None


def stop_signals(conn: Any, project_id: int) -> list[dict[str, Any]]:
    raw = conn.get(_key(project_id, "signals"))
    return json.loads(raw) if raw else []


def rounds(conn: Any, project_id: int) -> list[dict[str, Any]]:
    return [json.loads(r) for r in conn.lrange(_key(project_id, "rounds"), 0, -1)]


def task_vectors(
    ctx: JobContext, project_id: int, model: StudentModel, ids: Sequence[int], texts: Sequence[str],
    human: Sequence[Example],
) -> TaskVectors | None:  # fmt: skip
    """Every task's embedding, read back or encoded now (once per task); None when the student has no encoder."""
    if model.encoder is None:
        return None
    lookup = ProjectEmbeddings(ctx.conn, project_id, model.encoder)

    def report(done: int, total: int) -> None:
        if done == total or done % 1024 < lookup.encoder.batch_size:
            ctx.progress(f"embedding {total} tasks: {done} done")

    every_id = [*ids, *(e.task_id for e in human)]
    everything = lookup.of(every_id, [*texts, *(e.text for e in human)], report)
    return TaskVectors(model.encoder, everything[: len(ids)], everything[len(ids) :],
                       dict(zip(every_id, everything, strict=True)))  # fmt: skip


def stop_set(conn: Any, project_id: int, candidates: Sequence[int]) -> list[int]:
    """A fixed sample of task ids on which successive models are compared (chosen once, then kept)."""
    raw = conn.get(_key(project_id, "stop_set"))
    if raw:
        return json.loads(raw)
    chosen = sorted(np.random.default_rng(project_id).permutation(sorted(candidates))[:STOP_SET_SIZE].tolist())
    conn.set(_key(project_id, "stop_set"), json.dumps(chosen))
    return chosen


def run_ranking(project_id: int, ctx: JobContext, strategy_name: str, size: int) -> dict[str, Any]:
    started = time.perf_counter()
    if not ProjectState(ctx.conn).queue_enabled(project_id, ctx.settings.queue_enabled):
        return {"status": "queue_off", "message": QUEUE_OFF}
    version = ctx.store.latest_version(project_id)
    stored = ctx.store.load(project_id, version) if version else None
    if stored is None:
        return {"status": "waiting", "message": "no student model yet: the queue starts after the first training"}
    ctx.progress("reading tasks")
    project = read_project(ctx.ls, project_id)
    kind, spec, human, pool = project.kind, project.spec, project.human, project.pool
    ids, texts = [task for task, _ in pool], [text for _, text in pool]
    model: StudentModel = stored.model
    vectors = task_vectors(ctx, project_id, model, ids, texts, human)
    ctx.progress(f"scoring {len(pool)} unlabelled tasks")
    strategy = make_strategy(strategy_name)
    answers = llm_answers.all_answers(ctx.conn, project_id)
    batch: list[int] = []
    fallback = None
    features = None
    if pool:
        features = kind.pool(strategy.needs, spec, model, texts, human, vectors=vectors, answers=answers, ids=ids)
        try:
            check_applies(strategy, features)
        except ValueError as exc:  # a single-label-only strategy; a committee needs two classes
            fallback = f"{exc}; ranked by {FALLBACK} instead"
            log.warning("project %s: %s", project_id, fallback)
            strategy = make_strategy(FALLBACK)
        rng = np.random.default_rng(len(human))
        batch = [int(i) for i in strategy.rank(features, min(size, len(pool)), rng)]

    calibrator, threshold = published_calibration(stored.meta)
    queue_number = int(ctx.conn.incr(_key(project_id, "number")))
    queue_version = f"queue{queue_number}-{ctx.store.prediction_version(project_id)}"
    chosen_ids = [ids[i] for i in batch]
    answered = [task for task in chosen_ids if task in answers]
    distribution = published_distribution_calibration(stored.meta)
    chosen = pre_labels([answers[task] for task in answered], calibrator, threshold, distribution)
    pre = dict(zip(answered, chosen, strict=True))
    tasks = [{"id": ids[i], "data": {spec.data_key: texts[i]}} for i in batch]
    items = predict_tasks(tasks, spec, model, queue_version, pre, vectors.of if vectors is not None else None)
    predictions = [{"task": task["id"], **item} for task, item in zip(tasks, items, strict=True) if item]
    order = [p["task"] for p in sorted(predictions, key=lambda p: (p["score"], p["task"]))]

    ctx.progress(f"publishing {len(predictions)} tasks to Label Studio")
    previous = published_queue(ctx.conn, project_id)
    ctx.ls.import_predictions(project_id, predictions)
    ctx.ls.set_model_version(project_id, queue_version, sampling=UNCERTAINTY_SAMPLING)
    # recorded as soon as LS serves it: /queue must not describe the old batch while the delete below runs
    published = {"version": queue_version, "strategy": strategy.name, "order": order, "student": version,
                 "pool": len(pool), "labelled": len(human), "at": time.time()}  # fmt: skip
    ctx.conn.set(_key(project_id, "current"), json.dumps(published))
    if previous and previous["version"] != queue_version:
        ctx.ls.delete_predictions(project_id, previous["version"])

    confidence = kind.mean_confidence(spec, features) if features is not None else None
    signals = _stopping(ctx, project_id, kind, spec, model, stored.meta, human, ids, texts, confidence, vectors)
    log.info("project %s: queue %s (%s) with %d tasks of %d", project_id, queue_version, strategy_name,
             len(order), len(pool))  # fmt: skip
    return {
        "status": "ranked",
        "version": queue_version,
        "strategy": strategy.name,
        "fallback": fallback,
        "queued": len(order),
        "pool": len(pool),
        "stop": [s["name"] for s in signals if s["triggered"]],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _stopping(
    ctx: JobContext,
    project_id: int,
    kind: TaskKind[Any, Any],
    spec: Spec,
    model: StudentModel,
    meta: Mapping[str, Any],
    human: Sequence[Example],
    ids: Sequence[int],
    texts: Sequence[str],
    mean_confidence: float | None,
    vectors: TaskVectors | None = None,
) -> list[dict[str, Any]]:
    """Record this round and evaluate the stopping rules on the project's history."""
    known = {e.task_id: e.text for e in human} | dict(zip(ids, texts, strict=True))
    fixed = [task for task in stop_set(ctx.conn, project_id, list(known)) if task in known]
    fixed_texts = [known[t] for t in fixed]
    fixed_vectors = vectors.of(fixed, fixed_texts) if vectors is not None and fixed else None
    predictions = model.predict(fixed_texts, fixed_vectors) if fixed else []
    stop_labels = [kind.label_value(spec, p.labels) for p in predictions]
    prequential = meta.get("prequential") or {}
    this_round = Round(
        labels=len(human),
        llm_dollars=stats.llm_spend(ctx.conn, project_id).get("dollars", 0.0),
        stop_set_predictions=stop_labels,
        checked_accuracy=prequential.get("accuracy"),
        mean_confidence=mean_confidence,
    )
    ctx.conn.rpush(_key(project_id, "rounds"), json.dumps(asdict(this_round)))
    history = [Round(**r) for r in rounds(ctx.conn, project_id)]
    signals = [asdict(s) for s in evaluate(history, stopping_config(ctx.settings))]
    ctx.conn.set(_key(project_id, "signals"), json.dumps(signals))
    return signals


def stopping_config(settings: Settings) -> StoppingConfig:
    return StoppingConfig(
        max_labels=settings.label_budget,
        max_dollars=settings.total_budget_usd,
        human_cost_per_label=settings.human_cost_per_label,
    )


def rank_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """The rq job."""

    def work(ctx: JobContext) -> dict[str, Any]:
        return run_ranking(project_id, ctx, ctx.settings.queue_strategy, ctx.settings.queue_size)

    return run_project_job(RANK, project_id, work)
