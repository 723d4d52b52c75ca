"""End to end against a real Label Studio 1.23.2: LS's own next-task endpoint serves the backend's ranking.

An annotator calls `GET /api/projects/{id}/next` with no view, filters or ordering (what "Label All
Tasks" does), labels what it gets, and each label retrains and re-ranks in the background. Each served
task must be the first unlabelled one of the queue the backend published, whichever queue LS was using
at that moment.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from backend.datasets import trec6
from tests.fixtures.services import (
    BackendProcess,
    LabelStudioServer,
    annotate,
    backend_for,
    connected_project,
    wait_for,
)

pytestmark = pytest.mark.e2e

N_TASKS = 200
FIRST_LABELS = 12
SERVED = 20


@pytest.fixture(scope="module")
def backend_with_queue(
    label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendProcess]:
    env = {"MIN_ANNOTATIONS": "10", "LLM_ENABLED": "false", "QUEUE_STRATEGY": "margin", "QUEUE_SIZE": "30"}
    with backend_for(label_studio, tmp_path_factory.mktemp("backend-queue"), env) as backend:
        yield backend


def test_label_studio_serves_the_backends_queue_in_order(
    label_studio: LabelStudioServer, backend_with_queue: BackendProcess
) -> None:
    backend = backend_with_queue
    data = trec6()
    order = random.Random(5).sample(range(len(data)), N_TASKS)
    project_id, _ = connected_project(label_studio, backend, data.classes)
    ls = label_studio.sdk()
    ls.projects.import_tasks(id=project_id, request=[{"text": data.texts[i], "gold": data.labels[i]} for i in order])
    tasks = {t.id: t for t in ls.tasks.list(project=project_id, page_size=100)}
    gold = {task_id: task.data["gold"] for task_id, task in tasks.items()}

    # a first handful of labels (two per class where possible) trains the student; the queue follows
    first: list[int] = []
    for label in data.classes:
        first += [t for t, g in gold.items() if g == label][:2]
    for task_id in first[:FIRST_LABELS]:
        annotate(label_studio, task_id, gold[task_id])
    labelled = set(first[:FIRST_LABELS])

    def queue() -> dict[str, Any] | None:
        return backend.get("/queue", params={"project": project_id}).json()["queue"]

    wait_for(lambda: (q := queue()) and q["labelled"] == len(labelled), timeout=180,
             what=f"a queue ranked after {len(labelled)} labels\n{backend.log_tail()}")  # fmt: skip

    token = {"Authorization": f"Token {label_studio.token}"}

    def consistent_next() -> tuple[int, dict[str, Any]]:
        """LS's next task together with the queue LS was using for it (retried while a re-rank lands).

        Both the backend's record and LS's own model version must name the same queue before and after
        the call: a re-rank switches LS first and the record just after, so either alone can lag. LS locks
        every task it serves to the annotator and serves that task again before asking the queue, so a
        task served while a re-rank landed is labelled like any served task, just not checked."""

        def lss_version() -> str | None:
            return ls.projects.get(id=project_id).model_version

        for _ in range(120):
            before = queue()
            if before and lss_version() == before["version"]:
                response = requests.get(f"{label_studio.url}/api/projects/{project_id}/next", headers=token, timeout=30)
                response.raise_for_status()
                served = int(response.json()["id"])
                after = queue()
                if after and after["version"] == before["version"] and lss_version() == before["version"]:
                    return served, before
                annotate(label_studio, served, gold[served])
                labelled.add(served)
            time.sleep(0.5)
        raise AssertionError(f"the queue never held still\n{backend.log_tail()}")

    versions_used = set()
    for _ in range(SERVED):
        served, used = consistent_next()
        expected = next(t for t in used["order"] if t not in labelled)
        assert served == expected, f"LS served {served}; the backend's queue {used['version']} puts {expected} first"
        assert served not in labelled
        versions_used.add(used["version"])
        annotate(label_studio, served, gold[served])
        labelled.add(served)

    # the labels retrained the student and re-ranked the pool in between: LS followed the new rankings
    assert len(versions_used) >= 2, versions_used
    final = wait_for(lambda: (q := queue()) and q["labelled"] == len(labelled) and q, timeout=180,
                     what=f"a queue ranked after all {len(labelled)} labels\n{backend.log_tail()}")  # fmt: skip
    assert isinstance(final, dict) and final["strategy"] == "margin"
    assert not labelled & set(final["order"])

    # the scores LS shows for the queued tasks are the honest pre-label scores: probabilities in (0, 1]
    shown = [p if isinstance(p, dict) else p.model_dump()
             for t in ls.tasks.list(project=project_id, fields="all", page_size=100) for p in t.predictions or []
             if t.id in final["order"]]  # fmt: skip
    current = [p for p in shown if p["model_version"] == final["version"]]
    assert len(current) == len(final["order"])
    assert all(0 < p["score"] <= 1 for p in current)
    assert [p["task"] for p in sorted(current, key=lambda p: (p["score"], p["task"]))] == final["order"]

    report = backend.get("/queue", params={"project": project_id}).json()
    assert len(report["rounds"]) >= 2 and {s["name"] for s in report["signals"]} >= {
        "stabilizing_predictions",
        "overall_confidence",
        "accuracy_plateau",
        "gain_per_dollar",
    }
    assert (backend.metric("lsal_ranking_runs_total", status="ranked") or 0) >= 2
