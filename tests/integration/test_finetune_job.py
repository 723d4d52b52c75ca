"""The fine-tuning job's decisions against a real Redis and a real model store: when it stops, steps aside or
skips, and that a published fine-tuned student is read back by the next training. Label Studio is the
in-memory stand-in of test_preannotate; tests/e2e/test_finetune.py runs the job on a real LS and worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from rq import Queue

from backend.jobs.finetune import run_finetune
from backend.jobs.queue import TRAIN, coalescer_for
from backend.jobs.running import JobContext
from backend.jobs.training import run_training
from backend.labeling import Example
from backend.settings import Settings
from backend.student import ModelStore
from backend.student.finetune import FineTunedStudent, FineTuneStopped
from tests.integration.test_preannotate import FakeLabelStudio, texts

pytestmark = pytest.mark.integration
PROJECT = 61


@pytest.fixture
def trained(tmp_path: Path, redis_conn: redis.Redis):
    """A project whose fast student was trained on 20 labels, and the context a fine-tuning job gets."""

    def make(**overrides: Any) -> tuple[JobContext, FakeLabelStudio]:
        settings = Settings(data_dir=tmp_path, min_annotations=10, **overrides)
        corpus = texts(40)
        ls = FakeLabelStudio(corpus, {i + 1: "Positive" if i % 2 == 0 else "Negative" for i in range(20)})
        store = ModelStore(settings.models_path)
        assert run_training(PROJECT, ls, store, 10)["status"] == "trained"  # type: ignore[arg-type]
        return JobContext(settings, redis_conn, store, ls, lambda _: None), ls  # type: ignore[arg-type]

    return make


def test_it_stops_at_once_when_the_projects_next_training_is_queued(trained, redis_conn: redis.Redis) -> None:
    ctx, _ = trained(student_finetune="always")
    before = ctx.store.latest_version(PROJECT)
    coalescer_for(redis_conn, ctx.settings, TRAIN).request(PROJECT, "train-61-next")
    result = run_finetune(PROJECT, ctx, None)
    assert result["status"] == "stopped" and result["message"] == "new labels arrived: a training is queued"
    assert ctx.store.latest_version(PROJECT) == before


def test_it_steps_aside_when_the_labels_changed_since_the_version(trained) -> None:
    ctx, ls = trained(student_finetune="always")
    ls.annotated[30] = "Negative"
    result = run_finetune(PROJECT, ctx, None)
    assert result["status"] == "superseded" and result["message"].startswith("the labels changed since v1-")


def test_auto_waits_for_enough_labels_and_a_fine_tuned_version_is_not_tuned_again(trained) -> None:
    ctx, _ = trained(finetune_min_labels=30)
    result = run_finetune(PROJECT, ctx, None)
    assert result["status"] == "skipped" and "fine-tuning starts at 30 (FINETUNE_MIN_LABELS)" in result["message"]
    stored = ctx.store.load(PROJECT)
    corpus = [t["data"]["text"] for t in ctx.ls.tasks]  # type: ignore[attr-defined]
    proba = np.tile([0.8, 0.2], (len(corpus), 1))
    version = ctx.store.save(PROJECT, FineTunedStudent(stored.model, corpus, proba), {**stored.meta,
                             "student": "finetuned"})  # fmt: skip
    again = run_finetune(PROJECT, ctx, None)
    assert again["status"] == "skipped" and again["message"] == f"{version} is not a fast student"


def test_the_next_training_checks_a_fine_tuned_student_on_the_labels_that_came_since(trained) -> None:
    ctx, ls = trained()
    stored = ctx.store.load(PROJECT)
    corpus = [t["data"]["text"] for t in ls.tasks]
    # a fine-tuned table that says Positive for everything: right on half the new labels
    ctx.store.save(PROJECT, FineTunedStudent(stored.model, corpus, np.tile([0.9, 0.1], (len(corpus), 1))),
                   {k: v for k, v in stored.meta.items() if k != "version"} | {"student": "finetuned"})  # fmt: skip
    ls.annotated |= {i + 1: "Positive" if i % 2 == 0 else "Negative" for i in range(20, 30)}
    result = run_training(PROJECT, ls, ctx.store, 10)  # type: ignore[arg-type]
    assert result["status"] == "trained"
    prequential = ctx.store.meta(PROJECT, result["version"])["prequential"]
    assert prequential["checked"] == 10 and prequential["accuracy"] == 0.5
    assert prequential["version"].startswith("v2-")


def test_it_yields_to_a_job_no_worker_takes_and_queues_itself_again(
    trained, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backend.jobs.finetune as finetune

    ctx, _ = trained(student_finetune="always")
    waiting = Queue(ctx.settings.queue_name, connection=redis_conn).enqueue("os.getcwd")
    monkeypatch.setattr(finetune, "YIELD_AFTER", 0.0)
    result = run_finetune(PROJECT, ctx, None)
    assert result["status"] == "stopped" and result["message"] == finetune.YIELDED
    again = Queue(ctx.settings.finetune_queue_name, connection=redis_conn).jobs
    assert [job.func_name for job in again] == ["backend.jobs.finetune.finetune_project"]
    assert again[0].args == (PROJECT, "after yielding")
    waiting.delete()


def test_a_waiting_job_an_idle_worker_takes_at_once_is_no_reason_to_yield(trained, redis_conn: redis.Redis) -> None:
    from backend.jobs.finetune import StopCheck

    ctx, _ = trained()
    stop = StopCheck(ctx, PROJECT, ctx.store.latest_version(PROJECT), deadline=float("inf"))  # type: ignore[arg-type]
    queue = Queue(ctx.settings.queue_name, connection=redis_conn)
    job = queue.enqueue("os.getcwd")
    assert not stop() and stop.waiting_since is not None  # seen waiting, not yet for YIELD_AFTER seconds
    job.delete()
    assert not stop() and stop.waiting_since is None  # taken: the clock starts again


class RefitAskingOnce:
    """Refits as FineTunedEncoder does: asking whether to stop between batches."""

    def refit(self, texts, targets, should_stop):  # type: ignore[no-untyped-def]
        if should_stop():
            raise FineTuneStopped("asked to stop")
        return self


def test_the_refit_on_all_labels_keeps_the_four_fifths_model_when_out_of_time_and_stops_for_new_labels(
    trained, redis_conn: redis.Redis
) -> None:
    from backend.jobs.finetune import StopCheck, refit_on_all

    ctx, _ = trained()
    latest = ctx.store.latest_version(PROJECT)
    examples = [Example(1, "great", ("Positive",)), Example(2, "awful", ("Negative",))]

    def check(deadline: float) -> StopCheck:
        return StopCheck(ctx, PROJECT, latest, deadline)  # type: ignore[arg-type]

    assert refit_on_all(RefitAskingOnce(), examples, check(float("inf")), lambda _: None) is True  # type: ignore[arg-type]
    assert refit_on_all(RefitAskingOnce(), examples, check(0.0), lambda _: None) is False  # type: ignore[arg-type]
    coalescer_for(redis_conn, ctx.settings, TRAIN).request(PROJECT, "train-61-next")
    with pytest.raises(FineTuneStopped):
        refit_on_all(RefitAskingOnce(), examples, check(float("inf")), lambda _: None)  # type: ignore[arg-type]
