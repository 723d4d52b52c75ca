"""The one place that talks to Label Studio, through label-studio-sdk.

LS is the source of truth for labels: training reads annotations from here, never from webhook bodies
(a webhook can be lost, repeated or arrive out of order; the task list cannot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
from label_studio_sdk import LabelStudio as _SDK
from label_studio_sdk.core.api_error import ApiError

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """LS is unreachable, refused our key, or answered something we cannot use.

    `transient` errors (LS down, timeouts, 5xx) are worth retrying; a refused key or a missing
    project is not.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    return item.model_dump() if hasattr(item, "model_dump") else dict(item)


class LabelStudio:
    def __init__(self, url: str, api_key: str, page_size: int = 500, timeout: float = 60.0) -> None:
        if not url or not api_key:
            raise LabelStudioError(
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set for the backend to read labels"
            )
        self.url = url.rstrip("/")
        self.page_size = page_size
        self.sdk = _SDK(base_url=self.url, api_key=api_key, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelStudioError(
                    f"{what}: Label Studio at {self.url} refused the API key ({exc.status_code}): {exc.body}"
                ) from exc
            if exc.status_code == 404:
                raise LabelStudioError(f"{what}: not found in Label Studio at {self.url}") from exc
            raise LabelStudioError(
                f"{what}: Label Studio answered {exc.status_code}: {exc.body}",
                transient=exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429,
            ) from exc
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"{what}: cannot reach Label Studio at {self.url}: {exc}", transient=True) from exc

    def label_config(self, project_id: int) -> str:
        project = self._call(f"project {project_id}", self.sdk.projects.get, id=project_id)
        return str(project.label_config)

    def iter_annotated_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task that has at least one annotation, as plain dicts (id, data, annotations), paged."""
        for task in self._tasks(project_id, fields="all", only_annotated=True):
            yield {
                "id": task.id,
                "data": dict(task.data or {}),
                "annotations": [_as_dict(a) for a in (task.annotations or [])],
            }

    def iter_full_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task with its annotations and predictions, as plain dicts, paged (for exports)."""
        for task in self._tasks(project_id, fields="all"):
            yield {
                "id": task.id,
                "data": dict(task.data or {}),
                "annotations": [_as_dict(a) for a in (task.annotations or [])],
                "predictions": [_as_dict(p) for p in (task.predictions or [])],
            }

    def iter_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of the project (id, data, whether it has annotations), paged, without predictions."""
        for task in self._tasks(project_id, fields="task_only"):
            yield {
                "id": task.id,
                "data": dict(task.data or {}),
                "total_annotations": int(getattr(task, "total_annotations", 0) or 0),
            }

    def _tasks(self, project_id: int, **params: Any) -> Iterator[Any]:
        """The SDK's task pager, its errors (on any page) turned into LabelStudioError."""
        pager = self._call(f"tasks of project {project_id}", self.sdk.tasks.list, project=project_id,
                           page_size=self.page_size, **params)  # fmt: skip
        try:
            yield from pager
        except (ApiError, httpx.HTTPError) as exc:
            raise LabelStudioError(f"reading tasks of project {project_id} failed: {exc}", transient=True) from exc

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> int:
        """Bulk-create tasks ({"data": {...}}) in one request; the number LS says it created."""
        if not tasks:
            return 0
        response = self._call(
            f"importing {len(tasks)} tasks into project {project_id}",
            self.sdk.projects.import_tasks,
            id=project_id,
            request=[dict(t) for t in tasks],
        )
        created = getattr(response, "task_count", None)
        return int(created) if created is not None else len(tasks)

    def projects(self) -> list[dict[str, Any]]:
        """Every project as {"id", "title"}."""
        return [{"id": int(p.id), "title": p.title} for p in self._call("projects", self.sdk.projects.list)]

    def create_project(self, title: str, label_config: str) -> int:
        created = self._call(f"creating project {title!r}", self.sdk.projects.create, title=title,
                             label_config=label_config)  # fmt: skip
        return int(created.id)

    def project(self, project_id: int) -> dict[str, Any]:
        """The project's fields as LS returns them (title, label_config, model_version, sampling, counts...)."""
        return _as_dict(self._call(f"project {project_id}", self.sdk.projects.get, id=project_id))

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]]) -> int:
        """Bulk-create predictions ({"task", "result", "score", "model_version"}) in one request."""
        if not predictions:
            return 0
        self._call(
            f"importing {len(predictions)} predictions into project {project_id}",
            self.sdk.projects.import_predictions,
            id=project_id,
            request=[dict(p) for p in predictions],
        )
        return len(predictions)

    def set_model_version(self, project_id: int, version: str, sampling: str | None = None) -> None:
        """The version LS shows and samples by; with `sampling`, also how LS picks the next task."""
        fields = {"model_version": version} | ({"sampling": sampling} if sampling else {})
        self._call(f"project {project_id} model version", self.sdk.projects.update, id=project_id, **fields)

    def project_settings(self, project_id: int) -> tuple[str | None, str | None]:
        """(model_version, sampling) as LS has them."""
        project = self._call(f"project {project_id}", self.sdk.projects.get, id=project_id)
        return project.model_version, getattr(project, "sampling", None)

    def delete_predictions(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of one model version (the SDK has no call for it: LS's REST route)."""

        def delete() -> int:
            response = self.sdk._client_wrapper.httpx_client.request(
                f"api/projects/{int(project_id)}/model-versions/", method="DELETE",
                json={"model_version": model_version},
            )  # fmt: skip
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, headers=dict(response.headers), body=response.text)
            return int((response.json() or {}).get("deleted_predictions", 0))

        return self._call(f"deleting predictions {model_version} of project {project_id}", delete)

    def connect_backend(
        self,
        project_id: int,
        backend_url: str,
        title: str,
        basic_auth: tuple[str, str] | None = None,
        webhook_headers: Mapping[str, str] | None = None,
        webhook_actions: Sequence[str] = (),
    ) -> int:
        """Connect our backend to a project and make its webhook authenticate; returns the ML backend id.

        LS runs /health and /setup while creating the connection and fails loudly if they fail. It also
        creates a webhook to <url>/webhook without any headers, which a protected backend would refuse:
        that one is replaced by a webhook that carries `webhook_headers`. Safe to run twice.
        """
        backend_url = backend_url.rstrip("/")
        existing = [b for b in self._call("ML backends", self.sdk.ml.list, project=project_id) if b.url == backend_url]
        auth: dict[str, Any] = {}
        if basic_auth:
            auth = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": basic_auth[0],
                "basic_auth_pass": basic_auth[1],
            }
        # LS 1.23 answers 500 to a PATCH without url and project (its checks re-run on them): send both
        fields = {"url": backend_url, "project": project_id, "title": title, **auth}
        if existing:
            backend_id = int(existing[0].id)
            self._call("ML backend update", self.sdk.ml.update, id=backend_id, **fields)
        else:
            created = self._call("connecting the ML backend", self.sdk.ml.create, is_interactive=False, **fields)
            backend_id = int(created.id)
        webhook_url = f"{backend_url}/webhook"
        for hook in self._call("webhooks", self.sdk.webhooks.list, project=str(project_id)):
            if hook.url == webhook_url:
                self._call("webhook delete", self.sdk.webhooks.delete, id=hook.id)
        hook_args: dict[str, Any] = {"send_for_all_actions": True}
        if webhook_actions:
            hook_args = {"send_for_all_actions": False, "actions": list(webhook_actions)}
        self._call(
            "webhook create",
            self.sdk.webhooks.create,
            url=webhook_url,
            project=project_id,
            send_payload=True,
            headers=dict(webhook_headers or {}),
            **hook_args,
        )
        return backend_id
