"""What every request goes through: auth, body parsing and draining, metrics, errors as JSON."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.server import metrics
from backend.server.context import current_backend
from backend.server.protocol import ProtocolError, parse_json_body
from backend.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"


def json_body() -> dict[str, Any]:
    body = parse_json_body(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object")
    return body


def enqueued(project_id: int, reason: str, kind: str) -> tuple[Response, int]:
    """Queue (or join) a job of `kind` for the project: 201 with what happened; Redis down is a 503."""
    queued = current_backend().queue.request(project_id, reason=reason, kind=kind)
    return jsonify(action=reason, job=kind, project=project_id, **queued), 201


def discard_unread_body(cap: int) -> None:
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


def authorized(settings: Settings, webhook: bool) -> bool:
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


def install_hooks(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        if not authorized(settings, webhook=request.path.rstrip("/") == "/webhook"):
            response = jsonify(error="unauthorized", message="basic auth (or the webhook secret) is required")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="lsal"'
            return response
        return None

    @app.after_request
    def _drain(response: Response) -> Response:
        discard_unread_body(4 * app.config["MAX_CONTENT_LENGTH"])  # a 401 or 413 left it unread
        return response

    @app.after_request
    def _observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe_request(route, request.method, response.status_code, time.perf_counter() - g.started)
        return response


def install_error_handlers(app: Flask) -> None:
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
