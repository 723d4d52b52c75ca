"""The LLM job's logic (pre-annotation): real Redis, the
openai SDK over real HTTP to the scripted LLM server.

Label Studio is a small in-memory stand-in here (the five calls the job makes), so that cold start,
skipping, the budget and a dead endpoint can be driven exactly; tests/e2e runs the same job against a
real Label Studio.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from backend.jobs import llm_answers, stats
from backend.jobs.preannotate import llm_client, run_preannotation
from backend.jobs.ranking import published_queue, rounds, run_ranking, stop_set, stop_signals
from backend.jobs.running import JobContext
from backend.jobs.training import run_training
from backend.labeling import parse_label_config
from backend.llm.cache import RedisCache
from backend.llm.client import LLMClient, LLMConfig
from backend.llm.cost import FREE, Price
from backend.settings import Settings
from backend.student import ModelStore
from tests.fixtures.scripted_llm import Reply, ScriptedLLM, Sleep, Status, json_reply, scored_reply
from tests.helpers import MULTI, NEGATIVE, POSITIVE, SINGLE, choice

pytestmark = pytest.mark.integration
SPEC = parse_label_config(SINGLE)


class FakeLabelStudio:
    """What the job asks of LS, in memory: tasks, annotations, and the predictions it receives."""

    def __init__(self, texts: list[str], annotated: dict[int, str] | None = None) -> None:
        self.tasks = [{"id": i + 1, "data": {"text": text}} for i, text in enumerate(texts)]
        self.annotated = annotated or {}
        self.imported: list[list[dict[str, Any]]] = []
        self.model_version: str | None = None
        self.sampling: str | None = None
        self.deleted: list[str] = []

    def label_config(self, project_id: int) -> str:
        return SINGLE

    def iter_annotated_tasks(self, project_id: int):
        for task in self.tasks:
            if task["id"] in self.annotated:
                result = [choice("sentiment", "text", self.annotated[task["id"]])]
                yield {**task, "annotations": [{"id": task["id"], "result": result}]}

    def iter_tasks(self, project_id: int):
        for task in self.tasks:
            yield {**task, "total_annotations": int(task["id"] in self.annotated)}

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> int:
        self.imported.append(list(predictions))
        return len(predictions)

    def set_model_version(self, project_id: int, version: str, sampling: str | None = None) -> None:
        self.model_version = version
        self.sampling = sampling

    def delete_predictions(self, project_id: int, model_version: str) -> int:
        self.deleted.append(model_version)
        return 0


def texts(n: int) -> list[str]:
    """Positive and negative texts, alternating, each one unique."""
    pool = [POSITIVE, NEGATIVE]
    return [f"{pool[i % 2][(i // 2) % 6]} (review {i})" for i in range(n)]


def answer_by_sentiment(body: dict[str, Any]) -> Reply:
    """Answers like a fair model: the sentiment words decide, with a confidence that varies by text."""
    text = body["messages"][-1]["content"]
    number = int(re.search(r"review (\d+)", text).group(1))  # type: ignore[union-attr]
    label = "Positive" if any(w in text for w in ("love", "great", "wonderful", "happy", "excellent",
                                                  "delighted")) else "Negative"  # fmt: skip
    other = "Negative" if label == "Positive" else "Positive"
    p = 0.6 + (number % 7) * 0.05
    return json_reply(label, p, [(other, 1 - p)])


@pytest.fixture
def job(tmp_path: Path, redis_conn: redis.Redis):
    def make(ls: FakeLabelStudio, **overrides: Any) -> JobContext:
        options = {"data_dir": tmp_path, "llm_seed_size": 10, "llm_batch_size": 10, "min_annotations": 10,
                   "llm_few_shot": 2, **overrides}  # fmt: skip
        settings = Settings(**options)
        store = ModelStore(settings.models_path)
        return JobContext(settings, redis_conn, store, ls, lambda _: None)  # type: ignore[arg-type]

    return make


def client(llm: ScriptedLLM, conn: redis.Redis, **overrides: Any) -> LLMClient:
    config = LLMConfig(base_url=llm.url, model="scripted", max_retries=0, timeout=5, concurrency=2, **overrides)
    return LLMClient(config, cache=RedisCache(conn))


def test_cold_start_labels_a_diverse_seed_first_then_everything(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    scripted_llm.default = answer_by_sentiment
    ls = FakeLabelStudio(texts(60))
    ctx = job(ls)
    seed_ready: list[int] = []
    result = run_preannotation(5, ctx, client(scripted_llm, redis_conn), FREE, lambda: seed_ready.append(1))

    assert result["status"] == "done" and result["annotated"] == 60 and result["failed"] == 0
    assert result["seed"] == 10 and result["revision"] == "llm1" and seed_ready == [1]
    assert sum(len(batch) for batch in ls.imported) == result["pushed"] == 60
    assert ls.model_version == "untrained+llm1"
    answers = llm_answers.all_answers(redis_conn, 5)
    seed = {task for task, answer in answers.items() if answer.seed}
    assert len(seed) == 10 and {p["task"] for p in ls.imported[0]} == seed  # the seed went first
    assert all(answers[t].text for t in seed) and not any(a.text for t, a in answers.items() if t not in seed)
    # diverse: both sentiments and all six phrasings show up in a seed of ten
    assert {answers[t].labels for t in seed} == {("Positive",), ("Negative",)}
    scores = [p["score"] for batch in ls.imported for p in batch]
    assert len(set(scores)) > 3 and all(0 < s <= 1 for s in scores)
    spend = stats.llm_spend(redis_conn, 5)
    assert spend["requests"] == 60 and spend["prompt_tokens"] == 60 * 50 and spend["dollars"] == 0

    # the student trains on the seed alone, weighted, before any human label
    trained = run_training(5, ls, ctx.store, 10, "llm seed", answers=answers)  # type: ignore[arg-type]
    assert trained["status"] == "trained" and trained["labelled"] == 0 and trained["llm_seed"] == 10
    assert ctx.store.prediction_version(5) == f"{trained['version']}+llm1"

    # a re-run asks the LLM nothing: every task already has this model's answer
    asked = len(scripted_llm.requests)
    again = run_preannotation(5, ctx, client(scripted_llm, redis_conn), FREE)
    assert again["annotated"] == 0 and again["skipped"] == 60 and len(scripted_llm.requests) == asked
    assert again["revision"] == "llm2" and again["seed"] == 0


def test_human_labels_become_few_shot_examples_and_are_not_pre_labelled(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    scripted_llm.default = answer_by_sentiment
    ls = FakeLabelStudio(texts(30), annotated={1: "Positive", 2: "Negative", 3: "Positive"})
    result = run_preannotation(6, job(ls, llm_seed_size=0), client(scripted_llm, redis_conn), FREE)
    assert result["annotated"] == 27 and result["seed"] == 0
    assert {p["task"] for batch in ls.imported for p in batch}.isdisjoint({1, 2, 3})
    first = scripted_llm.requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user", "assistant", "user"]
    # a scored prompt: the examples' answers are the bare labels, the item comes last
    assert {m["content"] for m in first if m["role"] == "assistant"} == {"Positive", "Negative"}
    assert first[-1]["content"].startswith("<<<TEXT") and scripted_llm.requests[0]["max_tokens"] == 1


def test_the_budget_stops_the_job_cleanly(job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis) -> None:
    scripted_llm.default = answer_by_sentiment
    ls = FakeLabelStudio(texts(100))
    # 50 prompt + 1 completion token a scored request at $10 / $30 per 1M: a batch of 10 costs ~$0.0053, and
    # is estimated before it is sent at ~$0.0092 (whole prompts of ~90 tokens, and the one token each asks for)
    price = Price(10.0, 30.0)
    ctx = job(ls, llm_budget_usd=0.03, llm_seed_size=0)
    result = run_preannotation(7, ctx, client(scripted_llm, redis_conn), price)
    assert result["status"] == "budget_spent" and "budget" in result["message"]
    assert 0 < result["annotated"] < 100 and result["remaining"] == 100 - result["annotated"]
    assert stats.llm_spend(redis_conn, 7)["dollars"] <= 0.03
    assert len(scripted_llm.requests) == result["annotated"]


def test_the_budget_estimate_counts_one_completion_token_per_scored_request(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    scripted_llm.default = answer_by_sentiment
    ls = FakeLabelStudio(texts(20))
    # output-heavy pricing: a batch of 10 scored requests costs ~$0.011 and is estimated at ~$0.011; at the
    # client's 64 completion tokens a request it would be estimated at $0.64, past the $0.05 budget at once
    price = Price(1.0, 1000.0)
    result = run_preannotation(12, job(ls, llm_budget_usd=0.05, llm_seed_size=0), client(scripted_llm, redis_conn),
                               price)  # fmt: skip
    assert result["status"] == "done" and result["annotated"] == 20
    assert all(request["max_tokens"] == 1 for request in scripted_llm.requests)
    assert stats.llm_spend(redis_conn, 12)["dollars"] <= 0.05


def test_a_dead_endpoint_and_off_label_answers_never_write_a_prediction(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    ls = FakeLabelStudio(texts(40))
    scripted_llm.push(*[Reply('{"label": "Banana"}', [("Banana", 0.9, [])])] * 10)  # off-label, then only 500s
    scripted_llm.default = Status(500)
    result = run_preannotation(8, job(ls, llm_seed_size=0), client(scripted_llm, redis_conn, samples=1), FREE)
    assert result["status"] == "llm_unavailable"  # the circuit opened: the job stops rather than hammer it
    assert result["annotated"] == 0 and result["pushed"] == 0 and result["failed"] >= 10
    assert result["remaining"] > 0 and len(scripted_llm.requests) < 40
    assert all(not batch for batch in ls.imported)
    assert llm_answers.all_answers(redis_conn, 8) == {}


def test_a_free_text_answer_that_negates_a_label_is_never_kept(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    ls = FakeLabelStudio(texts(10))
    scripted_llm.default = Reply("It is definitely not Negative")  # no structured output, no logprobs: votes
    result = run_preannotation(10, job(ls, llm_seed_size=0), client(scripted_llm, redis_conn), FREE)
    sampled = [r for r in scripted_llm.requests if r["max_tokens"] > 1]
    assert len(sampled) == 10 * 5  # every task was asked its 5 samples
    # the first scored (one-token) requests, one per worker, found that the endpoint gives no logprobs
    assert 1 <= len(scripted_llm.requests) - len(sampled) <= 2
    assert result["annotated"] == 0 and result["failed"] == 10 and result["pushed"] == 0
    assert all(not batch for batch in ls.imported)
    assert llm_answers.all_answers(redis_conn, 10) == {}


def test_a_hanging_endpoint_stops_the_job_within_its_wait_budget(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    ls = FakeLabelStudio(texts(40))
    scripted_llm.push(*[Sleep(0.05, json_reply("Positive", 0.9, [("Negative", 0.1)]))] * 10)  # one batch, then it hangs
    scripted_llm.default = Sleep(30, json_reply("Positive", 0.9, []))
    ctx = job(ls, llm_seed_size=0, llm_base_url=scripted_llm.url, llm_model="scripted", llm_timeout=0.5,
              llm_concurrency=2, llm_job_wait_seconds=2)  # fmt: skip
    started = time.monotonic()
    result = run_preannotation(12, ctx, llm_client(ctx.settings, redis_conn), FREE)  # type: ignore[arg-type]
    ended = time.monotonic()
    assert result["status"] == "llm_unavailable" and "wait budget" in result["message"]
    hung = ended - scripted_llm.times[10]  # from the first request that hangs
    assert hung < 2 + 1.5 + 0.5  # the budget, the SDK's pauses between its 2 retries, some slack
    assert ended - started < 8  # the whole job (27 s before the wait budget, 15 min with the defaults)
    assert len(scripted_llm.requests) <= 10 + 2 * 3 * 2  # the answered batch; 2 threads x 3 attempts, twice at most
    # what was answered stays kept and pushed: a re-run resumes after it
    assert result["annotated"] == 10 and result["pushed"] == 10 and result["remaining"] + result["failed"] == 30
    assert len(llm_answers.all_answers(redis_conn, 12)) == 10


def test_the_model_that_wrote_a_synthetic_task_never_pre_labels_it(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    from backend.synthetic.provenance import Provenance, synthetic_task

    scripted_llm.default = answer_by_sentiment
    ls = FakeLabelStudio(texts(20))
    written = synthetic_task("text", f"{POSITIVE[0]} (review 21)", Provenance("scripted", "Positive", "syn-1", "h"))
    by_other = synthetic_task("text", f"{NEGATIVE[0]} (review 22)", Provenance("another-llm", "Negative", "syn-1", "h"))
    ls.tasks += [{"id": 21, **written}, {"id": 22, **by_other}]
    result = run_preannotation(5, job(ls, llm_seed_size=0), client(scripted_llm, redis_conn), FREE)

    labelled = {p["task"] for batch in ls.imported for p in batch}
    assert 21 not in labelled and 22 in labelled and len(labelled) == 21
    assert result["left_to_humans"] == 1 and result["annotated"] == 21
    assert 21 not in llm_answers.all_answers(redis_conn, 5)
    asked = [m["content"] for body in scripted_llm.requests for m in body["messages"]]
    assert not any("review 21)" in text for text in asked)


TOPIC_WORDS = {"Sports": ["the match ended", "a late goal", "the tennis final"],
               "Politics": ["the election vote", "the senate bill", "a minister resigned"],
               "Tech": ["new software release", "a faster chip", "open source code"]}  # fmt: skip
TOPIC_SETS = [("Sports",), ("Politics",), ("Tech",), ("Sports", "Politics"), ("Politics", "Tech"), ("Sports", "Tech")]


class MultiLabelStudio(FakeLabelStudio):
    """The same stand-in for a multi-label project: news stories on one or two topics."""

    def __init__(self, n: int, labelled: int) -> None:
        self.truth = {i + 1: TOPIC_SETS[i % 6] for i in range(n)}
        stories = [" and ".join(TOPIC_WORDS[t][(i // 6) % 3] for t in self.truth[i + 1]) + f" (story {i})"
                   for i in range(n)]  # fmt: skip
        super().__init__(stories, annotated={i: "" for i in range(1, labelled + 1)})
        self.tasks = [{"id": task["id"], "data": {"body": task["data"]["text"]}} for task in self.tasks]

    def label_config(self, project_id: int) -> str:
        return MULTI

    def iter_annotated_tasks(self, project_id: int):
        for task in self.tasks:
            if task["id"] in self.annotated:
                result = [choice("topics", "body", *self.truth[task["id"]])]
                yield {**task, "annotations": [{"id": task["id"], "result": result}]}


def test_a_multi_label_project_is_ranked_and_stopped_on_whole_label_sets(job, redis_conn: redis.Redis) -> None:
    ls = MultiLabelStudio(80, labelled=24)
    ctx = job(ls, queue_size=5)
    assert run_training(12, ls, ctx.store, 10)["status"] == "trained"  # type: ignore[arg-type]
    model = ctx.store.load(12, ctx.store.latest_version(12)).model
    pool = [task for task in ls.tasks if task["id"] not in ls.annotated]
    pool_ids = [task["id"] for task in pool]
    proba = model.predict_proba([task["data"]["body"] for task in pool])

    result = run_ranking(12, ctx, "margin", 5)
    assert result["strategy"] == "margin" and result["fallback"] is None
    # the batch is the tasks with a label nearest its own 0.5 boundary, not the smallest gap between two labels
    nearest_boundary = dict(zip(pool_ids, 1 - np.abs(2 * proba - 1).min(axis=1), strict=True))
    batch = set(published_queue(redis_conn, 12)["order"])
    assert len(batch) == 5
    assert min(nearest_boundary[t] for t in batch) >= max(v for t, v in nearest_boundary.items() if t not in batch)

    # the stop set records each model's whole predicted set, and the mean confidence is that set's probability
    fixed = stop_set(redis_conn, 12, [])
    texts = {task["id"]: task["data"].get("body") for task in ls.tasks}
    expected = [json.dumps(sorted(p.labels)) for p in model.predict([texts[t] for t in fixed])]
    recorded = rounds(redis_conn, 12)[-1]
    assert recorded["stop_set_predictions"] == expected and any(len(json.loads(v)) > 1 for v in expected)
    predicted = model.predict([task["data"]["body"] for task in pool])
    assert recorded["mean_confidence"] == pytest.approx(np.mean([p.score for p in predicted]))

    # a single-label-only strategy is refused, and the job's result says so
    refused = run_ranking(12, ctx, "student_llm_disagreement", 5)
    assert refused["strategy"] == "margin"
    assert refused["fallback"] == ("strategy 'student_llm_disagreement' does not apply to multi-label tasks "
                                   "(it supports single-label tasks); ranked by margin instead")  # fmt: skip
    # a committee of multi-label students votes per label
    committee = run_ranking(12, ctx, "vote_entropy", 5)
    assert committee["strategy"] == "vote_entropy" and committee["fallback"] is None

    # the same model four rounds running: Cohen's kappa over the label sets is 1
    run_ranking(12, ctx, "entropy", 5)
    stabilizing = next(s for s in stop_signals(redis_conn, 12) if s["name"] == "stabilizing_predictions")
    assert stabilizing["value"] == 1.0 and stabilizing["triggered"]


def answer_by_topic(body: dict[str, Any]) -> Reply:
    """Answers a yes/no question about one topic like a fair model: yes where the story has its words."""
    item, question = body["messages"][-1]["content"].split("\n\nDoes the label ")
    label = question.split('"')[1]
    p = 0.85 if any(words in item for words in TOPIC_WORDS[label]) else 0.1
    return scored_reply([(" Yes", p), ("No", 1 - p)])


def test_a_multi_label_project_is_pre_labelled_by_one_yes_no_question_per_label(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    ls = MultiLabelStudio(30, labelled=6)
    scripted_llm.default = answer_by_topic
    ctx = job(ls, llm_seed_size=0, llm_multilabel_scoring="yesno")
    result = run_preannotation(14, ctx, client(scripted_llm, redis_conn), Price(1.0, 1000.0))
    assert result["status"] == "done" and result["annotated"] == 24 and result["failed"] == 0
    requests = scripted_llm.requests
    assert len(requests) == 24 * 3 and all(r["max_tokens"] == 1 and "response_format" not in r for r in requests)
    # human labels are few-shot turns asked one label each; the item and then its question come last
    first = requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert {m["content"] for m in first if m["role"] == "assistant"} <= {"yes", "no"}
    assert first[-1]["content"].startswith("<<<TEXT") and first[-1]["content"].endswith("Answer yes or no.")
    # each task's prediction is its whole topic set, scored as the probability of exactly that set
    predicted = {p["task"]: (tuple(p["result"][0]["value"]["choices"]), p["score"]) for b in ls.imported for p in b}
    assert set(predicted) == set(range(7, 31))
    for task, (labels, score) in predicted.items():
        expected = tuple(label for label in ("Sports", "Politics", "Tech") if label in ls.truth[task])
        assert labels == expected
        assert score == pytest.approx(0.85 ** len(labels) * 0.9 ** (3 - len(labels)), abs=1e-6)
    answers = llm_answers.all_answers(redis_conn, 14)
    assert {a.method for a in answers.values()} == {"yesno"}
    assert all(a.distribution and set(a.distribution) == {"Sports", "Politics", "Tech"} for a in answers.values())
    # every question counts its prompt and its one completion token
    spend = stats.llm_spend(redis_conn, 14)
    assert spend["requests"] == 72 and spend["prompt_tokens"] == 72 * 50 and spend["completion_tokens"] == 72


def answer_topics_in_json(body: dict[str, Any]) -> Reply:
    """Answers a JSON multi-label prompt with the story's topics, with logprobs as a scoring endpoint gives."""
    item = body["messages"][-1]["content"]
    answer = json.dumps({"labels": [label for label, words in TOPIC_WORDS.items() if any(w in item for w in words)]})
    return Reply(answer, [(answer, 0.8, [(answer, 0.8)])], completion_tokens=12)


def test_by_default_a_multi_label_project_is_pre_labelled_by_json_answers_even_with_logprobs(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    ls = MultiLabelStudio(30, labelled=6)
    scripted_llm.default = answer_topics_in_json
    ctx = job(ls, llm_seed_size=0)
    assert ctx.settings.llm_multilabel_scoring == "json"
    result = run_preannotation(15, ctx, client(scripted_llm, redis_conn), Price(1.0, 1000.0))
    assert result["status"] == "done" and result["annotated"] == 24 and result["failed"] == 0
    # one JSON request per task, logprobs asked for and given, and no yes/no question anywhere
    requests = scripted_llm.requests
    assert len(requests) == 24
    assert all(r["logprobs"] is True and "response_format" in r and r["max_tokens"] == 64 for r in requests)
    assert all('"labels"' in r["messages"][0]["content"] for r in requests)
    assert not any("Does the label" in m["content"] or m["content"] in ("yes", "no")
                   for r in requests for m in r["messages"])  # fmt: skip
    predicted = {p["task"]: tuple(p["result"][0]["value"]["choices"]) for b in ls.imported for p in b}
    assert set(predicted) == set(range(7, 31))
    for task, labels in predicted.items():
        assert labels == tuple(label for label in ("Sports", "Politics", "Tech") if label in ls.truth[task])
    answers = llm_answers.all_answers(redis_conn, 15)
    assert {a.method for a in answers.values()} == {"logprobs"}
    assert all(a.confidence == pytest.approx(0.8) for a in answers.values())
    assert stats.llm_spend(redis_conn, 15)["requests"] == 24


def test_ranking_refuses_a_project_whose_queue_is_off_and_leaves_label_studio_alone(
    job, redis_conn: redis.Redis
) -> None:
    from backend.jobs.state import ProjectState

    labelled = {i: ("Positive" if i % 2 else "Negative") for i in range(1, 13)}
    ls = FakeLabelStudio(texts(40), annotated=labelled)
    ctx = job(ls, llm_enabled=False, queue_size=5)
    assert run_training(10, ls, ctx.store, 10)["status"] == "trained"  # type: ignore[arg-type]
    ProjectState(redis_conn).set_queue_enabled(10, False)  # what `lsal-ops connect --no-queue` records

    result = run_ranking(10, ctx, "margin", 5)
    assert result["status"] == "queue_off" and "connect --no-queue" in result["message"]
    assert ls.imported == [] and ls.model_version is None and ls.sampling is None
    assert published_queue(redis_conn, 10) is None

    ProjectState(redis_conn).set_queue_enabled(10, True)
    assert run_ranking(10, ctx, "margin", 5)["status"] == "ranked" and ls.sampling == "Uncertainty sampling"


def answer_with_a_lean(body: dict[str, Any]) -> Reply:
    """A biased but informative model: it always says Negative, yet gives Positive more mass on positive texts."""
    text = body["messages"][-1]["content"]
    number = int(re.search(r"review (\d+)", text).group(1))  # type: ignore[union-attr]
    positive = any(w in text for w in ("love", "great", "wonderful", "happy", "excellent", "delighted"))
    p_positive = (0.30 if positive else 0.05) + (number % 5) * 0.03
    return json_reply("Negative", 1 - p_positive, [("Positive", p_positive)])


def test_the_label_prior_is_divided_out_and_checks_publish_raw_corrected_and_calibrated(
    job, scripted_llm: ScriptedLLM, redis_conn: redis.Redis
) -> None:
    from backend.server import create_app

    scripted_llm.default = answer_with_a_lean
    ls = FakeLabelStudio(texts(100))
    ctx = job(ls, llm_seed_size=0)
    assert run_preannotation(15, ctx, client(scripted_llm, redis_conn), FREE)["annotated"] == 100

    def pushed(batch: list[dict[str, Any]]) -> list[str]:
        return [p["result"][0]["value"]["choices"][0] for p in batch]

    truth = ["Positive" if (task - 1) % 2 == 0 else "Negative" for task in range(1, 101)]
    assert pushed(ls.imported[0]) == ["Negative"] * 10  # 10 answers: too few for a prior, the model's own label
    # from 30 answers on, the prior (no human label) is divided out: the model's lean is gone
    assert pushed(ls.imported[-1]) == [truth[p["task"] - 1] for p in ls.imported[-1]]

    ls.annotated = {task: truth[task - 1] for task in range(1, 61)}
    answers = llm_answers.all_answers(redis_conn, 15)
    trained = run_training(15, ls, ctx.store, 10, "checks", answers=answers)  # type: ignore[arg-type]
    assert trained["status"] == "trained" and trained["llm_checks"] == 60
    checks = ctx.store.meta(15, trained["version"])["llm_checks"]["distribution"]
    assert checks["checks"] == 60 and checks["prior_from"] == 40
    stages = checks["stages"]
    assert stages["raw"]["accuracy"] == 0.5 and stages["bias_corrected"]["accuracy"] == 1.0
    assert stages["calibrated"]["accuracy"] == 1.0 and stages["calibrated"]["ece"] < stages["raw"]["ece"]

    report = create_app(ctx.settings, redis_conn).test_client().get("/llm?project=15").get_json()
    assert report["distribution"]["checks"] == 60
    for stage in ("raw", "bias_corrected", "calibrated"):
        assert report["distribution"][stage] == stages[stage]
        assert set(stages[stage]) == {"accuracy", "ece", "log_loss"}
    # 60 right checks: a lower bound above 0.95 opens the gate, on calibrated distributions only
    assert checks["threshold"] is not None and report["auto_accept"] > 0
