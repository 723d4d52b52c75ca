"""Per-project state against a real Redis: what PROJECT_DELETED, TASKS_DELETED and a re-bound project id
leave behind (nothing of the project, or of its deleted tasks), and the per-project queue choice."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
import redis
from rq import Queue

from backend.jobs import llm_answers, stats
from backend.jobs.embeddings import ProjectEmbeddings
from backend.jobs.queue import JobQueue
from backend.jobs.ranking import published_queue, rounds
from backend.jobs.state import ProjectKeys, ProjectState
from backend.jobs.training import seed_examples
from backend.labeling import parse_label_config
from backend.llm.annotator import StoredAnswer
from backend.llm.cascade import HUMAN, STRONG, StageCost
from backend.llm.cost import Price, Usage
from backend.server import create_app
from backend.settings import Settings
from tests.helpers import SINGLE, CountingEncoder

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Basic " + base64.b64encode(b"user:secret").decode()}
SPEC = parse_label_config(SINGLE)


@pytest.fixture
def live_settings(settings: Settings, redis_url: str, redis_conn: redis.Redis) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url})


def seed_answer(task: int) -> StoredAnswer:
    return StoredAnswer(("Positive",), 0.9, "logprobs", "m", seed=True, text=f"seed text {task}")


def fill(conn: redis.Redis, project_id: int, tasks: list[int]) -> None:
    """Every kind of per-project state, written the way the jobs and routes write it."""
    llm_answers.save(conn, project_id, {task: seed_answer(task) for task in tasks})
    llm_answers.save(conn, project_id, {task: seed_answer(task) for task in tasks}, STRONG)
    strong_cost = StageCost()
    strong_cost.add(len(tasks), 0, Usage(100, 10, 1), Price(1.0, 1.0), 0.5)
    stats.record_cascade(conn, project_id, {STRONG: strong_cost}, {task: HUMAN for task in tasks})
    stats.record_training(conn, project_id, {"status": "trained", "labelled": 3, "version": "v1"})
    stats.record_job(conn, "rank", project_id, {"status": "ranked", "queued": 2})
    stats.record_llm_usage(conn, project_id, Usage(100, 10, 1), Price(1.0, 1.0))
    stats.remember_ls_access(conn, project_id, "http://ls.example", "token")
    ProjectState(conn).set_queue_enabled(project_id, False)
    keys = ProjectKeys(project_id)
    conn.set(keys.queue("current"), json.dumps({"version": "queue1-v1", "order": tasks[::-1]}))
    conn.set(keys.queue("signals"), json.dumps([{"name": "label_budget", "triggered": False}]))
    conn.rpush(keys.queue("rounds"), json.dumps({"labels": 3}))
    conn.set(keys.queue("stop_set"), json.dumps(tasks))
    conn.incr(keys.queue("number"))
    ProjectEmbeddings(conn, project_id, CountingEncoder()).of(tasks, [f"text {task}" for task in tasks])


def project_keys(conn: redis.Redis, project_id: int) -> set[str]:
    return {k.decode() for k in conn.scan_iter(f"lsal:*:{project_id}:*")} | {
        k.decode() for k in conn.scan_iter(f"lsal:*:{project_id}")
    }


def wait_until(check: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_forget_leaves_nothing_of_the_project_but_its_jobs_slots_and_locks(redis_conn: redis.Redis) -> None:
    fill(redis_conn, 7, [1, 2, 3])
    fill(redis_conn, 8, [4, 5])
    keys = ProjectKeys(7)
    redis_conn.set(keys.job_slot("train", "running"), "train-7-abc", ex=600)
    lock = redis_conn.lock(keys.job_lock("train"), timeout=600)
    assert lock.acquire(blocking=False)

    assert ProjectState(redis_conn).forget(7) == len(keys.forgettable())
    assert project_keys(redis_conn, 7) == {keys.job_slot("train", "running"), keys.job_lock("train")}
    lock.release()  # the job that held the lock still owns it: it releases it without an error
    assert 7 not in stats.project_stats(redis_conn) and 7 not in stats.llm_projects(redis_conn)
    assert ProjectState(redis_conn).queue_enabled(7, default=True)  # back to the server-wide default
    # the other project keeps everything
    assert len(llm_answers.all_answers(redis_conn, 8)) == 2 and len(rounds(redis_conn, 8)) == 1
    assert 8 in stats.project_stats(redis_conn) and stats.ls_access(redis_conn, 8) == ("http://ls.example", "token")
    assert not ProjectState(redis_conn).queue_enabled(8, default=True)


def test_tasks_deleted_drops_their_llm_seed_and_still_queues_a_training(
    live_settings: Settings, redis_conn: redis.Redis
) -> None:
    fill(redis_conn, 12, [1, 2, 3, 4])
    client = create_app(live_settings).test_client()
    body = {"action": "TASKS_DELETED", "project": {"id": 12}, "tasks": [{"id": 2}, {"id": 3}]}
    response = client.post("/webhook", headers=AUTH, json=body)

    assert response.status_code == 201 and response.json["job"] == "train" and response.json["status"] == "queued"
    assert Queue(live_settings.queue_name, connection=redis_conn).jobs[0].args == (12, "TASKS_DELETED")
    answers = llm_answers.all_answers(redis_conn, 12)
    assert set(answers) == {1, 4} and set(llm_answers.all_answers(redis_conn, 12, STRONG)) == {1, 4}
    assert set(stats.cascade_stages(redis_conn, 12)) == {1, 4}
    assert [e.task_id for e in seed_examples(SPEC, answers, [])] == [1, 4]  # training no longer sees them
    assert json.loads(redis_conn.get(ProjectKeys(12).queue("stop_set"))) == [1, 4]
    assert published_queue(redis_conn, 12)["order"] == [4, 1]
    assert sorted(int(t) for t in redis_conn.hkeys(ProjectKeys(12).embeddings("minilm"))) == [1, 4]
    assert len(rounds(redis_conn, 12)) == 1  # the project's history stays


def test_project_deleted_forgets_the_project(live_settings: Settings, redis_conn: redis.Redis) -> None:
    fill(redis_conn, 13, [1, 2])
    client = create_app(live_settings).test_client()
    response = client.post("/webhook", headers=AUTH, json={"action": "PROJECT_DELETED", "project": {"id": 13}})
    assert response.status_code == 200 and response.json["forgotten_keys"] == len(ProjectKeys(13).forgettable())
    assert project_keys(redis_conn, 13) == set()


def test_a_project_id_rebound_to_a_new_ls_project_starts_from_nothing(
    live_settings: Settings, redis_conn: redis.Redis
) -> None:
    client = create_app(live_settings).test_client()
    old = {"project": "14.1700000000", "hostname": "http://old-ls:8080", "access_token": "old"}
    assert client.post("/setup", headers=AUTH, json=old).status_code == 200
    assert wait_until(lambda: stats.ls_access(redis_conn, 14) is not None)
    fill(redis_conn, 14, [1, 2, 3])

    new = {"project": "14.1800000000", "hostname": "http://new-ls:8080", "access_token": "new"}
    assert client.post("/setup", headers=AUTH, json=new).status_code == 200
    assert wait_until(lambda: stats.ls_access(redis_conn, 14) == ("http://new-ls:8080", "new"))
    # forgotten before the new project's LS access was recorded: nothing else of the old project is left
    assert project_keys(redis_conn, 14) == {ProjectKeys(14).ls_access}
    assert llm_answers.all_answers(redis_conn, 14) == {} and rounds(redis_conn, 14) == []

    # the same uid again is no re-binding: what the project has since written stays
    fill(redis_conn, 14, [5])
    assert client.post("/setup", headers=AUTH, json=new).status_code == 200
    time.sleep(0.2)
    assert set(llm_answers.all_answers(redis_conn, 14)) == {5}


def test_a_project_with_its_queue_off_gets_no_ranking_after_training(
    live_settings: Settings, redis_conn: redis.Redis
) -> None:
    from backend.jobs.training import request_ranking  # what the training job calls once it has trained

    client = create_app(live_settings).test_client()
    off = client.post("/queue/settings", headers=AUTH, json={"project": 21, "enabled": False})
    assert off.status_code == 200 and off.json == {"project": 21, "enabled": False}
    assert client.get("/queue?project=21", headers=AUTH).json["enabled"] is False
    assert client.get("/queue?project=22", headers=AUTH).json["enabled"] is True  # QUEUE_ENABLED's default

    assert request_ranking(redis_conn, live_settings, 21, "trained v1") is None
    assert request_ranking(redis_conn, live_settings, 22, "trained v1")["status"] == "queued"  # type: ignore[index]
    queued = Queue(live_settings.queue_name, connection=redis_conn).jobs
    assert [(job.func_name, job.args) for job in queued] == [("backend.jobs.ranking.rank_project", (22, "trained v1"))]

    # the choice is per project and kept, both ways, whatever the server-wide default says
    server_off = live_settings.model_copy(update={"queue_enabled": False})
    assert client.post("/queue/settings", headers=AUTH, json={"project": 23, "enabled": True}).status_code == 200
    assert request_ranking(redis_conn, server_off, 23, "trained v1")["status"] == "queued"  # type: ignore[index]
    assert request_ranking(redis_conn, server_off, 24, "trained v1") is None
    assert JobQueue(redis_conn, live_settings).queue.count == 2
