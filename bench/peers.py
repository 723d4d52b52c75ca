"""Our query strategies side by side with the peers' (small-text, modAL): same pool, same batch, one run.

    python -m bench.peers                          # pools of 10,000 and 100,000 tasks (~5.5 minutes here)
    python -m bench.peers --sizes 10000 --repeats 1 --coreset-repeats 1    # a smoke run
    python -m bench.peers --render-only            # rebuild peers.md from peers.json

The pools are bench/strategies.py's `synthetic_pool(n, seed=0)`: k=6 Dirichlet(1) probabilities, 128-dim
L2-normalized float32 embeddings around 50 centres, labelled embeddings for 1% of the pool (where the
coreset starts). Every library ranks that identical pool for a batch of 20:

- least confidence: ours `least_confidence`, small-text `LeastConfidence`, modAL `uncertainty_sampling`;
- margin: ours `margin`, small-text `BreakingTies`, modAL `margin_sampling`;
- coreset (greedy k-center from the labelled set): ours `kcenter_greedy`, small-text `GreedyCoreset`
  (its default, euclidean distance; on normalized rows the same farthest-first order as cosine). modAL
  has no coreset.

The peers need a fitted classifier: `FixedProba.predict_proba` hands back the pool's probabilities
without a copy, so only the query strategy is timed. small-text's coreset gets the embeddings through
`query(..., embeddings=...)`, stacked pool-then-labelled as it wants them, outside the timing (ours
stacks them inside `rank`, and that is timed). Runs are interleaved: each repeat times every library
once, in a rotating order, so background load hits all alike; the median of `--repeats` (5) runs is
reported (`--coreset-repeats`, 3, for the coreset at 100,000 and above). "Same picks" compares the set
of 20 picked tasks with ours (for the coreset also the order).

BLAS runs on one thread (`--blas-threads 1`, through threadpoolctl) for every library. On this 2-core
machine, shared with other jobs, OpenBLAS's 2 threads made a small product (100 x 128 by 128 x 110)
~30x slower than one thread (7.5 ms against 0.26 ms), which hit small-text's coreset (thousands of
small products per pick: 20 s at 10,000 tasks instead of 3 s) far more than anything else.

Bench-only dependencies: `pip install -e '.[bench]'` (small-text and modAL-python; neither pulls torch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from backend.selection.strategies import Pool, make_strategy
from bench.spine import log, machine
from bench.strategies import BATCH, DIM, LABELS, synthetic_pool

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIG_POOL = 100_000  # from this size the coreset runs `--coreset-repeats` times

# strategy -> ours (registry name), then each peer's implementation (library -> name shown)
PEERS: dict[str, dict[str, str]] = {
    "least_confidence": {"small-text": "LeastConfidence", "modAL": "uncertainty_sampling"},
    "margin": {"small-text": "BreakingTies", "modAL": "margin_sampling"},
    "kcenter_greedy": {"small-text": "GreedyCoreset"},
}
OURS = "ours"


class FixedProba:
    """A "fitted classifier" for the peers: predict_proba returns the pool's probabilities, whatever it is given."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, _x: object, **_kwargs: object) -> np.ndarray:
        return self.proba


Runner = Callable[[int], np.ndarray]  # repeat number -> the picked task indices


def runners(strategy: str, pool: Pool) -> dict[str, Runner]:
    """Zero-argument-but-the-repeat callables, one per library, all ranking `pool` for a batch of BATCH."""
    from modAL.uncertainty import margin_sampling, uncertainty_sampling
    from small_text.query_strategies import BreakingTies, GreedyCoreset, LeastConfidence

    n = pool.size
    ours = make_strategy(strategy)
    result: dict[str, Runner] = {OURS: lambda run: ours.rank(pool, BATCH, np.random.default_rng(run))}
    clf = FixedProba(pool.proba)
    unlabelled = np.arange(n)
    no_labels = np.empty(0, dtype=np.int64)
    if strategy in ("least_confidence", "margin"):
        small_text = LeastConfidence() if strategy == "least_confidence" else BreakingTies()
        modal = uncertainty_sampling if strategy == "least_confidence" else margin_sampling
        dataset = pool.embeddings  # the peers pass it to predict_proba, which ignores it
        result["small-text"] = lambda run: small_text.query(clf, dataset, unlabelled, no_labels, no_labels, n=BATCH)
        result["modAL"] = lambda run: modal(clf, dataset, n_instances=BATCH)[0]
    elif strategy == "kcenter_greedy":
        labelled = pool.labelled_embeddings
        stacked = np.vstack([pool.embeddings, labelled])  # small-text's layout: unlabelled rows, then labelled
        labelled_rows = np.arange(n, n + labelled.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "default distance metric has changed" (to euclidean)
            coreset = GreedyCoreset()
        ids = np.arange(stacked.shape[0])  # stands in for small-text's Dataset: it is only indexed
        result["small-text"] = lambda run: coreset.query(
            clf, ids, unlabelled, labelled_rows, no_labels, n=BATCH, embeddings=stacked
        )
    else:
        raise ValueError(f"no peers for {strategy!r}")
    return result


def bench(sizes: Sequence[int], repeats: int, coreset_repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        pool = synthetic_pool(n, seed=0)
        for strategy in PEERS:
            calls = runners(strategy, pool)
            libraries = list(calls)
            times: dict[str, list[float]] = {library: [] for library in libraries}
            picks: dict[str, np.ndarray] = {}
            count = coreset_repeats if strategy == "kcenter_greedy" and n >= BIG_POOL else repeats
            for run in range(count):
                shift = run % len(libraries)
                for library in libraries[shift:] + libraries[:shift]:  # rotate who goes first
                    start = time.perf_counter()
                    chosen = np.asarray(calls[library](run))
                    times[library].append(time.perf_counter() - start)
                    assert len(set(chosen.tolist())) == BATCH, f"{library} {strategy}: {len(chosen)} picks, or repeats"
                    picks.setdefault(library, chosen)
            ours_median = statistics.median(times[OURS])
            for library in libraries:
                median = statistics.median(times[library])
                same_set = set(picks[library].tolist()) == set(picks[OURS].tolist())
                row = {
                    "strategy": strategy,
                    "library": library,
                    "implementation": strategy if library == OURS else PEERS[strategy][library],
                    "n": n,
                    "median_s": median,
                    "samples_s": times[library],
                    "ratio_ours_to_peer": None if library == OURS else ours_median / median,
                    "same_picks": None if library == OURS else same_set,
                    "same_order": None if library == OURS else bool(np.array_equal(picks[library], picks[OURS])),
                }
                rows.append(row)
                versus = "" if library == OURS else f"  ours/peer {ours_median / median:6.2f}  same picks {same_set}"
                log(f"{strategy:<17} {library:<10} n={n:>7,}  median {median:8.4f} s{versus}")
    return rows


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**no**")


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    load = ", ".join(f"{value:.1f}" for value in info["loadavg_at_start"])
    versions = ", ".join(f"{name} {ver}" for name, ver in results["versions"].items())
    lines = [
        "# Query strategies side by side with the peers",
        "",
        f"Generated by `python -m bench.peers` on {info['cpus']} CPUs ({info['cpu_model']}), load average at start "
        f"{load}; {versions}; BLAS on {results.get('blas_threads') or 'its default number of'} thread(s); "
        f"whole run {results.get('wall_s', 0):.0f} s. Pools from `bench.strategies.synthetic_pool(n, seed=0)`: "
        f"k={LABELS} Dirichlet probabilities, {DIM}-dim normalized embeddings, labelled embeddings for 1% of the "
        f"pool (the coreset's start). A batch of {BATCH}; the peers get a stand-in classifier whose "
        "`predict_proba` returns the pool's probabilities, so only the query strategy is timed. Interleaved runs, "
        f"median of {results['repeats']} ({results['coreset_repeats']} for the coreset at {BIG_POOL:,}). "
        "Ratio = our median / the peer's: below 1, ours is faster. Same picks: the same set of tasks as ours "
        "(in the same order too, for the coreset, where marked).",
        "",
        "| strategy | library | implementation | n | median s | ratio ours/peer | same picks? |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        ratio = "" if row["ratio_ours_to_peer"] is None else f"{row['ratio_ours_to_peer']:.3g}"
        same = _yes_no(row["same_picks"])
        if row["strategy"] == "kcenter_greedy" and row["same_order"]:
            same += ", same order"
        lines.append(
            f"| {row['strategy']} | {row['library']} | `{row['implementation']}` | {row['n']:,} | "
            f"{row['median_s']:.4f} | {ratio} | {same} |"
        )
    slower = [
        f"{row['strategy']} against {row['library']} at {row['n']:,} ({row['ratio_ours_to_peer']:.3g}x)"
        for row in results["rows"]
        if row["ratio_ours_to_peer"] is not None and row["ratio_ours_to_peer"] > 1
    ]
    lines += [
        "",
        "modAL has no coreset / k-center strategy, so it has no kcenter_greedy row.",
        "",
        f"Ours is slower in: {'; '.join(slower)}." if slower else "Ours is at least as fast as every peer here.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, BIG_POOL])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--coreset-repeats", type=int, default=3, help=f"coreset runs at {BIG_POOL:,} and above")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads for every library (0: the default)")
    parser.add_argument("--render-only", action="store_true", help="rebuild peers.md from peers.json")
    args = parser.parse_args(argv)
    json_path, md_path = RESULTS / "peers.json", RESULTS / "peers.md"
    if args.render_only:
        md_path.write_text(render(json.loads(json_path.read_text())))
        return 0
    results = {
        "machine": machine(),
        "versions": {name: version(name) for name in ("small-text", "modAL-python", "numpy", "scipy", "scikit-learn")},
        "blas_threads": args.blas_threads or None,
        "repeats": args.repeats,
        "coreset_repeats": args.coreset_repeats,
        "batch": BATCH,
    }
    started = time.perf_counter()
    with threadpool_limits(args.blas_threads or None):
        results["rows"] = bench(args.sizes, args.repeats, args.coreset_repeats)
    results["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(render(results))
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
