"""The cascade in the pre-annotation job: two scripted endpoints, a cheap one unsure of some tasks and a
strong one; real Redis, the openai SDK over real HTTP, a published calibration from a real training."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from backend.jobs import llm_answers, stats
from backend.jobs.preannotate import run_preannotation
from backend.jobs.running import JobContext
from backend.jobs.training import run_training
from backend.llm.annotator import pre_labels
from backend.llm.cache import RedisCache
from backend.llm.cascade import CHEAP, HUMAN, STRONG, STUDENT
from backend.llm.checks import published_calibration, published_distribution_calibration
from backend.llm.client import LLMClient, LLMConfig
from backend.llm.cost import FREE, Price
from backend.llm.routing import AUTO_ACCEPT
from backend.server import create_app
from backend.settings import Settings
from backend.student import ModelStore
from tests.fixtures.scripted_llm import Reply, ScriptedLLM, json_reply, serve_scripted_llm
from tests.helpers import NEGATIVE, POSITIVE
from tests.integration.test_preannotate import FakeLabelStudio, client, texts

pytestmark = pytest.mark.integration
STRONG_PRICE = Price(10.0, 30.0)


def number(body: dict[str, Any]) -> int:
    return int(re.search(r"review (\d+)", body["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]


def truth(n: int) -> str:
    return "Positive" if n % 2 == 0 else "Negative"  # texts(): positive reviews at even numbers


def cheap_answer(body: dict[str, Any]) -> Reply:
    """Sure and right on three reviews in four (0.90-0.99); on every fourth (n % 8 in 0, 3: both truths)
    "Positive" at 0.55, right for one and wrong for the other, so that no correction of the model's label
    prior and no calibration can tell them apart."""
    n = number(body)
    label, p = ("Positive", 0.55) if n % 8 in (0, 3) else (truth(n), 0.90 + (n % 10) * 0.01)
    other = "Negative" if label == "Positive" else "Positive"
    return json_reply(label, p, [(other, 1 - p)])


def strong_answer(body: dict[str, Any]) -> Reply:
    label = truth(number(body))
    return json_reply(label, 0.99, [("Negative" if label == "Positive" else "Positive", 0.01)])


def test_only_the_tasks_the_cheap_llm_is_unsure_of_reach_the_strong_one(
    tmp_path: Path, scripted_llm: ScriptedLLM, redis_conn: redis.Redis, redis_url: str
) -> None:
    scripted_llm.default = cheap_answer
    ls = FakeLabelStudio(texts(120))
    settings = Settings(data_dir=tmp_path, llm_seed_size=0, llm_batch_size=10, min_annotations=10, llm_few_shot=0)
    ctx = JobContext(settings, redis_conn, ModelStore(settings.models_path), ls, lambda _: None)  # type: ignore[arg-type]
    cheap = client(scripted_llm, redis_conn)

    # no strong endpoint and no checks yet: the cheap LLM accepts nothing, every task is left to humans
    first = run_preannotation(21, ctx, cheap, FREE)
    assert first["annotated"] == 120 and first["routed"] == {HUMAN: 120} and first["strong_annotated"] == 0

    # humans label 90 tasks; training checks the cheap LLM on them and publishes its calibration
    ls.annotated = {task: truth(task - 1) for task in range(1, 91)}
    trained = run_training(21, ls, ctx.store, 10, "labels", answers=llm_answers.all_answers(redis_conn, 21))  # type: ignore[arg-type]
    meta = ctx.store.meta(21, trained["version"])
    calibrator, threshold = published_calibration(meta)
    distribution = published_distribution_calibration(meta)
    assert calibrator is not None and threshold is not None

    pool = range(91, 121)
    answers = llm_answers.get_many(redis_conn, 21, pool)
    labels = pre_labels(list(answers.values()), calibrator, threshold, distribution)
    routes = dict(zip(answers, (label.route for label in labels), strict=True))
    unsure = {task for task, route in routes.items() if route != AUTO_ACCEPT}
    # every task the cheap LLM answered at 0.55 is unsure, and some sure ones are accepted
    assert {task for task in pool if (task - 1) % 8 in (0, 3)} <= unsure and len(unsure) < len(pool)

    cheap_asked = len(scripted_llm.requests)
    ls.imported.clear()
    with serve_scripted_llm() as strong_llm:
        strong_llm.default = strong_answer
        config = LLMConfig(base_url=strong_llm.url, model="strong-scripted", max_retries=0, timeout=5, concurrency=2)
        strong = LLMClient(config, cache=RedisCache(redis_conn))
        second = run_preannotation(21, ctx, cheap, FREE, strong=(strong, STRONG_PRICE))
        asked_strong = {number(body) + 1 for body in strong_llm.requests}
        # a re-run asks neither endpoint again
        third = run_preannotation(21, ctx, cheap, FREE, strong=(strong, STRONG_PRICE))
        assert len(strong_llm.requests) == len(unsure) and third["strong_annotated"] == 0

    assert len(scripted_llm.requests) == cheap_asked  # the cheap answers were kept: the cheap LLM was not asked
    assert asked_strong == unsure and second["strong_annotated"] == len(unsure)
    # the strong LLM has no checks of its own yet: it accepts nothing, so its tasks go to humans
    assert second["routed"] == {HUMAN: len(unsure)} and second["status"] == "done"
    assert {p["task"] for batch in ls.imported for p in batch} == unsure
    assert set(llm_answers.all_answers(redis_conn, 21, STRONG)) == unsure
    assert all(a.model == "scripted" for a in llm_answers.all_answers(redis_conn, 21).values())  # kept apart

    totals = stats.cascade_totals(redis_conn, 21)
    k = len(unsure)
    assert totals[CHEAP]["items"] == 120 and totals[CHEAP]["requests"] == 120 and totals[CHEAP]["accepted"] == 0
    assert totals[CHEAP]["prompt_tokens"] == 120 * 50 and totals[CHEAP]["dollars"] == 0
    assert totals[STRONG]["items"] == k and totals[STRONG]["requests"] == k
    assert totals[STRONG]["prompt_tokens"] == k * 50 and totals[STRONG]["completion_tokens"] == k
    assert totals[STRONG]["dollars"] == pytest.approx(k * (50 * 10.0 + 1 * 30.0) / 1e6)
    assert totals[STRONG]["seconds"] > 0 and totals[HUMAN]["items"] == 120 + k
    # the project's spend is both LLMs' together, so one budget covers the cascade
    assert stats.llm_spend(redis_conn, 21)["dollars"] == pytest.approx(totals[STRONG]["dollars"])
    assert {task: stage for task, stage in stats.cascade_stages(redis_conn, 21).items() if task in unsure} == {
        task: HUMAN for task in unsure
    }

    # GET /llm reports the cascade per stage: the cheap stage's threshold is its published one
    strong_settings = {"llm_strong_base_url": "http://strong/v1", "llm_strong_model": "strong-scripted"}
    served = settings.model_copy(
        update={"redis_url": redis_url, "basic_auth_user": "user", "basic_auth_pass": "pw", **strong_settings}
    )
    auth = {"Authorization": "Basic " + base64.b64encode(b"user:pw").decode()}
    body = create_app(served).test_client().get("/llm?project=21", headers=auth).json
    student_row, cheap_row, strong_row, human_row = body["cascade"]
    student_checks = meta["student_checks"]
    assert student_row["stage"] == STUDENT and student_row["items"] == 0 and student_checks["checks"] == 0
    assert student_row["threshold"] is None  # the first model: no label arrived after it yet
    assert cheap_row["stage"] == CHEAP and cheap_row["threshold"] == threshold and cheap_row["checks"] == 90
    assert cheap_row["precision"] == meta["llm_checks"]["threshold_precision"] and cheap_row["precision"] >= 0.95
    assert (cheap_row["items"], cheap_row["accepted"], cheap_row["tokens"]) == (120, 0, 120 * 51)
    spent = {"dollars": round(totals[STRONG]["dollars"], 6), "seconds": round(totals[STRONG]["seconds"], 3)}
    assert strong_row == {"stage": STRONG, "items": k, "accepted": 0, "tokens": k * 51, **spent,
                          "threshold": None, "precision": None, "precision_lower_bound": None, "checks": 0}  # fmt: skip
    assert human_row == {"stage": HUMAN, "items": 120 + k}


def test_the_student_goes_first_and_the_llm_is_asked_only_about_what_it_did_not_take(
    tmp_path: Path, scripted_llm: ScriptedLLM, redis_conn: redis.Redis, redis_url: str
) -> None:
    scripted_llm.default = strong_answer
    # 200 plain reviews, then 20 mixed ones the student cannot be sure of
    mixed = [f"{POSITIVE[i % 6]} but {NEGATIVE[(i + 1) % 6]} (review {200 + i})" for i in range(20)]
    ls = FakeLabelStudio(texts(200) + mixed)
    settings = Settings(data_dir=tmp_path, llm_seed_size=0, llm_batch_size=10, min_annotations=10, llm_few_shot=0)
    ctx = JobContext(settings, redis_conn, ModelStore(settings.models_path), ls, lambda _: None)  # type: ignore[arg-type]
    ls.annotated = {task: truth(task - 1) for task in range(1, 41)}
    first = run_training(22, ls, ctx.store, 10, "labels")  # type: ignore[arg-type]
    assert ctx.store.meta(22, first["version"])["student_checks"]["threshold"] is None  # nothing checked yet
    # 60 labels arrive that the first model never saw: its answers on them are the student's checks
    ls.annotated = {task: truth(task - 1) for task in range(1, 101)}
    second = run_training(22, ls, ctx.store, 10, "labels")  # type: ignore[arg-type]
    checks = ctx.store.meta(22, second["version"])["student_checks"]
    assert checks["checks"] == 60 and checks["threshold"] is not None and checks["threshold_precision"] >= 0.95

    result = run_preannotation(22, ctx, client(scripted_llm, redis_conn), FREE)
    totals = stats.cascade_totals(redis_conn, 22)
    taken = {task for task, stage in stats.cascade_stages(redis_conn, 22).items() if stage == STUDENT}
    assert totals[STUDENT]["items"] == 120 and totals[STUDENT]["accepted"] == len(taken) > 0
    assert totals[STUDENT]["dollars"] == 0 and totals[STUDENT]["seconds"] > 0
    asked = {number(body) + 1 for body in scripted_llm.requests}
    assert asked == set(range(101, 221)) - taken and result["routed"][STUDENT] == len(taken)
    # what the LLM was asked about, the student scored below its threshold
    model = ctx.store.load(22, second["version"]).model  # type: ignore[union-attr]
    texts_of = {task["id"]: task["data"]["text"] for task in ls.tasks}
    assert asked and max(p.score for p in model.predict([texts_of[t] for t in sorted(asked)])) < checks["threshold"]
    assert totals[CHEAP]["items"] == len(asked) == result["annotated"]
    pushed = {p["task"]: p for batch in ls.imported for p in batch}
    assert taken <= set(pushed) and all(pushed[t]["score"] >= checks["threshold"] for t in taken)
    row = (
        create_app(settings.model_copy(update={"redis_url": redis_url}))
        .test_client()
        .get("/llm?project=22")
        .json["cascade"][0]
    )
    assert row["stage"] == STUDENT and row["threshold"] == checks["threshold"] and row["checks"] == 60
    assert row["precision"] == checks["threshold_precision"] and row["accepted"] == len(taken)
    # a re-run asks neither the student nor the LLM again
    run_preannotation(22, ctx, client(scripted_llm, redis_conn), FREE)
    assert len(scripted_llm.requests) == len(asked) and stats.cascade_totals(redis_conn, 22)[STUDENT]["items"] == 120
