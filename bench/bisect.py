"""Benchmark: bisect-model-quality against a linear scan that opens every model.

Run: ``python -m bench.bisect [--sizes 8 64 512 1024] [--rows 100000] [--repeats 3]``.
Both searches use the same Evaluator (safety checks, onnxruntime scoring of the whole
cache, metrics) with the evaluation store off, on the same timelines, in the same run;
the figures are medians over ``--repeats`` runs and the ratio is linear / bisect.
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.bisection import Outcome, find_first_regression
from engine.evaluation import Evaluator, refs_from_paths
from engine.features import FEATURES, features_from_frame
from engine.onnxbuild import Dense, build_mlp
from engine.threshold import StepStatus, Thresholds


def make_features(rows: int, *, seed: int) -> pd.DataFrame:
    """A synthetic feature cache of ``rows`` rows with a linear-ish MOS."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {name: rng.uniform(0.2, 1.0, rows).astype(np.float32) for name in FEATURES}
    )
    frame["motion2"] = rng.uniform(0, 20, rows).astype(np.float32)
    signal = (
        frame[list(FEATURES[:5])].to_numpy().sum(axis=1) * 15 - frame["motion2"].to_numpy() * 0.3
    )
    frame["mos"] = (signal + rng.normal(0, 3, rows)).astype(np.float32)
    frame["source"] = [f"src{i % 20:02d}" for i in range(rows)]
    return frame


def make_timeline(folder: Path, n_models: int, *, first_bad: int, seed: int) -> list[Path]:
    """Write ``n_models`` small MLPs; from ``first_bad`` on, the motion weight has the wrong sign."""
    rng = np.random.default_rng(seed)
    good = np.array([15, 15, 15, 15, 15, -0.3])
    paths = []
    for index in range(n_models):
        weights = good + rng.normal(0, 0.05, 6)
        if index >= first_bad:
            weights[:5] *= -0.2  # a broken retrain: the VIF/ADM signal is inverted
        hidden = Dense(np.diag(weights)[:, :6], np.zeros(6))
        out = Dense(np.ones((6, 1)), np.zeros(1))
        path = folder / f"m{index:04d}.onnx"
        path.write_bytes(build_mlp([hidden, out], name=f"m{index}"))
        paths.append(path)
    return paths


def time_search(
    evaluator_factory, n_models: int, *, linear: bool
) -> tuple[float, int, Outcome | None]:
    """Time one search; linear evaluates every model in order and stops at nothing."""
    evaluator = evaluator_factory()
    start = time.perf_counter()
    if linear:
        statuses = [evaluator(i).status for i in range(n_models)]
        outcome = None if StepStatus.FAIL not in statuses else Outcome.REGRESSION
    else:
        outcome = find_first_regression(n_models, evaluator).outcome
    return time.perf_counter() - start, evaluator.evaluated, outcome


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 512, 1024])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    features = features_from_frame(make_features(args.rows, seed=1))
    thresholds = Thresholds(min_plcc=0.8)
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"cache: {args.rows} rows; medians of {args.repeats} runs; store off\n")
    print("| models | bisect evals | bisect s | linear evals | linear s | linear/bisect |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n_models in args.sizes:
            folder = Path(tmp) / f"n{n_models}"
            folder.mkdir()
            paths = make_timeline(folder, n_models, first_bad=int(n_models * 0.7), seed=n_models)
            refs = refs_from_paths(paths)

            def factory(refs=refs) -> Evaluator:
                return Evaluator(refs, features, thresholds)

            bisect_runs = [
                time_search(factory, n_models, linear=False) for _ in range(args.repeats)
            ]
            linear_runs = [time_search(factory, n_models, linear=True) for _ in range(args.repeats)]
            b_time = statistics.median(r[0] for r in bisect_runs)
            l_time = statistics.median(r[0] for r in linear_runs)
            print(
                f"| {n_models} | {bisect_runs[0][1]} | {b_time:.3f} | {linear_runs[0][1]} | "
                f"{l_time:.3f} | {l_time / b_time:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
