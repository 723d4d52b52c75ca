"""The span student on WNUT-16: active-learning curves, full supervision, fit time and span calibration.

    python -m bench.spans curve --seed 0     # one seed of the learning curves, ~5 minutes on 2 busy cores
    python -m bench.spans curve --seed 1     # (and 2): each seed is its own run
    python -m bench.spans fit                # full supervision, fit time at 500 / 2,000, calibration: ~5 min
    python -m bench.spans report             # merges the parts into spans.json, spans.md and spans.png

Data: WNUT-16 Twitter NER (backend.datasets.wnut16), its fixed seeded split: 1,915 training tweets as the
pool, 479 held out. Scores are entity-level, exact span and type (backend.spans.metrics).

1. Learning curves: 50 random seed sentences, then the strategy picks from the pool in batches (50 up to
   200 labels, 100 up to 500, 250 up to 1,000); the CRF student (backend.spans.crf, default parameters,
   no temperature) is refitted each round and scored on the held-out tweets. Strategies: random, MNLP
   (Shen et al., 2017) and total token entropy (Settles & Craven, 2008). Span-confidence ECE of the random
   runs' models at each checkpoint, for the three confidences (span marginal, product, min).
2. Full supervision: the student on the whole pool; per-label scores; span ECE raw and with the
   out-of-fold temperature, at 500 and 1,915 training tweets; the task-level check: the best path's
   probability against "the whole span set equals the gold one".
3. Fit time (median of 3, and once with the temperature's 3 extra fold fits) at 500 and 2,000 tweets of
   the whole corpus, and analyse() time for the 479 held-out tweets.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.datasets import SpanDataset, wnut16
from backend.llm.calibration import expected_calibration_error, reliability
from backend.spans.crf import SPAN_CONFIDENCES, CRFStudent
from backend.spans.metrics import span_calibration, span_scores, whole_set_matches
from backend.spans.strategies import SEQUENCE_STRATEGIES, SequencePool
from bench.spine import log, machine, write_outputs

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
STRATEGIES = ("random", "mnlp", "total_token_entropy")
CHECKPOINTS = (50, 100, 150, 200, 300, 400, 500, 750, 1000)
TABLE_SIZES = (50, 100, 200, 500, 1000)
FIT_SIZES = (500, 2000)
CALIBRATION_SIZES = (500, 1915)
ANCHORS = {
    "shen2017": "Shen et al. (2017): with MNLP, a CNN-CNN-LSTM tagger nearly matched state-of-the-art F1 with 25% "
    "of the training data (OntoNotes 5.0 English)",
    "wnut16": "WNUT-16 (Strauss et al., 2016), official test set: strong systems score F1 ~0.4-0.5 (DeepNNNER 0.472, "
    "above the shared task's second-ranked system); our held-out fifth of the training split is not that test set",
}


# --- 1. learning curves ----------------------------------------------------------------------------------


def _score(model: CRFStudent, test: SpanDataset) -> dict[str, Any]:
    outputs = model.analyse(test.texts)
    predicted = [o.spans for o in outputs]
    row: dict[str, Any] = {"f1": span_scores(test.spans, predicted).micro.f1}
    row["whole_set"] = float(np.mean(whole_set_matches(test.spans, predicted)))
    return row


def _span_eces(model: CRFStudent, test: SpanDataset) -> dict[str, float]:
    eces = {}
    for mode in SPAN_CONFIDENCES:
        probe = copy.copy(model)
        probe.span_confidence = mode
        eces[mode] = span_calibration(test.spans, probe.predict(test.texts)).ece
    return eces


def run_curve(strategy: str, seed: int, pool: SpanDataset, test: SpanDataset) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    labelled = [int(i) for i in rng.permutation(len(pool))[: CHECKPOINTS[0]]]
    rows, query_s = [], 0.0
    while True:
        started = time.perf_counter()
        model = CRFStudent(calibration="none").fit([pool.texts[i] for i in labelled], [pool.spans[i] for i in labelled])
        fit_s = time.perf_counter() - started
        row = {"strategy": strategy, "seed": seed, "labels": len(labelled), "fit_s": fit_s, "query_s": query_s,
               "entities": sum(len(pool.spans[i]) for i in labelled),
               "tokens": sum(len(pool.texts[i].split(" ")) for i in labelled), **_score(model, test)}  # fmt: skip
        if strategy == "random":
            row["span_ece"] = _span_eces(model, test)
        log(f"{strategy} seed {seed}: {len(labelled)} labels, F1 {row['f1']:.3f}, fit {fit_s:.1f} s")
        rows.append(row)
        target = next((size for size in CHECKPOINTS if size > len(labelled)), None)
        if target is None:
            return rows
        started = time.perf_counter()
        unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
        if strategy == "random":  # needs only the pool's size: no need to run the model over it
            candidates = SequencePool(lengths=np.ones(len(unlabelled)))
        else:
            candidates = SequencePool.from_outputs(model.analyse([pool.texts[i] for i in unlabelled]))
        ranking = SEQUENCE_STRATEGIES[strategy]().rank(candidates, target - len(labelled), rng)
        labelled += [int(unlabelled[i]) for i in ranking]
        query_s = time.perf_counter() - started


def bench_curve(seed: int) -> dict[str, Any]:
    pool, test = wnut16("train"), wnut16("test")
    rows = [row for strategy in STRATEGIES for row in run_curve(strategy, seed, pool, test)]
    return {"seed": seed, "machine": machine(), "curve": rows}


# --- 2 and 3. full supervision, calibration, fit time ----------------------------------------------------


def _reliability_rows(scores: np.ndarray, right: np.ndarray) -> list[dict[str, float]]:
    return [{"lower": b.lower, "upper": b.upper, "count": b.count, "confidence": b.mean_confidence,
             "accuracy": b.accuracy} for b in reliability(scores, right)]  # fmt: skip


def _calibration(model: CRFStudent, test: SpanDataset, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": label, "temperature": model.temperature_, "spans": {}}
    for mode in SPAN_CONFIDENCES:
        probe = copy.copy(model)
        probe.span_confidence = mode
        outputs = probe.analyse(test.texts)
        calibration = span_calibration(test.spans, [o.spans for o in outputs])
        out["spans"][mode] = {"n": calibration.spans, "precision": calibration.precision,
                              "mean_score": calibration.mean_score, "ece": calibration.ece,
                              "table": [b.__dict__ for b in calibration.table]}  # fmt: skip
    outputs = model.analyse(test.texts)
    whole = np.array(whole_set_matches(test.spans, [o.spans for o in outputs]))
    sequence_p = np.array([o.sequence_probability for o in outputs])
    out["task"] = {
        "n": int(whole.size),
        "whole_set_rate": float(whole.mean()),
        "mean_p_best": float(sequence_p.mean()),
        "ece": expected_calibration_error(sequence_p, whole),
        "table": _reliability_rows(sequence_p, whole),
    }
    return out


def _timed_fit(texts: Sequence[str], spans: Sequence[Any], calibration: str) -> tuple[CRFStudent, float]:
    started = time.perf_counter()
    model = CRFStudent(calibration=calibration).fit(texts, spans)
    return model, time.perf_counter() - started


def bench_fit() -> dict[str, Any]:
    pool, test, whole = wnut16("train"), wnut16("test"), wnut16()
    result: dict[str, Any] = {"machine": machine(), "calibration": [], "fit": []}
    for size in CALIBRATION_SIZES:
        scaled, seconds = _timed_fit(pool.texts[:size], pool.spans[:size], "temperature")
        raw = copy.copy(scaled)
        raw.temperature_ = 1.0  # the same CRF: the temperature is fitted on folds, the final fit is the raw one
        for model, label in ((raw, "raw"), (scaled, "temperature")):
            row = _calibration(model, test, label)
            row["train"] = size
            result["calibration"].append(row)
            log(f"calibration {size} {label}: T {model.temperature_:.3f}, "
                + ", ".join(f"{m} ECE {row['spans'][m]['ece']:.3f}" for m in SPAN_CONFIDENCES))  # fmt: skip
        if size == len(pool):
            scores = span_scores(test.spans, raw.predict(test.texts))
            started = time.perf_counter()
            raw.analyse(test.texts)
            result["full"] = {"train": size, "micro": scores.micro.__dict__, "macro_f1": scores.macro_f1,
                              "per_label": {k: v.__dict__ for k, v in scores.per_label.items()},
                              "analyse_s": time.perf_counter() - started, "texts": len(test)}  # fmt: skip
            log(f"full supervision: F1 {scores.micro.f1:.3f}")
    for size in FIT_SIZES:
        seconds = [_timed_fit(whole.texts[:size], whole.spans[:size], "none")[1] for _ in range(3)]
        with_t = _timed_fit(whole.texts[:size], whole.spans[:size], "temperature")[1]
        result["fit"].append({"sentences": size, "median_s": statistics.median(seconds), "runs_s": seconds,
                              "with_temperature_s": with_t})  # fmt: skip
        log(f"fit {size}: {statistics.median(seconds):.1f} s, with temperature {with_t:.1f} s")
    return result


# --- report -------------------------------------------------------------------------------------------------


def merge() -> dict[str, Any]:
    curve, seeds, machines = [], [], []
    for path in sorted(RESULTS.glob("spans_curve_seed*.json")):
        part = json.loads(path.read_text())
        curve += part["curve"]
        seeds.append(part["seed"])
        machines.append(part["machine"])
    fit = json.loads((RESULTS / "spans_fit.json").read_text())
    return {"seeds": seeds, "curve": curve, "curve_machines": machines, **fit, "anchors": ANCHORS}


def _curve_stats(result: dict[str, Any], strategy: str) -> dict[int, list[float]]:
    by_size: dict[int, list[float]] = {}
    for row in result["curve"]:
        if row["strategy"] == strategy:
            by_size.setdefault(row["labels"], []).append(row["f1"])
    return by_size


def _labels_to_reach(result: dict[str, Any], strategy: str, target: float) -> int | None:
    stats = _curve_stats(result, strategy)
    return next((size for size in sorted(stats) if np.mean(stats[size]) >= target), None)


ENTITY_MARKS = (300, 600)
TOKEN_MARKS = (5_000, 10_000, 15_000)


def _at_cost(result: dict[str, Any], strategy: str, cost: str, mark: int) -> str:
    """Mean F1 over seeds at `mark` of `cost` (entities or tokens labelled), read off each seed's curve by
    linear interpolation between checkpoints, with the tweets it took; seeds whose curve ends short of it
    are left out and counted."""
    f1s, tweets = [], []
    for seed in result["seeds"]:
        rows = sorted((r for r in result["curve"] if r["strategy"] == strategy and r["seed"] == seed),
                      key=lambda r: r["labels"])  # fmt: skip
        spent = [r[cost] for r in rows]
        if not rows or spent[-1] < mark:
            continue
        f1s.append(float(np.interp(mark, spent, [r["f1"] for r in rows])))
        tweets.append(float(np.interp(mark, spent, [r["labels"] for r in rows])))
    if not f1s:
        return "not reached"
    short = len(result["seeds"]) - len(f1s)
    return f"{np.mean(f1s):.3f} ({np.mean(tweets):.0f} tweets)" + (f", {short} seed(s) short" if short else "")


def markdown(result: dict[str, Any]) -> str:
    full = result["full"]["micro"]["f1"]
    lines = [f"WNUT-16 (1,915 pool / 479 held-out tweets), CRF student, {len(result['seeds'])} seed(s): "
             f"{', '.join(map(str, result['seeds']))}. Full supervision F1 {full:.3f}.", "",
             "| strategy | " + " | ".join(f"F1 @{n}" for n in TABLE_SIZES)
             + " | labels to 95% of full | entities / tokens in the 1,000 labelled | query round @1,000 s |",
             "|---|" + "---:|" * (len(TABLE_SIZES) + 3)]  # fmt: skip
    for strategy in STRATEGIES:
        stats = _curve_stats(result, strategy)
        cells = [f"{np.mean(stats[n]):.3f} ± {np.std(stats[n]):.3f}" if n in stats else "" for n in TABLE_SIZES]
        reach = _labels_to_reach(result, strategy, 0.95 * full)
        last = [r for r in result["curve"] if r["strategy"] == strategy and r["labels"] == CHECKPOINTS[-1]]
        cost = f"{np.mean([r['entities'] for r in last]):.0f} / {np.mean([r['tokens'] for r in last]):,.0f}"
        query = np.median([r["query_s"] for r in last])
        lines.append(f"| {strategy} | " + " | ".join(cells)
                     + f" | {reach if reach else '> 1,000'} | {cost} | {query:.1f} |")  # fmt: skip
    lines += ["", "The same runs by what a human marks and reads: F1 once the labelled tweets hold this many entities,",
              "or this many tokens (interpolated between checkpoints; the tweets that took, in brackets):", "",
              "| strategy | " + " | ".join(f"{n} entities" for n in ENTITY_MARKS)
              + " | " + " | ".join(f"{n:,} tokens" for n in TOKEN_MARKS) + " |",
              "|---|" + "---:|" * (len(ENTITY_MARKS) + len(TOKEN_MARKS))]  # fmt: skip
    for strategy in STRATEGIES:
        cells = [_at_cost(result, strategy, "entities", n) for n in ENTITY_MARKS]
        cells += [_at_cost(result, strategy, "tokens", n) for n in TOKEN_MARKS]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += ["", "Full supervision, per label (precision / recall / F1, support):", "",
              "| label | P | R | F1 | gold |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for label, s in sorted(result["full"]["per_label"].items(), key=lambda kv: -kv[1]["support"]):
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |")
    lines += ["", "Span-confidence calibration on the held-out tweets (ECE, 10 bins; spans = predicted spans):", "",
              "| train | model | T | spans | precision | marginal ECE | product ECE | min ECE | task: P(best) ECE |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in result["calibration"]:
        s = row["spans"]
        lines.append(f"| {row['train']} | {row['model']} | {row['temperature']:.2f} | {s['marginal']['n']} | "
                     f"{s['marginal']['precision']:.3f} | {s['marginal']['ece']:.3f} | {s['product']['ece']:.3f} | "
                     f"{s['min']['ece']:.3f} | {row['task']['ece']:.3f} |")  # fmt: skip
    random_rows = [r for r in result["curve"] if r["strategy"] == "random" and "span_ece" in r]
    if random_rows:
        lines += ["", "Span ECE of the random runs' models, mean over seeds (no temperature):", "",
                  "| labels | marginal | product | min |", "|---:|---:|---:|---:|"]  # fmt: skip
        for n in TABLE_SIZES:
            at = [r["span_ece"] for r in random_rows if r["labels"] == n]
            if at:
                lines.append(
                    f"| {n} | " + " | ".join(f"{np.mean([a[m] for a in at]):.3f}" for m in SPAN_CONFIDENCES) + " |"
                )
    lines += [
        "",
        "| fit | sentences | median s (3 runs) | with temperature (3 more fold fits) s |",
        "|---|---:|---:|---:|",
    ]
    for row in result["fit"]:
        lines.append(f"| CRF | {row['sentences']} | {row['median_s']:.1f} | {row['with_temperature_s']:.1f} |")
    lines.append(f"\nanalyse() of the {result['full']['texts']} held-out tweets: {result['full']['analyse_s']:.2f} s. "
                 f"Load average at the start: {result['machine']['loadavg_at_start']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve_ax, token_ax, rel_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for strategy in STRATEGIES:
        rows = [r for r in result["curve"] if r["strategy"] == strategy]
        token_ax.scatter([r["tokens"] for r in rows], [r["f1"] for r in rows], s=8, label=strategy)
    token_ax.set_xlabel("labelled tokens (what an annotator reads)")
    token_ax.set_ylabel("entity F1")
    token_ax.set_title("the same runs by tokens, every seed")
    token_ax.legend(fontsize=7)
    for strategy in STRATEGIES:
        stats = _curve_stats(result, strategy)
        sizes = sorted(stats)
        mean = np.array([np.mean(stats[n]) for n in sizes])
        low, high = np.array([min(stats[n]) for n in sizes]), np.array([max(stats[n]) for n in sizes])
        curve_ax.plot(sizes, mean, marker="o", markersize=3, label=strategy)
        curve_ax.fill_between(sizes, low, high, alpha=0.15)
    full = result["full"]["micro"]["f1"]
    curve_ax.axhline(
        full, color="black", linestyle="--", linewidth=1, label=f"full supervision ({result['full']['train']})"
    )
    curve_ax.axhline(0.95 * full, color="grey", linestyle=":", linewidth=1, label="95% of full")
    curve_ax.set_xlabel("labelled tweets")
    curve_ax.set_ylabel("entity F1 (exact), 479 held out")
    curve_ax.set_title(f"WNUT-16, CRF student, {len(result['seeds'])} seed(s)")
    curve_ax.legend(fontsize=7)
    rel_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    final = [r for r in result["calibration"] if r["train"] == result["full"]["train"]]
    for row in final:
        for mode in ("marginal", "product") if row["model"] == "raw" else ("marginal",):
            table = row["spans"][mode]["table"]
            rel_ax.plot([b["mean_confidence"] for b in table], [b["accuracy"] for b in table], marker="o",
                        label=f"{mode}, {row['model']} (ECE {row['spans'][mode]['ece']:.3f})")  # fmt: skip
    rel_ax.set_xlabel("span confidence")
    rel_ax.set_ylabel("share of spans right")
    rel_ax.set_title("span reliability, full supervision")
    rel_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_argument("part", choices=("curve", "fit", "report"))
    options.add_argument("--seed", type=int, default=0)
    args = options.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part == "curve":
        path = RESULTS / f"spans_curve_seed{args.seed}.json"
        path.write_text(json.dumps(bench_curve(args.seed), indent=1))
    elif args.part == "fit":
        (RESULTS / "spans_fit.json").write_text(json.dumps(bench_fit(), indent=1))
    else:
        result = merge()
        out = RESULTS / "spans"
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        write_outputs(out, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
