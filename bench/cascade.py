"""The cascade, cheapest first, against the strong LLM alone: TREC-6 and SMS spam, on this CPU.

    python -m bench.cascade                     # both corpora, students on 100 and 300 margin-chosen labels,
                                                # 100 checks and 200 test items each (~30 min on 2 loaded cores)
    python -m bench.cascade --checks 150 --test 300   # larger sets (~1.5x the LLM time)
    python -m bench.cascade --datasets sms_spam --labels 100 --checks 60 --test 60 --no-cheap   # smoke run
    python -m bench.cascade --render-only       # rebuild cascade.md / .png from cascade.json

Per corpus, one seeded split (bench.simulate's `split`): a pool the student's human labels are chosen from
(margin sampling from 20 random ones, as bench.simulate runs the loop, or --selection random), a "checks"
set of human-labelled items on which every stage is calibrated and gets its threshold, and a test set
that is routed. The stages, in cost order:

- student: the product's StudentModel (encoder minilm) on N human labels; its checks are its scores on
  the checks set (which it never saw: the product's prequential checks), its threshold stage_from_checks;
- cheap LLM (optional, --cheap-model, SmolLM2-135M): the embedded model, scored labels;
- strong LLM (--strong-model, the embedded Qwen2.5-Coder-1.5B): scored labels.

An LLM stage's answers are scored zero-shot through the product's client and prompts against the local
llama.cpp server, then treated as the training job treats a project's checks (backend.llm.checks
`distribution_checks`): the label prior from the unlabelled (test) answers divided out, a distribution
calibrator fitted on the checks, the threshold chosen by the auto-accept rule on its out-of-fold
calibrated scores. Each test item is then routed by the product's `next_step`, asking a stage only when
the cheaper ones were unsure; what the last stage is unsure of goes to a human. The thresholds come
from the checks at each target precision (AUTO_ACCEPT_PRECISION 0.95 in the tables; a sweep for the
plot), never set by hand.

Two ways to end the chain: with a human (the product: precision and coverage of the automatic labels),
and "label everything" (the last stage asked keeps its answer, so that accuracies compare directly).
Costs are counted as the job counts them (backend.llm.cascade.StageCost): items asked, tokens, dollars
at a hosted list price (backend.llm.cost), seconds. LLM answers are kept on disk with their tokens and
the seconds they took (bench/results/cache/, git-ignored), so a re-run asks the LLM nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.labeling import Example, parse_label_config
from backend.llm.annotator import StoredAnswer, few_shot_prompts, pre_labels
from backend.llm.cascade import (
    ACCEPT,
    ASK,
    CHEAP,
    HUMAN,
    STRONG,
    STUDENT,
    Stage,
    StageCost,
    next_step,
    stage_from_checks,
    stage_with,
)
from backend.llm.checks import distribution_checks, published_distribution_calibration
from backend.llm.cost import FREE, Price, Usage, price_for
from backend.student import StudentModel
from bench.spine import log, machine, write_outputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
TARGET = 0.95  # the product's AUTO_ACCEPT_PRECISION default
SWEEP = (0.80, 0.85, 0.90, 0.95)  # target precisions for the plot and the matched-accuracy search
STRONG_ONLY = "strong-only"
STUDENT_ONLY = "student-only"


# --- pure: routing one item, a chain's account, the matched-accuracy ratio -----------------------------


@dataclass(frozen=True)
class StageAnswer:
    """What asking one stage about one item gives: its label (None: no usable answer), the calibrated
    probability that the label is right (None: not calibrated or no answer), and what the asking cost."""

    label: str | None
    score: float | None
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0


def route_item(stages: Sequence[Stage], answers: Mapping[str, StageAnswer]) -> tuple[str, list[str]]:
    """The stage whose label the item keeps (or HUMAN), and the stages asked on the way, by the product's
    `next_step`: a stage is asked only when every cheaper one was unsure."""
    asked: dict[str, float | None] = {}
    while True:
        step = next_step(stages, asked)
        if step.action == ASK and step.stage is not None:
            asked[step.stage] = answers[step.stage].score
            continue
        decided = step.stage if step.action == ACCEPT and step.stage is not None else HUMAN
        return decided, list(asked)


def forced_label(decided: str, asked: Sequence[str], answers: Mapping[str, StageAnswer]) -> str | None:
    """With no human stage: the deciding stage's label, else the last stage asked that gave one."""
    if decided != HUMAN:
        return answers[decided].label
    return next((answers[name].label for name in reversed(asked) if answers[name].label is not None), None)


def evaluate_chain(
    stages: Sequence[Stage], items: Sequence[Mapping[str, StageAnswer]], gold: Sequence[str],
    prices: Mapping[str, Price],
) -> dict[str, Any]:  # fmt: skip
    """Route every item; the automatic labels' coverage and accuracy, accuracy when the last stage asked
    labels everything, and per stage the items asked and taken, tokens, dollars and seconds."""
    if len(items) != len(gold):
        raise ValueError(f"{len(items)} items but {len(gold)} gold labels")
    costs = {stage.name: StageCost() for stage in stages}
    auto = auto_right = forced_right = 0
    for answers, truth in zip(items, gold, strict=True):
        decided, asked = route_item(stages, answers)
        for name in asked:
            answer = answers[name]
            costs[name].add(1, int(name == decided), answer.usage, prices.get(name, FREE), answer.seconds)
        if decided != HUMAN:
            auto += 1
            auto_right += answers[decided].label == truth
        forced_right += forced_label(decided, asked, answers) == truth
    n = len(gold)
    llm = [cost for name, cost in costs.items() if name != STUDENT]
    return {
        "items": n,
        "coverage": auto / n if n else 0.0,
        "auto_labelled": auto,
        "auto_accuracy": auto_right / auto if auto else None,
        "to_human": n - auto,
        "forced_accuracy": forced_right / n if n else 0.0,
        "llm_calls": sum(cost.usage.requests for cost in llm),
        "llm_items": sum(cost.items for cost in llm),
        "tokens": sum(cost.usage.total_tokens for cost in llm),
        "dollars": sum(cost.dollars for cost in llm),
        "llm_seconds": sum(cost.seconds for cost in llm),
        "stages": {name: cost.fields() | {"threshold": stage.gate, "checks": stage.threshold.checks,
                                          "checked_precision": stage.threshold.precision}
                   for stage, (name, cost) in zip(stages, costs.items(), strict=True)},
    }  # fmt: skip


def matched_cost_ratio(
    reference: tuple[float, float], points: Sequence[tuple[float, float]]
) -> tuple[float, int] | None:
    """(cost ratio, index) of the cheapest (accuracy, dollars) point at least as accurate as `reference`
    (accuracy, dollars); None when no point reaches it or the reference costs nothing."""
    accuracy, dollars = reference
    reaching = [(cost, i) for i, (acc, cost) in enumerate(points) if acc >= accuracy]
    if not reaching or dollars <= 0:
        return None
    cost, i = min(reaching)
    return cost / dollars, i


def latency_shares(latencies: Sequence[float], wall: float) -> list[float]:
    """Each item's share of a batch's wall time, in proportion to its own latency: requests answered side
    by side overlap, so their latencies add up to more than the time the batch took."""
    spent = sum(latencies)
    if spent <= 0:
        return [wall / len(latencies)] * len(latencies) if latencies else []
    return [wall * latency / spent for latency in latencies]


# --- the LLM: answers kept on disk with their tokens and seconds ----------------------------------------


class AnswerStore:
    """One JSON file of answers by prompt: labels, confidence, distribution, tokens and measured seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    @staticmethod
    def key(messages: Sequence[Mapping[str, str]]) -> str:
        return hashlib.sha1(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


def llm_records(model: str, venv: Path, wanted: Mapping[str, Sequence[str]], chunk: int = 40) -> dict[str, list]:
    """Per dataset, the record of each text's zero-shot scored answer; the server is started only when
    some answer is not on disk yet."""
    from bench.llm_models import label_config

    plans = {}
    for dataset, texts in wanted.items():
        store = AnswerStore(CACHE / f"cascade-{model}-{dataset}.json")
        spec = parse_label_config(label_config(dataset))
        prompts = few_shot_prompts(spec, texts, [], k=0)
        plans[dataset] = (store, spec, prompts, [store.key(p.messages) for p in prompts])
    missing = {d: [i for i, k in enumerate(keys) if k not in store.data] for d, (store, _, _, keys) in plans.items()}
    if any(missing.values()):
        ask_missing(model, venv, plans, missing, chunk)
    return {d: [store.data.get(k) for k in keys] for d, (store, _, _, keys) in plans.items()}


def ask_missing(model: str, venv: Path, plans: Mapping[str, Any], missing: Mapping[str, list[int]], chunk: int) -> None:
    from backend.llm.client import prefix_order
    from backend.llm.factory import embedded_llm_client
    from bench.llm_models import embedded_llm

    with embedded_llm(model, venv) as url:
        client = embedded_llm_client(url, model, None, timeout=300.0, max_retries=1, concurrency=2)
        for dataset, todo in missing.items():
            store, spec, prompts, keys = plans[dataset]
            started = time.perf_counter()
            for start in range(0, len(todo), chunk):
                batch = [todo[start + j] for j in prefix_order([prompts[i] for i in todo[start : start + chunk]])]
                stored = _ask_batch(client, spec, [prompts[i] for i in batch])
                store.data.update({keys[i]: record for i, record in zip(batch, stored, strict=True) if record})
                store.save()
                done = min(start + chunk, len(todo))
                log(f"  {model} {dataset}: {done}/{len(todo)} answered ({(time.perf_counter() - started) / done:.2f} s "
                    f"per item, load {os.getloadavg()[0]:.1f})")  # fmt: skip


def _ask_batch(client: Any, spec: Any, prompts: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Answers in the prompts' order, side by side at the client's concurrency, each timed."""

    def timed(prompt: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        answer = client.annotate(spec, prompt)
        return answer, time.perf_counter() - started

    started = time.perf_counter()
    answers = client.transport.map(timed, prompts)
    wall = time.perf_counter() - started
    done = [a for a in answers if a is not None]
    shares = iter(latency_shares([seconds for _, seconds in done], wall))
    records: list[dict[str, Any] | None] = []
    for pair in answers:
        if pair is None:  # not attempted: the endpoint stopped answering
            records.append(None)
            continue
        answer, _ = pair
        usage = answer.usage
        records.append({"labels": list(answer.labels) if answer.labels else None, "confidence": answer.confidence,
                        "method": answer.method, "distribution": answer.distribution,
                        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                        "requests": usage.requests, "seconds": next(shares), "error": answer.error})  # fmt: skip
    return records


def stored_answer(record: Mapping[str, Any] | None, model: str) -> StoredAnswer | None:
    """What the job keeps of an answer (labels, confidence, distribution); None for an unusable one."""
    if not record or not record.get("labels") or record.get("confidence") is None:
        return None
    return StoredAnswer(tuple(record["labels"]), float(record["confidence"]), record["method"], model,
                        distribution=record.get("distribution"))  # fmt: skip


def record_cost(record: Mapping[str, Any] | None) -> tuple[Usage, float]:
    if not record:
        return Usage(), 0.0
    usage = Usage(int(record["prompt_tokens"]), int(record["completion_tokens"]), int(record.get("requests") or 1))
    return usage, float(record["seconds"])


def llm_stage(
    name: str, model: str, records: Sequence[Any], checks_gold: Sequence[str], labels: Sequence[str],
    to_gold: Mapping[str, str], target: float,
) -> tuple[Stage, list[StageAnswer], dict[str, Any]]:  # fmt: skip
    """An LLM stage as the training job publishes it from its checks, and its answers on the test items.

    `records` are the checks' answers then the test items'; the checks are human-labelled (their gold, in
    the config's label names, is `checks_gold`), the test items unlabelled: the prior comes from them."""
    answers = {i: a for i, a in enumerate(stored_answer(r, model) for r in records) if a is not None}
    examples = [Example(i, "", (label,)) for i, label in enumerate(checks_gold)]
    report = distribution_checks(answers, examples, labels, target) or {}
    calibration = published_distribution_calibration({"llm_checks": {"distribution": report}}) if report else None
    threshold = report.get("threshold") if calibration is not None and calibration.calibrated else None
    stage = stage_with(name, threshold, int(report.get("checks") or 0))
    test = range(len(checks_gold), len(records))
    usable = [i for i in test if i in answers]
    labelled = dict(zip(usable, pre_labels([answers[i] for i in usable], None, None, calibration), strict=True))
    out = []
    for i in test:
        usage, seconds = record_cost(records[i])
        label = labelled.get(i)
        # an uncalibrated score (no distribution, or too few checks) is never compared with the threshold
        score = label.score if label is not None and label.calibrated else None
        out.append(StageAnswer(to_gold[label.labels[0]] if label else None, score, usage, seconds))
    summary = {"checks": report.get("checks"), "stages": report.get("stages"), "threshold": threshold,
               "threshold_precision": report.get("threshold_precision"),
               "threshold_support": report.get("threshold_support")}  # fmt: skip
    return stage, out, summary


# --- the student ------------------------------------------------------------------------------------------


def chosen_labels(data: Any, n: int, selection: str, seed: int) -> list[int]:
    """Pool indices of the n human labels the student trains on: margin sampling run as bench.simulate
    runs the loop (20 random, then batches of 20, of 100 past 200), or a random sample."""
    from backend.selection.strategies import make_strategy
    from bench.simulate import budgets, simulate

    if selection == "random":
        return [int(i) for i in np.random.default_rng(seed).choice(len(data.pool), n, replace=False)]
    # scored each round on a few pool items only: the loop's curve is not what this bench reports
    scored = replace(data, test=data.pool[:20], test_labels=data.pool_labels[:20])
    outcome = simulate(scored, make_strategy("margin"), seed, budgets(20, 20, 100, n), encoder="minilm")
    return outcome["labelled"][:n]


def student_stage(
    data: Any, picked: Sequence[int], checks: Sequence[str], checks_gold: Sequence[str], test: Sequence[str],
    targets: Sequence[float],
) -> tuple[dict[float, Stage], list[StageAnswer], dict[str, Any]]:  # fmt: skip
    """The student on the picked labels: its stage per target (thresholds from its scores on the checks)
    and its answers on the test items (free; seconds: its prediction time, embeddings included)."""
    model = StudentModel(data.classes, encoder="minilm").fit([data.pool[i] for i in picked],
                                                             [(data.pool_labels[i],) for i in picked])  # fmt: skip
    on_checks = model.predict(list(checks))
    scores = [p.score for p in on_checks]
    right = [p.labels[0] == g for p, g in zip(on_checks, checks_gold, strict=True)]
    started = time.perf_counter()
    predicted = model.predict(list(test))
    per_item = (time.perf_counter() - started) / max(1, len(test))
    stages = {t: stage_from_checks(STUDENT, scores, right, t) for t in targets}
    answers = [StageAnswer(p.labels[0], p.score, Usage(), per_item) for p in predicted]
    return stages, answers, {"checks_accuracy": sum(right) / len(right), "seconds_per_item": per_item}


# --- the bench ------------------------------------------------------------------------------------------------


def run_dataset(args: argparse.Namespace, dataset: str, records: Mapping[str, Sequence[Any]], data: Any) -> dict:
    from bench.llm_models import LABELS

    names = {gold: name for gold, (name, _) in LABELS[dataset].items()}
    to_gold = {name: gold for gold, name in names.items()}
    labels = [names[c] for c in data.classes]
    checks, test = data.test[: args.checks], data.test[args.checks :]
    checks_gold, test_gold = data.test_labels[: args.checks], data.test_labels[args.checks :]
    targets = sorted({*SWEEP, args.target})
    models = {STRONG: args.strong_model} | ({CHEAP: args.cheap_model} if args.cheap_model else {})
    prices = {STRONG: price_for(args.strong_price)} | ({CHEAP: price_for(args.cheap_price)} if args.cheap_model else {})
    llm: dict[float, dict[str, tuple[Stage, list[StageAnswer], dict]]] = {
        t: {role: llm_stage(role, model, records[model], [names[g] for g in checks_gold], labels, to_gold, t)
            for role, model in models.items()} for t in targets}  # fmt: skip
    out: dict[str, Any] = {"checks": len(checks), "test": len(test), "pool": len(data.pool),
                           "test_classes": {c: test_gold.count(c) for c in data.classes},
                           "llm_checks": {role: llm[args.target][role][2] for role in models},
                           "checks_cost": checks_cost(records, models, prices, len(checks)), "chains": {}}  # fmt: skip
    for t in targets:
        stage, answers, _ = llm[t][STRONG]
        add_chain(out, STRONG_ONLY, 0, t, [stage], [{STRONG: a} for a in answers], test_gold, prices)
    for n in args.labels:
        picked = chosen_labels(data, n, args.selection, args.seed)
        students, answers, summary = student_stage(data, picked, checks, checks_gold, test, targets)
        classes = {c: sum(data.pool_labels[i] == c for i in picked) for c in data.classes}
        out.setdefault("students", {})[str(n)] = summary | {"classes": classes}
        log(f"{dataset}: student on {n} {args.selection} labels, checks accuracy {summary['checks_accuracy']:.3f}")
        for t in targets:
            per_item = [{STUDENT: a} | {role: llm[t][role][1][i] for role in models} for i, a in enumerate(answers)]
            add_chain(out, STUDENT_ONLY, n, t, [students[t]], per_item, test_gold, prices)
            add_chain(out, "student → strong", n, t, [students[t], llm[t][STRONG][0]], per_item, test_gold, prices)
            if CHEAP in models:
                chain = [students[t], llm[t][CHEAP][0], llm[t][STRONG][0]]
                add_chain(out, "student → cheap → strong", n, t, chain, per_item, test_gold, prices)
    return out


def add_chain(
    out: dict[str, Any], name: str, n: int, target: float, stages: Sequence[Stage],
    items: Sequence[Mapping[str, StageAnswer]], gold: Sequence[str], prices: Mapping[str, Price],
) -> None:  # fmt: skip
    key = f"{name} @{n}" if n else name
    out["chains"].setdefault(key, {"chain": name, "labels": n, "by_target": {}})
    out["chains"][key]["by_target"][str(target)] = evaluate_chain(stages, items, gold, prices)


def checks_cost(records: Mapping[str, Sequence[Any]], models: Mapping[str, str], prices: Mapping[str, Price],
                n: int) -> dict[str, Any]:  # fmt: skip
    """What asking each LLM about the checks cost: the calibration both arms pay once."""
    out = {}
    for role, model in models.items():
        cost = StageCost()
        for record in records[model][:n]:
            usage, seconds = record_cost(record)
            cost.add(1, 0, usage, prices[role], seconds)
        out[role] = cost.fields()
    return out


def ratios(result: Mapping[str, Any], target: float) -> dict[str, Any]:
    """Per cascade: dollars against strong-only at the target (human fallback: matched precision), with
    every item labelled at that target, and at matched accuracy (the cheapest sweep point at least as
    accurate as strong-only labelling everything)."""
    chains = result["chains"]
    strong = chains[STRONG_ONLY]["by_target"]
    reference = strong[str(target)]
    out = {}
    for key, chain in chains.items():
        if chain["chain"] in (STRONG_ONLY, STUDENT_ONLY):
            continue
        here = chain["by_target"][str(target)]
        sweep = sorted(chain["by_target"].items(), key=lambda kv: float(kv[0]))
        matched = matched_cost_ratio((reference["forced_accuracy"], reference["dollars"]),
                                     [(point["forced_accuracy"], point["dollars"]) for _, point in sweep])  # fmt: skip
        out[key] = {
            "dollar_ratio": here["dollars"] / reference["dollars"] if reference["dollars"] else None,
            "per_auto_label_ratio": _per_label(here) / _per_label(reference) if _per_label(reference) else None,
            "matched_accuracy_ratio": None if matched is None else matched[0],
            "matched_accuracy_target": None if matched is None else float(sweep[matched[1]][0]),
            "matched_accuracy": None if matched is None else sweep[matched[1]][1]["forced_accuracy"],
        }
    return out


def _per_label(point: Mapping[str, Any]) -> float | None:
    return point["dollars"] / point["auto_labelled"] if point["auto_labelled"] else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from backend.student.encoder import embed_texts
    from bench.simulate import load_embeddings, save_embeddings, split

    load_embeddings("minilm")
    splits = {d: split(d, args.seed, args.checks + args.test, args.max_pool) for d in args.datasets}
    for dataset, data in splits.items():  # as the product embeds tasks on import: not part of a stage's time
        started = time.perf_counter()
        embed_texts("minilm", data.pool + data.test)
        log(f"{dataset}: {len(data.pool) + len(data.test)} texts embedded in {time.perf_counter() - started:.0f} s")
    save_embeddings("minilm")  # kept before the LLM is asked: a run stopped there need not encode them again
    models = [args.strong_model] + ([args.cheap_model] if args.cheap_model else [])
    records: dict[str, dict[str, list]] = {d: {} for d in args.datasets}
    for model in models:
        started = time.perf_counter()
        got = llm_records(model, args.venv.expanduser(), {d: s.test for d, s in splits.items()})
        for dataset, answers in got.items():
            records[dataset][model] = answers
        log(f"{model}: answers ready in {time.perf_counter() - started:.0f} s")
    try:
        return {d: run_dataset(args, d, records[d], splits[d]) for d in args.datasets}
    finally:
        save_embeddings("minilm")


# --- output -------------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    target = str(a["target"])
    prices = f"strong LLM priced as {a['strong_price']}" + (f", cheap LLM as {a['cheap_price']}" if a["cheap_model"]
                                                            else "")  # fmt: skip
    lines = [
        "# The cascade against the strong LLM alone",
        "",
        f"Generated by `{result['command']}` on {result['date']} in {result['minutes']:.1f} min, "
        f"{result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), load average "
        f"{result['load'][0]:.1f} at the start and {result['load'][1]:.1f} at the end. Strong LLM "
        f"{a['strong_model']}" + (f", cheap LLM {a['cheap_model']}" if a["cheap_model"] else "") + " (llama.cpp "
        "server, 2 threads, concurrency 2, zero-shot scored labels, bias-corrected and calibrated on the checks "
        f"as the training job does); student: StudentModel with minilm on N {a['selection']}-chosen human labels. "
        f"Seed {a['seed']}; per corpus {a['checks']} checks (human-labelled, to calibrate every stage and choose "
        f"its threshold) and {a['test']} test items routed. Thresholds at target precision {target} from the "
        f"checks. Dollars at hosted list prices for the same tokens ({prices}; the student and the local "
        "models cost $0 here). LLM seconds: each item's share of its batch's wall time as measured when it was "
        "first asked (answers kept on disk).",
        "",
        "## With a human for what the last stage is unsure of (the product)",
        "",
        "| corpus | chain | human labels (student) | thresholds | coverage | accuracy of the automatic labels "
        "| to a human | LLM calls | tokens | LLM s | $ | $ vs strong-only | $ per automatic label vs strong-only |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, d in result["datasets"].items():
        for key, chain in d["chains"].items():
            p = chain["by_target"][target]
            r = d["ratios"].get(key, {})
            gates = ", ".join(f"{name} {_f(s['threshold'], 2)}" for name, s in p["stages"].items())
            lines.append(f"| {dataset} | {chain['chain']} | {chain['labels'] or ''} | {gates} | {p['coverage']:.2f} "
                         f"| {_f(p['auto_accuracy'])} | {p['to_human']} | {p['llm_calls']} | {p['tokens']:,} "
                         f"| {p['llm_seconds']:.0f} | {p['dollars']:.4f} | {_x(r.get('dollar_ratio'))} "
                         f"| {_x(r.get('per_auto_label_ratio'))} |")  # fmt: skip
    lines += [
        "",
        "## Every item labelled (no human stage): accuracy compared directly",
        "",
        "The last stage asked keeps its answer. Matched accuracy: of the cascade's operating points over the "
        f"target precisions {', '.join(map(str, SWEEP))} (each threshold from the checks), the cheapest at "
        "least as accurate as the strong LLM labelling everything.",
        "",
        "| corpus | chain | human labels (student) | accuracy | share the student took (at its threshold) "
        "| LLM calls | $ | $ vs strong-only | matched accuracy: $ vs strong-only (target, accuracy) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for dataset, d in result["datasets"].items():
        for key, chain in d["chains"].items():
            p = chain["by_target"][target]
            r = d["ratios"].get(key, {})
            student = p["stages"].get(STUDENT, {})
            share = student.get("accepted", 0) / p["items"] if student else 0.0
            matched = (f"{_x(r['matched_accuracy_ratio'])} ({r['matched_accuracy_target']}, "
                       f"{r['matched_accuracy']:.3f})" if r.get("matched_accuracy_ratio") is not None
                       else ("not reached" if r else ""))  # fmt: skip
            lines.append(f"| {dataset} | {chain['chain']} | {chain['labels'] or ''} | {p['forced_accuracy']:.3f} "
                         f"| {share:.2f} | {p['llm_calls']} | {p['dollars']:.4f} | {_x(r.get('dollar_ratio'))} "
                         f"| {matched} |")  # fmt: skip
    lines += sweep_lines(result)
    lines += ["", "## The stages' checks", "",
              "| corpus | stage | checks | accuracy raw / bias-corrected / calibrated (out of fold) | threshold at "
              f"{target} (checked precision, support) | calibration cost: calls, tokens, s |",
              "|---|---|---:|---|---|---|"]  # fmt: skip
    for dataset, d in result["datasets"].items():
        for n, s in d.get("students", {}).items():
            gate = d["chains"][f"{STUDENT_ONLY} @{n}"]["by_target"][target]["stages"][STUDENT]
            lines.append(f"| {dataset} | student @{n} | {d['checks']} | {s['checks_accuracy']:.3f} "
                         f"| {_f(gate['threshold'], 2)} ({_f(gate['checked_precision'], 2)}) | 0 |")  # fmt: skip
        for role, c in d["llm_checks"].items():
            acc = " / ".join(_f((c["stages"] or {}).get(s, {}).get("accuracy")) for s in
                             ("raw", "bias_corrected", "calibrated"))  # fmt: skip
            cost = d["checks_cost"][role]
            tokens = int(cost["prompt_tokens"] + cost["completion_tokens"])
            lines.append(f"| {dataset} | {role} ({a['strong_model'] if role == STRONG else a['cheap_model']}) "
                         f"| {c['checks']} | {acc} | {_f(c['threshold'], 2)} ({_f(c['threshold_precision'], 2)}, "
                         f"{c['threshold_support'] or 0}) | {int(cost['requests'])}, {tokens:,}, "
                         f"{cost['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_lines(result: dict[str, Any]) -> list[str]:
    """Strong-only and the two-stage cascades at every target precision: the thresholds the checks give."""
    lines = ["", "## Every target precision (thresholds from the checks at each)", "",
             "Coverage and accuracy of the automatic labels with a human last; accuracy and dollars with every "
             "item labelled. Dollars against strong-only at the same target.", "",
             "| corpus | chain | human labels (student) | target | thresholds | coverage | accuracy of the automatic "
             "labels | accuracy, every item labelled | LLM calls | $ vs strong-only |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for dataset, d in result["datasets"].items():
        strong = d["chains"][STRONG_ONLY]["by_target"]
        for chain in d["chains"].values():
            if chain["chain"] not in (STRONG_ONLY, "student → strong"):
                continue
            for target, p in sorted(chain["by_target"].items(), key=lambda kv: float(kv[0])):
                gates = ", ".join(f"{name} {_f(s['threshold'], 2)}" for name, s in p["stages"].items())
                base = strong[target]["dollars"]
                ratio = _x(p["dollars"] / base) if base and chain["chain"] != STRONG_ONLY else ""
                lines.append(f"| {dataset} | {chain['chain']} | {chain['labels'] or ''} | {target} | {gates} "
                             f"| {p['coverage']:.2f} | {_f(p['auto_accuracy'])} | {p['forced_accuracy']:.3f} "
                             f"| {p['llm_calls']} | {ratio} |")  # fmt: skip
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8.5), squeeze=False)
    for column, dataset in enumerate(names):
        d = result["datasets"][dataset]
        top, bottom = axes[0][column], axes[1][column]
        for key, chain in d["chains"].items():
            sweep = sorted(chain["by_target"].items(), key=lambda kv: float(kv[0]))
            cost = [1000 * p["dollars"] / p["items"] for _, p in sweep]
            style = {"marker": "o"} if chain["chain"] != STRONG_ONLY else {"marker": "*", "markersize": 12}
            top.plot(cost, [p["forced_accuracy"] for _, p in sweep], label=key, **style)
            bottom.plot(cost, [p["coverage"] for _, p in sweep], label=key, **style)
        top.set_title(f"{dataset}: every item labelled")
        top.set_ylabel("accuracy")
        bottom.set_title(f"{dataset}: a human takes what the last stage is unsure of")
        bottom.set_ylabel("coverage (share labelled automatically)")
        for ax in (top, bottom):
            ax.set_xlabel(f"LLM $ per 1,000 items ({result['args']['strong_price']} prices)")
            ax.legend(fontsize=7)
    fig.suptitle(f"target precision {', '.join(map(str, SWEEP))} (points, left: lower)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="python -m bench.cascade", description=__doc__.split("\n")[0])
    options.add_argument("--datasets", nargs="+", default=["trec6", "sms_spam"], choices=["trec6", "sms_spam"])
    options.add_argument("--labels", nargs="+", type=int, default=[100, 300], help="human labels the student has")
    options.add_argument("--selection", choices=["margin", "random"], default="margin")
    options.add_argument("--checks", type=int, default=100, help="human-labelled checks per corpus")
    options.add_argument("--test", type=int, default=200, help="test items routed per corpus")
    options.add_argument("--max-pool", type=int, default=2000)
    options.add_argument("--seed", type=int, default=0)
    options.add_argument("--target", type=float, default=TARGET, help="target precision (AUTO_ACCEPT_PRECISION)")
    options.add_argument("--strong-model", default="qwen2.5-coder-1.5b")
    options.add_argument("--cheap-model", default="smollm2-135m", help="'' for no cheap LLM stage")
    options.add_argument("--no-cheap", dest="cheap_model", action="store_const", const="")
    options.add_argument("--strong-price", default="gpt-4o-mini", help="hosted model whose list price is charged")
    options.add_argument("--cheap-price", default="gpt-4.1-nano")
    options.add_argument("--venv", type=Path, default=Path(os.environ.get("LSAL_LLM_VENV", "~/.cache/lsal/llm-server")))
    options.add_argument("--out", default="cascade")
    options.add_argument("--render-only", action="store_true")
    return options


def command_line(args: argparse.Namespace) -> str:
    defaults = vars(parser().parse_args([]))
    parts = ["python -m bench.cascade"]
    for key, value in vars(args).items():
        if key == "cheap_model" and not value:
            parts.append("--no-cheap")
        elif key not in ("render_only", "venv") and value != defaults.get(key):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--{key.replace('_', '-')} {shown}".rstrip())
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = RESULTS / args.out
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        started, load = time.time(), os.getloadavg()[0]
        datasets = run(args)
        for d in datasets.values():
            d["ratios"] = ratios(d, args.target)
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": (time.time() - started) / 60,
                  "machine": machine(), "load": [load, os.getloadavg()[0]], "command": command_line(args),
                  "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "datasets": datasets}  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write_outputs(out, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
