"""Our backend's HTTP routes, as the ops commands call them (basic auth when it is on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


class BackendError(RuntimeError):
    pass


class Backend:
    """The few routes of our backend that status (and connect, for the queue choice) needs."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, auth=auth, timeout=timeout)

    def get(self, path: str, project_id: int) -> dict[str, Any]:
        return self._answer(path, lambda: self.client.get(path, params={"project": project_id}))

    def set_queue(self, project_id: int, enabled: bool) -> dict[str, Any]:
        """Record whether LS serves this project's ranking; the backend keeps the choice."""
        body = {"project": project_id, "enabled": enabled}
        return self._answer("/queue/settings", lambda: self.client.post("/queue/settings", json=body))

    def _answer(self, path: str, call: Callable[[], httpx.Response]) -> dict[str, Any]:
        try:
            response = call()
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the backend at {self.url}: {exc}") from exc
        if response.status_code in (401, 403):
            raise BackendError(f"the backend at {self.url} refused our credentials (BASIC_AUTH_USER/PASS)")
        if response.status_code >= 400:
            raise BackendError(f"the backend answered {response.status_code} to {path}: {response.text[:200]}")
        return dict(response.json())
