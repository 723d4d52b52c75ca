"""Models in memory, per project, following the store's current version."""

from __future__ import annotations

import logging
import threading

from backend.student import ModelStore, StoredModel

log = logging.getLogger(__name__)


class ModelRegistry:
    """Student models in memory, loaded only in /predict, each the store's current version.

    A worker publishes a version by moving the store's LATEST pointer; the next /setup reports it (from
    the store: one small file read) and the next /predict loads it. /health and /setup never load or train.
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._models: dict[int, StoredModel] = {}
        self._lock = threading.Lock()

    def get(self, project_id: int) -> StoredModel | None:
        version = self.store.latest_version(project_id)
        if version is None:
            return None
        loaded = self._models.get(project_id)
        if loaded is not None and loaded.version == version:
            return loaded
        with self._lock:
            loaded = self._models.get(project_id)
            if loaded is None or loaded.version != version:
                loaded = self.store.load(project_id, version)
                if loaded is not None:
                    self._models[project_id] = loaded
                    log.info("project %s: loaded model %s", project_id, version)
        return loaded

    def preload(self) -> list[int]:
        """Load the newest version of every stored project (at start, before serving)."""
        loaded = []
        for project_id in self.store.projects():
            try:
                if self.get(project_id) is not None:
                    loaded.append(project_id)
            except Exception:  # a corrupt file must not stop the server; /predict will report it
                log.exception("project %s: could not load its current model", project_id)
        return loaded

    def forget(self, project_id: int) -> None:
        with self._lock:
            self._models.pop(project_id, None)
