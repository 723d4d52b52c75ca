"""End to end against a real Label Studio 1.23.2: connect, annotate, retrain on webhooks, re-predict.

The backend runs as `lsal run` does (gunicorn + an rq worker + the embedded Redis), LS talks to it
over HTTP with basic auth, and LS's webhooks reach it with our secret header.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest
import requests

from backend.datasets import trec6
from backend.student import ModelStore
from tests.fixtures.services import BackendProcess, LabelStudioServer, annotate, connected_project, wait_for
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

N_TASKS = 200
N_ANNOTATIONS = 20


def _labelled(backend: BackendProcess, project_id: int) -> float | None:
    return backend.metric("lsal_labelled_tasks", project=str(project_id))


def _new_version(backend: BackendProcess, project_id: int, old: str) -> str:
    return str(
        wait_for(
            lambda: (v := backend.setup_version(project_id)) != old and v,
            timeout=180,
            what=f"project {project_id} to get a version newer than {old}\n{backend.log_tail()}",
        )
    )


def test_annotations_retrain_the_backend_and_ls_gets_new_predictions(
    label_studio: LabelStudioServer, backend_for_ls: BackendProcess
) -> None:
    backend = backend_for_ls
    ls = label_studio.sdk()
    data = trec6()
    rng = random.Random(7)
    order = rng.sample(range(len(data)), N_TASKS)
    project_id, backend_id = connected_project(label_studio, backend, data.classes)

    # connecting ran /health and /setup: LS knows the backend, and its webhook now carries our secret
    assert [b.id for b in ls.ml.list(project=project_id)] == [backend_id]
    hooks = [h for h in ls.webhooks.list(project=str(project_id)) if h.url == f"{backend.url}/webhook"]
    assert len(hooks) == 1 and hooks[0].headers == {"X-Webhook-Secret": backend.webhook_secret}
    assert backend.setup_version(project_id) == "untrained"

    ls.projects.import_tasks(id=project_id, request=[{"text": data.texts[i], "gold": data.labels[i]} for i in order])
    tasks = list(ls.tasks.list(project=project_id, page_size=100))
    assert len(tasks) == N_TASKS

    # annotate through the API: at least two classes, as humans would, one at a time
    by_label: dict[str, list] = {}
    for task in tasks:
        by_label.setdefault(task.data["gold"], []).append(task)
    chosen = [t for group in by_label.values() for t in group[:4]][:N_ANNOTATIONS]
    chosen += [t for t in tasks if t not in chosen][: N_ANNOTATIONS - len(chosen)]
    annotation_ids = [annotate(label_studio, t.id, t.data["gold"]) for t in chosen]
    assert len(set(Counter(t.data["gold"] for t in chosen))) >= 2

    # the webhooks queued (coalesced) trainings; the last one saw all 20 labels
    wait_for(
        lambda: _labelled(backend, project_id) == N_ANNOTATIONS,
        timeout=180,
        what=f"a model trained on {N_ANNOTATIONS} labels\n{backend.log_tail()}",
    )
    version = backend.setup_version(project_id)
    assert version.startswith("v") and version != "untrained"
    assert (backend.metric("lsal_training_runs_total", status="trained") or 0) >= 1
    assert backend.get("/versions", params={"project": project_id}).json()["current"] == version
    stored = ModelStore(backend.data_dir / "models").load(project_id)
    assert stored is not None and stored.model.encoder == "minilm" and stored.meta["encoder"] == "minilm"

    # LS asks for predictions of the whole project; unlabelled tasks get the new version and real scores
    ls.actions.create(id="retrieve_tasks_predictions", project=project_id, selected_items={"all": True, "excluded": []})
    annotated = {t.id for t in chosen}
    predictions = {}
    for task in ls.tasks.list(project=project_id, fields="all", page_size=100):
        for prediction in task.predictions or []:
            p = prediction if isinstance(prediction, dict) else prediction.model_dump()
            if p["model_version"] == version and task.id not in annotated:
                predictions[task.id] = p
    assert len(predictions) == N_TASKS - N_ANNOTATIONS
    scores = [p["score"] for p in predictions.values()]
    assert len({round(s, 4) for s in scores}) > 20  # confidence varies across tasks
    assert all(0.0 < s <= 1.0 for s in scores)
    labels = {p["result"][0]["value"]["choices"][0] for p in predictions.values()}
    assert labels <= set(data.classes) and len(labels) >= 2
    hits = sum(p["result"][0]["value"]["choices"][0] == task_gold for task_gold, p in (
        (next(t.data["gold"] for t in tasks if t.id == tid), p) for tid, p in predictions.items()
    ))  # fmt: skip
    assert hits / len(predictions) > 1 / len(data.classes)  # better than chance after 20 labels

    # the Train button (START_TRAINING, no "annotation" key) publishes a new version
    ls.ml.train(id=backend_id)
    after_train = _new_version(backend, project_id, version)

    # deleting an annotation retrains too, on one label fewer
    ls.annotations.delete(id=annotation_ids[0])
    after_delete = _new_version(backend, project_id, after_train)
    wait_for(lambda: _labelled(backend, project_id) == N_ANNOTATIONS - 1, timeout=60, what="19 labels")
    assert after_delete != after_train

    # nothing failed on the way
    assert (backend.metric("lsal_training_runs_total", status="failed") or 0) == 0
    assert backend.metric("lsal_jobs", state="failed") == 0


def test_predict_refuses_bad_input_over_real_http(backend_for_ls: BackendProcess) -> None:
    backend = backend_for_ls
    response = requests.post(
        f"{backend.url}/predict", auth=backend.auth, data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 401
    hook = requests.post(
        f"{backend.url}/webhook",
        headers={"X-Webhook-Secret": backend.webhook_secret},
        json={"action": "NOT_AN_ACTION", "project": {"id": 1}},
        timeout=5,
    )
    assert hook.status_code == 400 and "unknown action" in hook.json()["message"]


def test_ops_connect_is_safe_to_run_twice(label_studio: LabelStudioServer, backend_for_ls: BackendProcess) -> None:
    import os
    import subprocess
    import sys

    ls = label_studio.sdk()
    template = (ROOT / "label_configs" / "text_classification_multi.xml").read_text()
    project = ls.projects.create(title=f"ops {uuid.uuid4().hex[:8]}", label_config=template)
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "BASIC_AUTH_USER": backend_for_ls.auth[0],
        "BASIC_AUTH_PASS": backend_for_ls.auth[1],
        "WEBHOOK_SECRET": backend_for_ls.webhook_secret,
    }
    command = [sys.executable, "-m", "sdk_scripts.cli", "connect", "--backend-url", backend_for_ls.url]
    for _ in range(2):
        done = subprocess.run([*command, "--project", str(project.id)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert len(ls.ml.list(project=project.id)) == 1
    hooks = [h for h in ls.webhooks.list(project=str(project.id)) if h.url == f"{backend_for_ls.url}/webhook"]
    assert len(hooks) == 1 and hooks[0].headers == {"X-Webhook-Secret": backend_for_ls.webhook_secret}

    missing = subprocess.run([*command, "--project", "999999"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "not found" in missing.stderr
    refused = subprocess.run(
        [*command, "--project", str(project.id)], env={**env, "LABEL_STUDIO_API_KEY": "wrong"}, capture_output=True,
        text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "refused the API key" in refused.stderr
