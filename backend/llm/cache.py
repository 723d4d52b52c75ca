"""LLM response caches (Redis, or a JSON file): identical (model, prompt, parameters) requests cost nothing twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.jobs.state import LLM_CACHE_PREFIX


class RedisCache:
    """Server-wide, not per project: backend/jobs/state.py says why."""

    def __init__(self, conn: Any, ttl: int | None = 90 * 24 * 3600, prefix: str = LLM_CACHE_PREFIX) -> None:
        self.conn = conn
        self.ttl = ttl
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        value = self.conn.get(self.prefix + key)
        return value.decode() if isinstance(value, bytes) else value

    def set(self, key: str, value: str) -> None:
        self.conn.set(self.prefix + key, value, ex=self.ttl)


class DiskCache:
    """The cache protocol over one JSON file, for tools that run without Redis (benches, ops scripts).
    Call `save()` to keep what was added."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
