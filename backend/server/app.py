"""Flask routes: thin, JSON in and out, errors always as JSON."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from backend import __version__
from backend.jobs import llm_answers, ranking, stats
from backend.jobs.connection import connect
from backend.jobs.queue import PREANNOTATE, RANK, TRAIN, JobQueue
from backend.jobs.state import ProjectState
from backend.labeling.predictions import predict_tasks, task_ids
from backend.llm.annotator import PreLabel, pre_labels
from backend.llm.bias import DistributionCalibration
from backend.llm.calibration import Calibrator
from backend.llm.checks import published_calibration, published_distribution_calibration
from backend.llm.routing import AUTO_ACCEPT
from backend.server import metrics
from backend.server.background import SerialRunner
from backend.server.label_configs import LabelConfigs
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
from backend.server.registry import ModelRegistry
from backend.settings import Settings, get_settings
from backend.student import ModelStore
from backend.student.store import RELIABILITY_PNG

log = logging.getLogger(__name__)

# a model version's LLM calibration: top-confidence calibrator, its threshold, distribution calibration
Calibration = tuple[Calibrator | None, float | None, DistributionCalibration | None]

WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
UNTRAINED = "untrained"


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


def _json_body() -> dict[str, Any]:
    body = parse_json_body(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object")
    return body


def _discard_unread_body(cap: int) -> None:
    """Read what is left of the request body into nothing, so that the connection stays usable.

    gunicorn drains at most 64 KB of a body the app left unread and then drops the connection, though
    its answer said keep-alive: a client that reuses the connection (LS does) gets a reset instead of its
    next answer. Bodies over `cap` are not read: those connections are dropped.
    """
    length, stream = request.content_length, request.environ.get("wsgi.input")
    if stream is None or length is None or length > cap:
        return
    while length > 0 and (chunk := stream.read(min(2**16, length))):
        length -= len(chunk)


def _authorized(settings: Settings, webhook: bool) -> bool:
    if webhook and settings.webhook_secret:
        given = request.headers.get(WEBHOOK_SECRET_HEADER, "")
        if given and hmac.compare_digest(given.encode(), settings.webhook_secret.encode()):
            return True
    if not settings.auth_enabled:
        return not (webhook and settings.webhook_secret)
    auth = request.authorization
    return bool(
        auth
        and auth.type == "basic"
        and hmac.compare_digest((auth.username or "").encode(), (settings.basic_auth_user or "").encode())
        and hmac.compare_digest((auth.password or "").encode(), (settings.basic_auth_pass or "").encode())
    )


def create_app(settings: Settings | None = None, conn: redis.Redis | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_request_mb * 2**20)
    backend = Backend(settings, conn)
    app.extensions["lsal"] = backend

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        if not _authorized(settings, webhook=request.path.rstrip("/") == "/webhook"):
            response = jsonify(error="unauthorized", message="basic auth (or the webhook secret) is required")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="lsal"'
            return response
        return None

    @app.after_request
    def _drain(response: Response) -> Response:
        _discard_unread_body(4 * app.config["MAX_CONTENT_LENGTH"])  # a 401 or 413 left it unread
        return response

    @app.after_request
    def _observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe_request(route, request.method, response.status_code, time.perf_counter() - g.started)
        return response

    @app.errorhandler(ProtocolError)
    def _protocol_error(exc: ProtocolError) -> tuple[Response, int]:
        return jsonify(error="bad_request" if exc.status == 400 else "unprocessable", message=str(exc)), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code or 500

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError) -> tuple[Response, int]:
        log.error("Redis unavailable on %s %s: %s", request.method, request.path, exc)
        return jsonify(error="queue_unavailable", message="Redis is unavailable; try again shortly"), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        reference = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", reference, request.method, request.path)
        # the exception's text can carry file paths and internals: it goes to the log, not to the caller
        return jsonify(error="internal_error", message=f"internal error {reference}; see the server log"), 500

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(status="UP", model_class="StudentModel", version=__version__)

    @app.post("/setup")
    def setup() -> Response:
        body = _json_body()
        ref = project_ref(body.get("project"))
        schema = body.get("schema")
        if schema is not None:  # a config we cannot serve is refused at connect time, with the reason
            backend.label_configs.remember(ref.id, schema)
        if ref.uid and backend.store.bind_project_uid(ref.id, ref.uid):
            backend.registry.forget(ref.id)
            backend.forget_project_later(ref.id)
            log.warning("project %s was re-created in LS (%s): older models archived, its state forgotten", ref.id,
                        ref.uid)  # fmt: skip
        if body.get("hostname") and body.get("access_token"):
            backend.remember_ls_access(ref.id, str(body["hostname"]), str(body["access_token"]))
        return jsonify(model_version=backend.store.prediction_version(ref.id) or UNTRAINED)

    @app.post("/validate")
    def validate() -> Response:
        body = _json_body()
        spec = backend.label_configs.spec(body.get("config"))
        return jsonify(status="ok", control=spec.from_name, labels=list(spec.labels), multi_label=spec.multi_label)

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()
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
            raise ProtocolError(
                f"no label config for project {ref.id}: send 'label_config' or call /setup first", status=422
            )
        stored = backend.registry.get(ref.id)
        model = stored.model if stored is not None else None
        llm = backend.llm_pre_labels(ref.id, task_ids(tasks), stored.version if stored is not None else None)
        version = backend.store.prediction_version(ref.id)
        results = predict_tasks(tasks, spec, model, version, llm)
        metrics.PREDICTED_TASKS.inc(sum(1 for r in results if r))
        return jsonify(results=results, model_version=version or UNTRAINED)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        body = _json_body()
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
            backend.registry.forget(ref.id)
            archived = backend.store.archive_project(ref.id)
            try:
                forgotten: dict[str, Any] = {"forgotten_keys": backend.forget_project(ref.id)}
            except redis.RedisError as exc:  # the models are archived already: say so, and what is left
                log.error("project %s deleted but its Redis state is kept: %s", ref.id, exc)
                forgotten = {"message": f"Redis is unavailable, the project's state is kept: {exc}"}
            return jsonify(status="archived" if archived else "ignored", action=action, **forgotten), 200
        if action == TASKS_DELETED:  # Redis down: a 503, like the training it queues
            ProjectState(backend.conn).drop(ref.id, deleted_task_ids(body))
        if action == TASKS_CREATED and not settings.llm_enabled:
            return jsonify(status="ignored", action=action, message="the LLM is off (LLM_ENABLED=false)"), 200
        kind = PREANNOTATE if action == TASKS_CREATED else TRAIN
        assert action in TRAINING_ACTIONS or kind == PREANNOTATE
        return enqueue(ref.id, action, kind)

    def enqueue(project_id: int, reason: str, kind: str) -> tuple[Response, int]:
        queued = backend.queue.request(project_id, reason=reason, kind=kind)
        return jsonify(action=reason, job=kind, project=project_id, **queued), 201

    @app.post("/preannotate")
    def preannotate() -> tuple[Response, int]:
        """LLM pre-labels for every unlabelled task of the project, as a background job."""
        ref = project_ref(_json_body().get("project"))
        if not settings.llm_enabled:
            raise ProtocolError("the LLM is off (LLM_ENABLED=false)", status=409)
        return enqueue(ref.id, "preannotate", PREANNOTATE)

    @app.get("/llm")
    def llm_report() -> Response:
        """What human labels say about the LLM: checks, ECE raw and calibrated, threshold, agreement, routes,
        and for label distributions accuracy and ECE raw, bias-corrected and calibrated."""
        ref = project_ref(request.args.get("project"))
        version = backend.store.latest_version(ref.id)
        checks = backend.store.meta(ref.id, version).get("llm_checks") if version else None
        report: dict[str, Any] = {"project": ref.id, "student_version": version,
                                  "llm_revision": backend.store.llm_revision(ref.id), "checks": checks}  # fmt: skip
        if backend.store.llm_revision(ref.id) is not None:
            answers = llm_answers.all_answers(backend.conn, ref.id)
            labels = pre_labels(list(answers.values()), *backend.calibration(ref.id, version))
            report["answers"] = len(answers)
            report["auto_accept"] = sum(1 for label in labels if label.route == AUTO_ACCEPT)
            report["review"] = len(labels) - report["auto_accept"]
            report["spend"] = stats.llm_spend(backend.conn, ref.id)
        distribution = (checks or {}).get("distribution") or {}
        # accuracy, ECE and log-loss of the label distributions: raw, prior divided out, calibrated (out of fold)
        report["distribution"] = {"checks": distribution["checks"], **distribution["stages"],
                                  "threshold": distribution.get("threshold")} if distribution else None  # fmt: skip
        return jsonify(report)

    @app.get("/queue")
    def queue_report() -> Response:
        """The published active-learning queue (tasks in the order LS serves them), rounds and stop signals."""
        ref = project_ref(request.args.get("project"))
        conn = backend.conn
        enabled = ProjectState(conn).queue_enabled(ref.id, settings.queue_enabled)
        return jsonify(project=ref.id, enabled=enabled, queue=ranking.published_queue(conn, ref.id),
                       rounds=ranking.rounds(conn, ref.id), signals=ranking.stop_signals(conn, ref.id))  # fmt: skip

    @app.post("/queue/settings")
    def queue_settings() -> tuple[Response, int]:
        """`{"project": <id>, "enabled": false}`: whether LS serves this project's ranking (kept in Redis)."""
        body = _json_body()
        ref = project_ref(body.get("project"))
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise ProtocolError("'enabled' must be true or false")
        ProjectState(backend.conn).set_queue_enabled(ref.id, enabled)
        return jsonify(project=ref.id, enabled=enabled), 200

    @app.post("/rank")
    def rank() -> tuple[Response, int]:
        """Re-rank the project's pool now (it also happens after every retraining)."""
        ref = project_ref(_json_body().get("project"))
        return enqueue(ref.id, "rank", RANK)

    @app.get("/llm/reliability.png")
    def reliability_plot() -> Response:
        ref = project_ref(request.args.get("project"))
        path = backend.store.project_dir(ref.id) / RELIABILITY_PNG
        if not path.is_file():
            raise ProtocolError(f"project {ref.id} has no reliability plot yet: it needs human-checked LLM "
                                "pre-labels and a retraining", status=404)  # fmt: skip
        return send_file(path.resolve(), mimetype="image/png", max_age=0)

    @app.post("/train")
    def train() -> tuple[Response, int]:
        """Older LS editions call /train instead of sending START_TRAINING to /webhook."""
        body = _json_body()
        ref = project_ref(body.get("project"))
        return enqueue(ref.id, "train", TRAIN)

    @app.route("/versions", methods=["GET", "POST"])
    def versions() -> Response:
        raw = request.get_data(cache=True)
        body = parse_json_body(raw) if raw.strip() else {}
        project = body.get("project") if isinstance(body, dict) else None
        ref = project_ref(project if project is not None else request.args.get("project"))
        return jsonify(versions=backend.store.versions(ref.id), current=backend.store.prediction_version(ref.id))

    @app.get("/metrics")
    def metrics_route() -> Response:
        payload, content_type = metrics.render(backend)
        return Response(payload, content_type=content_type)

    return app
