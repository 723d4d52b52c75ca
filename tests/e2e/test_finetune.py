"""The fine-tuning stage end to end: a real Label Studio 1.23.2, the backend as `lsal run` starts it, its rq
worker training the fast student on the webhooks and then fine-tuning the encoder in the background."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from backend.student import ModelStore, StudentModel
from backend.student.finetune import FineTunedStudent
from tests.fixtures.services import LabelStudioServer, annotate, backend_for, connected_project, wait_for

pytestmark = pytest.mark.e2e

NOUNS = ["film", "meal", "hotel", "phone", "concert", "book", "service", "game", "flight", "course"]
GOOD = ["wonderful", "excellent", "delightful", "superb", "lovely"]
BAD = ["terrible", "awful", "dreadful", "horrible", "miserable"]


def reviews(n: int, seed: int = 3) -> list[dict[str, str]]:
    """Short reviews whose label a reader sees at once: both students should get every held-out one right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label, words = ("Positive", GOOD) if i % 2 == 0 else ("Negative", BAD)
        out.append({"text": f"the {rng.choice(NOUNS)} was {rng.choice(words)}, number {i}", "gold": label})
    return out


def test_a_worker_trains_the_fast_student_then_publishes_the_fine_tuned_one(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    env = {"MIN_ANNOTATIONS": "10", "LLM_ENABLED": "false", "STUDENT_FINETUNE": "always"}
    with backend_for(label_studio, tmp_path / "backend", env) as backend:
        project_id, _ = connected_project(label_studio, backend, ["Positive", "Negative"], reviews(80))
        tasks = list(label_studio.sdk().tasks.list(project=project_id, page_size=100))
        labelled = tasks[:40]
        for task in labelled:
            annotate(label_studio, task.id, task.data["gold"])
        store = ModelStore(backend.data_dir / "models")

        def finetuned() -> str | None:
            version = store.latest_version(project_id)
            return version if version and store.meta(project_id, version).get("student") == "finetuned" else None

        version = str(wait_for(finetuned, timeout=600, what=f"a fine-tuned version\n{backend.log_tail()}"))
        meta = store.meta(project_id, version)
        comparison = meta["finetune"]
        assert comparison["labels"] == 40 and comparison["held_out"] == 8 and comparison["published"]
        assert comparison["finetuned_accuracy"] >= comparison["fast_accuracy"]
        assert comparison["refitted"]  # trained again on all 40 once the held-out fifth had decided
        assert meta["task_ids"] == sorted(t.id for t in labelled) and meta["reason"].startswith("fine-tuned after v")
        fast = store.load(project_id, meta["reason"].removeprefix("fine-tuned after "))
        assert fast is not None and isinstance(fast.model, StudentModel) and fast.meta["task_ids"] == meta["task_ids"]
        published = store.load(project_id, version)
        assert published is not None and isinstance(published.model, FineTunedStudent)
        assert backend.setup_version(project_id) == version

        # /predict answers from the fine-tuned model's table for the tasks it scored, and from the fast
        # student for a text that came later
        unlabelled = [{"id": t.id, "data": t.data} for t in tasks[40:45]]
        later = {"id": 10**6, "data": {"text": "the game was superb, number 999"}}
        body = {"tasks": [*unlabelled, later], "project": str(project_id)}
        answer = backend.post("/predict", body).json()
        assert answer["model_version"] == version
        texts = [t["data"]["text"] for t in body["tasks"]]
        tuned = published.model.predict(texts[:-1])
        assert [r["result"][0]["value"]["choices"] for r in answer["results"][:-1]] == [list(p.labels) for p in tuned]
        assert [r["score"] for r in answer["results"][:-1]] == pytest.approx([p.score for p in tuned], abs=1e-5)
        assert answer["results"][-1]["score"] == pytest.approx(published.model.fast.predict(texts[-1:])[0].score, 1e-5)
        golds = [[t["data"]["gold"]] for t in unlabelled] + [["Positive"]]
        assert [r["result"][0]["value"]["choices"] for r in answer["results"]] == golds
        assert (backend.metric("lsal_finetune_runs_total", status="published") or 0) >= 1
        assert backend.metric("lsal_jobs", state="failed") == 0
