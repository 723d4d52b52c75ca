"""The rank job end to end on large pools: time and peak memory of `run_ranking` at 10k and 100k tasks.

    python -m bench.rank_scale                          # 10,000 and 100,000 tasks, 4 strategies
    python -m bench.rank_scale --sizes 10000 --strategies margin   # a smoke run

The job runs as the worker runs it (real Redis: the embedded one, in a temporary directory; the real
StudentModel, trained on 1,000 TREC-6 questions and stored with ModelStore), against an in-memory
stand-in for Label Studio that pages tasks as the SDK does (LS_PAGE_SIZE) and counts the bulk writes:
what is measured is our side. The pool is TREC-6, SMS spam and Reuters R8 texts, repeated with a
number appended until it has the size asked for. Each case runs in a process of its own, whose peak
resident memory the kernel reports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from backend.datasets import load
from backend.jobs.connection import ensure_embedded_redis, stop_embedded_redis
from backend.jobs.ranking import run_ranking
from backend.jobs.running import JobContext
from backend.labeling.templates import render
from backend.settings import Settings
from backend.student import ModelStore, StudentModel
from bench.spine import log, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


class PagedLabelStudio:
    """Tasks in memory, read in pages like the SDK's pager; writes counted, not kept."""

    def __init__(self, config: str, texts: Sequence[str], labelled: dict[int, str], page_size: int) -> None:
        self.config, self.texts, self.labelled, self.page_size = config, texts, labelled, page_size
        self.pages = self.imported = 0

    def label_config(self, project_id: int) -> str:
        return self.config

    def _page(self, rows: range) -> Iterator[int]:
        for start in range(rows.start, rows.stop, self.page_size):
            self.pages += 1
            yield from range(start, min(start + self.page_size, rows.stop))

    def iter_annotated_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        for i, label in self.labelled.items():
            result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
            yield {"id": i + 1, "data": {"text": self.texts[i]}, "annotations": [{"id": i, "result": result}]}

    def iter_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        for i in self._page(range(len(self.texts))):
            yield {"id": i + 1, "data": {"text": self.texts[i]}, "total_annotations": int(i in self.labelled)}

    def import_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]]) -> int:
        self.imported += len(predictions)
        return len(predictions)

    def set_model_version(self, project_id: int, version: str, sampling: str | None = None) -> None:
        pass

    def delete_predictions(self, project_id: int, model_version: str) -> int:
        return 0


def pool_texts(size: int) -> list[str]:
    base = [t for name in ("trec6", "sms_spam", "reuters_r8") for t in load(name).texts]
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(size)]


def one_case(size: int, strategy: str, labelled_count: int) -> dict[str, Any]:
    """One ranking in this process: the pool, the model and Redis are set up first, then the job is timed."""
    trec = load("trec6")
    config = render((ROOT / "label_configs" / "text_classification_single.xml").read_text(), trec.classes)
    texts = trec.texts[:labelled_count] + pool_texts(size)
    labelled = {i: trec.labels[i] for i in range(labelled_count)}
    with tempfile.TemporaryDirectory() as tmp:
        url = ensure_embedded_redis(Path(tmp) / "redis")
        conn = redis.Redis.from_url(url)
        try:
            settings = Settings(data_dir=Path(tmp), redis_url=url, queue_size=50)
            store = ModelStore(settings.models_path)
            model = StudentModel(trec.classes).fit(texts[:labelled_count], [(labelled[i],) for i in labelled])
            store.save(1, model, meta={"task_ids": [i + 1 for i in labelled]})
            ls = PagedLabelStudio(config, texts, labelled, settings.ls_page_size)
            ctx = JobContext(settings, conn, store, ls, lambda _: None)  # type: ignore[arg-type]
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started = time.perf_counter()
            result = run_ranking(1, ctx, strategy, settings.queue_size)
            seconds = time.perf_counter() - started
        finally:
            conn.close()
            stop_embedded_redis(Path(tmp) / "redis")
    return {"pool": result["pool"], "strategy": result["strategy"], "fallback": result["fallback"],
            "seconds": seconds, "rss_before_mb": before, "pages_read": ls.pages,
            "predictions_written": ls.imported}  # fmt: skip


def measured(size: int, strategy: str, labelled_count: int) -> dict[str, Any]:
    """`one_case` in a child process, with the child's peak resident memory from the kernel."""
    command = [sys.executable, "-m", "bench.rank_scale", "--one", str(size), strategy, "--labelled",
               str(labelled_count)]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    out = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command} failed with status {status}")
    row = json.loads(out.strip().splitlines()[-1])
    row["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--strategies", nargs="+", default=["margin", "badge", "cluster_diverse", "kcenter_greedy"])
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_case(int(args.one[0]), args.one[1], args.labelled)))
        return 0
    rows = []
    for size in args.sizes:
        for strategy in args.strategies:
            rows.append(measured(size, strategy, args.labelled))
            log(f"{size:,} tasks, {strategy}: {rows[-1]['seconds']:.1f} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB")
    lines = [
        "# The rank job on large pools",
        "",
        f"Generated by `python -m bench.rank_scale` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine()['cpus']} CPUs; student trained on {args.labelled:,} TREC-6 labels; one run per row, each in a "
        "process of its own. *seconds* is `run_ranking` alone (read tasks, score, rank, write 50 predictions, "
        "record the round); *peak RSS* is the whole process's (interpreter, libraries, pool texts and model "
        "included); *RSS before* is what it held just before the job started.",
        "",
        "| unlabelled tasks | strategy | seconds | peak RSS MB | RSS before MB | LS pages read | predictions written |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['pool']:,} | {r['strategy']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} "
                     f"| {r['rss_before_mb']:.0f} | {r['pages_read']} | {r['predictions_written']} |")  # fmt: skip
    (RESULTS / "rank_scale.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    (RESULTS / "rank_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
