"""Job outcomes kept in Redis, so that /metrics (another process) can report them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backend.jobs.state import LLM_PROJECTS, STATS_PROJECTS, ProjectKeys, runs_counter
from backend.llm.cascade import HUMAN, StageCost
from backend.llm.cost import Price, Usage, dollars

# per job kind other than training: the runs counter, the prefix of its fields, the result fields kept
_RUNS = {
    "preannotate": ("preannotation_runs", "llm_", ("annotated", "failed", "pushed", "skipped", "remaining",
                                                   "revision")),
    "rank": ("ranking_runs", "queue_", ("version", "strategy", "queued", "pool", "seconds")),
    "finetune": ("finetune_runs", "finetune_", ("version", "after", "labels", "fit_seconds", "fast_accuracy",
                                                 "finetuned_accuracy", "seconds")),
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
    pipe.hincrby(runs_counter(runs), status, 1)
    pipe.hset(ProjectKeys(project_id).stats, mapping=fields)
    pipe.sadd(STATS_PROJECTS, int(project_id))
    pipe.execute()


def job_runs(conn: Any, kind: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(runs_counter(_RUNS[kind][0])).items()}


def record_training(conn: Any, project_id: int, result: dict[str, Any]) -> None:
    status = str(result.get("status", "unknown"))
    pipe = conn.pipeline()
    pipe.hincrby(runs_counter("training_runs"), status, 1)
    fields = {"last_status": status, "last_run_at": time.time()}
    if "labelled" in result:
        fields["labelled"] = int(result["labelled"])
    if "fit_seconds" in result:
        fields["fit_seconds"] = float(result["fit_seconds"])
    if "error" in result:
        fields["last_error"] = str(result["error"])[:2000]
    if "version" in result:
        fields["version"] = str(result["version"])
    pipe.hset(ProjectKeys(project_id).stats, mapping=fields)
    pipe.sadd(STATS_PROJECTS, int(project_id))
    pipe.execute()


def training_runs(conn: Any) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in conn.hgetall(runs_counter("training_runs")).items()}


def project_stats(conn: Any) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for raw in conn.smembers(STATS_PROJECTS):
        pid = int(raw)
        out[pid] = {k.decode(): v.decode() for k, v in conn.hgetall(ProjectKeys(pid).stats).items()}
    return out


def remember_ls_access(conn: Any, project_id: int, hostname: str | None, access_token: str | None) -> None:
    """What /setup told us about reaching LS: the fallback when LABEL_STUDIO_URL/API_KEY are not set."""
    if hostname and access_token:
        conn.hset(ProjectKeys(project_id).ls_access, mapping={"url": hostname, "api_key": access_token})


def ls_access(conn: Any, project_id: int) -> tuple[str, str] | None:
    found = conn.hgetall(ProjectKeys(project_id).ls_access)
    if b"url" in found and b"api_key" in found:
        return found[b"url"].decode(), found[b"api_key"].decode()
    return None


def record_llm_usage(conn: Any, project_id: int, usage: Usage, price: Price) -> float:
    """Add one batch's tokens and dollars to the project's totals; returns the project's dollars so far."""
    key = ProjectKeys(project_id).llm_spend
    pipe = conn.pipeline()
    pipe.hincrby(key, "prompt_tokens", usage.prompt_tokens)
    pipe.hincrby(key, "completion_tokens", usage.completion_tokens)
    pipe.hincrby(key, "requests", usage.requests)
    pipe.hincrby(key, "cached_requests", usage.cached_requests)
    pipe.hincrbyfloat(key, "dollars", dollars(usage, price))
    pipe.sadd(LLM_PROJECTS, int(project_id))
    return float(pipe.execute()[4])


def llm_spend(conn: Any, project_id: int) -> dict[str, float]:
    raw = conn.hgetall(ProjectKeys(project_id).llm_spend)
    return {k.decode(): float(v) for k, v in raw.items()}


def llm_projects(conn: Any) -> list[int]:
    return sorted(int(p) for p in conn.smembers(LLM_PROJECTS))


def record_cascade(conn: Any, project_id: int, costs: Mapping[str, StageCost], routed: Mapping[int, str]) -> None:
    """Add one batch's per-stage totals to the project's, and note which stage answered each task (or
    "human": every stage asked was unsure); tasks routed to a human are counted as the human's items."""
    keys = ProjectKeys(project_id)
    pipe = conn.pipeline()
    for stage, cost in costs.items():
        for name, value in cost.fields().items():
            pipe.hincrbyfloat(keys.cascade_spend, f"{stage}:{name}", value)
    humans = sum(1 for stage in routed.values() if stage == HUMAN)
    if humans:
        pipe.hincrbyfloat(keys.cascade_spend, f"{HUMAN}:items", humans)
    if routed:
        pipe.hset(keys.cascade_stage, mapping={str(task): stage for task, stage in routed.items()})
    pipe.execute()


def cascade_totals(conn: Any, project_id: int) -> dict[str, dict[str, float]]:
    """{stage: {items, accepted, prompt_tokens, completion_tokens, requests, dollars, seconds}} so far."""
    out: dict[str, dict[str, float]] = {}
    for raw, value in conn.hgetall(ProjectKeys(project_id).cascade_spend).items():
        stage, _, name = raw.decode().partition(":")
        out.setdefault(stage, {})[name] = float(value)
    return out


def cascade_stages(conn: Any, project_id: int) -> dict[int, str]:
    return {int(task): stage.decode() for task, stage in conn.hgetall(ProjectKeys(project_id).cascade_stage).items()}
