"""The training job: read labels from LS, fit the student, publish a new model version."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis
from rq import get_current_job

from backend.jobs import stats
from backend.jobs.connection import connect
from backend.jobs.queue import coalescer_for
from backend.labeling import parse_label_config, training_examples
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings, get_settings
from backend.student import ModelStore, StudentModel

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def run_training(
    project_id: int,
    ls: LabelStudio,
    store: ModelStore,
    min_annotations: int,
    reason: str = "",
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """One training round. Returns what happened; 'waiting' when there are not enough labels yet."""
    started = time.perf_counter()
    progress("reading the label config")
    label_config = ls.label_config(project_id)
    spec = parse_label_config(label_config)
    progress("reading annotated tasks")
    examples = training_examples(spec, ls.iter_annotated_tasks(project_id))
    counts = Counter(label for example in examples for label in example.labels)
    enough_classes = len(counts) >= 2 or (spec.multi_label and len(counts) >= 1)
    if len(examples) < max(min_annotations, 2) or not enough_classes:
        return {
            "status": "waiting",
            "labelled": len(examples),
            "needed": max(min_annotations, 2),
            "classes": dict(counts),
            "message": f"{len(examples)} labelled tasks in {len(counts)} classes; training starts at "
            f"{max(min_annotations, 2)} tasks in at least 2 classes",
        }
    progress(f"fitting on {len(examples)} labelled tasks")
    fit_started = time.perf_counter()
    model = StudentModel(spec.labels, multi_label=spec.multi_label).fit(
        [e.text for e in examples], [e.labels for e in examples]
    )
    fit_seconds = time.perf_counter() - fit_started
    version = store.save(
        project_id,
        model,
        meta={
            "labelled": len(examples),
            "class_counts": dict(counts),
            "fit_seconds": round(fit_seconds, 3),
            "reason": reason,
            "spec": asdict(spec),
            "label_config_sha1": hashlib.sha1(label_config.encode()).hexdigest(),
        },
    )
    log.info("project %s: trained %s on %d labels in %.2fs", project_id, version, len(examples), fit_seconds)
    return {
        "status": "trained",
        "version": version,
        "labelled": len(examples),
        "classes": dict(counts),
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


def label_studio_for(settings: Settings, conn: redis.Redis, project_id: int) -> LabelStudio:
    """LS from the environment; else what LS itself told us at /setup (hostname and token)."""
    if settings.label_studio_url and settings.label_studio_api_key:
        return LabelStudio(settings.label_studio_url, settings.label_studio_api_key, settings.ls_page_size)
    remembered = stats.ls_access(conn, project_id)
    if remembered:
        return LabelStudio(remembered[0], remembered[1], settings.ls_page_size)
    return LabelStudio(settings.label_studio_url or "", settings.label_studio_api_key or "")


def train_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """The rq job. Coalescing slots and a per-project lock keep one training per project at a time."""
    settings = get_settings()
    job = get_current_job()
    conn: redis.Redis = job.connection if job is not None else connect(settings)
    job_id = job.id if job is not None else f"inline-{uuid.uuid4().hex[:12]}"
    coalescer = coalescer_for(conn, settings)
    coalescer.started(project_id, job_id)

    def progress(message: str) -> None:
        if job is not None:
            job.meta["progress"] = message
            job.save_meta()

    try:
        lock = conn.lock(
            f"lsal:train:{int(project_id)}:lock",
            timeout=settings.train_job_timeout,
            blocking_timeout=settings.train_job_timeout,
        )
        with lock:
            store = ModelStore(settings.models_path, keep=settings.keep_model_versions)
            ls = label_studio_for(settings, conn, project_id)
            result = run_training(project_id, ls, store, settings.min_annotations, reason, progress)
    except Exception as exc:
        stats.record_training(conn, project_id, {"status": "failed", "error": str(exc)})
        if job is not None and not (isinstance(exc, LabelStudioError) and exc.transient):
            job.retries_left = 0  # a refused key or an unsupported config fails the same way next time
        raise
    finally:
        coalescer.finished(project_id, job_id)
    stats.record_training(conn, project_id, result)
    return result
