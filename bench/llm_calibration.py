"""Bias correction before calibration, on real LLM label distributions: TREC-6 and SMS spam.

    python -m bench.llm_calibration                  # 200 items per dataset, SmolLM2-135M, scored prompts
    python -m bench.llm_calibration --from-raw       # re-score the kept distributions, no LLM
    python -m bench.llm_calibration --render-only    # rebuild llm_calibration.md from the .json

For each dataset, the same seeded sample as bench.llm_models (readable labels with hints), labelled
zero-shot through the real LLMClient, the product's prompts and the llama.cpp server (temperature 0):
scored prompts (the distribution from the first answer token's top logprobs), or with --json the JSON
answer read by logprobs. The distributions are kept (bench/results/llm_calibration.raw.json,
git-ignored) and scored three ways, as the training job scores a project's checks:

- raw: the model's distribution as it came;
- bias-corrected: its label prior, the mean distribution over all the answered items (no gold label
  read), divided out (batch calibration, Zhou et al. 2023);
- calibrated: then a distribution calibrator (temperature or vector scaling, chosen by out-of-fold
  log-loss) fitted on gold labels, each item calibrated by one fitted without it (5 folds).

Accuracy is the argmax's against the gold label (an item without a distribution keeps its answer);
ECE is on the argmax's probability. The numbers depend on the model and on how distributions are read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.labeling import parse_label_config
from backend.llm.annotator import few_shot_prompts
from backend.llm.bias import BatchCalibration, informative
from backend.llm.cache import DiskCache
from backend.llm.calibration import (
    DistributionCalibrator,
    cross_calibrated,
    cross_calibrated_distributions,
    distribution_matrix,
    expected_calibration_error,
    score_distributions,
)
from backend.llm.factory import embedded_llm_client
from backend.llm.routing import auto_accept_threshold
from bench.llm_models import DEFAULT_VENV, LABELS, embedded_llm, label_config, sample
from bench.spine import log, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
FLOORS = (0.001, 0.01, 0.05)  # the prior's floor: bias-corrected accuracy at each
SCORED = "scored prompt, the first answer token's top logprobs"
JSON_LOGPROBS = "JSON answer (json_object grammar), the label's tokens' logprobs"


def collect(model: str, venv: Path, datasets: Sequence[str], n: int, raw_path: Path, scored: bool) -> dict[str, Any]:
    """Every item's gold label, answer and distribution, per dataset, kept in `raw_path` as each dataset
    is done (merged with what it holds for other datasets of the same model). One cache file per dataset,
    so that two runs on different datasets can go side by side."""
    kept = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    reading = SCORED if scored else JSON_LOGPROBS
    same = kept.get("model") == model and kept.get("reading", JSON_LOGPROBS) == reading
    raw: dict[str, Any] = kept if same else {"model": model, "reading": reading, "datasets": {}}
    with embedded_llm(model, venv) as url:
        for dataset in datasets:
            cache = DiskCache(CACHE / f"calibration-{model}-{dataset}.json")
            client = embedded_llm_client(url, model, cache, timeout=300.0, max_retries=1, concurrency=2)
            spec = parse_label_config(label_config(dataset))
            texts, gold = sample(dataset, n)
            log(f"{model} {dataset}: labelling {len(texts)} items")
            # the product's prompts: scored (one token, its top logprobs), or the JSON answer read by logprobs
            answers = client.annotate_many(spec, few_shot_prompts(spec, texts, [], k=0, scored=scored))
            cache.save()
            raw["datasets"][dataset] = [
                {"gold": g, "labels": list(a.labels) if a and a.labels else None,
                 "confidence": a.confidence if a else None, "distribution": a.distribution if a else None,
                 "method": a.method if a else None}
                for g, a in zip(gold, answers, strict=True)
            ]  # fmt: skip
            fresh = json.loads(raw_path.read_text()) if raw_path.exists() else {}
            if fresh.get("model") == model and fresh.get("reading", JSON_LOGPROBS) == reading:  # another run's
                raw["datasets"] = {**fresh["datasets"], **raw["datasets"]}
            raw_path.write_text(json.dumps(raw) + "\n")
    return raw


def evaluate(items: Sequence[dict[str, Any]], labels: Sequence[str], target_precision: float = 0.95) -> dict[str, Any]:
    """Accuracy, ECE and log-loss raw, bias-corrected and calibrated (out of fold) on the items with a
    distribution (and over all items, those without one keeping their answer); today's top-confidence path
    (Platt/isotonic, out of fold) on every answered item."""
    scored = [item for item in items if item["method"] != "votes" and informative(item["distribution"])]
    truth = np.array([list(labels).index(item["gold"]) for item in scored], dtype=int)
    raw = distribution_matrix([item["distribution"] for item in scored], labels)
    prior = BatchCalibration().fit(raw)  # every item's distribution, no gold label read
    corrected = prior.transform(raw)
    stages = {"raw": raw, "bias_corrected": corrected,
              "calibrated": cross_calibrated_distributions(corrected, truth),
              "temperature_only": cross_calibrated_distributions(corrected, truth, method="temperature"),
              "vector_only": cross_calibrated_distributions(corrected, truth, method="vector"),
              "calibrated_without_prior": cross_calibrated_distributions(raw, truth)}  # fmt: skip
    out: dict[str, Any] = {"items": len(items), "with_distribution": len(scored),
                           "prior": dict(zip(labels, map(float, prior.prior_ if prior.applied else []), strict=False)),
                           "chosen": DistributionCalibrator().fit(corrected, truth).method_,
                           "gold": {label: int((truth == i).sum()) for i, label in enumerate(labels)}}  # fmt: skip
    swept = {floor: BatchCalibration(floor).fit(raw).transform(raw) for floor in FLOORS}
    out["floor_sweep"] = {str(floor): score_distributions(matrix, truth).accuracy for floor, matrix in swept.items()}
    # an item without a distribution keeps its own answer (no answer: wrong), as pre-labels do
    others_right = sum(item["labels"] == [item["gold"]] for item in items if item not in scored)
    for name, matrix in stages.items():
        score = score_distributions(matrix, truth)
        best = matrix.argmax(axis=1)
        all_items = (int((best == truth).sum()) + others_right) / len(items)
        gate = auto_accept_threshold(list(matrix[np.arange(truth.size), best]), list(best == truth), target_precision)
        out[name] = {"accuracy": score.accuracy, "accuracy_all_items": all_items, "ece": score.ece,
                     "log_loss": score.log_loss,
                     "predicted": {label: int((best == i).sum()) for i, label in enumerate(labels)},
                     "threshold": gate.value, "auto_accept_share": gate.support / truth.size if gate.value else 0.0,
                     "auto_accept_precision": gate.precision}  # fmt: skip
    answered = [item for item in items if item["labels"] and item["confidence"] is not None]
    right = [item["labels"] == [item["gold"]] for item in answered]
    confidence = [float(item["confidence"]) for item in answered]
    out["top_confidence"] = {
        "answered": len(answered),
        "accuracy": sum(right) / len(items),
        "ece_raw": expected_calibration_error(confidence, right),
        "ece_calibrated": expected_calibration_error(cross_calibrated(confidence, right), right),
    }
    return out


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# LLM label distributions: raw, bias-corrected, calibrated",
        "",
        f"Generated by `python -m bench.llm_calibration` on {result['date']}, model {result['model']} (llama.cpp "
        f"server, temperature 0, label distribution from the {result.get('reading', JSON_LOGPROBS)}), "
        f"{result['machine']['cpus']} CPUs. Zero-shot, no examples in the prompt. Bias-corrected: the mean "
        "distribution over all the items divided out (no gold label read). Calibrated: then fitted on gold "
        "labels, each item by a calibrator fitted without it (5 folds), as the training job scores its checks.",
        "",
        "| dataset | items | with distribution | stage | accuracy (all items) | accuracy | ECE | log-loss "
        "| auto-accept share at 0.95 (its precision) | predicted |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    stages = ["raw", "bias_corrected", "calibrated", "temperature_only", "vector_only", "calibrated_without_prior"]
    for name, d in result["datasets"].items():
        for stage in stages:
            s = d[stage]
            share = f"{s['auto_accept_share']:.2f} ({_f(s['auto_accept_precision'], 2)})" if s["threshold"] else "0"
            predicted = ", ".join(f"{k} {v}" for k, v in s["predicted"].items())
            cells = [_f(s["accuracy_all_items"]), _f(s["accuracy"]), _f(s["ece"]), _f(s["log_loss"]), share, predicted]
            lines.append(f"| {name} | {d['items']} | {d['with_distribution']} | {stage.replace('_', ' ')} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "| dataset | calibrator chosen on all checks | prior | gold | top-confidence path: accuracy, "
              "ECE raw, ECE Platt/isotonic (out of fold) | bias-corrected accuracy by prior floor |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, d in result["datasets"].items():
        prior = ", ".join(f"{k} {v:.3f}" for k, v in d["prior"].items())
        gold = ", ".join(f"{k} {v}" for k, v in d["gold"].items())
        t = d["top_confidence"]
        sweep = ", ".join(f"{floor}: {_f(accuracy)}" for floor, accuracy in d["floor_sweep"].items())
        lines.append(f"| {name} | {d['chosen']} | {prior} | {gold} | {_f(t['accuracy'])}, {_f(t['ece_raw'])}, "
                     f"{_f(t['ece_calibrated'])} | {sweep} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datasets", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--n", type=int, default=200, help="items per dataset (default 200)")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("LSAL_LLM_VENV", DEFAULT_VENV)))
    parser.add_argument("--from-raw", action="store_true", help="score the kept distributions, no LLM")
    parser.add_argument("--json", action="store_true", help="JSON answers read by logprobs, not scored prompts")
    parser.add_argument("--stem", default="llm_calibration", help="output file names (default llm_calibration)")
    parser.add_argument("--render-only", action="store_true", help="rebuild the .md from the .json")
    args = parser.parse_args(argv)
    stem = RESULTS / args.stem
    if args.render_only:
        result = json.loads(stem.with_suffix(".json").read_text())
    else:
        started = time.perf_counter()
        if args.from_raw:
            raw = json.loads(stem.with_suffix(".raw.json").read_text())
        else:
            raw = collect(
                args.model, args.venv.expanduser(), args.datasets, args.n, stem.with_suffix(".raw.json"), not args.json
            )
        datasets = {name: evaluate(items, [n for n, _ in LABELS[name].values()])
                    for name, items in raw["datasets"].items()}  # fmt: skip
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": raw["model"],
                  "reading": raw.get("reading", JSON_LOGPROBS),
                  "machine": machine(), "seconds": time.perf_counter() - started, "datasets": datasets}  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    stem.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
