"""A versioned, per-project model store on disk.

Layout: MODEL_DIR/project-<id>/<version>.pkl, <version>.json (metadata) and LATEST (the current
version's name). Every file is written to a temporary name and renamed, so a reader never sees half a
model, and LATEST moves only after the model it names is complete. Old versions are pruned.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_VERSION = re.compile(r"^v(\d+)-(\d{8}T\d{6})$")
RELIABILITY_PNG = "llm-reliability.png"  # the reliability diagram of the LLM's pre-labels, per project


@dataclass
class StoredModel:
    project_id: int
    version: str
    model: Any
    meta: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    def __init__(self, root: Path | str, keep: int = 5) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def project_dir(self, project_id: int) -> Path:
        return self.root / f"project-{int(project_id)}"

    def projects(self) -> list[int]:
        if not self.root.is_dir():
            return []
        ids = []
        for child in self.root.iterdir():
            if child.is_dir() and child.name.startswith("project-") and (child / "LATEST").is_file():
                ids.append(int(child.name.split("-", 1)[1]))
        return sorted(ids)

    def latest_version(self, project_id: int) -> str | None:
        """The current version's name: one small file read, cheap enough for /setup."""
        try:
            return (self.project_dir(project_id) / "LATEST").read_text().strip() or None
        except FileNotFoundError:
            return None

    def llm_revision(self, project_id: int) -> str | None:
        """The revision of the project's LLM pre-labels ("llm<n>"), or None before the first run."""
        try:
            return (self.project_dir(project_id) / "LLM_REVISION").read_text().strip() or None
        except FileNotFoundError:
            return None

    def bump_llm_revision(self, project_id: int) -> str:
        """A new revision: every pre-annotation run gets one, so the version /setup reports changes."""
        current = self.llm_revision(project_id)
        revision = f"llm{int(current[3:]) + 1 if current else 1}"
        directory = self.project_dir(project_id)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / "LLM_REVISION", revision.encode())
        return revision

    def prediction_version(self, project_id: int) -> str | None:
        """The version of what /predict serves: the student's, joined by the LLM revision once there is one."""
        student, llm = self.latest_version(project_id), self.llm_revision(project_id)
        if llm is None:
            return student
        return f"{student or 'untrained'}+{llm}"

    def versions(self, project_id: int) -> list[str]:
        """Stored versions, oldest first."""
        directory = self.project_dir(project_id)
        if not directory.is_dir():
            return []
        found = [p.stem for p in directory.glob("v*.pkl") if _VERSION.match(p.stem)]
        return sorted(found, key=lambda v: int(_VERSION.match(v).group(1)))  # type: ignore[union-attr]

    def save(self, project_id: int, model: Any, meta: dict[str, Any] | None = None) -> str:
        """Write a new version and make it current; returns its name.

        Callers serialize saves per project (the training lock); the version number still comes from
        what is on disk, so a restarted worker continues the sequence.
        """
        directory = self.project_dir(project_id)
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.versions(project_id)
        number = int(_VERSION.match(existing[-1]).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        version = f"v{number}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        full_meta = {
            "version": version,
            "project_id": int(project_id),
            "saved_at": time.time(),
            **(meta or {}),
        }
        _atomic_write(directory / f"{version}.pkl", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        _atomic_write(directory / f"{version}.json", json.dumps(full_meta, indent=2, default=str).encode())
        _atomic_write(directory / "LATEST", version.encode())
        self._prune(project_id)
        return version

    def load(self, project_id: int, version: str | None = None) -> StoredModel | None:
        """A stored version (the current one by default), or None when the project has none."""
        version = version or self.latest_version(project_id)
        if version is None:
            return None
        if not _VERSION.match(version):
            raise ValueError(f"not a model version: {version!r}")
        directory = self.project_dir(project_id)
        with open(directory / f"{version}.pkl", "rb") as handle:
            model = pickle.load(handle)
        return StoredModel(project_id, version, model, self.meta(project_id, version))

    def meta(self, project_id: int, version: str) -> dict[str, Any]:
        try:
            return json.loads((self.project_dir(project_id) / f"{version}.json").read_text())
        except FileNotFoundError:
            return {}

    def bind_project_uid(self, project_id: int, uid: str) -> bool:
        """Remember which LS project ("<id>.<created_at>") owns this id; True if older models were archived.

        An LS database that was reset hands out the same ids again: a new project must not inherit the
        models of an old one that happened to share its id.
        """
        directory = self.project_dir(project_id)
        uid_file = directory / "PROJECT_UID"
        try:
            known = uid_file.read_text().strip()
        except FileNotFoundError:
            known = None
        if known == uid:
            return False
        archived = known is not None and self.archive_project(project_id) is not None
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(uid_file, uid.encode())
        return archived

    def archive_project(self, project_id: int) -> Path | None:
        """Move a project's models aside (its LS project was deleted or re-created under the same id)."""
        directory = self.project_dir(project_id)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        # unique, so that two archives of one project within a second never land inside each other
        target = self.root / f"archived-project-{int(project_id)}-{stamp}-{uuid.uuid4().hex[:8]}"
        try:
            directory.rename(target)
        except FileNotFoundError:  # nothing to archive, or another process archived it just now
            return None
        return target

    def _prune(self, project_id: int) -> None:
        current = self.latest_version(project_id)
        for old in self.versions(project_id)[: -self.keep]:
            if old == current:
                continue
            for suffix in (".pkl", ".json"):
                (self.project_dir(project_id) / f"{old}{suffix}").unlink(missing_ok=True)
