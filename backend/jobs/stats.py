"""Job outcomes kept in Redis, so that /metrics (another process) can report them."""

from __future__ import annotations

import time
from typing import Any

_PREFIX = "lsal:stats"


def record_training(conn: Any, project_id: int, result: dict[str, Any]) -> None:
    status = str(result.get("status", "unknown"))
    pipe = conn.pipeline()
    pipe.hincrby(f"{_PREFIX}:training_runs", status, 1)
    fields = {"last_status": status, "last_run_at": time.time()}
    if "labelled" in result:
        fields["labelled"] = int(result["labelled"])
    if "fit_seconds" in result:
        fields["fit_seconds"] = float(result["fit_seconds"])
    if "error" in result:
        fields["last_error"] = str(result["error"])[:2000]
    if "version" in result:
        fields["version"] = str(result["version"])
    pipe.hset(f"{_PREFIX}:project:{int(project_id)}", mapping=fields)
    pipe.sadd(f"{_PREFIX}:projects", int(project_id))
    pipe.execute()


def training_runs(conn: Any) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(f"{_PREFIX}:training_runs").items()}


def project_stats(conn: Any) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for raw in conn.smembers(f"{_PREFIX}:projects"):
        pid = int(raw)
        out[pid] = {k.decode(): v.decode() for k, v in conn.hgetall(f"{_PREFIX}:project:{pid}").items()}
    return out


def remember_ls_access(conn: Any, project_id: int, hostname: str | None, access_token: str | None) -> None:
    """What /setup told us about reaching LS: the fallback when LABEL_STUDIO_URL/API_KEY are not set."""
    if hostname and access_token:
        conn.hset(f"lsal:project:{int(project_id)}:ls", mapping={"url": hostname, "api_key": access_token})


def ls_access(conn: Any, project_id: int) -> tuple[str, str] | None:
    found = conn.hgetall(f"lsal:project:{int(project_id)}:ls")
    if b"url" in found and b"api_key" in found:
        return found[b"url"].decode(), found[b"api_key"].decode()
    return None
