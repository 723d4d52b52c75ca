"""Job outcomes kept in Redis, so that /metrics (another process) can report them."""

from __future__ import annotations

import time
from typing import Any

from backend.llm.cost import Price, Usage, dollars

_PREFIX = "lsal:stats"


# per job kind other than training: the runs counter, the prefix of its fields, the result fields kept
_RUNS = {
    "preannotate": ("preannotation_runs", "llm_", ("annotated", "failed", "pushed", "skipped", "remaining",
                                                   "revision")),
    "rank": ("ranking_runs", "queue_", ("version", "strategy", "queued", "pool", "seconds")),
}  # fmt: skip


def record_job(conn: Any, kind: str, project_id: int, result: dict[str, Any]) -> None:
    if kind == "train":
        record_training(conn, project_id, result)
        return
    runs, prefix, names = _RUNS[kind]
    status = str(result.get("status", "unknown"))
    fields: dict[str, Any] = {f"{prefix}last_status": status, f"{prefix}last_run_at": time.time()}
    fields.update({f"{prefix}{name}": result[name] for name in names if name in result})
    if result.get("error") or result.get("message"):
        fields[f"{prefix}last_message"] = str(result.get("error") or result.get("message"))[:2000]
    pipe = conn.pipeline()
    pipe.hincrby(f"{_PREFIX}:{runs}", status, 1)
    pipe.hset(f"{_PREFIX}:project:{int(project_id)}", mapping=fields)
    pipe.sadd(f"{_PREFIX}:projects", int(project_id))
    pipe.execute()


def job_runs(conn: Any, kind: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(f"{_PREFIX}:{_RUNS[kind][0]}").items()}


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


def record_llm_usage(conn: Any, project_id: int, usage: Usage, price: Price) -> float:
    """Add one batch's tokens and dollars to the project's totals; returns the project's dollars so far."""
    key = f"{_PREFIX}:llm:{int(project_id)}"
    pipe = conn.pipeline()
    pipe.hincrby(key, "prompt_tokens", usage.prompt_tokens)
    pipe.hincrby(key, "completion_tokens", usage.completion_tokens)
    pipe.hincrby(key, "requests", usage.requests)
    pipe.hincrby(key, "cached_requests", usage.cached_requests)
    pipe.hincrbyfloat(key, "dollars", dollars(usage, price))
    pipe.sadd(f"{_PREFIX}:llm_projects", int(project_id))
    return float(pipe.execute()[4])


def llm_spend(conn: Any, project_id: int) -> dict[str, float]:
    raw = conn.hgetall(f"{_PREFIX}:llm:{int(project_id)}")
    return {k.decode(): float(v) for k, v in raw.items()}


def llm_projects(conn: Any) -> list[int]:
    return sorted(int(p) for p in conn.smembers(f"{_PREFIX}:llm_projects"))
