"""The WSGI entry point for gunicorn: `gunicorn backend.server.wsgi:app`."""

from __future__ import annotations

import logging

from backend.server.app import create_app
from backend.settings import get_settings
from backend.student.encoder import NO_ENCODER, get_encoder

logging.basicConfig(level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

app = create_app()
app.extensions["lsal"].registry.preload()
if get_settings().student_encoder != NO_ENCODER:
    # loaded and run once before the first request: a cold load takes seconds, /predict must not
    get_encoder(get_settings().student_encoder).encode(["warm up"])
