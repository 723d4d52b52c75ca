"""The names of the keys per-project state lives in: one owner, and the same names as before it existed."""

from __future__ import annotations

import pytest

from backend.jobs.state import LLM_CACHE_PREFIX, LLM_PROJECTS, QUEUE_PARTS, STATS_PROJECTS, ProjectKeys, runs_counter


def test_keys_keep_the_names_existing_deployments_hold() -> None:
    keys = ProjectKeys(7)
    assert keys.llm_answers == "lsal:llm:7:answers"
    assert (keys.stats, keys.llm_spend) == ("lsal:stats:project:7", "lsal:stats:llm:7")
    assert keys.ls_access == "lsal:project:7:ls"
    assert [keys.queue(part) for part in QUEUE_PARTS] == [
        f"lsal:queue:7:{p}" for p in ("current", "signals", "rounds", "stop_set", "number")
    ]
    assert (keys.job_slot("train", "pending"), keys.job_lock("rank")) == ("lsal:train:7:pending", "lsal:rank:7:lock")
    assert (STATS_PROJECTS, LLM_PROJECTS, runs_counter("training_runs")) == (
        "lsal:stats:projects", "lsal:stats:llm_projects", "lsal:stats:training_runs")  # fmt: skip
    assert LLM_CACHE_PREFIX == "lsal:llm:cache:"


def test_forget_spares_the_slots_and_locks_of_jobs_in_flight() -> None:
    keys = ProjectKeys(7)
    forgettable = keys.forgettable()
    assert keys.llm_answers in forgettable and keys.queue_choice in forgettable and keys.ls_access in forgettable
    assert all(keys.queue(part) in forgettable for part in QUEUE_PARTS)
    assert not any(key.endswith((":lock", ":pending", ":running")) for key in forgettable)
    assert not any(":8:" in key or key.endswith(":8") for key in forgettable)


def test_an_unknown_queue_key_is_refused() -> None:
    with pytest.raises(ValueError, match="stop_set"):
        ProjectKeys(7).queue("stopset")
