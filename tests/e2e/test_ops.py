"""End to end against a real Label Studio 1.23.2: the `lsal-ops` commands as ops staff run them.

Every command runs as a subprocess with LS's URL and key in the environment. Synthetic texts come from
the scripted OpenAI-compatible server; the backend pre-annotates with the same model name, so the rule
"the model that generated a task never labels it" is checked on what LS actually holds.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.datasets import trec6
from backend.llm.prompts import unfenced
from tests.fixtures.scripted_llm import Reply, ScriptedLLM, json_reply
from tests.fixtures.services import BackendProcess, LabelStudioServer, annotate, backend_for, wait_for

pytestmark = pytest.mark.e2e
GENERATOR = "scripted-generator"


def ops(label_studio: LabelStudioServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token,
                   **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "sdk_scripts.cli", *args], env=environment, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def task_count(label_studio: LabelStudioServer, project_id: int) -> int:
    return sum(1 for _ in label_studio.sdk().tasks.list(project=project_id, fields="task_only", page_size=500))


def test_import_1000_tasks_twice_and_refuse_bad_input_without_losing_any(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    data = trec6()
    rows = random.Random(3).sample(range(len(data)), 1000)
    path = tmp_path / "questions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "gold"])
        writer.writerows([data.texts[i], data.labels[i]] for i in rows)
        writer.writerow(["", "DESC"])  # an empty text: rejected, with its line
    distinct = len({re.sub(r"\W+", " ", data.texts[i].casefold()).strip() for i in rows})
    template = (Path(__file__).parents[2] / "label_configs" / "text_classification_single.xml").read_text()
    project = label_studio.sdk().projects.create(title=f"import {uuid.uuid4().hex[:6]}", label_config=template)

    first = ops(label_studio, "import", str(path), "--project", str(project.id), "--text-field", "question")
    assert first.returncode == 0, first.stderr
    assert f"imported {distinct}," in first.stdout and "rejected 1" in first.stdout and "line 1002" in first.stdout
    assert "importing questions.csv" in first.stderr  # the progress bar
    assert task_count(label_studio, project.id) == distinct
    second = ops(label_studio, "import", str(path), "--project", str(project.id), "--text-field", "question")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("imported 0, skipped 1000") and task_count(label_studio, project.id) == distinct
    task = next(iter(label_studio.sdk().tasks.list(project=project.id, page_size=1)))
    assert set(task.data) == {"text", "gold", "lsal_key"}

    # bad input: each refused with a precise message, nothing imported, nothing lost
    latin = tmp_path / "latin.csv"
    latin.write_bytes("question\ncaf\u00e9 au lait?\n".encode("cp1252"))
    bare = tmp_path / "bare.csv"
    bare.write_text("body\nsomething\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "What is a fresh question?"}\n{"text": oops}\n')
    other = label_studio.sdk().projects.create(
        title=f"no choices {uuid.uuid4().hex[:6]}",
        label_config='<View><Text name="text" value="$text"/><TextArea name="note" toName="text"/></View>',
    )
    cases = [
        (["import", str(latin), "--project", str(project.id), "--text-field", "question"], "--encoding", {}),
        (["import", str(bare), "--project", str(project.id)], "no column 'text'", {}),
        (["import", str(path), "--project", "999999"], "not found", {}),
        (["import", str(path), "--project", str(other.id)], "Choices", {}),
        (["import", str(path), "--project", str(project.id)], "refused the API key", {"LABEL_STUDIO_API_KEY": "nope"}),
        (["import", str(path), "--project", str(project.id)], "cannot reach",
         {"LABEL_STUDIO_URL": "http://127.0.0.1:9"}),
        (["status", "--project", "999999"], "not found", {}),
    ]  # fmt: skip
    for args, message, env in cases:
        done = ops(label_studio, *args, env=env)
        assert done.returncode == 2 and message in done.stderr, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    assert task_count(label_studio, project.id) == distinct

    mixed = ops(label_studio, "import", str(broken), "--project", str(project.id))
    assert mixed.returncode == 0 and "imported 1," in mixed.stdout and "line 2: malformed JSON" in mixed.stdout
    assert task_count(label_studio, project.id) == distinct + 1


OPENINGS = [
    "How many kilometres separate the two oldest lighthouses on the northern coast?",
    "Who first painted the ceiling of the small chapel near the harbour in 1820?",
    "What does the abbreviation printed on old railway tickets stand for?",
    "Where do migrating cranes rest during their long autumn journey south?",
]


def generator_model(gold: dict[str, str], classes: list[str]):
    """Writes texts for the label asked (one of them a repeat, one that reads as another label) and labels
    texts by their gold label, or by the label a generated text names."""

    def reply(body: dict[str, Any]) -> Reply:
        system = body["messages"][0]["content"]
        if system.startswith("You write realistic example texts"):
            label = re.search(r"annotator would label (\w+)", system).group(1)  # type: ignore[union-attr]
            count = int(re.search(r"Write (\d+) new texts", system).group(1))  # type: ignore[union-attr]
            texts = [f"{opening} (about {label})" for opening in OPENINGS[: count - 2]]
            other = classes[(classes.index(label) + 1) % len(classes)]
            texts += [texts[0].upper(), f"Why would a careful reader file this one elsewhere? (reads as {other})"]
            return Reply(json.dumps({"texts": texts}), None, prompt_tokens=400, completion_tokens=200)
        content = body["messages"][-1]["content"]
        text = unfenced(content)
        named = re.search(r"(?:about|reads as) (\w+)", text)
        label = named.group(1) if named and named.group(1) in classes else gold.get(text, classes[0])
        others = [c for c in classes if c != label]
        return json_reply(label, 0.9, [(others[0], 0.06), (others[1], 0.04)])

    return reply


@pytest.fixture(scope="module")
def backend_with_generator(
    label_studio: LabelStudioServer, llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendProcess]:
    env = {"MIN_ANNOTATIONS": "10", "LLM_BASE_URL": llm.url, "LLM_MODEL": GENERATOR, "LLM_SEED_SIZE": "0",
           "LLM_PRICES": f"{GENERATOR}=1.0/2.0", "QUEUE_SIZE": "20"}  # fmt: skip
    with backend_for(label_studio, tmp_path_factory.mktemp("backend-ops"), env) as backend:
        yield backend


def test_connect_generate_status_and_export_reflect_what_label_studio_holds(
    label_studio: LabelStudioServer, backend_with_generator: BackendProcess, llm: ScriptedLLM, tmp_path: Path
) -> None:
    backend = backend_with_generator
    data = trec6()
    order = random.Random(8).sample(range(len(data)), 150)
    gold = {data.texts[i].strip(): data.labels[i] for i in order}
    llm.default = generator_model(gold, data.classes)
    env = {"BASIC_AUTH_USER": backend.auth[0], "BASIC_AUTH_PASS": backend.auth[1],
           "WEBHOOK_SECRET": backend.webhook_secret, "LSAL_BACKEND_URL": backend.url,
           "LLM_BASE_URL": llm.url, "LLM_MODEL": GENERATOR, "LLM_PRICES": f"{GENERATOR}=1.0/2.0",
           "DATA_DIR": str(tmp_path / "ops-data")}  # fmt: skip

    # connect creates the project from the template, and a second run reuses everything
    title = f"ops {uuid.uuid4().hex[:6]}"
    connect = ["connect", "--title", title, "--labels", ",".join(data.classes)]
    made = ops(label_studio, *connect, env=env)
    assert made.returncode == 0, made.stderr
    project_id = int(re.search(r"project (\d+) \(.*\) created", made.stdout).group(1))  # type: ignore[union-attr]
    again = ops(label_studio, *connect, env=env)
    assert again.returncode == 0 and f"project {project_id} ('{title}') exists: reusing it" in again.stdout
    ls = label_studio.sdk()
    assert len(ls.ml.list(project=project_id)) == 1
    assert [h.headers for h in ls.webhooks.list(project=str(project_id)) if h.url == f"{backend.url}/webhook"] == [
        {"X-Webhook-Secret": backend.webhook_secret}]  # fmt: skip
    assert ls.projects.get(id=project_id).sampling == "Uncertainty sampling"

    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps({"text": data.texts[i], "gold": data.labels[i]}) + "\n" for i in order))
    assert ops(label_studio, "import", str(tasks_file), "--project", str(project_id), env=env).returncode == 0
    tasks = {t.id: t for t in ls.tasks.list(project=project_id, page_size=500)}
    real_ids = set(tasks)
    # importing sent TASKS_CREATED: the backend pre-labels every real task with the LLM first
    wait_for(lambda: backend.get("/llm", params={"project": project_id}).json().get("answers") == len(real_ids),
             timeout=240, what=f"LLM answers for the real tasks\n{backend.log_tail()}")  # fmt: skip

    # humans label four of every class but one, which gets a single label: the weakest
    weakest = data.classes[-1]
    labelled: list[int] = []
    for label in data.classes:
        having = [t for t, task in tasks.items() if task.data["gold"] == label]
        labelled += having[: 1 if label == weakest else 4]
    for task_id in labelled:
        annotate(label_studio, task_id, tasks[task_id].data["gold"])

    dry = ops(label_studio, "generate", "--project", str(project_id), "--targets", "1", "--per-target", "6",
              "--dry-run", env=env)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"{weakest}: 6 texts" in dry.stdout and "cost at most" in dry.stdout and "$" in dry.stdout
    assert "nothing was asked of the LLM" in dry.stdout and task_count(label_studio, project_id) == len(real_ids)

    generate = ["generate", "--project", str(project_id), "--targets", "1", "--per-target", "6", "--per-call", "6"]
    made = ops(label_studio, *generate, env=env)
    assert made.returncode == 0, made.stderr
    assert "generated 6 texts, kept 4, rejected 2 (1 exact duplicate, 1 inconsistent)" in made.stdout, made.stdout
    assert "created 4 tasks, 0 already in the project" in made.stdout
    full = {t.id: t for t in ls.tasks.list(project=project_id, fields="all", page_size=500)}
    synthetic = {t: task for t, task in full.items() if t not in real_ids}
    assert len(synthetic) == 4
    for task in synthetic.values():
        assert task.data["synthetic"] is True and task.data["synthetic_generator"] == GENERATOR
        assert task.data["synthetic_target"] == weakest and task.data["synthetic_batch"].startswith("syn-")
        assert task.data["lsal_key"] and task.data["synthetic_prompt_hash"]
    rerun = ops(label_studio, *generate, env=env)
    assert rerun.returncode == 0 and "created 0 tasks, 4 already in the project" in rerun.stdout, rerun.stdout

    # the synthetic tasks' TASKS_CREATED starts another pre-annotation run, with the generator's own model:
    # it labels nothing it wrote
    unlabelled_real = real_ids - set(labelled)
    wait_for(lambda: (backend.metric("lsal_preannotation_runs_total", status="done") or 0) >= 2, timeout=240,
             what=f"the pre-annotation run the synthetic tasks started\n{backend.log_tail()}")  # fmt: skip
    full = {t.id: t for t in ls.tasks.list(project=project_id, fields="all", page_size=500)}
    assert all(not full[t].annotations for t in synthetic)
    assert any(full[t].predictions for t in unlabelled_real)
    # each synthetic text reached the LLM once as a text to label: generate's consistency check, a filter whose
    # answer is kept nowhere; the backend's pre-annotation never sent it (logprobs make one call per check)
    labelling = [body["messages"][-1]["content"] for body in llm.requests
                 if not body["messages"][0]["content"].startswith("You write realistic example texts")]  # fmt: skip
    for task in synthetic.values():
        assert sum(task.data["text"] in content for content in labelling) == 1, task.data["text"]

    # humans label two synthetic tasks; status and export count them apart
    for task_id in list(synthetic)[:2]:
        annotate(label_studio, task_id, weakest)
    human_labels = len(labelled) + 2
    wait_for(lambda: ((backend.get("/queue", params={"project": project_id}).json().get("queue") or {})
                      .get("labelled") == human_labels), timeout=240,
             what=f"a queue ranked after {human_labels} labels\n{backend.log_tail()}")  # fmt: skip
    plot = tmp_path / "curve.png"
    status = ops(label_studio, "status", "--project", str(project_id), "--plot", str(plot), env=env)
    assert status.returncode == 0, status.stderr
    total = len(real_ids) + 4
    assert f"{total} tasks, {human_labels} labelled, {total - human_labels} unlabelled" in status.stdout
    assert "synthetic tasks: 4, 2 of them labelled by humans" in status.stdout
    assert f"{weakest} 3" in status.stdout and "model version in LS: queue" in status.stdout
    assert re.search(r"LLM: [1-9]\d* prompt \+ [1-9]\d* completion tokens, \$0\.\d+; \d+ pre-labels", status.stdout)
    assert "queue: queue" in status.stdout and "stabilizing_predictions" in status.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "labels.jsonl"
    exported = ops(label_studio, "export", "--project", str(project_id), "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == human_labels and f"exported {human_labels} labelled tasks" in exported.stdout
    by_source = {(r["label_source"], r["task_source"]) for r in rows}
    assert by_source == {("human", "imported"), ("human", "synthetic")}
    synthetic_rows = [r for r in rows if r["task_source"] == "synthetic"]
    assert len(synthetic_rows) == 2 and all(r["synthetic_generator"] == GENERATOR for r in synthetic_rows)
    with_llm = ops(label_studio, "export", "--project", str(project_id), "--out", str(tmp_path / "all.csv"),
                   "--with-llm", env=env)  # fmt: skip
    assert with_llm.returncode == 0 and "prediction/imported" in with_llm.stdout


def test_connect_no_queue_leaves_label_studios_order_alone_after_trainings(
    label_studio: LabelStudioServer, backend_for_ls: BackendProcess
) -> None:
    """The server-wide QUEUE_ENABLED is on; the project chose otherwise at connect, and keeps its choice."""
    backend = backend_for_ls
    data = trec6()
    env = {"BASIC_AUTH_USER": backend.auth[0], "BASIC_AUTH_PASS": backend.auth[1],
           "WEBHOOK_SECRET": backend.webhook_secret, "LSAL_BACKEND_URL": backend.url}  # fmt: skip
    connect = ["connect", "--title", f"no queue {uuid.uuid4().hex[:6]}", "--labels", ",".join(data.classes)]
    made = ops(label_studio, *connect, "--no-queue", env=env)
    assert made.returncode == 0, made.stderr
    project_id = int(re.search(r"project (\d+) \(.*\) created", made.stdout).group(1))  # type: ignore[union-attr]

    ls = label_studio.sdk()
    sampling = ls.projects.get(id=project_id).sampling
    order = random.Random(11).sample(range(len(data)), 40)
    ls.projects.import_tasks(id=project_id, request=[{"text": data.texts[i], "gold": data.labels[i]} for i in order])
    tasks = list(ls.tasks.list(project=project_id, page_size=100))
    for task in tasks[:12]:
        annotate(label_studio, task.id, task.data["gold"])

    def trained_and_idle() -> bool:
        versions = backend.get("/versions", params={"project": project_id}).json()["versions"]
        jobs = [backend.metric("lsal_jobs", state=state) or 0 for state in ("queued", "started", "deferred")]
        return bool(versions) and not any(jobs)

    wait_for(trained_and_idle, timeout=240, what=f"a training and an idle worker\n{backend.log_tail()}")
    project = ls.projects.get(id=project_id)
    assert project.sampling == sampling and not (project.model_version or "").startswith("queue")
    assert backend.get("/queue", params={"project": project_id}).json()["queue"] is None
    assert "queue: off for this project" in made.stdout
    assert backend.get("/queue", params={"project": project_id}).json()["enabled"] is False

    # connect without --no-queue turns it back on, at the backend and in LS
    again = ops(label_studio, *connect, env=env)
    assert again.returncode == 0 and "Uncertainty sampling" in again.stdout, again.stderr
    assert backend.get("/queue", params={"project": project_id}).json()["enabled"] is True
