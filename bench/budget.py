"""Benchmark: scoring one model in-process against scoring it in the budgeted, forked child.

Run: ``python -m bench.budget [--repeats 31] [--rows 100000]``. Both paths score the same
checked model (testdata/bisect/regression/fr-mlp-v05.onnx) on the same matrix: the bundled
6,048-row cache, and a synthetic ``--rows`` cache; each figure is the median of
``--repeats`` calls, alternating the two paths, after one warm-up call of each. The
budgeted path is what every bisect evaluation now pays: fork, cap, create the session,
run, send the predictions back, reap.
"""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime

from bench.bisect import make_features
from engine.budget import score_within_budget
from engine.features import features_from_frame, load_features
from engine.scoring import ScoringLimits, inspect_model, score_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "testdata" / "bisect" / "regression" / "fr-mlp-v05.onnx"


def _median_ms(calls: list[float]) -> float:
    return statistics.median(calls) * 1000


def compare(matrix: np.ndarray, *, repeats: int) -> tuple[float, float]:
    """Return the median milliseconds of (in-process, budgeted child) scoring of ``matrix``."""
    checked = inspect_model(MODEL)
    limits = ScoringLimits()
    paths: dict[str, Callable[[], np.ndarray]] = {
        "in-process": lambda: score_model(checked, matrix, limits=limits),
        "child": lambda: score_within_budget(checked, matrix, limits=limits),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for path in paths.values():
        path()  # warm-up
    for _ in range(repeats):
        for name, path in paths.items():
            start = time.perf_counter()
            path()
            times[name].append(time.perf_counter() - start)
    return _median_ms(times["in-process"]), _median_ms(times["child"])


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )
    print(f"model: {MODEL.name}; medians of {args.repeats} alternating calls\n")
    print("| cache | rows | in-process ms | budgeted child ms | child / in-process | overhead ms |")
    print("|---|---:|---:|---:|---:|---:|")
    caches = {
        "bundled golden cache": load_features(ROOT / "testdata" / "bisect" / "features.parquet"),
        "synthetic": features_from_frame(make_features(args.rows, seed=1)),
    }
    for name, table in caches.items():
        matrix = table.matrix()
        inline, child = compare(matrix, repeats=args.repeats)
        print(
            f"| {name} | {matrix.shape[0]:,} | {inline:.2f} | {child:.2f} | "
            f"{child / inline:.2f}x | {child - inline:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
