"""The training job: read labels from LS, fit the student, check the LLM against humans, publish a version."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from backend import kinds
from backend.jobs import llm_answers
from backend.jobs.embeddings import ProjectEmbeddings, project_embeddings
from backend.jobs.queue import FINETUNE, RANK, TRAIN, JobQueue
from backend.jobs.running import JobContext, run_project_job
from backend.jobs.state import ProjectState
from backend.kinds import Spec, TaskKind
from backend.labeling import Example, TaskSpec
from backend.labelstudio import LabelStudio
from backend.llm.annotator import StoredAnswer
from backend.llm.cascade import STRONG, STUDENT, stage_from_checks
from backend.settings import Settings
from backend.student import ModelStore
from backend.student.encoder import NO_ENCODER
from backend.student.finetune import skip_reason
from backend.student.store import RELIABILITY_PNG

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def seed_examples(spec: TaskSpec, answers: Mapping[int, StoredAnswer], human: list[Example]) -> list[Example]:
    """The cold-start seed: tasks the LLM labelled for the student, less those a human has labelled since."""
    labelled = {e.task_id for e in human}
    return [
        Example(task, answer.text, answer.labels)
        for task, answer in sorted(answers.items())
        if answer.seed and answer.text and task not in labelled and set(answer.labels) <= set(spec.labels)
    ]


def embeddings_of(embeddings: ProjectEmbeddings | None, examples: Sequence[Example], progress: Progress) -> Any:
    """The examples' sentence embeddings (encoded once per task, then read back), or None without an encoder."""
    if embeddings is None or not examples:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % 256 < embeddings.encoder.batch_size:
            progress(f"embedding {total} tasks: {done} done")

    return embeddings.of([e.task_id for e in examples], [e.text for e in examples], report)


def prequential_check(
    store: ModelStore,
    project_id: int,
    kind: TaskKind[Any, Any],
    spec: Spec,
    human: list[Example],
    embeddings: ProjectEmbeddings | None = None,
) -> dict[str, Any] | None:
    """How the current model did on the labels that arrived since it was trained: its accuracy on tasks
    it never saw, checked by humans. None before the first model or when nothing new came."""
    current = store.latest_version(project_id)
    if current is None:
        return None
    seen = set(store.meta(project_id, current).get("task_ids") or ())
    new = [e for e in human if e.task_id not in seen]
    if not new:
        return None
    stored = store.load(project_id, current)
    if stored is None:
        return None
    vectors = embeddings_of(embeddings, new, lambda _: None) if stored.model.encoder else None
    predicted = stored.model.predict([e.text for e in new], vectors)
    hits = [kind.agrees(spec, p.labels, e.labels) for p, e in zip(predicted, new, strict=True)]
    right = sum(hits)
    return {"version": current, "checked": len(new), "correct": right, "accuracy": right / len(new),
            "scores": [round(p.score, 6) for p in predicted], "right": hits}  # fmt: skip


def student_checks(previous: Mapping[str, Any] | None, checked: Mapping[str, Any] | None,
                   target_precision: float) -> dict[str, Any]:  # fmt: skip
    """The student's checks so far, for the cascade: each human label scored by the model that existed when
    it arrived and had not seen it (prequential), accumulated over versions; and the threshold they give."""
    scores = list((previous or {}).get("scores") or []) + list((checked or {}).get("scores") or [])
    right = list((previous or {}).get("right") or []) + list((checked or {}).get("right") or [])
    threshold = stage_from_checks(STUDENT, scores, right, target_precision).threshold
    return {"scores": scores, "right": right, "checks": len(scores), "threshold": threshold.value,
            "threshold_precision": threshold.precision, "threshold_support": threshold.support}  # fmt: skip


def run_training(
    project_id: int,
    ls: LabelStudio,
    store: ModelStore,
    min_annotations: int,
    reason: str = "",
    progress: Progress = lambda _: None,
    answers: Mapping[int, StoredAnswer] | None = None,
    seed_weight: float = 0.3,
    target_precision: float = 0.95,
    strong_answers: Mapping[int, StoredAnswer] | None = None,
    embeddings: ProjectEmbeddings | None = None,
) -> dict[str, Any]:
    """One training round. Returns what happened; 'waiting' when there are not enough labels yet.

    With `embeddings` (the project's, under the configured encoder) the student adds sentence-encoder
    features to its TF-IDF ones.

    `answers` are the project's LLM answers: their seed part joins the training set at `seed_weight`
    (humans weigh 1), and the rest is checked against the human labels. `strong_answers`, the cascade's
    strong LLM's, are checked apart: each LLM gets its own calibration and threshold.
    """
    started = time.perf_counter()
    answers = answers or {}
    progress("reading the label config")
    label_config = ls.label_config(project_id)
    kind = kinds.kind_for(label_config)
    spec = kind.parse(label_config)
    progress("reading annotated tasks")
    human = kind.examples(spec, ls.iter_annotated_tasks(project_id))
    seed = seed_examples(spec, answers, human) if seed_weight > 0 else []
    examples = human + seed
    counts = kind.label_counts(spec, examples)
    needed = max(min_annotations, 2)
    if len(examples) < needed or not kind.can_fit(spec, counts):
        return {
            "status": "waiting",
            "labelled": len(human),
            "llm_seed": len(seed),
            "needed": needed,
            "classes": dict(counts),
            "message": f"{len(human)} labelled tasks and {len(seed)} LLM seed labels in {len(counts)} classes; "
            f"training starts at {needed} in at least 2 classes",
        }
    checked = prequential_check(store, project_id, kind, spec, human, embeddings)
    vectors = embeddings_of(embeddings, examples, progress)
    latest = store.latest_version(project_id)
    earlier = store.meta(project_id, latest).get("student_checks") if latest else None
    progress(f"fitting on {len(human)} human and {len(seed)} LLM seed labels")
    fit_started = time.perf_counter()
    encoder = embeddings.encoder.name if embeddings is not None else None
    model = kind.student(spec, encoder).fit(
        [e.text for e in examples],
        [e.labels for e in examples],
        sample_weight=[1.0] * len(human) + [seed_weight] * len(seed) if seed else None,
        embeddings=vectors,
    )
    fit_seconds = time.perf_counter() - fit_started
    # the LLM is calibrated on real tasks only: texts an LLM wrote are easier for LLMs than real ones
    real = [e for e in human if not e.synthetic]
    checks = kind.check(spec, answers, real, target_precision) if answers else None
    strong_checks = kind.check(spec, strong_answers, real, target_precision) if strong_answers else None
    version = store.save(
        project_id,
        model,
        meta={
            "labelled": len(human),
            "llm_seed": len(seed),
            "synthetic_labelled": len(human) - len(real),  # human labels on synthetic tasks, counted apart
            "class_counts": dict(counts),
            "fit_seconds": round(fit_seconds, 3),
            "encoder": encoder,
            "reason": reason,
            "spec": asdict(spec),
            "label_config_sha1": hashlib.sha1(label_config.encode()).hexdigest(),
            "llm_checks": checks,
            "strong_llm_checks": strong_checks,
            "task_ids": sorted(e.task_id for e in human),
            "prequential": {k: v for k, v in checked.items() if k not in ("scores", "right")} if checked else None,
            "student_checks": student_checks(earlier, checked, target_precision),
        },
    )
    if checks and checks["checks"]:
        from backend.llm.plots import reliability_png  # matplotlib: imported only when there is a plot to draw

        reliability_png(checks, store.project_dir(project_id) / RELIABILITY_PNG, f"project {project_id}, {version}")
    log.info("project %s: trained %s on %d labels (+%d LLM seed) in %.2fs", project_id, version, len(human),
             len(seed), fit_seconds)  # fmt: skip
    return {
        "status": "trained",
        "version": version,
        "labelled": len(human),
        "llm_seed": len(seed),
        "classes": dict(counts),
        "fit_seconds": round(fit_seconds, 3),
        "encoder": encoder,
        "multi_label": spec.multi_label,
        "llm_checks": checks["checks"] if checks else 0,
        "seconds": round(time.perf_counter() - started, 3),
    }


def request_ranking(conn: Any, settings: Settings, project_id: int, reason: str) -> dict[str, Any] | None:
    """Queue a ranking when the project's queue is on (its own choice, else QUEUE_ENABLED); None when off."""
    if not ProjectState(conn).queue_enabled(project_id, settings.queue_enabled):
        return None
    return JobQueue(conn, settings).request(project_id, reason, RANK)


def request_finetune(conn: Any, settings: Settings, project_id: int, result: Mapping[str, Any]) -> dict[str, Any]:
    """Queue the background fine-tune of a training that published a fast student, when it is wanted."""
    reason = "STUDENT_ENCODER=none" if settings.student_encoder == NO_ENCODER else skip_reason(
        settings.student_finetune, bool(result.get("multi_label")), result["labelled"], settings.finetune_min_labels,
        settings.finetune_max_labels)  # fmt: skip
    if reason:
        return {"status": "skipped", "message": reason}
    return JobQueue(conn, settings).request(project_id, f"after {result['version']}", FINETUNE)


def train_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """The rq job. Coalescing slots and a per-project lock keep one training per project at a time."""

    def work(ctx: JobContext) -> dict[str, Any]:
        answers = llm_answers.all_answers(ctx.conn, project_id)
        strong = llm_answers.all_answers(ctx.conn, project_id, STRONG)
        result = run_training(
            project_id, ctx.ls, ctx.store, ctx.settings.min_annotations, reason, ctx.progress, answers,
            ctx.settings.llm_label_weight, ctx.settings.auto_accept_precision, strong,
            project_embeddings(ctx, project_id),
        )  # fmt: skip
        if result["status"] == "trained":
            request_ranking(ctx.conn, ctx.settings, project_id, f"trained {result['version']}")
            result["finetune"] = request_finetune(ctx.conn, ctx.settings, project_id, result)
        return result

    return run_project_job(TRAIN, project_id, work)
