"""The routes Label Studio calls: health, setup, predict, webhooks, train, versions."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request

from backend import __version__, kinds
from backend.jobs.queue import PREANNOTATE, TRAIN
from backend.jobs.state import ProjectState
from backend.labeling.predictions import predict_tasks, task_ids
from backend.server import metrics
from backend.server.context import current_backend
from backend.server.http import enqueued, json_body
from backend.server.protocol import (
    IGNORED_ACTIONS,
    KNOWN_ACTIONS,
    PROJECT_DELETED,
    TASKS_CREATED,
    TASKS_DELETED,
    TRAINING_ACTIONS,
    ProtocolError,
    deleted_task_ids,
    parse_json_body,
    project_ref,
)

log = logging.getLogger(__name__)
routes = Blueprint("label_studio", __name__)

UNTRAINED = "untrained"


@routes.get("/")
@routes.get("/health")
def health() -> Response:
    return jsonify(status="UP", model_class="StudentModel", version=__version__)


@routes.post("/setup")
def setup() -> Response:
    backend = current_backend()
    body = json_body()
    ref = project_ref(body.get("project"))
    schema = body.get("schema")
    unfilled: list[str] = []
    if schema is not None:  # a config we cannot serve is refused at connect time, with the reason
        unfilled = kinds.not_predicted(schema, backend.label_configs.remember(ref.id, schema))
    if ref.uid and backend.store.bind_project_uid(ref.id, ref.uid):
        backend.registry.forget(ref.id)
        backend.forget_project_later(ref.id)
        log.warning("project %s was re-created in LS (%s): older models archived, its state forgotten", ref.id,
                    ref.uid)  # fmt: skip
    if body.get("hostname") and body.get("access_token"):
        backend.remember_ls_access(ref.id, str(body["hostname"]), str(body["access_token"]))
    extra = {"not_predicted": unfilled} if unfilled else {}
    return jsonify(model_version=backend.store.prediction_version(ref.id) or UNTRAINED, **extra)


@routes.post("/predict")
def predict() -> Response:
    backend = current_backend()
    body = json_body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise ProtocolError("'tasks' must be a list of Label Studio tasks")
    if not tasks:
        return jsonify(results=[], model_version=None)
    project = body.get("project")
    if project is None and isinstance(tasks[0], dict):
        project = tasks[0].get("project")
    ref = project_ref(project)
    label_config = body.get("label_config")
    spec = backend.label_configs.spec(label_config) if label_config else backend.label_configs.for_project(ref.id)
    if spec is None:
        raise ProtocolError(f"no label config for project {ref.id}: send 'label_config' or call /setup first",
                            status=422)  # fmt: skip
    stored = backend.registry.get(ref.id)
    model = stored.model if stored is not None else None
    llm = backend.llm_pre_labels(ref.id, task_ids(tasks), stored.version if stored is not None else None)
    version = backend.store.prediction_version(ref.id)
    encoder = getattr(model, "encoder", None)
    embed = backend.task_embeddings(ref.id, encoder) if encoder else None
    results = predict_tasks(tasks, spec, model, version, llm, embed)
    metrics.PREDICTED_TASKS.inc(sum(1 for r in results if r))
    return jsonify(results=results, model_version=version or UNTRAINED)


@routes.post("/webhook")
def webhook() -> tuple[Response, int]:
    backend = current_backend()
    body = json_body()
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise ProtocolError("'action' is required")
    if action not in KNOWN_ACTIONS:
        raise ProtocolError(f"unknown action {action!r}; known: {', '.join(sorted(KNOWN_ACTIONS))}")
    metrics.WEBHOOKS.labels(action=action).inc()
    if action in IGNORED_ACTIONS:
        return jsonify(status="ignored", action=action), 200
    ref = project_ref(body.get("project"))
    if action == PROJECT_DELETED:
        return project_deleted(ref.id)
    if action == TASKS_DELETED:  # Redis down: a 503, like the training it queues
        ProjectState(backend.conn).drop(ref.id, deleted_task_ids(body))
    if action == TASKS_CREATED and not backend.settings.llm_enabled:
        return jsonify(status="ignored", action=action, message="the LLM is off (LLM_ENABLED=false)"), 200
    kind = PREANNOTATE if action == TASKS_CREATED else TRAIN
    assert action in TRAINING_ACTIONS or kind == PREANNOTATE
    return enqueued(ref.id, action, kind)


def project_deleted(project_id: int) -> tuple[Response, int]:
    backend = current_backend()
    backend.registry.forget(project_id)
    archived = backend.store.archive_project(project_id)
    try:
        forgotten: dict[str, Any] = {"forgotten_keys": backend.forget_project(project_id)}
    except redis.RedisError as exc:  # the models are archived already: say so, and what is left
        log.error("project %s deleted but its Redis state is kept: %s", project_id, exc)
        forgotten = {"message": f"Redis is unavailable, the project's state is kept: {exc}"}
    return jsonify(status="archived" if archived else "ignored", action=PROJECT_DELETED, **forgotten), 200


@routes.post("/train")
def train() -> tuple[Response, int]:
    """Older LS editions call /train instead of sending START_TRAINING to /webhook."""
    ref = project_ref(json_body().get("project"))
    return enqueued(ref.id, "train", TRAIN)


@routes.route("/versions", methods=["GET", "POST"])
def versions() -> Response:
    store = current_backend().store
    raw = request.get_data(cache=True)
    body = parse_json_body(raw) if raw.strip() else {}
    project = body.get("project") if isinstance(body, dict) else None
    ref = project_ref(project if project is not None else request.args.get("project"))
    return jsonify(versions=store.versions(ref.id), current=store.prediction_version(ref.id))
