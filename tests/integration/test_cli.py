"""`lsal run` as `make run` starts it: server, worker and the embedded Redis, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from backend.jobs.connection import embedded_redis_running
from tests.fixtures.services import free_port, wait_for
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


def test_run_serves_queues_and_stops_what_it_started(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1"}
    for name in ("REDIS_URL", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "WEBHOOK_SECRET"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "run"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, timeout=60, what="lsal run")
        assert embedded_redis_running(tmp_path / "data" / "redis")
        queued = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 5}}, timeout=5)
        assert queued.status_code == 201 and queued.json()["status"] == "queued"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert not embedded_redis_running(tmp_path / "data" / "redis")
    assert (tmp_path / "data" / "redis" / "dump.rdb").exists()  # the queue was saved, not lost
