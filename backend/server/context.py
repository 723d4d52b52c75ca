"""What every route shares: settings, the model store and registry, label configs, and (lazily) Redis."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis
from flask import current_app

from backend.jobs import llm_answers, stats
from backend.jobs.connection import connect
from backend.jobs.embeddings import ProjectEmbeddings
from backend.jobs.queue import JobQueue
from backend.jobs.state import ProjectState
from backend.llm.annotator import PreLabel, pre_labels
from backend.llm.bias import DistributionCalibration
from backend.llm.calibration import Calibrator
from backend.llm.checks import published_calibration, published_distribution_calibration
from backend.server.background import SerialRunner
from backend.server.label_configs import LabelConfigs
from backend.server.registry import ModelRegistry
from backend.settings import Settings
from backend.student import ModelStore
from backend.student.encoder import embed_texts

log = logging.getLogger(__name__)

# a model version's LLM calibration: top-confidence calibrator, its threshold, distribution calibration
Calibration = tuple[Calibrator | None, float | None, DistributionCalibration | None]
EXTENSION = "lsal"


class Backend:
    """What the routes share: settings, the model registry, and (lazily) Redis and the queue."""

    def __init__(self, settings: Settings, conn: redis.Redis | None = None) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_path, keep=settings.keep_model_versions)
        self.registry = ModelRegistry(self.store)
        self._conn = conn
        self._queue: JobQueue | None = None
        self.label_configs = LabelConfigs(settings.max_label_config_kb * 1024, settings.label_config_cache_mb * 2**20)
        self._ls_access: dict[int, tuple[str, str]] = {}
        self._calibrations: dict[tuple[int, str], Calibration] = {}
        self._background = SerialRunner("lsal-redis-writes")

    def remember_ls_access(self, project_id: int, hostname: str, token: str) -> None:
        """Keep what /setup says about reaching LS for the workers, off the request path.

        LS gives /setup 3 seconds: a slow or absent Redis must not cost it a single one.
        """
        if self._ls_access.get(project_id) == (hostname, token):
            return
        self._ls_access[project_id] = (hostname, token)

        def write() -> None:
            try:
                stats.remember_ls_access(self.conn, project_id, hostname, token)
            except Exception as exc:  # a background write: log, never raise
                self._ls_access.pop(project_id, None)
                log.warning("could not record LS access for project %s: %s", project_id, exc)

        self._background.submit(write)

    def forget_project(self, project_id: int) -> int:
        """Forget the project's Redis state now (raises on a Redis failure); returns the keys deleted."""
        self._ls_access.pop(project_id, None)
        return ProjectState(self.conn).forget(project_id)

    def forget_project_later(self, project_id: int) -> None:
        """Forget it off the request path, before any LS access /setup records after this call."""
        self._ls_access.pop(project_id, None)

        def forget() -> None:
            try:
                ProjectState(self.conn).forget(project_id)
            except Exception as exc:
                log.error("project %s was re-bound but its Redis state could not be forgotten: %s", project_id, exc)

        self._background.submit(forget)

    def calibration(self, project_id: int, version: str | None) -> Calibration:
        """The LLM calibration published with the student's `version` (parsed once per version): the top-
        confidence calibrator, its threshold, and the distribution calibration."""
        if version is None:
            return None, None, None
        key = (project_id, version)
        if key not in self._calibrations:
            meta = self.store.meta(project_id, version)
            self._calibrations[key] = (*published_calibration(meta), published_distribution_calibration(meta))
        return self._calibrations[key]

    def llm_pre_labels(self, project_id: int, ids: list[int], student_version: str | None) -> dict[int, PreLabel]:
        """The LLM's pre-labels for these tasks, calibrated; {} before any run or when Redis is down."""
        if not ids or self.store.llm_revision(project_id) is None:
            return {}
        try:
            answers = llm_answers.get_many(self.conn, project_id, ids)
        except redis.RedisError as exc:  # the student still answers
            log.warning("project %s: LLM answers unavailable: %s", project_id, exc)
            return {}
        return dict(zip(answers, pre_labels(list(answers.values()), *self.calibration(project_id, student_version)),
                        strict=True))  # fmt: skip

    def task_embeddings(self, project_id: int, encoder: str) -> Callable[[Sequence[int | None], Sequence[str]], Any]:
        """embed(task ids, texts) for /predict: the project's kept embeddings, new ones encoded and kept;
        encoded in memory when Redis is down (the student still answers)."""
        kept = ProjectEmbeddings(self.conn, project_id, encoder)

        def embed(ids: Sequence[int | None], texts: Sequence[str]) -> Any:
            try:
                return kept.of(ids, texts)
            except redis.RedisError as exc:
                log.warning("project %s: kept embeddings unavailable, encoding %d texts: %s", project_id,
                            len(texts), exc)  # fmt: skip
                return embed_texts(encoder, texts)

        return embed

    @property
    def conn(self) -> redis.Redis:
        if self._conn is None:
            self._conn = connect(self.settings)
        return self._conn

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(self.conn, self.settings)
        return self._queue


def current_backend() -> Backend:
    """The Backend of the app serving this request."""
    return current_app.extensions[EXTENSION]
