"""`lsal`: run the backend (server + worker), or either part alone."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from backend.settings import Settings, get_settings, settings_error


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _shared_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes: the Redis URL resolved once, so all of them share it."""
    from backend.jobs.connection import redis_url

    env = dict(os.environ)
    env["REDIS_URL"] = redis_url(settings)
    return env


# a unix socket path must fit in sockaddr_un's 108 bytes
_MAX_SOCKET_PATH = 100


def _control_socket(settings: Settings) -> list[str]:
    """gunicorn's control socket (for `gunicornc`) inside DATA_DIR, one per instance, not one per host."""
    path = settings.data_dir.resolve() / "gunicorn.ctl"
    if len(str(path)) > _MAX_SOCKET_PATH:
        return ["--no-control-socket"]
    return ["--control-socket", str(path)]


def gunicorn_command(settings: Settings, workers: int | None = None) -> list[str]:
    workers = workers or settings.web_workers
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(workers),
        "--worker-class", "gthread",
        "--threads", "8",
        "--timeout", "120",
        "--access-logfile", "-",
        *_control_socket(settings),
        "backend.server.wsgi:app",
    ]  # fmt: skip


def _multiproc_env(settings: Settings, env: dict[str, str], workers: int) -> None:
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in env:
        directory = settings.data_dir.resolve() / "prometheus"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def serve(settings: Settings) -> int:
    env = _shared_env(settings)
    _multiproc_env(settings, env, settings.web_workers)
    return subprocess.call(gunicorn_command(settings), env=env)


def worker(settings: Settings, burst: bool = False) -> int:
    import backend.jobs.training  # noqa: F401  imported once here, not in every forked job
    from backend.jobs.connection import connect
    from backend.jobs.worker import run_worker
    from backend.student.encoder import NO_ENCODER, get_encoder

    _logging(settings)
    if settings.student_encoder != NO_ENCODER:
        # loaded once here and shared by every forked job (a load costs seconds); no forward pass runs here,
        # so no thread pool exists yet for a fork to inherit
        get_encoder(settings.student_encoder).load()
    return run_worker(
        connect(settings),
        [settings.queue_name, settings.finetune_queue_name],
        burst=burst,
        logging_level=settings.log_level.upper(),
    )


def start_embedded_llm(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """With the LLM on and no LLM_BASE_URL: the local llama.cpp server, its URL passed on in `env`."""
    from backend.llm.local import LocalModelMissing, start_local_server

    log = logging.getLogger("lsal")
    if not settings.llm_enabled or settings.llm_base_url:
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = start_local_server(
            settings.llm_local_venv, settings.llm_model, settings.llm_local_port,
            settings.data_dir / "llm-server.log", timeout=180,
        )  # fmt: skip
    except (LocalModelMissing, RuntimeError, ValueError) as exc:
        log.warning("LLM pre-annotation is off: the embedded model did not start (%s). `make llm` installs it; "
                    "or set LLM_BASE_URL, or LLM_ENABLED=false to silence this", exc)  # fmt: skip
        return None
    env["LLM_EMBEDDED_URL"] = f"http://127.0.0.1:{settings.llm_local_port}/v1"
    log.info("embedded LLM %s at %s", settings.llm_model, env["LLM_EMBEDDED_URL"])
    return server


def run(settings: Settings) -> int:
    """Server, one worker and (unless LLM_BASE_URL is set) the embedded LLM, until SIGTERM or Ctrl-C.

    The server and the worker are supervised apart: either one that exits is restarted with a back-off,
    and neither takes the other down.
    """
    from backend.jobs.connection import embedded_redis_running, stop_embedded_redis
    from backend.llm.local import stop_local_server
    from backend.supervisor import Child, Supervisor

    _logging(settings)
    started_redis = settings.redis_url is None and not embedded_redis_running(settings.embedded_redis_path)
    env = _shared_env(settings)
    _multiproc_env(settings, env, settings.web_workers)
    log = logging.getLogger("lsal")
    log.info("Redis at %s; models in %s", env["REDIS_URL"], settings.models_path.resolve())
    llm_server = start_embedded_llm(settings, env)
    supervisor = Supervisor(
        [Child("worker", [sys.executable, "-m", "backend.cli", "worker"]), Child("server", gunicorn_command(settings))],
        env,
    )

    def stop(*_: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("backend on http://%s:%s", settings.host, settings.port)
    try:
        supervisor.run()
    finally:
        supervisor.stop()
        if llm_server is not None:
            stop_local_server(llm_server)
        if started_redis:  # ours to stop (it saves to disk first); one that was already running stays
            stop_embedded_redis(settings.embedded_redis_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lsal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="server + worker on embedded defaults (what `make run` does)")
    sub.add_parser("serve", help="the HTTP server only (gunicorn)")
    work = sub.add_parser("worker", help="one rq worker; start more, on more machines, to scale out")
    work.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"lsal: {settings_error(exc)}", file=sys.stderr)
        return 2
    if args.command == "run":
        return run(settings)
    if args.command == "serve":
        return serve(settings)
    return worker(settings, burst=args.burst)


if __name__ == "__main__":
    sys.exit(main())
