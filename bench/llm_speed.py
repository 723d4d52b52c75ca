"""Scored labelling speed on the embedded LLM: items/s at concurrency 1 and 2, with and without prefix reuse.

    python -m bench.llm_speed                 # SMS spam, 40 items per run, SmolLM2-135M (a few minutes here)
    python -m bench.llm_speed --n 10          # a smoke run
    python -m bench.llm_speed --model qwen2.5-coder-1.5b --n 20 --stem llm_speed_qwen   # another model's files

Starts llama-cpp-python's server (LSAL_LLM_VENV, default ~/.cache/lsal/llm-server) with start_local_server
and labels the same seeded SMS spam sample, with two fixed few-shot examples, through LLMClient for each of:
the scored prompt ("prefix first": instructions, labels, examples, then the item; the server reuses all but
the item), the same prompt with the item moved to the front of the system message ("item first": nothing
is shared), and today's JSON answer with logprobs, each at concurrency 1 and 2, one after another in one run
(the same server, warm).
Writes bench/results/llm_speed.json and .md, or --stem's (items/s, accuracy, AUC of P(spam)); --render-only rebuilds
the .md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from backend.datasets import load
from backend.labeling import Example, parse_label_config
from backend.llm.factory import embedded_llm_client
from backend.llm.local import start_local_server, stop_local_server
from backend.llm.prompts import Prompt, build_prompt

RESULTS = Path(__file__).parent / "results"

CONFIG = """<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">
  <Choice value="spam" hint="unsolicited advertising, prizes, scams"/>
  <Choice value="ham" hint="an ordinary personal message"/></Choices></View>"""
SHOTS = [Example(-1, "Hey, are we still on for lunch tomorrow?", ("ham",)),
         Example(-2, "WINNER! You have won a free cruise. Call 09061701461 now to claim.", ("spam",))]  # fmt: skip


def item_first(prompt: Prompt) -> Prompt:
    """The same prompt with the item opening the system message: no two requests share more than a token."""
    messages = [dict(m) for m in prompt.messages]
    item = messages.pop()["content"]
    messages[0]["content"] = (
        f"{item}\n\n{messages[0]['content'].replace('the text between', 'the text above, between')}"
    )
    messages.append({"role": "user", "content": "Label the text above."})
    return Prompt(messages, prompt.examples, prompt.estimated_tokens, prompt.keys, None)


def auc(scores: list[float], positive: list[bool]) -> float:
    pairs = [(s, p) for s, p in zip(scores, positive, strict=True)]
    pos = [s for s, p in pairs if p]
    neg = [s for s, p in pairs if not p]
    if not pos or not neg:
        return float("nan")
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def measures(answers: list, gold: list[str], seconds: float) -> dict[str, float]:
    p_spam = [(a.distribution or {}).get("spam", 0.5) if a else 0.5 for a in answers]
    right = sum(bool(a and a.labels == (g,)) for a, g in zip(answers, gold, strict=True))
    return {"items_per_s": len(gold) / seconds, "accuracy": right / len(gold),
            "auc": auc(p_spam, [g == "spam" for g in gold]),
            "prompt_tokens": sum(a.usage.prompt_tokens for a in answers if a) / len(gold)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--render-only", action="store_true", help="rebuild llm_speed.md from llm_speed.json")
    parser.add_argument("--stem", default="llm_speed", help="output file names (default llm_speed)")
    args = parser.parse_args()
    stem = RESULTS / args.stem
    if args.render_only:
        render(json.loads(stem.with_suffix(".json").read_text()), stem)
        return
    data = load("sms_spam")
    rng = random.Random(0)
    spam = [i for i, y in enumerate(data.labels) if y == "spam"]
    ham = [i for i, y in enumerate(data.labels) if y != "spam"]
    picked = rng.sample(spam, args.n // 2) + rng.sample(ham, args.n - args.n // 2)
    rng.shuffle(picked)
    texts, gold = [data.texts[i] for i in picked], ["spam" if data.labels[i] == "spam" else "ham" for i in picked]
    spec = parse_label_config(CONFIG)
    layouts = {
        "scored, prefix first": [build_prompt(spec, t, SHOTS, scored=True) for t in texts],
        "scored, item first": [item_first(build_prompt(spec, t, SHOTS, scored=True)) for t in texts],
        "JSON + logprobs (before)": [build_prompt(spec, t, SHOTS) for t in texts],
    }
    venv = Path(os.environ.get("LSAL_LLM_VENV", Path.home() / ".cache" / "lsal" / "llm-server")).expanduser()
    port = 9300 + os.getpid() % 500
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_local_server(venv, args.model, port, Path(tmp) / "llama.log", timeout=120)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            warm = embedded_llm_client(url, args.model, timeout=120, max_retries=0)
            warm.annotate(spec, layouts["scored, prefix first"][0])  # warm up
            for concurrency in (1, 2):
                for name, prompts in layouts.items():
                    load_before = os.getloadavg()[0]  # the machine is shared: each row says what it ran beside
                    started = time.monotonic()
                    client = embedded_llm_client(url, args.model, timeout=120, max_retries=0, concurrency=concurrency)
                    answers = client.annotate_many(spec, prompts)
                    seconds = time.monotonic() - started
                    rows.append({"layout": name, "concurrency": concurrency, "load_at_start": load_before,
                                 **measures(answers, gold, seconds)})  # fmt: skip
        finally:
            stop_local_server(server)
    summary = {"model": args.model, "n": len(texts), "load_average": os.getloadavg()[0], "rows": rows,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    render(summary, stem)


def render(summary: dict, stem: Path) -> None:
    when = f", {summary['date']}" if "date" in summary else ""
    loads = all("load_at_start" in r for r in summary["rows"])
    lines = [f"{summary['model']}, SMS spam, {summary['n']} items, load average {summary['load_average']:.1f}{when} "
             "(generated by `python -m bench.llm_speed`)", "",
             "| layout | concurrency | items/s | accuracy | AUC P(spam) | prompt tokens/item |"
             + (" load at start |" if loads else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if loads else "")]  # fmt: skip
    for r in summary["rows"]:
        lines.append(f"| {r['layout']} | {r['concurrency']} | {r['items_per_s']:.2f} | {r['accuracy']:.2f} "
                     f"| {r['auc']:.2f} | {r['prompt_tokens']:.0f} |"
                     + (f" {r['load_at_start']:.1f} |" if loads else ""))  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
