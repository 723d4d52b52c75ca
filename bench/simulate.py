"""Active learning simulated offline, with the gold labels as the annotator: which strategy needs fewer labels.

    python -m bench.simulate                    # the committed tables: TREC-6, SMS spam, Reuters R8, 3 seeds
    python -m bench.simulate --datasets trec6 --strategies random margin --seeds 1 --budget 200  # smoke run
    python -m bench.simulate --render-only      # rebuild simulate.md / .png from simulate.json
    python -m bench.simulate --datasets trec6 sms_spam --strategies random margin --llm-seed 30 --out simulate_llm
    python -m bench.simulate --datasets trec6 sms_spam --strategies margin --budget 200 --llm-preannotate \
        --out simulate_pre

Each run: `--initial` random labels, then rounds of `--batch` labels (`--batch-large` past 200) chosen by
the strategy from the unlabelled pool, the product's StudentModel refitted after each round and scored
on a held-out test set (the official test split where the corpus has one, else `--test` items held out
per seed). Strategies see what the ranking job gives them, built by the same code (backend/selection/pool.py):
student probabilities, SVD embeddings of the pool, a bootstrap committee. Reported per dataset and strategy,
mean and spread over seeds: the learning curve, the labels needed to reach 95% of full supervision (the
student on the whole pool), the area under the curve (mean accuracy over the label budget), and the median
wall time of a query round.

With `--llm-seed N`, the LAUD cold start joins the loop: the embedded LLM (llama.cpp, `--llm-model`)
labels a k-center-greedy seed of N pool items zero-shot, and every strategy also runs as
`<strategy>+llm_seed`, its student trained on those labels at weight 0.3 (as the training job does) next
to the human ones, a human label replacing the LLM's. LLM answers are cached on disk by model and prompt
(bench/results/cache/, git-ignored), so a re-run asks the LLM nothing; their tokens are reported.

With `--llm-preannotate`, every strategy also runs as `<strategy>+llm_pre`: each task it queries is first
pre-labelled by the LLM as the product's pre-annotation job does (few-shot prompts with the human labels
so far), and routed as the product routes it: auto-accepted when its calibrated confidence reaches the
threshold derived from the human checks so far (backend.llm.checks), else labelled by the human. An
auto-accepted pre-label trains the student as a label and costs no human label, so the x-axis (human
labels) stays comparable; reviewing a pre-label is counted as a full label, an upper bound on its cost.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.datasets import HAS_SPLIT, load
from backend.labeling import Example, TaskSpec
from backend.selection.embeddings import svd_embeddings
from backend.selection.pool import TaskVectors, build_pool, predict_proba
from backend.selection.strategies import Pool, QueryStrategy, make_strategy
from backend.student import StudentModel
from bench.spine import log, machine, write_outputs

LLM_SUFFIX = "+llm_seed"
PRE_SUFFIX = "+llm_pre"
LLM_LABEL_WEIGHT = 0.3  # the product's default (LLM_LABEL_WEIGHT): a human label weighs 1
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REFERENCE_PRICE = "gpt-4o-mini"  # what the same tokens would cost hosted
DEFAULT_STRATEGIES = ["random", "least_confidence", "margin", "entropy", "cluster_diverse", "badge"]


@dataclass
class Split:
    pool: list[str]
    pool_labels: list[str]
    test: list[str]
    test_labels: list[str]
    classes: list[str]

    @property
    def spec(self) -> TaskSpec:
        """The corpus as a single-label project's task, whose labels the Pool's columns follow."""
        return TaskSpec(from_name="label", to_name="text", data_key="text", labels=tuple(self.classes),
                        multi_label=False)  # fmt: skip


def split(name: str, seed: int, test_size: int, max_pool: int) -> Split:
    """The official train/test split where there is one (test capped at `test_size`), else a seeded hold-out."""
    rng = random.Random(seed)
    if name in HAS_SPLIT:
        train, test = load(name, "train"), load(name, "test")
        keep = sorted(rng.sample(range(len(test)), min(test_size, len(test))))
        pool_rows = sorted(rng.sample(range(len(train)), min(max_pool, len(train))))
        return Split([train.texts[i] for i in pool_rows], [train.labels[i] for i in pool_rows],
                     [test.texts[i] for i in keep], [test.labels[i] for i in keep], train.classes)  # fmt: skip
    data = load(name)
    order = rng.sample(range(len(data)), len(data))
    test_rows, pool_rows = order[:test_size], order[test_size : test_size + max_pool]
    return Split([data.texts[i] for i in pool_rows], [data.labels[i] for i in pool_rows],
                 [data.texts[i] for i in test_rows], [data.labels[i] for i in test_rows], data.classes)  # fmt: skip


def accuracy(model: StudentModel, texts: Sequence[str], gold: Sequence[str]) -> float:
    return float(np.mean([p.labels[0] == g for p, g in zip(model.predict(texts), gold, strict=True)]))


def budgets(initial: int, batch: int, batch_large: int, budget: int) -> list[int]:
    """Label counts at which the student is scored: small steps first, where curves move fastest."""
    out = [initial]
    while out[-1] < budget:
        out.append(min(budget, out[-1] + (batch if out[-1] < 200 else batch_large)))
    return out


class PreAnnotator:
    """LLM pre-labels for pool items as the product's pre-annotation job makes them: few-shot prompts with
    up to `few_shot` of the human labels so far (the most similar of each label), answers in the corpus's
    label names. Each answer comes with the tokens it took, also when the disk cache served it, so a run
    reports what it would spend on a live endpoint."""

    def __init__(self, client: Any, label_config: str, to_gold: Mapping[str, str], few_shot: int = 4) -> None:
        from backend.labeling import parse_label_config

        self.client = client
        self.spec = parse_label_config(label_config)
        self.to_gold = dict(to_gold) or {label: label for label in self.spec.labels}
        self.from_gold = {gold: name for name, gold in self.to_gold.items()}
        self.few_shot = few_shot

    def __call__(self, texts: Sequence[str], human: Sequence[tuple[str, str]]) -> list[tuple[Any, Any]]:
        """(StoredAnswer or None, Usage) per text; `human` is the (text, gold label) pairs labelled so far."""
        from concurrent.futures import ThreadPoolExecutor

        from backend.labeling import Example
        from backend.llm.annotator import StoredAnswer, few_shot_prompts
        from bench.llm_models import CountingCache

        examples = [Example(i, text, (self.from_gold[label],)) for i, (text, label) in enumerate(human)]
        prompts = few_shot_prompts(self.spec, texts, examples, self.few_shot)
        cache = getattr(self.client, "cache", None)

        def ask(prompt: Any) -> tuple[Any, Any]:
            counting = isinstance(cache, CountingCache)
            if counting:
                cache.reset_thread()
            answer = self.client.annotate(self.spec, prompt)
            usage = answer.usage + cache.served_in_thread() if counting else answer.usage
            if not answer.labels or answer.confidence is None:
                return None, usage
            labels = tuple(self.to_gold[label] for label in answer.labels)
            # kept as the product keeps it: the checks divide out the label prior and calibrate the distribution
            distribution = {self.to_gold[label]: p for label, p in (answer.distribution or {}).items()} or None
            return StoredAnswer(labels, float(answer.confidence), answer.method, self.client.config.model,
                                distribution=distribution), usage  # fmt: skip

        with ThreadPoolExecutor(max_workers=max(1, self.client.config.concurrency)) as pool:
            return list(pool.map(ask, prompts))


@dataclass
class Review:
    """Where pre-labels go in one run: a human reviews each queried task unless its calibrated LLM score
    reaches the auto-accept threshold, which the product derives from the checks so far (human labels on
    pre-labelled tasks) with the same code (backend.llm.checks). An auto-accepted pre-label joins training
    as a label and costs no human label; a reviewed one costs one, as labelling from scratch would."""

    preannotate: PreAnnotator
    classes: Sequence[str]
    target_precision: float = 0.95
    answers: dict[int, Any] = field(default_factory=dict)  # pool index -> StoredAnswer
    accepted: dict[int, str] = field(default_factory=dict)  # pool index -> the LLM's label, taken as is
    usage: Any = None
    thresholds: list[float | None] = field(default_factory=list)  # one per routing round

    def route(self, pool: Sequence[str], gold: Sequence[str], picked: Sequence[int], human: Sequence[int]) -> list[int]:
        """Pre-label `picked`, accept those the gate lets through; return the ones a human labels."""
        from backend.labeling import Example
        from backend.llm.annotator import pre_label
        from backend.llm.checks import llm_checks, published_calibration, published_distribution_calibration
        from backend.llm.cost import Usage
        from backend.llm.routing import AUTO_ACCEPT

        checks = llm_checks(self.answers, [Example(i, pool[i], (gold[i],)) for i in human], self.classes,
                            self.target_precision)  # fmt: skip
        calibrator, threshold = published_calibration({"llm_checks": checks})
        distribution = published_distribution_calibration({"llm_checks": checks})
        self.thresholds.append(threshold)
        asked = self.preannotate([pool[i] for i in picked], [(pool[i], gold[i]) for i in human])
        to_human = []
        for i, (answer, usage) in zip(picked, asked, strict=True):
            self.usage = (self.usage or Usage()) + usage
            if answer is not None:
                self.answers[i] = answer
                pre = pre_label(answer, calibrator, threshold, distribution)
                if pre.route == AUTO_ACCEPT:
                    self.accepted[i] = pre.labels[0]  # the corrected argmax where the answer had a distribution
                    continue
            to_human.append(i)
        return to_human

    def summary(self, gold: Sequence[str]) -> dict[str, Any]:
        from backend.labeling import Example
        from backend.llm.checks import llm_checks
        from backend.llm.cost import Usage

        usage = self.usage or Usage()
        right = sum(gold[i] in answer.labels for i, answer in self.answers.items())
        # the checks at the end (every pre-labelled task a human labelled): what the gate was judged on
        checked = [Example(i, "", (gold[i],)) for i in self.answers if i not in self.accepted]
        final = llm_checks(self.answers, checked, self.classes, self.target_precision).get("distribution") or {}
        stages = {name: stage["accuracy"] for name, stage in final.get("stages", {}).items()}
        return {"pre_labelled": len(self.answers), "pre_labels_right": right, "auto_accepted": len(self.accepted),
                "auto_accepted_right": sum(gold[i] == label for i, label in self.accepted.items()),
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "final_threshold": self.thresholds[-1] if self.thresholds else None,
                "checks": len(checked), "checks_accuracy": stages}  # fmt: skip


def simulate(
    data: Split,
    strategy: QueryStrategy,
    seed: int,
    steps: Sequence[int],
    embeddings: np.ndarray | None = None,
    weak: Mapping[int, str] | None = None,
    weak_weight: float = LLM_LABEL_WEIGHT,
    review: Review | None = None,
    encoder: str | None = None,
) -> dict[str, Any]:
    """One learning curve: the student's test accuracy at each count of human labels in `steps`, labels
    chosen by `strategy` after the first `steps[0]` random ones. `weak` (pool index -> an LLM's label) joins
    the training at `weak_weight` wherever no human label exists for the item. With `review`, every chosen
    task is pre-labelled by the LLM first and auto-accepted ones join at full weight without a human.
    `encoder` is the student's sentence encoder (None: TF-IDF alone, today's default before STUDENT_ENCODER)."""
    rng = np.random.default_rng(seed)
    n = len(data.pool)
    labelled = list(rng.choice(n, steps[0], replace=False))
    while len({data.pool_labels[i] for i in labelled}) < 2:  # a classifier needs two classes to start
        labelled.append(int(rng.integers(n)))
    if review is not None:  # pre-labelled too, with no checks yet to open the gate: the first checks
        labelled = review.route(data.pool, data.pool_labels, labelled, [])
    accepted: Mapping[int, str] = review.accepted if review is not None else {}
    sentences = _sentence_embeddings(encoder, data.pool)
    curve, round_seconds = [], []
    for next_step in [*steps[1:], None]:
        texts = [data.pool[i] for i in labelled]
        taken = set(labelled) | set(accepted)
        extra = [i for i in (weak or {}) if i not in taken]
        model = StudentModel(data.classes, encoder=encoder).fit(
            texts + [data.pool[i] for i in accepted] + [data.pool[i] for i in extra],
            [(data.pool_labels[i],) for i in labelled] + [(label,) for label in accepted.values()]
            + [((weak or {})[i],) for i in extra],
            sample_weight=[1.0] * (len(labelled) + len(accepted)) + [weak_weight] * len(extra) if extra else None,
        )  # fmt: skip
        curve.append(accuracy(model, data.test, data.test_labels))
        if next_step is None:
            break
        started = time.perf_counter()
        rest = np.setdiff1d(np.arange(n), list(taken))
        pool = query_pool(data, strategy, model, rest, labelled, sorted(taken), seed, embeddings, sentences)
        picked = [int(rest[i]) for i in strategy.rank(pool, next_step - len(labelled), rng)]
        round_seconds.append(time.perf_counter() - started)
        if review is None:
            labelled += picked
            continue
        # auto-accepted tasks cost no human label: the strategy's next choices (same model) fill their place
        while picked and len(labelled) < next_step:
            labelled += review.route(data.pool, data.pool_labels, picked, labelled)
            chosen = set(picked)
            keep = [j for j, i in enumerate(rest) if i not in chosen]
            rest = rest[keep]
            pool = pool.subset(keep)
            if pool.labelled_embeddings is not None and embeddings is not None:
                pool.labelled_embeddings = embeddings[sorted(set(labelled) | set(accepted))]
            picked = [int(rest[i]) for i in strategy.rank(pool, next_step - len(labelled), rng)] if len(rest) else []
    out = {"steps": list(steps[: len(curve)]), "accuracy": curve, "round_seconds": round_seconds,
           "labelled": [int(i) for i in labelled]}  # fmt: skip
    return out | ({"review": review.summary(data.pool_labels)} if review is not None else {})


def query_pool(
    data: Split,
    strategy: QueryStrategy,
    model: StudentModel,
    rest: np.ndarray,
    labelled: Sequence[int],
    taken: Sequence[int],
    seed: int,
    embeddings: np.ndarray | None,
    sentences: np.ndarray | None,
) -> Pool:
    """The Pool over the unlabelled items `rest`, as the rank job builds it (backend.selection.pool): the
    committee fitted on the human labels (`labelled`), the diversity embeddings the run's own rows of the
    pool items, the labelled ones those of everything `taken` (auto-accepted pre-labels too)."""
    if strategy.needs & {"embeddings", "labelled_embeddings"} and embeddings is None:
        raise ValueError(f"{strategy.name} needs embeddings")
    texts = [data.pool[i] for i in rest]
    human = [Example(int(i), data.pool[i], (data.pool_labels[i],)) for i in labelled]
    vectors = None if sentences is None else TaskVectors(model.encoder, sentences[rest], sentences[list(labelled)])
    given = None if embeddings is None else (embeddings[rest], embeddings[list(taken)])
    proba = predict_proba(model, texts, None if vectors is None else vectors.pool)
    return build_pool(strategy.needs, data.spec, proba, texts, human, vectors=vectors, embeddings=given,
                      committee_seed=seed)  # fmt: skip


def _sentence_embeddings(encoder: str | None, texts: Sequence[str]) -> np.ndarray | None:
    """The student's sentence embeddings of every pool item (kept by the encoder's memory cache), if it has one."""
    from backend.student.encoder import NO_ENCODER, embed_texts

    return None if encoder in (None, NO_ENCODER) else embed_texts(encoder, texts)


def llm_seed_labels(
    client: Any, label_config: str, pool: Sequence[str], n: int, to_gold: Mapping[str, str] | None = None
) -> tuple[dict[int, str], Any]:
    """The LAUD seed: n k-center-greedy pool items labelled zero-shot by the LLM (unanswered items dropped),
    and the usage it took. `to_gold` maps the config's label names back to the corpus's."""
    from backend.labeling import parse_label_config
    from backend.llm.cost import Usage
    from backend.llm.prompts import build_prompt
    from backend.selection.diversity import k_center_greedy, text_features

    spec = parse_label_config(label_config)
    picked = k_center_greedy(text_features(pool), n)
    answers = client.annotate_many(spec, [build_prompt(spec, pool[i]) for i in picked])
    usage = sum((a.usage for a in answers if a is not None), Usage())
    to_gold = to_gold or {}
    labels = {int(i): to_gold.get(a.labels[0], a.labels[0])
              for i, a in zip(picked, answers, strict=True) if a is not None and a.labels}  # fmt: skip
    return labels, usage


def seed_label_config(dataset: str, classes: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The config the LLM labels the seed with: the LLM bench's named labels with hints where it has them
    (TREC-6, SMS spam), else the corpus's own label names; and the way back to the corpus's names."""
    from backend.labeling.templates import render
    from bench.llm_models import LABELS, label_config

    if dataset in LABELS:
        return label_config(dataset), {name: gold for gold, (name, _) in LABELS[dataset].items()}
    return render((ROOT / "label_configs" / "text_classification_single.xml").read_text(), classes), {}


def labels_to_reach(steps: Sequence[int], curve: Sequence[float], target: float) -> int | None:
    return next((step for step, acc in zip(steps, curve, strict=True) if acc >= target), None)


def area_under_curve(steps: Sequence[int], curve: Sequence[float]) -> float:
    """Mean accuracy over the label budget (trapezoids on a linear axis), in [0, 1]."""
    return float(np.trapezoid(curve, steps) / (steps[-1] - steps[0])) if len(steps) > 1 else float(curve[0])


STUDENTS = {"tfidf": None, "minilm": "minilm"}  # --students: name -> the StudentModel's encoder


def variant(strategy: str, student: str) -> str:
    """A run's name: the strategy, and the student when it is not today's TF-IDF one."""
    return strategy if student == "tfidf" else f"{strategy}@{student}"


def cached_embeddings(encoder: str) -> Path:
    """Sentence embeddings kept between bench runs (git-ignored): encoding the corpora takes minutes."""
    return RESULTS / "cache" / f"embeddings-{encoder}.npz"


def load_embeddings(encoder: str) -> None:
    from backend.student.encoder import memory_cache

    path = cached_embeddings(encoder)
    cache = memory_cache(encoder)
    cache.max_bytes = 2 << 30
    if path.exists():
        kept = np.load(path)
        cache.put_many(dict(zip((bytes(d) for d in kept["digests"]), kept["rows"], strict=True)))


def save_embeddings(encoder: str) -> None:
    from backend.student.encoder import memory_cache

    rows = memory_cache(encoder).rows()
    if rows:
        cached_embeddings(encoder).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached_embeddings(encoder), digests=np.array([np.frombuffer(d, np.uint8) for d in rows]),
                 rows=np.array(list(rows.values())))  # fmt: skip


def pool_embeddings(data: Split, encoder: str | None, seed: int) -> np.ndarray:
    """What the diversity strategies rank on: the student's sentence embeddings, else TF-IDF + SVD."""
    if encoder is None:
        return svd_embeddings(data.pool, seed=seed)
    from backend.student.encoder import embed_texts

    return embed_texts(encoder, data.pool)


def run(args: argparse.Namespace, client: Any = None) -> dict[str, Any]:
    """Every dataset x seed x student x strategy; with a `client`, each strategy also with the LLM seed
    (--llm-seed) and with LLM pre-annotation (--llm-preannotate)."""
    steps = budgets(args.initial, args.batch, args.batch_large, args.budget)
    for encoder in {STUDENTS[student] for student in args.students} - {None}:
        load_embeddings(encoder)
    try:
        return {name: run_dataset(args, name, steps, client) for name in args.datasets}
    finally:
        for encoder in {STUDENTS[student] for student in args.students} - {None}:
            save_embeddings(encoder)


def run_dataset(args: argparse.Namespace, name: str, steps: list[int], client: Any) -> dict[str, Any]:
    bases = list(args.strategies)
    bases += [f"{s}{LLM_SUFFIX}" for s in args.strategies] if client and args.llm_seed else []
    bases += [f"{s}{PRE_SUFFIX}" for s in args.strategies] if client and args.llm_preannotate else []
    per_strategy: dict[str, list[dict[str, Any]]] = {variant(s, st): [] for st in args.students for s in bases}
    full: dict[str, list[float]] = {student: [] for student in args.students}
    seeded: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        data = split(name, seed, args.test, args.max_pool)
        for student in args.students:
            started = time.perf_counter()
            full_model = StudentModel(data.classes, encoder=STUDENTS[student])
            full_model.fit(data.pool, [(y,) for y in data.pool_labels])
            full[student].append(accuracy(full_model, data.test, data.test_labels))
            log(f"{name} seed {seed} {student}: pool {len(data.pool)}, test {len(data.test)}, full supervision "
                f"{full[student][-1]:.3f} ({time.perf_counter() - started:.1f} s)")  # fmt: skip
        weak: dict[int, str] | None = None
        config, to_gold = seed_label_config(name, data.classes)
        preannotate = PreAnnotator(client, config, to_gold, args.llm_few_shot) if client else None
        if client is not None and args.llm_seed:
            started = time.perf_counter()
            weak, usage = llm_seed_labels(client, config, data.pool, args.llm_seed, to_gold)
            right = sum(label == data.pool_labels[i] for i, label in weak.items())
            seeded.append({"labelled": len(weak), "right": right, "prompt_tokens": usage.prompt_tokens,
                           "completion_tokens": usage.completion_tokens,
                           "seconds": time.perf_counter() - started})  # fmt: skip
            log(f"  LLM seed: {len(weak)} labels, {right} right ({time.perf_counter() - started:.0f} s)")
        for student in args.students:
            encoder = STUDENTS[student]
            embeddings = pool_embeddings(data, encoder, seed)
            for base_name in bases:
                base = base_name.removesuffix(LLM_SUFFIX).removesuffix(PRE_SUFFIX)
                review = Review(preannotate, data.classes) if base_name.endswith(PRE_SUFFIX) and preannotate \
                    else None  # fmt: skip
                started = time.perf_counter()
                outcome = simulate(data, make_strategy(base), seed, steps, embeddings,
                                   weak if base_name.endswith(LLM_SUFFIX) else None, review=review,
                                   encoder=encoder)  # fmt: skip
                per_strategy[variant(base_name, student)].append(outcome)
                log(f"  {variant(base_name, student)}: {outcome['accuracy'][-1]:.3f} at {steps[-1]} human labels "
                    f"({time.perf_counter() - started:.0f} s){_reviewed(outcome.get('review'))}")  # fmt: skip
    baseline = args.students[0]
    target = 0.95 * statistics.mean(full[baseline])
    summary = {}
    for strategy_name, runs in per_strategy.items():
        student = strategy_name.partition("@")[2] or "tfidf"
        own_target = 0.95 * statistics.mean(full[student])
        curves = np.array([r["accuracy"] for r in runs])
        summary[strategy_name] = {
            "mean": curves.mean(axis=0).tolist(),
            "std": curves.std(axis=0).tolist(),
            "auc": [area_under_curve(steps, r["accuracy"]) for r in runs],
            "labels_to_95": [labels_to_reach(steps, r["accuracy"], target) for r in runs],
            "labels_to_95_own": [labels_to_reach(steps, r["accuracy"], own_target) for r in runs],
            "round_seconds": statistics.median(s for r in runs for s in r["round_seconds"]),
        } | ({"review": [r["review"] for r in runs]} if runs and "review" in runs[0] else {})
    result = {"steps": steps, "full_supervision": full[baseline], "target": target, "strategies": summary,
              "full_supervision_by_student": full}  # fmt: skip
    return result | ({"llm_seed": seeded} if seeded else {})


def _reviewed(review: Mapping[str, Any] | None) -> str:
    if not review:
        return ""
    tokens = review["prompt_tokens"] + review["completion_tokens"]
    return (
        f"; {review['pre_labelled']} pre-labelled, {review['auto_accepted']} auto-accepted "
        f"({review['auto_accepted_right']} right), {tokens:,} tokens"
    )


def _reached(values: Sequence[int | None]) -> str:
    if all(v is None for v in values):
        return "not reached"
    hit = [v for v in values if v is not None]
    missed = len(values) - len(hit)
    return f"{statistics.median(hit):,.0f}" + (f" ({missed} of {len(values)} seeds never)" if missed else "")


def command_line(a: Mapping[str, Any]) -> str:
    """The command that makes this result: the defaults left out."""
    defaults = vars(parser().parse_args([]))
    parts = ["python -m bench.simulate"]
    for key, value in a.items():
        if key in defaults and key != "render_only" and value != defaults[key]:
            if value is True:  # a flag
                parts.append(f"--{key.replace('_', '-')}")
                continue
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(parts)


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [
        "# Active-learning simulation",
        "",
        f"Generated by `{command_line(a)}` on {result['date']} in {result['minutes']:.1f} min; "
        f"{a['seeds']} seeds; {a['initial']} random labels, then batches of {a['batch']} (of {a['batch_large']} "
        f"past 200) up to {a['budget']}; the product's StudentModel ({', '.join(a.get('students') or ['tfidf'])}; "
        f"`@minilm`: with all-MiniLM-L6-v2 embeddings); machine {result['machine']['cpus']} CPUs "
        f"({result['machine']['cpu_model']}).",
        "",
        "| dataset | strategy | accuracy at the budget | AUC (mean accuracy over the budget) | labels to 95% of full "
        "supervision (median over seeds) | query round, median s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, d in result["datasets"].items():
        for strategy, s in d["strategies"].items():
            lines.append(
                f"| {name} | {strategy} | {s['mean'][-1]:.3f} ± {s['std'][-1]:.3f} "
                f"| {statistics.mean(s['auc']):.3f} ± {statistics.pstdev(s['auc']):.3f} "
                f"| {_reached(s['labels_to_95'])} "
                f"| {s['round_seconds']:.2f} |"
            )
    lines.append("")
    for name, d in result["datasets"].items():
        full = statistics.mean(d["full_supervision"])
        lines.append(f"- {name}: full supervision {full:.3f} (95%: {d['target']:.3f}), pool of "
                     f"{a['max_pool']} at most.")  # fmt: skip
        by_student = d.get("full_supervision_by_student") or {}
        if len(by_student) > 1:
            own = {st: f"{statistics.mean(v):.3f}" for st, v in by_student.items()}
            lines.append(f"  - full supervision by student: {', '.join(f'{k} {v}' for k, v in own.items())}; labels "
                         "to 95% of each student's own: " + ", ".join(
                             f"{k} {_reached(v['labels_to_95_own'])}" for k, v in d["strategies"].items()))  # fmt: skip
        for seeded in d.get("llm_seed") or []:
            hosted = _hosted_dollars(seeded["prompt_tokens"], seeded["completion_tokens"])
            lines.append(f"  - LLM seed ({a.get('llm_model')}): {seeded['labelled']} labels, {seeded['right']} "
                         f"right, {seeded['prompt_tokens']} + {seeded['completion_tokens']} tokens "
                         f"($0 local; ${hosted:.4f} at {REFERENCE_PRICE}'s list price), "
                         f"{seeded['seconds']:.0f} s")  # fmt: skip
    lines += _review_lines(result)
    best = {name: max(d["strategies"], key=lambda s: statistics.mean(d["strategies"][s]["auc"]))
            for name, d in result["datasets"].items()}  # fmt: skip
    lines += ["", "Best AUC per dataset: " + ", ".join(f"{k}: **{v}**" for k, v in best.items()) + ".", ""]
    return "\n".join(lines)


def _hosted_dollars(prompt_tokens: int, completion_tokens: int) -> float:
    """What the same tokens would cost at the reference model's list price."""
    from backend.llm.cost import DEFAULT_PRICES, Usage, dollars

    return dollars(Usage(prompt_tokens, completion_tokens), DEFAULT_PRICES[REFERENCE_PRICE])


def _review_lines(result: dict[str, Any]) -> list[str]:
    """The pre-annotation runs: what the LLM pre-labelled, what the gate let through, what it cost."""
    rows = [(name, strategy, s["review"]) for name, d in result["datasets"].items()
            for strategy, s in d["strategies"].items() if s.get("review")]  # fmt: skip
    if not rows:
        return []
    a = result["args"]
    lines = [
        "",
        f"LLM pre-annotation ({a['llm_model']}, {a['llm_few_shot']} human examples per prompt), per run, mean over "
        "seeds. A queried task is auto-accepted when its calibrated score reaches the threshold the product "
        "derives from the checks so far (precision ≥ 95% by a lower bound, ≥ 20 checks); otherwise a human "
        "labels it, which the x-axis counts. Tokens include answers served from the disk cache; dollars at "
        f"{REFERENCE_PRICE}'s list price for the same tokens (the local model costs $0).",
        "",
        "| dataset | run | pre-labelled | pre-labels right | auto-accepted | of them right | gate opened (seeds) "
        f"| checks at the end: accuracy raw / bias-corrected / calibrated | tokens | $ at {REFERENCE_PRICE} |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, strategy, runs in rows:
        tokens = [r["prompt_tokens"] + r["completion_tokens"] for r in runs]
        cost = [_hosted_dollars(r["prompt_tokens"], r["completion_tokens"]) for r in runs]
        accepted = sum(r["auto_accepted"] for r in runs)
        right = f"{sum(r['auto_accepted_right'] for r in runs) / accepted:.1%}" if accepted else "n/a"
        opened = sum(r["final_threshold"] is not None for r in runs)
        share = sum(r["pre_labels_right"] for r in runs) / max(1, sum(r["pre_labelled"] for r in runs))
        stages = [statistics.mean(r["checks_accuracy"][s] for r in runs) if all(s in r.get("checks_accuracy", {})
                  for r in runs) else None for s in ("raw", "bias_corrected", "calibrated")]  # fmt: skip
        checks = " / ".join("n/a" if v is None else f"{v:.3f}" for v in stages)
        lines.append(f"| {name} | {strategy} | {statistics.mean(r['pre_labelled'] for r in runs):.0f} | {share:.1%} "
                     f"| {statistics.mean(r['auto_accepted'] for r in runs):.1f} | {right} | {opened} of {len(runs)} "
                     f"| {checks} | {statistics.mean(tokens):,.0f} | {statistics.mean(cost):.3f} |")  # fmt: skip
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        d = result["datasets"][name]
        for strategy, s in d["strategies"].items():
            mean, std = np.array(s["mean"]), np.array(s["std"])
            style = {"color": "black", "linestyle": "--"} if strategy == "random" else {}
            if strategy.endswith((LLM_SUFFIX, PRE_SUFFIX)):  # dashed over its plain strategy, which may hide it
                style = {"linestyle": (0, (5, 3)), "linewidth": 2}
            ax.plot(d["steps"], mean, label=strategy, **style)
            ax.fill_between(d["steps"], mean - std, mean + std, alpha=0.15)
        ax.axhline(d["target"], color="grey", linestyle=":", label="95% of full supervision")
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("human labels")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_with_llm(args: argparse.Namespace) -> dict[str, Any]:
    """`run` with the embedded LLM server up and its answers cached on disk."""
    from backend.llm.factory import embedded_llm_client
    from bench.llm_models import CountingCache, embedded_llm

    cache = CountingCache(RESULTS / "cache" / f"{args.llm_model}.json")
    try:
        with embedded_llm(args.llm_model) as url:
            client = embedded_llm_client(url, args.llm_model, cache, timeout=120, max_retries=1, concurrency=2)
            return run(args, client)
    finally:
        cache.save()


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_argument("--datasets", nargs="+", default=["trec6", "sms_spam", "reuters_r8"])
    options.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    options.add_argument("--students", nargs="+", default=["tfidf"], choices=sorted(STUDENTS),
                         help="students side by side, the first the baseline: tfidf (TF-IDF alone), minilm "
                              "(TF-IDF + all-MiniLM-L6-v2 embeddings)")  # fmt: skip
    options.add_argument("--seeds", type=int, default=3)
    options.add_argument("--initial", type=int, default=20)
    options.add_argument("--batch", type=int, default=20)
    options.add_argument("--batch-large", type=int, default=100)
    options.add_argument("--budget", type=int, default=1000)
    options.add_argument("--test", type=int, default=1000)
    options.add_argument("--max-pool", type=int, default=3000)
    options.add_argument("--llm-seed", type=int, default=0, help="LLM-labelled cold-start seed size (0: none)")
    options.add_argument(
        "--llm-preannotate",
        action="store_true",
        help="also run each strategy with LLM pre-labels, auto-accepted above the calibrated gate",
    )
    options.add_argument("--llm-few-shot", type=int, default=4, help="human examples per pre-annotation prompt")
    options.add_argument("--llm-model", default="smollm2-135m", help="the embedded model for the LLM options")
    options.add_argument("--out", default="simulate")
    options.add_argument("--render-only", action="store_true")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = RESULTS / args.out
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        started = time.time()
        datasets = run_with_llm(args) if args.llm_seed or args.llm_preannotate else run(args)
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": (time.time() - started) / 60,
                  "machine": machine(), "args": vars(args), "datasets": datasets}  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    write_outputs(out, result, markdown, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
