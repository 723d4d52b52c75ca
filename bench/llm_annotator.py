"""The LLM annotator on real data: zero-shot quality, calibration, cost, speed, and the cold start.

    python -m bench.llm_annotator                 # TREC-6 and SMS spam, the embedded SmolLM2-135M
    python -m bench.llm_annotator --n 40 --seeds 1 --budgets 20 50   # a smoke run
    python -m bench.llm_annotator --render-only   # rebuild llm_annotator.md / .png from the .json

Per dataset (a seeded random pool of `--pool` items and a held-out test set of `--test` items):
1. The LLM labels `--n` pool items zero-shot through the real LLMClient and llama.cpp server (json_object
   grammar, logprob confidence): accuracy, ECE of its raw confidence, ECE after calibration (each item
   calibrated out of fold, 5 folds, as the product does at retraining), tokens per 1,000 items, dollars
   per 1,000 items at the local price ($0) and at gpt-4o-mini's list price for the same tokens, and
   items per second at concurrency 1 and 2.
2. Learning curves of the student (the product's StudentModel) on random human labels at each budget,
   with and without the LAUD cold start: a k-center-greedy seed of `--seed-size` pool items labelled by
   the LLM, added at weight 0.3 as the training job does. Mean and spread over `--seeds` seeds, against
   the zero-shot LLM's accuracy.

LLM answers are cached on disk (bench/results/cache/, git-ignored) by model and prompt, so a re-run
is fast and gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.datasets import load
from backend.labeling import parse_label_config
from backend.llm.annotator import few_shot_prompts
from backend.llm.cache import DiskCache
from backend.llm.calibration import cross_calibrated, expected_calibration_error
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.cost import DEFAULT_PRICES, Usage, dollars
from backend.llm.factory import embedded_llm_client
from backend.selection.diversity import k_center_greedy, text_features
from backend.student import StudentModel
from bench.llm_models import DEFAULT_VENV, LABELS, embedded_llm, label_config
from bench.spine import log, machine, write_outputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
SEED_WEIGHT = 0.3
REFERENCE_PRICE = "gpt-4o-mini"


def split(dataset: str, pool: int, test: int, seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    data = load(dataset)
    names = {gold: name for gold, (name, _) in LABELS[dataset].items()}
    order = random.Random(seed).sample(range(len(data)), pool + test)
    texts, labels = [data.texts[i] for i in order], [names[data.labels[i]] for i in order]
    return texts[:pool], labels[:pool], texts[pool:], labels[pool:]


def ask(client: LLMClient, spec: Any, texts: Sequence[str]) -> tuple[list[LLMAnswer | None], float]:
    started = time.perf_counter()
    answers = client.annotate_many(spec, few_shot_prompts(spec, texts, [], k=0))
    return answers, time.perf_counter() - started


def zero_shot(
    client: LLMClient, client2: LLMClient, spec: Any, texts: Sequence[str], gold: Sequence[str], throughput_items: int
) -> dict[str, Any]:
    answers, _ = ask(client, spec, texts)
    labelled = [(a, g) for a, g in zip(answers, gold, strict=True) if a is not None and a.labels]
    right = [a.labels[0] == g for a, g in labelled]
    raw = [float(a.confidence or 0.0) for a, _ in labelled]
    usage = sum((a.usage for a in answers if a is not None), Usage())
    fresh = [a for a in answers if a is not None and not a.usage.cached_requests]
    per_item = {
        "prompt": statistics.mean(a.usage.prompt_tokens for a in fresh) if fresh else None,
        "completion": statistics.mean(a.usage.completion_tokens for a in fresh) if fresh else None,
    }
    # throughput on texts the cache has not seen (suffixed), so that the server really works
    probe = [f"{t} " for t in texts[:throughput_items]]
    speed = {}
    for name, c in (("c1", client), ("c2", client2)):
        c.cache = None
        _, seconds = ask(c, spec, probe)
        speed[name] = len(probe) / seconds
    tokens = Usage(round((per_item["prompt"] or 0) * 1000), round((per_item["completion"] or 0) * 1000))
    calibrated = cross_calibrated(raw, right) if len(set(right)) == 2 else np.asarray(raw)
    return {
        "n": len(texts),
        "answered": len(labelled),
        "accuracy": sum(right) / len(texts),
        "majority": max(gold.count(label) for label in set(gold)) / len(gold),
        "ece_raw": expected_calibration_error(raw, right),
        "ece_calibrated": expected_calibration_error(calibrated, right),
        "mean_confidence_raw": float(np.mean(raw)) if raw else None,
        "mean_confidence_calibrated": float(np.mean(calibrated)) if raw else None,
        "prompt_tokens_per_1k": tokens.prompt_tokens,
        "completion_tokens_per_1k": tokens.completion_tokens,
        "dollars_per_1k_local": 0.0,
        "dollars_per_1k_reference": dollars(tokens, DEFAULT_PRICES[REFERENCE_PRICE]),
        "items_per_second_c1": speed["c1"],
        "items_per_second_c2": speed["c2"],
        "requests": usage.requests,
    }


def learning_curves(
    client: LLMClient,
    spec: Any,
    pool: list[str],
    pool_gold: list[str],
    test: list[str],
    test_gold: list[str],
    budgets: Sequence[int],
    seeds: int,
    seed_size: int,
) -> dict[str, Any]:
    curves: dict[str, list[list[float]]] = {"human only": [], "LLM cold start + human": []}
    features = text_features(pool)
    seed_llm_accuracy = []
    for seed in range(seeds):
        rng = random.Random(seed)
        order = rng.sample(range(len(pool)), len(pool))
        seed_rows = k_center_greedy(features, seed_size, seed=seed)
        answers, _ = ask(client, spec, [pool[i] for i in seed_rows])
        llm_seed = [(pool[i], a.labels) for i, a in zip(seed_rows, answers, strict=True) if a is not None and a.labels]
        seed_llm_accuracy.append(
            statistics.mean(a.labels[0] == pool_gold[i] for i, a in zip(seed_rows, answers, strict=True)
                            if a is not None and a.labels) if llm_seed else 0.0)  # fmt: skip
        for name in curves:
            row = []
            for budget in budgets:
                human = [(pool[i], (pool_gold[i],)) for i in order[:budget]]
                extra = llm_seed if name != "human only" else []
                texts = [t for t, _ in human] + [t for t, _ in extra]
                targets = [y for _, y in human] + [y for _, y in extra]
                weights = [1.0] * len(human) + [SEED_WEIGHT] * len(extra)
                if len({y[0] for y in targets}) < 2:
                    row.append(float("nan"))
                    continue
                model = StudentModel(spec.labels).fit(texts, targets, sample_weight=weights)
                predicted = [p.labels[0] for p in model.predict(test)]
                row.append(float(np.mean([p == g for p, g in zip(predicted, test_gold, strict=True)])))
            curves[name].append(row)
    return {
        "budgets": list(budgets),
        "seed_size": seed_size,
        "seed_llm_accuracy": statistics.mean(seed_llm_accuracy),
        "curves": {
            name: {"mean": np.nanmean(rows, axis=0).tolist(), "std": np.nanstd(rows, axis=0).tolist()}
            for name, rows in curves.items()
        },
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# LLM annotator benchmark",
        "",
        f"Generated by `python -m bench.llm_annotator` on {result['date']} in {result['minutes']:.1f} min, model "
        f"{result['model']} (llama-cpp-python server, json_object grammar, temperature 0, logprob confidence). "
        f"Machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}).",
        "",
        "## Zero-shot labels, calibration, cost and speed",
        "",
        "| dataset | items | accuracy | majority class | ECE raw | ECE calibrated (out of fold) | mean conf. raw "
        "| mean conf. calibrated | prompt tok / 1k items | completion tok / 1k items | $ / 1k local "
        f"| $ / 1k at {REFERENCE_PRICE} prices | items/s c=1 | items/s c=2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in result["datasets"].items():
        z = d["zero_shot"]
        lines.append(
            f"| {name} | {z['n']} | {_f(z['accuracy'])} | {_f(z['majority'])} | {_f(z['ece_raw'])} "
            f"| {_f(z['ece_calibrated'])} | {_f(z['mean_confidence_raw'])} | {_f(z['mean_confidence_calibrated'])} "
            f"| {z['prompt_tokens_per_1k']:,} | {z['completion_tokens_per_1k']:,} | 0.00 "
            f"| {z['dollars_per_1k_reference']:.3f} | {_f(z['items_per_second_c1'], 2)} "
            f"| {_f(z['items_per_second_c2'], 2)} |"
        )
    lines += ["", "## Student learning curves: human labels alone vs LLM cold start + human labels", ""]
    for name, d in result["datasets"].items():
        c = d["curves"]
        lines.append(f"**{name}**: test accuracy, mean ± std over {result['seeds']} seeds; cold start = "
                     f"{c['seed_size']} k-center seed items labelled by the LLM (its accuracy on them: "
                     f"{c['seed_llm_accuracy']:.3f}), weight {SEED_WEIGHT}. Zero-shot LLM: "
                     f"{d['zero_shot']['accuracy']:.3f}.")  # fmt: skip
        lines += ["", "| human labels | " + " | ".join(str(b) for b in c["budgets"]) + " |",
                  "|---|" + "---:|" * len(c["budgets"])]  # fmt: skip
        for curve, values in c["curves"].items():
            # nan: at that budget no seed's labels held two classes, so no student could be fitted
            cells = [f"{m:.3f} ± {s:.3f}" if m == m else "n/a" for m, s in zip(values["mean"], values["std"],
                                                                             strict=True)]  # fmt: skip
            lines.append(f"| {curve} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("n/a: no seed's random labels at that budget held two classes, so no student could be fitted.")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        d = result["datasets"][name]
        budgets = d["curves"]["budgets"]
        for curve, values in d["curves"]["curves"].items():
            mean, std = np.array(values["mean"]), np.array(values["std"])
            ax.plot(budgets, mean, marker="o", label=curve)
            ax.fill_between(budgets, mean - std, mean + std, alpha=0.2)
        ax.axhline(d["zero_shot"]["accuracy"], color="grey", linestyle="--", label="zero-shot LLM")
        ax.axhline(d["zero_shot"]["majority"], color="grey", linestyle=":", label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("human labels")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(f"student learning curves, {result['model']} cold start")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datasets", nargs="+", default=["trec6", "sms_spam"])
    parser.add_argument("--n", type=int, default=200, help="pool items the LLM labels zero-shot")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-size", type=int, default=30)
    parser.add_argument("--throughput-items", type=int, default=20)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    out = RESULTS / "llm_annotator"
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        started = time.time()
        cache = DiskCache(CACHE / f"{args.model}.json")
        with embedded_llm(args.model, args.venv) as url:
            datasets = {}
            for name in args.datasets:
                spec = parse_label_config(label_config(name))
                pool, pool_gold, test, test_gold = split(name, args.pool, args.test)
                c1 = embedded_llm_client(url, args.model, cache, timeout=120, max_retries=1, concurrency=1)
                c2 = embedded_llm_client(url, args.model, timeout=120, max_retries=1, concurrency=2)
                log(f"{name}: zero-shot on {args.n} items")
                z = zero_shot(c1, c2, spec, pool[: args.n], pool_gold[: args.n], args.throughput_items)
                cache.save()
                c1.cache = cache
                log(f"{name}: learning curves")
                curves = learning_curves(c1, spec, pool, pool_gold, test, test_gold, args.budgets, args.seeds,
                                         args.seed_size)  # fmt: skip
                cache.save()
                datasets[name] = {"zero_shot": z, "curves": curves}
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": (time.time() - started) / 60,
            "model": args.model,
            "seeds": args.seeds,
            "machine": machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "datasets": datasets,
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    write_outputs(out, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
