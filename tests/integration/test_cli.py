"""`lsal run` as `make run` starts it: server, worker and the embedded Redis, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from rq.job import Job

from backend.jobs.connection import embedded_redis_running
from tests.fixtures.services import free_port, wait_for
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


def test_run_serves_queues_and_stops_what_it_started(tmp_path: Path) -> None:
    port = free_port()
    # the fast model: this test is about lsal run, not the LLM
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1",
           "LLM_MODEL": "smollm2-135m"}  # fmt: skip
    for name in ("REDIS_URL", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "WEBHOOK_SECRET"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "run"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        # generous: the first /health waits for the server worker to load the app and warm the encoder, which
        # took longer than a 2 s read on a loaded CI machine
        wait_for(lambda: requests.get(f"{url}/health", timeout=10).ok, timeout=180, what="lsal run")
        assert embedded_redis_running(tmp_path / "data" / "redis")
        queued = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 5}}, timeout=5)
        assert queued.status_code == 201 and queued.json()["status"] == "queued"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert not embedded_redis_running(tmp_path / "data" / "redis")
    assert (tmp_path / "data" / "redis" / "dump.rdb").exists()  # the queue was saved, not lost


def test_lsal_refuses_half_configured_basic_auth_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "BASIC_AUTH_USER": "lsal"}
    env.pop("BASIC_AUTH_PASS", None)
    done = subprocess.run([sys.executable, "-m", "backend.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lsal: invalid settings: BASIC_AUTH_USER is set but BASIC_AUTH_PASS is not: set both for basic auth, or neither"
    ]


@pytest.mark.parametrize(
    ("env", "builds_llm"),
    [
        ({}, True),
        ({"LLM_BASE_URL": "http://gpu:8000/v1"}, False),
        ({"LLM_ENABLED": "false"}, False),
        ({"LLM_ENABLED": "0"}, False),
        ({"LLM_ENABLED": "true"}, True),
    ],
)
def test_make_run_builds_the_embedded_llm_only_when_it_will_run_it(env: dict[str, str], builds_llm: bool) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("LLM_BASE_URL", "LLM_ENABLED")}
    plan = subprocess.run(["make", "-n", "run", "LLM_VENV=/nonexistent/llm-venv"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert ("llama-cpp-python" in plan.stdout) is builds_llm
    assert "lsal run" in plan.stdout


def test_two_archives_of_one_project_in_one_second_stay_apart(tmp_path: Path) -> None:
    from backend.student import ModelStore

    store = ModelStore(tmp_path / "models")
    archived = []
    for _ in range(2):
        (store.project_dir(3)).mkdir(parents=True)
        (store.project_dir(3) / "PROJECT_UID").write_text("3.1")
        archived.append(store.archive_project(3))
    assert archived[0] != archived[1]
    assert all(path is not None and (path / "PROJECT_UID").is_file() for path in archived)
    assert not list(tmp_path.rglob("archived-project-3-*/archived-project-*"))  # not nested


def test_gunicorn_control_socket_lives_in_data_dir(tmp_path: Path) -> None:
    from backend.cli import gunicorn_command
    from backend.settings import Settings

    command = gunicorn_command(Settings(data_dir=tmp_path / "d"))
    assert command[command.index("--control-socket") + 1] == str((tmp_path / "d").resolve() / "gunicorn.ctl")
    deep = Settings(data_dir=tmp_path / ("x" * 120))
    assert "--no-control-socket" in gunicorn_command(deep)


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of `pid` (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_run_restarts_a_dead_worker_and_the_server_never_stops(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": redis_url, "LLM_ENABLED": "false", "WEB_WORKERS": "1"}  # fmt: skip
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "WEBHOOK_SECRET", "LABEL_STUDIO_URL"):
        env.pop(name, None)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "backend.cli", "run"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # generous: the first /health waits for the server worker to load the app and warm the encoder, which
        # took longer than a 2 s read on a loaded CI machine
        wait_for(lambda: requests.get(f"{url}/health", timeout=10).ok, timeout=180, what="lsal run")

        def worker_pid() -> int | None:
            return next((p for p, cmd in _children(process.pid).items() if "backend.cli worker" in cmd), None)

        first = wait_for(worker_pid, timeout=30, what="the worker")
        os.kill(first, signal.SIGKILL)
        statuses = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # the server does not notice: it answers throughout
            statuses.append(requests.get(f"{url}/health", timeout=2).status_code)
            time.sleep(0.1)
        assert statuses and set(statuses) == {200}
        second = wait_for(lambda: (p := worker_pid()) not in (None, first) and p, timeout=30, what="a new worker")
        assert second != first
        # the new worker works: a queued job runs (it fails, LS is not configured, and that is running)
        job = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 8}}, timeout=5)
        conn = redis.Redis.from_url(redis_url)
        wait_for(lambda: Job.fetch(job.json()["job_id"], connection=conn).get_status() in ("failed", "finished"),
                 timeout=60, what=f"the job to run on the restarted worker\n{log.read_text()[-3000:]}")  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = log.read_text()
    assert f"worker (pid {first}) exited with status -9; restart 1 in 1 s" in text
    assert process.returncode == 0


def test_run_killed_outright_takes_its_server_and_worker_with_it(tmp_path: Path, redis_url: str) -> None:
    """Its children run in sessions of their own (a signal to its group does not reach them): the kernel
    must end them when `lsal run` dies of SIGKILL, or a second `lsal run` finds the port taken."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": redis_url, "LLM_ENABLED": "false", "WEB_WORKERS": "1"}  # fmt: skip
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "WEBHOOK_SECRET"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "run"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, timeout=60, what="lsal run")
    children = wait_for(lambda: len(found := _children(process.pid)) == 2 and found, timeout=30, what="2 children")
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [cmd for pid, cmd in children.items() if Path(f"/proc/{pid}").exists()]  # type: ignore[union-attr]
    assert not left, f"outlived lsal run: {left}"
