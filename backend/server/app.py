"""The Flask app: thin routes, JSON in and out, errors always as JSON.

The routes LS calls are in routes_ls.py, the rest in routes_ops.py; what every request goes through
(auth, body limits, metrics, error handlers) in http.py; what the routes share in context.py.
"""

from __future__ import annotations

import redis
from flask import Flask

from backend.server import routes_ls, routes_ops
from backend.server.context import EXTENSION, Backend
from backend.server.http import install_error_handlers, install_hooks
from backend.settings import Settings, get_settings


def create_app(settings: Settings | None = None, conn: redis.Redis | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_request_mb * 2**20)
    app.extensions[EXTENSION] = Backend(settings, conn)
    install_hooks(app, settings)
    install_error_handlers(app)
    app.register_blueprint(routes_ls.routes)
    app.register_blueprint(routes_ops.routes)
    return app
