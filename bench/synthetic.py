"""Synthetic tasks on real data: what the generator yields, what the filters keep, what it costs, and
whether the student gains.

    python -m bench.synthetic                    # TREC-6, 200 human labels, the embedded SmolLM2-135M
    python -m bench.synthetic --model gemma3-270m --out synthetic_gemma   # the other embedded model
    python -m bench.synthetic --model real-texts --out synthetic_control  # a generator as good as the data
    python -m bench.synthetic --render-only      # rebuild synthetic.md / .png from the .json

Per seed: `--labelled` random pool items are the human labels; `plan_generation` picks the weakest
`--targets` labels from them (out-of-fold recall and scarcity) and `generate` asks the real LLMClient
through llama.cpp's server for `--per-target` texts each, filtered exactly as `lsal-ops generate` does
(length, duplicates against the pool and each other, the LLM's own label consistency). The student is
then trained without and with the kept texts and scored on `--test` held-out real items. `--reserve`
pool items are kept out of the project: the control generator (`--model real-texts`) "writes" real
texts of the asked label from them, which shows what synthetic data as good as the real thing would add.

The kept texts are labelled with their target label here: no human checked them, so "with" is what
synthetic data would give if annotators agreed with every target label, an upper bound. LLM answers
are cached on disk (bench/results/cache/, git-ignored), so a re-run is fast and exact.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.labeling import Example, TaskSpec, parse_label_config
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.cost import DEFAULT_PRICES, FREE, Usage, dollars
from backend.llm.factory import embedded_llm_client
from backend.llm.prompts import Prompt, unfenced
from backend.student import StudentModel
from backend.synthetic.generate import GenerateOptions, generate, plan_generation
from bench.llm_annotator import CACHE, REFERENCE_PRICE, RESULTS, split
from bench.llm_models import DEFAULT_VENV, CountingCache, embedded_llm, label_config
from bench.spine import log, machine, write_outputs


def scores(spec: TaskSpec, train: Sequence[Example], test: Sequence[str], gold: Sequence[str],
           targets: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    model = StudentModel(spec.labels).fit([e.text for e in train], [e.labels for e in train])
    predicted = [p.labels[0] for p in model.predict(test)]
    recall = {}
    for label in targets:
        having = [p for p, g in zip(predicted, gold, strict=True) if g == label]
        recall[label] = sum(p == label for p in having) / len(having) if having else None
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    return {"accuracy": accuracy, "recall": recall}


class RealTexts:
    """The control generator: for a label it "writes" real texts of that label from a reserve the project
    has never seen, and labels texts by their gold label. What a generator as good as the data would give."""

    model = "real-texts"

    def __init__(self, spec: TaskSpec, texts: Sequence[str], gold: Sequence[str]) -> None:
        self.spec = spec
        self.unused = {label: [t for t, g in zip(texts, gold, strict=True) if g == label] for label in spec.labels}
        self.gold = dict(zip(texts, gold, strict=True))

    def generate(self, prompt: Prompt, count: int, max_tokens: int = 0, temperature: float = 0.0,
                 salt: int = 0) -> tuple[list[str], Usage, str | None]:  # fmt: skip
        system = prompt.messages[0]["content"]
        label = max((label for label in self.spec.labels if f"would label {label}" in system), key=len)
        texts, self.unused[label] = self.unused[label][:count], self.unused[label][count:]
        return texts, Usage(), None

    def annotate_many(self, spec: TaskSpec, prompts: Sequence[Prompt]) -> list[LLMAnswer]:
        out = []
        for prompt in prompts:
            text = unfenced(prompt.messages[-1]["content"])
            label = self.gold[text]
            out.append(LLMAnswer((label,), 1.0, {label: 1.0}, "logprobs", Usage(), []))
        return out


def run_seed(
    client: LLMClient | None, spec: TaskSpec, dataset: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One seed; with no client, the control generator writes from the reserve."""
    texts, gold, test, test_gold = split(dataset, args.pool, args.test, seed)
    # the project's tasks, and a reserve it never sees (the control generator's source)
    pool, pool_gold, reserve, reserve_gold = texts[: -args.reserve], gold[: -args.reserve], texts[-args.reserve :], \
        gold[-args.reserve :]  # fmt: skip
    generator: LLMClient | RealTexts = client if client is not None else RealTexts(spec, reserve, reserve_gold)
    human = [Example(i + 1, text, (label,)) for i, (text, label) in
             enumerate(zip(pool[: args.labelled], pool_gold[: args.labelled], strict=True))]  # fmt: skip
    options = GenerateOptions(targets=args.targets, per_target=args.per_target, per_call=args.per_call, seed=seed)
    plan = plan_generation(spec, seed, human, args.model, FREE, options)
    created: list[dict[str, Any]] = []
    cache = getattr(generator, "cache", None)
    served_before = cache.served if isinstance(cache, CountingCache) else Usage()
    started = time.perf_counter()
    report = generate(plan, spec, generator, FREE, pool, set(), lambda batch: created.extend(batch) or len(batch),
                      options, progress=lambda message: log(f"  {message}"))  # fmt: skip
    seconds = time.perf_counter() - started
    served = cache.served if isinstance(cache, CountingCache) else Usage()
    usage = report.usage + Usage(served.prompt_tokens - served_before.prompt_tokens,
                                 served.completion_tokens - served_before.completion_tokens)  # fmt: skip
    synthetic = [Example(10_000 + i, t["data"][spec.data_key], (t["data"]["synthetic_target"],), synthetic=True)
                 for i, t in enumerate(created)]  # fmt: skip
    targets = [t.label for t in plan.targets]
    return {
        "seed": seed,
        "targets": [{"label": t.label, "contrast": t.contrast, "reason": t.reason} for t in plan.targets],
        "requests": len(plan.calls),
        "generated": report.generated,
        "kept": len(created),
        "rejected": report.filtered.reasons(),
        "failed_requests": len(report.failed_calls),
        "prompt_tokens": usage.prompt_tokens,  # answers from the disk cache included
        "completion_tokens": usage.completion_tokens,
        "cached_requests": served.requests - served_before.requests,
        "reference_dollars": dollars(usage, DEFAULT_PRICES[REFERENCE_PRICE]),
        "seconds": seconds,
        "examples": [t["data"][spec.data_key] for t in created[:3]],
        "without": scores(spec, human, test, test_gold, targets),
        "with": scores(spec, human + synthetic, test, test_gold, targets),
    }


def markdown(result: dict[str, Any]) -> str:
    out = result["args"].get("out", "synthetic")
    command = "python -m bench.synthetic" + ("" if out == "synthetic" else f" --model {result['model']} --out {out}")
    control = result["model"] == RealTexts.model
    generator = ("real-texts (the control: unseen real texts of the asked label)" if control
                 else f"{result['model']} (llama.cpp, local, $0)")  # fmt: skip
    lines = [
        "# Synthetic tasks",
        "",
        f"Generated by `{command}` on {result['date']} in {result['minutes']:.1f} min; "
        f"{result['dataset']}, {result['args']['labelled']} human labels, {result['args']['targets']} targets x "
        f"{result['args']['per_target']} texts, generator {generator}; "
        f"machine {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}).",
        "",
        "| seed | targets | generated | kept | rejected | tokens (prompt + completion) | $ at gpt-4o-mini prices "
        "| s (0: all cached) | accuracy without → with | target recall without → with |",
        "|---:|---|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for run in result["runs"]:
        recall = "; ".join(
            f"{label}: {_f(run['without']['recall'][label])} → {_f(run['with']['recall'][label])}"
            for label in run["without"]["recall"]
        )
        rejected = ", ".join(f"{n} {why}" for why, n in run["rejected"].items()) or "none"
        lines.append(
            f"| {run['seed']} | {', '.join(t['label'] for t in run['targets'])} | {run['generated']} | {run['kept']} "
            f"| {rejected} | {run['prompt_tokens']} + {run['completion_tokens']} | {run['reference_dollars']:.4f} "
            f"| {run['seconds']:.0f} | {run['without']['accuracy']:.3f} → {run['with']['accuracy']:.3f} | {recall} |"
        )
    runs = result["runs"]
    delta = statistics.median(r["with"]["accuracy"] - r["without"]["accuracy"] for r in runs)
    kept = sum(r["kept"] for r in runs) / max(1, sum(r["generated"] for r in runs))
    lines += [
        "",
        f"Median accuracy change: {delta:+.3f}; the filters kept {kept:.0%} of generated texts.",
        "",
        (
            "The control's texts are real and carry their gold label: what synthetic data as good as the real "
            "thing would add. "
            if control
            else '"with" labels each kept text with its target label, which no human checked: an upper bound on '
            "what the synthetic texts can add. "
        )
        + "Examples of kept texts (seed 0): "
        + ("; ".join(f"“{t[:120]}”" for t in runs[0]["examples"]) or "none"),
    ]
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    seeds = [str(r["seed"]) for r in runs]
    width = 0.38
    xs = range(len(runs))
    axes[0].bar([x - width / 2 for x in xs], [r["without"]["accuracy"] for r in runs], width, label="without")
    axes[0].bar([x + width / 2 for x in xs], [r["with"]["accuracy"] for r in runs], width, label="with synthetic")
    axes[0].set(xticks=list(xs), xticklabels=seeds, xlabel="seed", ylabel="test accuracy", title="student accuracy")
    axes[0].legend(loc="lower right")
    reasons = sorted({why for r in runs for why in r["rejected"]})
    bottom = [0.0] * len(runs)
    axes[1].bar(xs, [r["kept"] for r in runs], label="kept")
    bottom = [float(r["kept"]) for r in runs]
    for why in reasons:
        counts = [r["rejected"].get(why, 0) for r in runs]
        axes[1].bar(xs, counts, bottom=bottom, label=why)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes[1].set(xticks=list(xs), xticklabels=seeds, xlabel="seed", ylabel="texts", title="what the filters kept")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"synthetic tasks, {result['dataset']}, generator {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="an embedded model, or real-texts (the control)")
    parser.add_argument("--reserve", type=int, default=500, help="pool items kept out of the project")
    parser.add_argument("--dataset", default="trec6", choices=["trec6", "sms_spam"])
    parser.add_argument("--labelled", type=int, default=200)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--per-target", type=int, default=10)
    parser.add_argument("--per-call", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", default="synthetic")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    out = RESULTS / args.out
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        started = time.time()
        cache = CountingCache(CACHE / f"{args.model}-synthetic.json")
        spec = parse_label_config(label_config(args.dataset))
        if args.model == RealTexts.model:
            runs = []
            for seed in range(args.seeds):
                log(f"seed {seed}")
                runs.append(run_seed(None, spec, args.dataset, seed, args))
        else:
            with embedded_llm(args.model, args.venv) as url:
                client = embedded_llm_client(url, args.model, cache, timeout=600, max_retries=1, concurrency=1)
                runs = []
                for seed in range(args.seeds):
                    log(f"seed {seed}")
                    runs.append(run_seed(client, spec, args.dataset, seed, args))
                    cache.save()
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": (time.time() - started) / 60,
            "model": args.model,
            "dataset": args.dataset,
            "machine": machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "runs": runs,
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    write_outputs(out, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
