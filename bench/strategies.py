"""How long each query strategy takes to rank a large pool, and the embeddings it may need.

    python -m bench.strategies                    # pools of 10,000 and 100,000 tasks, 3 runs each
    python -m bench.strategies --sizes 10000 --repeats 1     # a smoke run
    python -m bench.strategies --render-only      # rebuild strategies.md from strategies.json

Synthetic pools, seeded: student probabilities Dirichlet(1) over k=6 labels; 128-dim embeddings drawn
around 50 random centres and L2-normalized (clustered, as real text embeddings are, so k-means has
structure to find); a committee of 5 bootstrap members, each a noisy copy of the student; LLM label
distributions with 30% of rows unanswered (NaN); and labelled embeddings for 1% of the pool size,
which the coreset starts from. Each strategy picks a batch of 20; the time is the median over
`--repeats` runs with different rngs, of `rank` alone (building the Pool is not timed). Targets at
every size: < 5 s for strategies that read only probabilities or LLM answers, < 30 s for those that
read embeddings.

`svd_embeddings` (TF-IDF + truncated SVD, 128 dims) is timed on synthetic 10-word texts drawn from a
Zipf vocabulary of 20,000 words: not a strategy, but what the diversity strategies wait for first.
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

import numpy as np

from backend.selection.embeddings import svd_embeddings
from backend.selection.strategies import STRATEGIES, Pool
from bench.spine import log, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LABELS = 6
DIM = 128
CENTRES = 50
MEMBERS = 5
BATCH = 20
UNCERTAINTY_TARGET_S = 5.0
DIVERSITY_TARGET_S = 30.0


def synthetic_pool(n: int, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(LABELS), size=n)
    centres = rng.standard_normal((CENTRES, DIM))

    def embed(rows: int) -> np.ndarray:
        points = centres[rng.integers(CENTRES, size=rows)] + rng.standard_normal((rows, DIM), dtype=np.float32)
        return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)

    def noisy_copy() -> np.ndarray:
        draws = rng.gamma(20.0 * proba + 0.1)
        return draws / draws.sum(axis=1, keepdims=True)

    llm_proba = rng.dirichlet(np.ones(LABELS), size=n)
    llm_proba[rng.random(n) < 0.3] = np.nan
    return Pool(
        proba=proba,
        embeddings=embed(n),
        labelled_embeddings=embed(max(1, n // 100)),
        committee=[noisy_copy() for _ in range(MEMBERS)],
        llm_proba=llm_proba,
    )


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    words = np.minimum(rng.zipf(1.3, size=(n, 10)) - 1, len(vocabulary) - 1)
    return [" ".join(vocabulary[row]) for row in words]


def target(needs: frozenset[str]) -> float:
    return DIVERSITY_TARGET_S if "embeddings" in needs else UNCERTAINTY_TARGET_S


def bench_strategies(sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        pool = synthetic_pool(n)
        for name, strategy_type in STRATEGIES.items():
            strategy = strategy_type()
            samples = []
            for run in range(repeats):
                start = time.perf_counter()
                picks = strategy.rank(pool, BATCH, np.random.default_rng(run))
                samples.append(time.perf_counter() - start)
                assert len(set(picks.tolist())) == BATCH, f"{name} returned {len(picks)} picks, some repeated"
            median = statistics.median(samples)
            goal = target(strategy.needs)
            rows.append(
                {
                    "strategy": name,
                    "n": n,
                    "needs": sorted(strategy.needs),
                    "median_s": median,
                    "samples_s": samples,
                    "target_s": goal,
                    "pass": median < goal,
                }
            )
            log(f"{name:<26} n={n:>7,}  median {median:7.3f} s  (target < {goal:.0f} s)")
    return rows


def bench_embeddings(sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        texts = synthetic_texts(n)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            svd_embeddings(texts, dim=DIM)
            samples.append(time.perf_counter() - start)
        rows.append({"n": n, "median_s": statistics.median(samples), "samples_s": samples})
        log(f"svd_embeddings n={n:>7,}  median {statistics.median(samples):7.3f} s")
    return rows


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    load = ", ".join(f"{value:.1f}" for value in info["loadavg_at_start"])
    lines = [
        "# Query strategies: time to rank a pool",
        "",
        f"Generated by `python -m bench.strategies` on {info['cpus']} CPUs ({info['cpu_model']}), "
        f"load average at start {load}; scikit-learn {info['scikit_learn']}, numpy {info['numpy']}. "
        f"Synthetic pools: k={LABELS} Dirichlet probabilities, {DIM}-dim normalized embeddings around "
        f"{CENTRES} centres, a committee of {MEMBERS}, 30% of LLM answers missing, labelled embeddings for 1% "
        f"of the pool (the coreset's start). A batch of {BATCH}; median of {results['repeats']} runs of `rank`.",
        "",
        "| strategy | n | median seconds | target | result |",
        "|---|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        verdict = "pass" if row["pass"] else "**MISS**"
        lines.append(
            f"| {row['strategy']} | {row['n']:,} | {row['median_s']:.3f} | < {row['target_s']:.0f} s | {verdict} |"
        )
    lines += [
        "",
        f"Embeddings for the diversity strategies, `svd_embeddings(texts, dim={DIM})` (TF-IDF, then a truncated "
        "SVD fitted on at most 20,000 rows), on synthetic 10-word texts:",
        "",
        "| n texts | median seconds |",
        "|---:|---:|",
    ]
    lines += [f"| {row['n']:,} | {row['median_s']:.2f} |" for row in results["embeddings"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render-only", action="store_true", help="rebuild strategies.md from strategies.json")
    args = parser.parse_args(argv)
    json_path, md_path = RESULTS / "strategies.json", RESULTS / "strategies.md"
    if args.render_only:
        md_path.write_text(render(json.loads(json_path.read_text())))
        return 0
    results = {
        "machine": machine(),
        "repeats": args.repeats,
        "batch": BATCH,
        "rows": bench_strategies(args.sizes, args.repeats),
        "embeddings": bench_embeddings(args.sizes, args.repeats),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(render(results))
    print(md_path.read_text())
    misses = [f"{row['strategy']} at {row['n']:,}" for row in results["rows"] if not row["pass"]]
    if misses:
        log(f"missed the target: {', '.join(misses)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
