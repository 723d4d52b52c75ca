"""The LLM response cache in Redis: identical (model, prompt, parameters) requests cost nothing twice."""

from __future__ import annotations

from typing import Any


class RedisCache:
    def __init__(self, conn: Any, ttl: int | None = 90 * 24 * 3600, prefix: str = "lsal:llm:cache:") -> None:
        self.conn = conn
        self.ttl = ttl
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        value = self.conn.get(self.prefix + key)
        return value.decode() if isinstance(value, bytes) else value

    def set(self, key: str, value: str) -> None:
        self.conn.set(self.prefix + key, value, ex=self.ttl)
