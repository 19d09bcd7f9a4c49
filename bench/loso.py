"""Benchmark: batched LOSO training against a sequential loop of separate trainings.

Run: ``python -m bench.loso [--features testdata/bisect/features.parquet] [--seeds 5]
[--epochs 200] [--repeats 3]``. Both paths train every (seed x held-out source) network
with the same seeds and settings (``engine.train.network.DEFAULT_CONFIG``) on the same
golden cache in the same process; the figures are medians over ``--repeats`` runs, the
ratio is sequential / batched, and the last line is the largest per-fold |PLCC difference|
between the two paths over all runs.
"""

import argparse
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.features import load_features
from engine.loso_report import SeedResult
from engine.train.loso import evaluate_loso
from engine.train.network import DEFAULT_CONFIG

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "bisect" / "features.parquet"


def fold_plccs(results: tuple[SeedResult, ...]) -> np.ndarray:
    """Return the fold PLCCs as a [seeds, folds] array."""
    return np.array([[fold.plcc for fold in seed.folds] for seed in results])


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--features", type=Path, default=GOLDEN)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=DEFAULT_CONFIG.epochs)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = load_features(args.features)
    config = replace(DEFAULT_CONFIG, epochs=args.epochs)
    seeds = list(range(args.seeds))
    n_folds = len(set(table.groups().tolist())) if table.groups() is not None else 0
    times: dict[bool, list[float]] = {True: [], False: []}
    worst = 0.0
    means = None
    for _ in range(args.repeats):
        plccs = {}
        for batched in (True, False):
            start = time.perf_counter()
            results = evaluate_loso(table, seeds=seeds, config=config, batched=batched)
            times[batched].append(time.perf_counter() - start)
            plccs[batched] = fold_plccs(results)
        worst = max(worst, float(np.max(np.abs(plccs[True] - plccs[False]))))
        means = plccs[True].mean(axis=1)
    batched_s = statistics.median(times[True])
    sequential_s = statistics.median(times[False])
    print(
        f"LOSO on {args.features.name}: {table.n_rows} rows, {len(seeds)} seeds x {n_folds} "
        f"folds x {args.epochs} epochs, {config.activation.name.lower()} "
        f"{'-'.join(map(str, config.hidden))}, {config.threads} torch threads, "
        f"torch {torch.__version__}, {platform.machine()}, median of {args.repeats}"
    )
    print()
    print("| path | median s | runs (s) |")
    print("|---|---|---|")
    for label, batched in (("batched (one stacked computation)", True), ("sequential loop", False)):
        runs = ", ".join(f"{t:.2f}" for t in times[batched])
        print(f"| {label} | {statistics.median(times[batched]):.2f} | {runs} |")
    print()
    print(f"ratio sequential / batched: {sequential_s / batched_s:.2f}x")
    print(f"max |PLCC difference| per fold, batched vs sequential: {worst:.2e}")
    if means is not None:
        print(f"per-seed mean PLCC (batched): {', '.join(f'{m:.4f}' for m in means)}")


if __name__ == "__main__":
    main()
