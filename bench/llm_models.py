"""Which embedded LLM labels better: zero-shot TREC-6 and SMS spam through the real LLMClient.

    python -m bench.llm_models                      # both models, 150 items per dataset (about an hour here)
    python -m bench.llm_models --n 20 --throughput-items 10 --models smollm2-135m   # a smoke run
    python -m bench.llm_models --render-only        # rebuild llm_models.md / .png from llm_models.json

For each model of backend.llm.local.LOCAL_MODELS (one at a time): start llama-cpp-python's server with
`start_local_server` from the venv in LSAL_LLM_VENV (default ~/.cache/lsal/llm-server), then for each
dataset label the same seeded sample of `--n` texts zero-shot (no examples) with
LLMClient(formats=("json_object",)) at concurrency 1, and time the first `--throughput-items` of them
again at concurrency 2. The label config is label_configs/text_classification_single.xml rendered with
readable labels and a `hint` per label, which the prompt shows as the label's description.

Writes bench/results/llm_models.json (summary), .md (table), .png (reliability diagrams) and .raw.json
(every answer; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend.datasets import load
from backend.labeling import parse_label_config
from backend.labeling.templates import render
from backend.llm.cache import DiskCache
from backend.llm.calibration import expected_calibration_error, reliability
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.cost import Usage
from backend.llm.factory import embedded_llm_client
from backend.llm.local import LOCAL_MODELS, start_local_server, stop_local_server
from backend.llm.prompts import build_prompt
from backend.llm.transport import Completion
from bench.spine import log, machine, write_outputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TEMPLATE = ROOT / "label_configs" / "text_classification_single.xml"
DEFAULT_VENV = Path.home() / ".cache" / "lsal" / "llm-server"
SEED = 0

# dataset -> {gold label: (label as the config names it, hint)}
LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "trec6": {
        "ABBR": ("abbreviation", "asks what an abbreviation or acronym stands for, or for the short form of something"),
        "DESC": ("description", "asks for a definition, a description, a manner or a reason (what is, how, why)"),
        "ENTY": ("entity", "asks for a thing: an animal, color, food, product, event, language, term, ..."),
        "HUM": ("human", "asks for a person, a group of people or an organization (who)"),
        "LOC": ("location", "asks for a place: a city, country, state, mountain, river, ... (where)"),
        "NUM": ("number", "asks for a number: a count, date, distance, amount of money, ... (how many, when)"),
    },
    "sms_spam": {
        "ham": ("ham", "an ordinary personal message between people who know each other"),
        "spam": ("spam", "unsolicited advertising, a prize, an offer or a scam, often with a number to call or text"),
    },
}  # fmt: skip


class CountingCache(DiskCache):
    """The disk cache, counting the tokens of the answers it serves: a re-run spends none, but the tables
    report what the work takes. `served` counts for the whole cache, `served_in_thread()` for the calling
    thread alone (the client answers each prompt in one thread), for per-item accounts."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.served = Usage()
        self._lock = threading.Lock()
        self._local = threading.local()

    def get(self, key: str) -> str | None:
        hit = super().get(key)
        if hit is not None:
            completion = Completion.loads(hit)
            usage = Usage(completion.prompt_tokens, completion.completion_tokens, 1, 1)
            with self._lock:
                self.served += usage
            self._local.served = self.served_in_thread() + usage
        return hit

    def served_in_thread(self) -> Usage:
        return getattr(self._local, "served", Usage())

    def reset_thread(self) -> None:
        self._local.served = Usage()


def label_config(dataset: str, template: Path = TEMPLATE) -> str:
    """The single-choice template (or `template`) with this dataset's labels, each with its hint."""
    labels = LABELS[dataset]
    root = ET.fromstring(render(template.read_text(), [name for name, _ in labels.values()]))
    hints = dict(labels.values())
    for choice in root.iter("Choice"):
        choice.set("hint", hints[choice.get("value", "")])
    return ET.tostring(root, encoding="unicode")


def sample(dataset: str, n: int, seed: int = SEED) -> tuple[list[str], list[str]]:
    """A seeded random sample (so the class mix is the corpus's), gold labels named as in the config."""
    data = load(dataset)
    picked = random.Random(seed).sample(range(len(data)), min(n, len(data)))
    names = {gold: name for gold, (name, _) in LABELS[dataset].items()}
    return [data.texts[i] for i in picked], [names[data.labels[i]] for i in picked]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_llm(model: str, venv: Path = DEFAULT_VENV, timeout: float = 300) -> Iterator[str]:
    """llama.cpp's server on `model` for the length of the block; yields its OpenAI-compatible base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_local_server(venv, model, port, Path(tmp) / "llama.log", timeout=timeout)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            stop_local_server(server)


def timed_run(client: LLMClient, config: str, texts: Sequence[str], what: str) -> tuple[list[LLMAnswer | None], float]:
    spec = parse_label_config(config)
    prompts = [build_prompt(spec, text) for text in texts]
    step = max(1, len(prompts) // 6)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            log(f"  {what}: {done}/{total}")

    started = time.perf_counter()
    answers = client.annotate_many(spec, prompts, progress)
    return answers, time.perf_counter() - started


def score(answers: Sequence[LLMAnswer | None], gold: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    n = len(gold)
    given = [a for a in answers if a is not None]
    labelled = [(a, g) for a, g in zip(answers, gold, strict=True) if a is not None and a.labels]
    conf = [a.confidence for a, _ in labelled if a.confidence is not None]
    correct = [a.labels == (g,) for a, g in labelled if a.confidence is not None]
    # every label equally likely: the label's token was outside the top logprobs (see the README section)
    flat = [
        a for a, _ in labelled if a.distribution and max(a.distribution.values()) - min(a.distribution.values()) < 1e-9
    ]
    methods = Counter(a.method for a in given)
    majority = Counter(gold).most_common(1)[0]
    return {
        "items": n,
        "accuracy": sum(a.labels == (g,) for a, g in labelled) / n,  # no label counts as wrong
        "no_label_share": (n - len(labelled)) / n,
        "errors": sum(1 for a in given if a.error and not a.labels),
        "not_attempted": n - len(given),
        "mean_confidence": statistics.fmean(conf) if conf else None,
        "accuracy_when_labelled": sum(correct) / len(correct) if correct else None,
        "ece": expected_calibration_error(conf, correct) if conf else None,
        "flat_distribution_share": len(flat) / len(labelled) if labelled else None,
        "method": methods.most_common(1)[0][0] if methods else "none",
        "methods": dict(methods),
        "prompt_tokens_per_1k": 1000 * sum(a.usage.prompt_tokens for a in given) / n,
        "completion_tokens_per_1k": 1000 * sum(a.usage.completion_tokens for a in given) / n,
        "predicted": dict(Counter(a.labels[0] for a, _ in labelled)),
        "gold": dict(Counter(gold)),
        "majority_baseline": majority[1] / n,
        "reliability": [vars(b) for b in reliability(conf, correct)],
        "labels": list(labels),
    }  # fmt: skip


def bench_model(
    name: str, venv: Path, datasets: Sequence[str], n: int, throughput_items: int, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    port = free_port()
    log(f"{name}: starting llama_cpp.server on port {port}")
    started = time.perf_counter()
    server = start_local_server(venv, name, port, work / f"{name}.log")
    startup = time.perf_counter() - started
    log(f"{name}: up in {startup:.1f} s")
    rows, raw = [], {}
    try:
        for dataset in datasets:
            config = label_config(dataset)
            spec = parse_label_config(config)
            texts, gold = sample(dataset, n)
            url = f"http://127.0.0.1:{port}/v1"
            warm = embedded_llm_client(url, name, timeout=300.0, max_retries=1, concurrency=1)
            for text in texts[-2:]:  # warm-up (the last two: not among the throughput items)
                warm.annotate(spec, build_prompt(spec, text))
            answers, seconds = timed_run(warm, config, texts, f"{name} {dataset} concurrency 1")
            row = {"model": name, "dataset": dataset, **score(answers, gold, spec.labels)}
            row["items_per_s_c1"] = len(texts) / seconds
            row["startup_s"] = startup
            m = min(throughput_items, len(texts)) if throughput_items > 0 else len(texts)
            twice = embedded_llm_client(url, name, timeout=300.0, max_retries=1, concurrency=2)
            again, seconds2 = timed_run(twice, config, texts[:m], f"{name} {dataset} concurrency 2")
            row["items_per_s_c2"] = m / seconds2
            row["throughput_items_c2"] = m
            # the same greedy answers either way, or the c2 numbers would not be comparable
            pairs = zip(answers[:m], again, strict=True)
            row["c2_same_labels_share"] = (
                sum(a is not None and b is not None and a.labels == b.labels for a, b in pairs) / m
            )
            rows.append(row)
            log(f"{name} {dataset}: accuracy {row['accuracy']:.3f}, no label {row['no_label_share']:.3f}, "
                f"{row['items_per_s_c1']:.2f} items/s (c1), {row['items_per_s_c2']:.2f} (c2)")  # fmt: skip
            raw[dataset] = [
                {"text": t, "gold": g, "labels": a.labels if a else None, "confidence": a.confidence if a else None,
                 "distribution": a.distribution if a else None, "method": a.method if a else None,
                 "texts": a.texts if a else None, "error": a.error if a else None}
                for t, g, a in zip(texts, gold, answers, strict=True)
            ]  # fmt: skip
    finally:
        stop_local_server(server)
    return rows, raw


# --- reporting -------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(rows: Sequence[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The model with the best accuracy averaged over the datasets (ECE breaks a tie)."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    mean = {m: statistics.fmean(r["accuracy"] for r in rs) for m, rs in by_model.items()}
    ece = {m: statistics.fmean(r["ece"] if r["ece"] is not None else 1.0 for r in rs) for m, rs in by_model.items()}
    return max(mean, key=lambda m: (mean[m], -ece[m])), mean


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    s = result["settings"]
    out = [
        f"Zero-shot, {s['n']} seeded random items per dataset (seed {s['seed']}), LLMClient with "
        f'formats=("json_object",), temperature 0, top_logprobs 20; llama-cpp-python '
        f"{s.get('llama_cpp_python', '?')} server, n_ctx {s['n_ctx']}, {s['n_threads']} threads. "
        f"Concurrency 2 is timed on the first {s['throughput_items']} items.",
        "",
        "| model | dataset | accuracy | majority baseline | no label | mean confidence | accuracy when labelled "
        "| ECE (raw) | flat distributions | method | prompt tok / 1k items | completion tok / 1k items "
        "| items/s, c=1 | items/s, c=2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['dataset']} | {_f(r['accuracy'])} | {_f(r['majority_baseline'])} "
            f"| {_f(r['no_label_share'])} | {_f(r['mean_confidence'])} | {_f(r['accuracy_when_labelled'])} "
            f"| {_f(r['ece'])} | {_f(r['flat_distribution_share'], 2)} | {r['method']} "
            f"| {r['prompt_tokens_per_1k']:,.0f} | {r['completion_tokens_per_1k']:,.0f} "
            f"| {r['items_per_s_c1']:.2f} | {r['items_per_s_c2']:.2f} |"
        )
    out += ["", "Predicted labels against the gold ones:", ""]
    for r in rows:
        predicted = ", ".join(f"{label} {r['predicted'].get(label, 0)}" for label in r["labels"])
        gold = ", ".join(f"{label} {r['gold'].get(label, 0)}" for label in r["labels"])
        out.append(f"- {r['model']} / {r['dataset']}: predicted {predicted}; gold {gold}")
    if len({r["model"] for r in rows}) > 1:
        best, mean = verdict(rows)
        scores = ", ".join(f"{m} {a:.3f}" for m, a in mean.items())
        out += ["", f"Labels better: **{best}** (accuracy averaged over the datasets: {scores})."]
    return "\n".join(out) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfectly calibrated")
        for r in (r for r in rows if r["dataset"] == dataset):
            bins = r["reliability"]
            if not bins:
                continue
            sizes = [20 + 200 * b["count"] / r["items"] for b in bins]
            x = [b["mean_confidence"] for b in bins]
            y = [b["accuracy"] for b in bins]
            (line,) = ax.plot(x, y, "-", label=f"{r['model']}: acc {r['accuracy']:.2f}, ECE {_f(r['ece'], 2)}")
            ax.scatter(x, y, s=sizes, color=line.get_color(), alpha=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("raw confidence (bin mean)")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(f"{dataset}: reliability, zero-shot (marker area = items)")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _llama_cpp_version(venv: Path) -> str:
    dist = sorted((venv / "lib").glob("python*/site-packages/llama_cpp_python-*.dist-info"))
    return dist[-1].name.removesuffix(".dist-info").split("-")[1] if dist else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_models", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(LOCAL_MODELS), choices=list(LOCAL_MODELS))
    parser.add_argument("--datasets", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--n", type=int, default=150, help="items per dataset (default 150)")
    parser.add_argument("--throughput-items", type=int, default=30,
                        help="items timed again at concurrency 2 (default 30; 0 = all)")  # fmt: skip
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("LSAL_LLM_VENV", DEFAULT_VENV)))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    parser.add_argument("--stem", default="llm_models", help="output file names (default llm_models)")
    parser.add_argument("--render-only", action="store_true", help="rebuild .md and .png from the .json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.stem
    if args.render_only:
        result = json.loads(stem.with_suffix(".json").read_text())
        write_outputs(stem, result, markdown, plot)
        log(f"rebuilt {stem}.md and .png from {stem}.json")
        return 0

    venv = args.venv.expanduser()
    result: dict[str, Any] = {
        "started_at": time.time(),
        "machine": machine(),
        "settings": {
            "n": args.n,
            "seed": SEED,
            "throughput_items": args.throughput_items,
            "n_ctx": 2048,
            "n_threads": os.cpu_count(),
            "venv": str(venv),
            "llama_cpp_python": _llama_cpp_version(venv),
            # the GGUF's own tokenizer.chat_template, or the one backend.llm.local adds where it has none
            "chat_templates": {m: "added" if LOCAL_MODELS[m].chat else "gguf" for m in args.models},
            "configs": {d: label_config(d) for d in args.datasets},
        },
        "rows": [],
    }
    log(f"machine: {result['machine']['cpus']} CPUs, {result['machine']['cpu_model']}; venv {venv}")
    raw: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lsal-llm-bench-") as tmp:
        for name in args.models:
            rows, raw[name] = bench_model(name, venv, args.datasets, args.n, args.throughput_items, Path(tmp))
            result["rows"] += rows
    result["wall_seconds"] = time.perf_counter() - started
    result["machine"]["loadavg_at_end"] = os.getloadavg()

    stem.with_suffix(".raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"writing {stem}.json, .md, .png and .raw.json after {result['wall_seconds'] / 60:.1f} min")
    write_outputs(stem, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
