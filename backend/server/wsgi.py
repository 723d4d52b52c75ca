"""The WSGI entry point for gunicorn: `gunicorn backend.server.wsgi:app`."""

from __future__ import annotations

import logging

from backend.server.app import create_app
from backend.settings import get_settings

logging.basicConfig(level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

app = create_app()
app.extensions["lsal"].registry.preload()
