"""Measure issue 12's hostile models: peak RSS and wall time of a `model-guard bisect` over each.

Run: ``python -m bench.model_attacks [--source DIR] [--wall-limit 300]``. Each attack replaces the
head of the bundled regression timeline (testdata/bisect/regression, first bad model at
index 6) and ``model-guard bisect`` runs in a fresh process with the code under ``--source``
(default: this checkout), so the same script measures the code before and after a change.
Peak RSS is the largest of the process and every descendant it waited for
(``RUSAGE_CHILDREN``); a run past ``--wall-limit`` seconds is killed and reported as such.
"""

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from tests.engine import attack_models

ROOT = Path(__file__).resolve().parents[1]
BISECT = ROOT / "testdata" / "bisect"

# Smaller than the worst cases where the unguarded code would take the machine's
# memory (the bomb's 5.4 GB, the doubling's 9.5 GB): the unbudgeted figures scale from these.
ATTACKS = {
    "none (the real fr-mlp-v09, for reference)": lambda: onnx.load_model(
        str(BISECT / "regression" / "fr-mlp-v09.onnx")
    ),
    "sparse bomb (dense [225M, 6], 5.4 GB)": lambda: attack_models.sparse_bomb_model(),
    "sparse bomb (dense [40M, 6], 960 MB)": lambda: attack_models.sparse_bomb_model(40_000_000),
    "quadratic (10 x [N, N], 1.5 GB)": lambda: attack_models.quadratic_model(10),
    "slow (40 [N, N] MatMuls)": lambda: attack_models.slow_model(40),
    "Concat doubling (12 times, 600 MB)": lambda: attack_models.doubling_model(12),
}


def measure(source: Path, head: Path, *, wall_limit: float, extra: list[str]) -> str:
    """Run one bisect in a child interpreter; return 'peak MiB | seconds | outcome' cells."""
    models = [*sorted((BISECT / "regression").glob("*.onnx"))[:-1], head]
    code = (
        "import sys, engine; print('engine from', engine.__file__, file=sys.stderr); "
        "from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "bisect", "--models", *map(str, models)]
    argv += ["--features", str(BISECT / "features.parquet"), "--min-plcc", "0.9", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    # cwd = source too: `python -c` puts the working folder first on sys.path.
    process = subprocess.Popen(argv + extra, env=env, cwd=source, stdout=subprocess.PIPE, text=True)
    try:
        output, _ = process.communicate(timeout=wall_limit)
        outcome = _head_line(output, process.returncode)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        outcome = f"killed after {wall_limit:g} s"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{peak:.0f} | {seconds:.1f} | {outcome}"


def _head_line(output: str, code: int) -> str:
    """The head model's row of the bisect table, or the exit code."""
    rows = [line for line in output.splitlines() if "m-attack" in line]
    return (" ".join(rows[0].split())[:120] if rows else "(head not visited)") + f" (exit {code})"


def main() -> None:
    """Measure every attack (each in its own process, so RUSAGE_CHILDREN is its own)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose code runs")
    parser.add_argument("--wall-limit", type=float, default=300.0)
    parser.add_argument("--only", help="measure only the attack whose name starts with this")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="attacks (name prefixes) not to measure"
    )
    parser.add_argument("extra", nargs="*", help="more bisect options (after --)")
    args = parser.parse_args()
    if args.only is None:
        print(
            f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}"
        )
        print(f"code: {args.source}\n")
        print("| attack | model bytes | peak RSS MiB | wall s | head model |")
        print("|---|---:|---:|---:|---|")
        for name in ATTACKS:
            if any(name.startswith(prefix) for prefix in args.skip):
                print(f"| {name} | | not measured | | |")
                continue
            command = [sys.executable, "-m", "bench.model_attacks", "--source", str(args.source)]
            command += ["--wall-limit", str(args.wall_limit), "--only", name, "--", *args.extra]
            subprocess.run(command, check=True, cwd=ROOT)
        return
    name = next(key for key in ATTACKS if key.startswith(args.only))
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "m-attack.onnx"
        model = ATTACKS[name]()
        head.write_bytes(model.SerializeToString())
        cells = measure(args.source, head, wall_limit=args.wall_limit, extra=args.extra)
        print(f"| {name} | {head.stat().st_size} | {cells} |", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
