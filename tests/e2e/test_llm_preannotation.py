"""End to end against a real Label Studio 1.23.2 with an LLM: pre-annotation, cold start, calibration.

The backend runs as `lsal run` does, with LLM_BASE_URL pointing at the scripted OpenAI-compatible
server (real HTTP, the openai SDK unchanged), which answers like a fair but overconfident model: the
gold label for most TREC-6 questions, a wrong one for the rest, with confidences that vary.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from backend.datasets import trec6
from backend.llm.prompts import unfenced
from tests.fixtures.scripted_llm import Reply, ScriptedLLM, json_reply
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
N_ANNOTATIONS = 60
SEED_SIZE = 20


def _fraction(text: str, salt: str) -> float:
    return int(hashlib.sha1(f"{salt}{text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def fair_model(gold: dict[str, str], classes: list[str]):
    """Right for ~75% of texts, more sure when right: a model worth calibrating, deterministic per text."""

    def reply(body: dict[str, Any]) -> Reply:
        content = body["messages"][-1]["content"]
        text = unfenced(content)
        truth = gold.get(text, classes[0])
        right = _fraction(text, "right") < 0.75
        label = truth if right else classes[(classes.index(truth) + 1) % len(classes)]
        p = 0.75 + 0.24 * _fraction(text, "p") if right else 0.5 + 0.4 * _fraction(text, "p")
        others = [c for c in classes if c != label]
        return json_reply(label, p, [(others[0], (1 - p) * 0.7), (others[1], (1 - p) * 0.3)])

    return reply


@pytest.fixture(scope="module")
def backend_with_llm(
    label_studio: LabelStudioServer, llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendProcess]:
    with backend_for(
        label_studio,
        tmp_path_factory.mktemp("backend-llm"),
        {
            "MIN_ANNOTATIONS": "10",
            "LLM_BASE_URL": llm.url,
            "LLM_MODEL": "scripted-model",
            "LLM_PRICES": "scripted-model=1.0/2.0",
            "LLM_SEED_SIZE": str(SEED_SIZE),
            "LLM_BATCH_SIZE": "25",
            "LLM_FEW_SHOT": "2",
            "AUTO_ACCEPT_PRECISION": "0.9",
        },
    ) as backend:
        yield backend


def _ls_predictions(label_studio: LabelStudioServer, project_id: int) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for task in label_studio.sdk().tasks.list(project=project_id, fields="all", page_size=100):
        out[task.id] = [p if isinstance(p, dict) else p.model_dump() for p in task.predictions or []]
    return out


def test_llm_pre_labels_cold_start_and_calibration_in_label_studio(
    label_studio: LabelStudioServer, backend_with_llm: BackendProcess, llm: ScriptedLLM
) -> None:
    backend = backend_with_llm
    data = trec6()
    order = random.Random(11).sample(range(len(data)), N_TASKS)
    gold = {data.texts[i].strip(): data.labels[i] for i in order}
    llm.default = fair_model(gold, data.classes)
    project_id, _ = connected_project(label_studio, backend, data.classes)
    ls = label_studio.sdk()

    # importing tasks sends TASKS_CREATED: the backend pre-annotates every one of them
    ls.projects.import_tasks(id=project_id, request=[{"text": data.texts[i], "gold": data.labels[i]} for i in order])

    def report() -> dict[str, Any]:
        return backend.get("/llm", params={"project": project_id}).json()

    wait_for(lambda: report().get("answers") == N_TASKS, timeout=300,
             what=f"LLM answers for all {N_TASKS} tasks\n{backend.log_tail()}")  # fmt: skip
    # cold start: the student trained on the LLM's diverse seed before any human label
    version = str(wait_for(lambda: (v := backend.setup_version(project_id)).startswith("v") and v, timeout=120,
                           what=f"a student trained on the LLM seed\n{backend.log_tail()}"))  # fmt: skip
    assert version.endswith("+llm1")

    predictions = _ls_predictions(label_studio, project_id)
    pushed = {t: [p for p in ps if "+llm1" in p["model_version"]] for t, ps in predictions.items()}
    assert sum(1 for ps in pushed.values() if ps) == N_TASKS  # bulk-imported, one per task
    scores = [ps[0]["score"] for ps in pushed.values() if ps]
    assert len({round(s, 4) for s in scores}) > 20 and all(0 < s <= 1 for s in scores)
    assert {ps[0]["result"][0]["value"]["choices"][0] for ps in pushed.values() if ps} <= set(data.classes)
    # the queue ranks after the cold-start training and owns the project's version: the queue's, on the LLM run
    queued = wait_for(lambda: (v := ls.projects.get(id=project_id).model_version or "").startswith("queue") and v,
                      timeout=120, what=f"the queue's version in LS\n{backend.log_tail()}")  # fmt: skip
    assert str(queued).endswith("+llm1")
    assert backend.metric("lsal_llm_tokens_total", project=str(project_id), kind="prompt") > 0
    assert backend.metric("lsal_llm_dollars_total", project=str(project_id)) > 0
    assert backend.metric("lsal_preannotation_runs_total", status="done") >= 1

    # humans label 60 tasks; the retraining checks the LLM against them and calibrates it
    tasks = list(ls.tasks.list(project=project_id, page_size=100))
    for task in tasks[:N_ANNOTATIONS]:
        annotate(label_studio, task.id, task.data["gold"])
    wait_for(lambda: (report().get("checks") or {}).get("checks") == N_ANNOTATIONS, timeout=240,
             what=f"a retraining that checked {N_ANNOTATIONS} LLM pre-labels\n{backend.log_tail()}")  # fmt: skip
    checks = report()["checks"]
    assert checks["calibrator"] is not None
    assert 0.55 < checks["accuracy"] < 0.95  # the scripted model is right ~75% of the time
    assert checks["ece_calibrated"] < checks["ece_raw"]
    assert {row["label"] for row in checks["agreement"]} == set(data.classes)
    assert backend.metric("lsal_llm_ece", project=str(project_id), stage="calibrated") is not None
    plot = requests.get(f"{backend.url}/llm/reliability.png", params={"project": project_id}, auth=backend.auth,
                        timeout=10)  # fmt: skip
    assert plot.status_code == 200 and plot.headers["Content-Type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    routed = report()
    assert routed["auto_accept"] + routed["review"] == N_TASKS

    # LS asks again: unlabelled tasks get the new version, with calibrated scores
    new_version = backend.setup_version(project_id)
    assert new_version != version and new_version.endswith("+llm1")
    ls.actions.create(id="retrieve_tasks_predictions", project=project_id, selected_items={"all": True, "excluded": []})
    fresh = [p for ps in _ls_predictions(label_studio, project_id).values() for p in ps
             if p["model_version"] == new_version]  # fmt: skip
    assert len(fresh) >= N_TASKS - N_ANNOTATIONS
    assert len({round(p["score"], 4) for p in fresh}) > 20
    assert (backend.metric("lsal_training_runs_total", status="failed") or 0) == 0


def test_preannotate_route_refuses_bad_input(backend_with_llm: BackendProcess) -> None:
    missing = backend_with_llm.post("/preannotate", {})
    assert missing.status_code == 400 and "project" in missing.json()["message"]
    no_plot = backend_with_llm.get("/llm/reliability.png", params={"project": 987654})
    assert no_plot.status_code == 404 and "no reliability plot" in no_plot.json()["message"]
