"""Benchmarks: `python -m bench.spine` (or `make bench`); results in bench/results/."""
