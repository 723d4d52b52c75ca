"""The spine benchmark: /predict, /setup and /health latency over real HTTP, and retraining time.

    python -m bench.spine            # the full run (what `make bench` does), a few minutes on 2 cores
    python -m bench.spine --quick    # a smoke run: 5 repeats, no 10k training; writes spine-quick.*

What it does:

1. Trains the student on 1,000 TREC-6 labels, saves it with ModelStore as project 1 in a temporary
   MODEL_DIR, starts the real server (`backend.cli.gunicorn_command(settings, workers=1)`, the command
   `lsal serve` runs) as a subprocess, and times GET /health, POST /setup and POST /predict with 1, 100
   and 1,000 tasks from a keep-alive HTTP client, round-robin over the cases for `--repeats` rounds.
   StudentModel.predict alone is timed in-process on the same texts for comparison. A second project
   (a model on 1,000 20 Newsgroups labels) shows /predict with 1 and 100 long texts.
2. Times StudentModel.fit + ModelStore.save for 100 / 1k / 10k labels of 20 Newsgroups (train split) and
   100 / 1k / 5k TREC-6 questions (median of 5 runs, 3 at 10k), with accuracy on the test split.

Writes bench/results/spine.json (summary), spine.md (tables), spine.png (plot) and spine.raw.json
(every sample; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
import sklearn
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from backend.cli import gunicorn_command
from backend.datasets import load
from backend.jobs.connection import stop_embedded_redis
from backend.labeling.templates import render
from backend.settings import Settings
from backend.student import ModelStore, StudentModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TEMPLATE = ROOT / "label_configs" / "text_classification_single.xml"

# From the issue: medians.
TARGETS = {
    "GET /health": 0.020,
    "POST /setup": 0.020,
    "POST /predict, 100 tasks": 0.050,
    "POST /predict, 100 long texts": 0.050,  # the same target, on 20 Newsgroups-length texts
}
TRAIN_TARGET = ("20newsgroups", 10_000, 10.0)  # retrain on 10k labels (fit + save) under 10 s

HTTP_MODEL_LABELS = 1_000
PREDICT_SIZES = (1, 100, 1_000)
LONG_PREDICT_SIZES = (1, 100)
TREC_TEST = 452  # TREC-6 has no test split here: 5,452 = a fixed stratified 452 held out + a 5,000 pool
TRAIN_PLAN = (("20newsgroups", (100, 1_000, 10_000)), ("trec6", (100, 1_000, 5_000)))
SEED = 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _median(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)  # type: ignore[type-var]


def summary(samples: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples, dtype=float)
    return {
        "n": len(values),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Split:
    name: str
    pool_texts: list[str]
    pool_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    classes: list[str] = field(default_factory=list)


def load_split(name: str) -> Split:
    if name == "trec6":
        ds = load("trec6")
        pool_x, test_x, pool_y, test_y = train_test_split(
            ds.texts, ds.labels, test_size=TREC_TEST, stratify=ds.labels, random_state=SEED
        )
        return Split(name, list(pool_x), list(pool_y), list(test_x), list(test_y), ds.classes)
    train, test = load(name, "train"), load(name, "test")
    return Split(name, train.texts, train.labels, test.texts, test.labels, train.classes)


def sample(texts: list[str], labels: list[str], n: int, seed: int = SEED) -> tuple[list[str], list[str]]:
    """A stratified sample of n labelled items (all of them, shuffled, when n is the whole pool)."""
    if n >= len(texts):
        order = np.random.default_rng(seed).permutation(len(texts))
        return [texts[i] for i in order], [labels[i] for i in order]
    x, _, y, _ = train_test_split(texts, labels, train_size=n, stratify=labels, random_state=seed)
    return list(x), list(y)


# --- HTTP latency ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The real gunicorn server (`lsal serve`'s command, one worker) on a temporary data directory."""

    def __init__(self, data_dir: Path, model_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        settings = Settings(host="127.0.0.1", port=self.port, data_dir=data_dir, model_dir=model_dir)
        self.command = gunicorn_command(settings, workers=1)
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(data_dir),
            "MODEL_DIR": str(model_dir),
            "WEB_WORKERS": "1",
            "LOG_LEVEL": "WARNING",
            "BASIC_AUTH_USER": "",
            "BASIC_AUTH_PASS": "",
            "WEBHOOK_SECRET": "",
        }
        self.log_path = data_dir / "gunicorn.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not answer /health within 90 s:\n{self.log_tail()}")

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        # /predict of an encoder student keeps embeddings in the embedded Redis, which outlives gunicorn
        stop_embedded_redis(self.data_dir / "redis")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    check: Callable[[requests.Response], None] | None = None
    project_id: int | None = None  # for /predict: the served project and texts, timed in-process too
    texts: list[str] = field(default_factory=list)
    model: StudentModel | None = None
    samples: list[float] = field(default_factory=list)
    model_samples: list[float] = field(default_factory=list)


@dataclass
class Project:
    """A model saved with ModelStore under a project id, and texts it has not seen to predict on."""

    id: int
    dataset: str
    model: StudentModel
    version: str
    config: str
    unseen: list[str]
    labels: int


def make_project(project_id: int, dataset: str, store: ModelStore) -> Project:
    data = load_split(dataset)
    texts, labels = sample(data.pool_texts, data.pool_labels, HTTP_MODEL_LABELS)
    log(f"training project {project_id}'s model on {len(texts):,} {dataset} labels")
    model = StudentModel(data.classes).fit(texts, [(label,) for label in labels])
    version = store.save(project_id, model, {"labelled": len(texts), "dataset": dataset})
    seen = set(texts)
    unseen = data.test_texts + [t for t in data.pool_texts if t not in seen]
    config = render(TEMPLATE.read_text(), data.classes)
    return Project(project_id, dataset, model, version, config, unseen, len(texts))


def predict_case(name: str, project: Project, n: int) -> Case:
    tasks = [{"id": i + 1, "data": {"text": text}} for i, text in enumerate(project.unseen[:n])]
    body = {"project": str(project.id), "label_config": project.config, "tasks": tasks}

    def check(response: requests.Response) -> None:
        answer = response.json()
        results = answer["results"]
        assert answer["model_version"] == project.version, answer["model_version"]
        assert len(results) == n and all(r and r["result"] for r in results), "missing predictions"

    return Case(name, "POST", "/predict", json.dumps(body).encode(), check, project.id, project.unseen[:n])


def bench_http(repeats: int, work: Path) -> dict[str, Any]:
    model_dir = work / "models"
    store = ModelStore(model_dir)
    trec = make_project(1, "trec6", store)
    # The same request shape with 20 Newsgroups posts (~1,300 characters each, TREC's are ~50): how
    # /predict scales with text length. An extra, beyond the cases.
    news = make_project(2, "20newsgroups", store)

    def setup_check(response: requests.Response) -> None:
        assert response.json()["model_version"] == trec.version, response.text

    setup = {"project": "1.1700000000", "schema": trec.config}
    cases = [
        Case("GET /health", "GET", "/health"),
        Case("POST /setup", "POST", "/setup", json.dumps(setup).encode(), setup_check),
    ]
    for n in PREDICT_SIZES:
        cases.append(predict_case(f"POST /predict, {n:,} {'task' if n == 1 else 'tasks'}", trec, n))
    for n in LONG_PREDICT_SIZES:
        cases.append(predict_case(f"POST /predict, {n:,} long {'text' if n == 1 else 'texts'}", news, n))

    with Server(work, model_dir) as server, requests.Session() as session:
        log(f"gunicorn up on {server.url}: {' '.join(server.command[1:])}")
        headers = {"Content-Type": "application/json"}

        def call(case: Case) -> requests.Response:
            response = session.request(case.method, server.url + case.path, data=case.body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{case.name}: HTTP {response.status_code}: {response.text[:500]}")
            return response

        for case in cases:  # check the answers, then warm up (connection, caches, first-call costs)
            response = call(case)
            if case.check is not None:
                case.check(response)
            for _ in range(3):
                call(case)
        # The in-process comparison runs in the same rounds, right after its request, on the model as
        # the server has it (unpickled from the store): the machine's noise then hits both alike.
        for case in cases:
            if case.project_id is not None:
                case.model = store.load(case.project_id).model  # type: ignore[union-attr]
                case.model.predict(case.texts)
        log(f"timing {len(cases)} requests (and predict in-process) x {repeats} rounds")
        for round_ in range(repeats):
            for case in cases:
                started = time.perf_counter()
                response = call(case)
                _ = response.content
                case.samples.append(time.perf_counter() - started)
                if case.model is not None:
                    started = time.perf_counter()
                    case.model.predict(case.texts)
                    case.model_samples.append(time.perf_counter() - started)
            if (round_ + 1) % 10 == 0 or round_ + 1 == repeats:
                log(f"  round {round_ + 1}/{repeats}")

    rows = []
    for case in cases:
        row: dict[str, Any] = {"request": case.name, **summary(case.samples)}
        if case.model is not None:
            row["tasks"] = len(case.texts)
            row["chars_per_text"] = float(np.mean([len(t) for t in case.texts]))
            row["request_bytes"] = len(case.body or b"")
            row["model_only"] = summary(case.model_samples)
        target = TARGETS.get(case.name)
        if target is not None:
            row["target"] = target
            row["pass"] = row["median"] < target
        rows.append(row)
        log(f"  {case.name:30s} median {row['median'] * 1e3:8.1f} ms   p90 {row['p90'] * 1e3:8.1f} ms")
    raw = {case.name: case.samples for case in cases}
    raw.update({f"StudentModel.predict alone: {c.name}": c.model_samples for c in cases if c.model is not None})
    return {
        "models": {str(p.id): {"dataset": p.dataset, "labels": p.labels, "version": p.version} for p in (trec, news)},
        "server": " ".join(["python", *server.command[1:]]),
        "client": "requests.Session (keep-alive), pre-encoded JSON body, timed until the body is read",
        "repeats": repeats,
        "rows": rows,
        "raw": raw,
    }


# --- training time ---------------------------------------------------------------------------------


def timed_fit_and_save(
    classes: list[str], texts: list[str], labels: list[str], store: ModelStore
) -> tuple[StudentModel, dict[str, float | None]]:
    """Time StudentModel.fit and ModelStore.save; split fit into features and classifier where we can.

    The split wraps the model's single-label classifier step (a private method) on this one instance;
    if the model no longer has it, the split is left out and the totals stand.
    """
    model = StudentModel(classes)
    fit_single_label = getattr(model, "_fit_single_label", None)
    inner: dict[str, float] = {}
    if fit_single_label is not None:

        def timed_classifier(*args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            fit_single_label(*args, **kwargs)
            inner["classifier"] = time.perf_counter() - started

        model._fit_single_label = timed_classifier  # type: ignore[method-assign]
    started = time.perf_counter()
    model.fit(texts, [(label,) for label in labels])
    fitted = time.perf_counter()
    if fit_single_label is not None:
        del model._fit_single_label  # an instance attribute: the model must pickle as usual
    version = store.save(1, model, {"labelled": len(texts)})
    saved = time.perf_counter()
    classifier = inner.get("classifier")
    return model, {
        "total": saved - started,
        "fit": fitted - started,
        "vectorize": None if classifier is None else fitted - started - classifier,
        "classifier": classifier,
        "save": saved - fitted,
        "model_mb": (store.project_dir(1) / f"{version}.pkl").stat().st_size / 1e6,
    }


def in_a_fork(function: Callable[..., Any], *args: Any) -> Any:
    """function(*args) in a forked child, as an rq worker runs each job: what runs in the job pays its own
    start-up (worker processes, caches), as in production, instead of reusing this process's warm ones."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(function, *args).result()


def vectorizer_breakdown(model: StudentModel, texts: list[str]) -> dict[str, float]:
    """Each part of the fitted model's feature union, cloned and fitted on the same texts in one pass."""
    parts = getattr(model.vectorizer_, "transformer_list", [])
    out = {}
    for name, part in parts:
        started = time.perf_counter()
        clone(part).fit_transform(texts)
        out[name] = time.perf_counter() - started
    return out


def bench_training(quick: bool, work: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    raw: dict[str, list[dict[str, float]]] = {}
    breakdown: dict[str, Any] | None = None
    for name, sizes in TRAIN_PLAN:
        data = load_split(name)
        log(f"{name}: pool {len(data.pool_texts):,}, test {len(data.test_texts):,}, {len(data.classes)} classes")
        for n in sizes:
            if quick and n > 1_000:
                continue
            runs = 1 if quick else (3 if n >= 10_000 else 5)
            texts, labels = sample(data.pool_texts, data.pool_labels, n)
            store = ModelStore(work / f"train-{name}-{n}", keep=1)
            samples = []
            model = None
            for run in range(runs):
                model, sample_ = in_a_fork(timed_fit_and_save, data.classes, texts, labels, store)
                samples.append(sample_)
                log(
                    f"  {name} {n:>6,} labels, run {run + 1}/{runs}: fit+save {sample_['total']:7.2f} s "
                    f"(vectorize {_s(sample_['vectorize'])}, classifier {_s(sample_['classifier'])}, "
                    f"save {_s(sample_['save'])})"
                )
            assert model is not None
            predictions = model.predict(data.test_texts)
            accuracy = float(np.mean([p.labels[0] == y for p, y in zip(predictions, data.test_labels, strict=True)]))
            row: dict[str, Any] = {
                "dataset": name,
                "labels": len(texts),
                "runs": runs,
                "chars_per_text": float(np.mean([len(t) for t in texts])),
                "total": summary([s["total"] for s in samples]),
                **{part: _median([s[part] for s in samples]) for part in samples[0] if part != "total"},
                "test_accuracy": accuracy,
                "test_size": len(data.test_texts),
                "loadavg_1min_after": os.getloadavg()[0],
            }
            if (name, n) == TRAIN_TARGET[:2]:
                row["target"] = TRAIN_TARGET[2]
                row["pass"] = row["total"]["median"] < TRAIN_TARGET[2]
                log("  breaking the 10k vectorizer time down into its word and char halves (one run)")
                breakdown = {"dataset": name, "labels": len(texts), "parts": vectorizer_breakdown(model, texts)}
            log(f"  -> median {row['total']['median']:.2f} s, test accuracy {accuracy:.3f}")
            rows.append(row)
            raw[f"{name} {n}"] = samples
    return {"rows": rows, "breakdown": breakdown, "raw": raw}


# --- reporting -------------------------------------------------------------------------------------


def write_outputs(
    out: Path,
    result: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
) -> None:
    """A bench's table (.md) and plot (.png) from its result, next to its .json; the table is printed too."""
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table)


def machine() -> dict[str, Any]:
    model_name = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model_name,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _verdict(row: dict[str, Any], unit: Callable[[float], str]) -> tuple[str, str]:
    if "target" not in row:
        return "", ""
    return f"< {unit(row['target'])}", "**pass**" if row["pass"] else "**MISS**"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Spine benchmark",
        "",
        f"Generated by `python -m bench.spine{' --quick' if result['quick'] else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(result['started_at']))} in "
        f"{result['wall_seconds'] / 60:.1f} min. Machine: {m['cpus']} CPUs ({m['cpu_model']}), "
        f"{m['memory_gb']} GB, Python {m['python']}, scikit-learn {m['scikit_learn']}; 1-minute load average "
        f"{m['loadavg_at_start'][0]:.2f} at the start, {m['loadavg_at_end'][0]:.2f} at the end (the bench itself "
        "keeps one or two cores busy; a load well above the CPU count means other work competed with it).",
        "",
    ]
    if "http" in result:
        http = result["http"]
        lines += [
            "## Request latency over HTTP",
            "",
            f"Real gunicorn server, one worker (`{http['server']}`). Project 1 serves a model trained on "
            f"{http['models']['1']['labels']:,} TREC-6 labels and gets TREC-6 questions; "
            f"the *long* rows are project 2, a model trained on {http['models']['2']['labels']:,} "
            "20 Newsgroups labels, getting 20 Newsgroups test posts (lengths in the chars/text column). "
            f"Client: {http['client']}. {http['repeats']} rounds, round-robin over the requests; targets "
            "are on the median. The last column is the same model's `predict` on the same texts, in-process.",
            "",
            "| request | chars/text | median ms | p90 ms | min ms | StudentModel.predict alone, median ms "
            "| target | result |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for row in http["rows"]:
            alone = _ms(row["model_only"]["median"]) if "model_only" in row else ""
            chars = f"{row['chars_per_text']:.0f}" if "chars_per_text" in row else ""
            target, verdict = _verdict(row, lambda s: f"{s * 1e3:.0f} ms")
            lines.append(
                f"| {row['request']} | {chars} | {_ms(row['median'])} | {_ms(row['p90'])} | {_ms(row['min'])} "
                f"| {alone} | {target} | {verdict} |"
            )
        lines.append("")
    if "training" in result:
        training = result["training"]
        lines += [
            "## Training time: StudentModel.fit + ModelStore.save",
            "",
            "Median of 5 runs (3 at 10k; 1 with --quick) on the same stratified sample of the training pool, "
            "each in a freshly forked process, as rq runs every training job: start-up costs inside the fit "
            "are paid every time, as in production. The fit splits "
            "into *vectorize* (the TF-IDF features) and *classifier* (everything after: the calibrated "
            "linear SVM with its out-of-fold fits); *save* is ModelStore.save (pickle, fsync, rename). "
            "Accuracy on the test split (20 Newsgroups: the official 7,528; TREC-6: a fixed 452 held out).",
            "",
            "| dataset | labels | chars/text | fit+save median s | min-max s | vectorize s | classifier s "
            "| save s | model MB | test accuracy | target | result |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for row in training["rows"]:
            target, verdict = _verdict(row, lambda s: f"{s:.0f} s")
            total = row["total"]
            lines.append(
                f"| {row['dataset']} | {row['labels']:,} | {row['chars_per_text']:.0f} | {total['median']:.2f} | "
                f"{total['min']:.2f}-{total['max']:.2f} | {_s(row['vectorize'])} | {_s(row['classifier'])} | "
                f"{_s(row['save'])} | {row['model_mb']:.1f} | {row['test_accuracy']:.3f} | {target} | {verdict} |"
            )
        breakdown = training.get("breakdown")
        if breakdown:
            lines += [
                "",
                f"The feature union's parts at {breakdown['labels']:,} {breakdown['dataset']} labels: each part "
                "cloned from the fitted model and fitted alone, one `fit_transform` pass (one run):",
                "",
                "| part | seconds |",
                "|---|---:|",
            ]
            for part, seconds in breakdown["parts"].items():
                lines.append(f"| {part} | {seconds:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ("http", "training") if key in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "http":
            rows = result["http"]["rows"]
            names = [r["request"].replace("POST ", "").replace("GET ", "").replace(", ", "\n") for r in rows]
            x = np.arange(len(rows))
            medians = np.array([r["median"] for r in rows]) * 1e3
            p90 = np.array([r["p90"] for r in rows]) * 1e3
            ax.bar(x - 0.2, medians, 0.4, yerr=[np.zeros_like(p90), p90 - medians], capsize=3,
                   label="over HTTP (median, bar to p90)")  # fmt: skip
            alone = [r["model_only"]["median"] * 1e3 if "model_only" in r else np.nan for r in rows]
            ax.bar(x + 0.2, alone, 0.4, label="StudentModel.predict alone (median)")
            for i, row in enumerate(rows):
                if "target" in row:
                    ax.hlines(row["target"] * 1e3, i - 0.45, i + 0.45, colors="red", linestyles="--")
            ax.plot([], [], "r--", label="target")
            ax.set_xticks(x, names, fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("ms")
            ax.set_title("Request latency (1 gunicorn worker)")
            ax.legend(fontsize=8)
        else:
            rows = result["training"]["rows"]
            for dataset in dict.fromkeys(r["dataset"] for r in rows):
                mine = [r for r in rows if r["dataset"] == dataset]
                n = [r["labels"] for r in mine]
                (line,) = ax.plot(n, [r["total"]["median"] for r in mine], "o-", label=f"{dataset}: fit + save")
                vectorize = [np.nan if r["vectorize"] is None else r["vectorize"] for r in mine]
                ax.plot(n, vectorize, ":", color=line.get_color(), label=f"{dataset}: vectorize")
            ax.axhline(TRAIN_TARGET[2], color="red", linestyle="--", linewidth=0.8)
            ax.plot([TRAIN_TARGET[1]], [TRAIN_TARGET[2]], "r*", markersize=12, label="target: < 10 s at 10k labels")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("labelled texts")
            ax.set_ylabel("seconds (median)")
            ax.set_title("Retraining time")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spine", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="HTTP rounds (default 30; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, 1 training run, no 10k training")
    parser.add_argument("--skip-http", action="store_true", help="training time only")
    parser.add_argument("--skip-training", action="store_true", help="request latency only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    parser.add_argument("--render-only", action="store_true", help="rebuild .md and .png from the .json")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 30)
    stem = "spine-quick" if args.quick else "spine"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        result = json.loads((args.out / f"{stem}.json").read_text())
        write_outputs(args.out / stem, result, markdown, plot)
        log(f"rebuilt {args.out / stem}.md and .png from {stem}.json")
        return 0

    result: dict[str, Any] = {"started_at": time.time(), "quick": args.quick, "machine": machine()}
    log(f"machine: {result['machine']['cpus']} CPUs, {result['machine']['cpu_model']}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lsal-bench-") as tmp:
        if not args.skip_http:
            result["http"] = bench_http(repeats, Path(tmp) / "http")
        if not args.skip_training:
            result["training"] = bench_training(args.quick, Path(tmp))
    result["wall_seconds"] = time.perf_counter() - started
    result["machine"]["loadavg_at_end"] = os.getloadavg()

    raw = {key: result[key].pop("raw") for key in ("http", "training") if key in result}
    (args.out / f"{stem}.raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"writing {args.out / stem}.json, .md, .png and .raw.json")
    write_outputs(args.out / stem, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
