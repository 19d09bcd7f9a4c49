"""Hostile input files, and the peak memory and time the engine spends refusing each.

``python -m bench.attacks [--engine-root DIR]`` builds every attack in a temporary folder,
then reads each in a fresh subprocess (so ``ru_maxrss`` is that read's own peak) and
prints one Markdown row per attack: the read's time (imports excluded) and the process's
peak RSS, with the peak after imports alone in brackets. ``--engine-root`` runs another checkout's engine
(e.g. ``git archive <base> engine | tar -x -C DIR``) for a before/after comparison.
The builders are shared with ``tests/engine/test_hostile_inputs.py``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURE_COLUMNS = ("adm2", "vif_scale0", "vif_scale1", "vif_scale2", "vif_scale3", "motion2", "mos")
BOMB_ROWS = 20_000
BOMB_VALUE_BYTES = 64 * 1024  # 20,000 rows x 64 KiB = 1.3 GB once decoded
CONSTANT_ROWS = 20_000_000
_BATCH_ROWS = 1_000_000


def valid_columns(rows: int) -> dict[str, pa.Array]:
    """Return the required float32 columns and a string ``source``, all valid."""
    # Few distinct values (dictionary-encoded on disk), but not constant: correlations exist.
    columns: dict[str, pa.Array] = {
        name: pa.array((0.2 + ((np.arange(rows) * (k + 3)) % 80) / 100).astype(np.float32))
        for k, name in enumerate(FEATURE_COLUMNS)
    }
    columns["source"] = pa.array([f"src{i % 4}" for i in range(rows)])
    return columns


def write_dictionary_bomb(path: Path, *, column: str = "notes") -> Path:
    """Write a valid cache plus one dictionary-encoded string column: one 64 KiB value, repeated.

    The dictionary page holds the value once and the indices are run-length encoded, so the
    file is tens of KB; without the Arrow schema in the footer the column reads back as
    plain strings: rows x 64 KiB. ``column="source"`` puts the bomb in a column the engine reads.
    """
    columns = valid_columns(BOMB_ROWS)
    columns[column] = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(BOMB_ROWS, dtype=np.int32)), pa.array(["x" * BOMB_VALUE_BYTES])
    )
    pq.write_table(pa.table(columns), path, store_schema=False, compression="zstd")
    return path


def write_constant_rows(path: Path, *, rows: int = CONSTANT_ROWS) -> Path:
    """Write ``rows`` identical valid rows in 1M-row groups (run-length encoded: a few hundred KB)."""
    batch_rows = min(rows, _BATCH_ROWS)
    batch = pa.table(
        {name: pa.array(np.full(batch_rows, 0.5, dtype=np.float32)) for name in FEATURE_COLUMNS}
        | {"source": pa.array(["src0"] * batch_rows)}
    )
    with pq.ParquetWriter(path, batch.schema, compression="zstd") as writer:
        for start in range(0, rows, batch_rows):
            writer.write_table(batch.slice(0, min(batch_rows, rows - start)))
    return path


def write_crafted_pandas_metadata(path: Path) -> Path:
    """Write a valid cache whose footer's ``pandas`` metadata names an index column that is absent."""
    table = pa.table(valid_columns(16))
    metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [],
        "columns": [{"name": "adm2", "field_name": "nope", "pandas_type": "float32"}],
        "pandas_version": "2.2.0",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(metadata).encode()})
    pq.write_table(table, path)
    return path


def write_deep_json(path: Path, *, depth: int = 100_000) -> Path:
    """Write a JSON document nested ``depth`` arrays deep."""
    path.write_text("[" * depth + "]" * depth, encoding="utf-8")
    return path


ATTACKS: dict[str, Callable[[Path], Path]] = {
    "dictionary-bomb (extra column)": lambda folder: write_dictionary_bomb(folder / "bomb.parquet"),
    "dictionary-bomb (source)": lambda folder: write_dictionary_bomb(
        folder / "bomb_source.parquet", column="source"
    ),
    "20M constant rows": lambda folder: write_constant_rows(folder / "constant.parquet"),
    "crafted pandas metadata": lambda folder: write_crafted_pandas_metadata(
        folder / "pandas.parquet"
    ),
    "100k-deep JSON": lambda folder: write_deep_json(folder / "loso_seed0.json"),
}

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from engine.features import load_features
from engine.loso_report import load_loso_report

def peak_mib():
    # VmHWM is this process's own peak; ru_maxrss keeps the parent's across fork and exec.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

path = Path(sys.argv[1])
imported = peak_mib()
start = time.perf_counter()
try:
    (load_loso_report if path.suffix == ".json" else load_features)(path)
    outcome = "accepted"
except Exception as error:
    outcome = type(error).__name__ + ": " + " ".join(str(error).split())[:120]
elapsed = time.perf_counter() - start
print(json.dumps({
    "seconds": elapsed, "peak_mib": peak_mib(), "imported_mib": imported, "outcome": outcome,
}))
"""


def measure(path: Path, *, engine_root: Path) -> dict[str, object]:
    """Read one attack file in a fresh interpreter; return its time, peak RSS and outcome."""
    env = dict(os.environ, PYTHONPATH=str(engine_root))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=engine_root,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_LOAD = """
import json, statistics, sys, time
from pathlib import Path
from engine.features import load_features
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    load_features(Path(sys.argv[1]))
    times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times)}))
"""


def write_wide_cache(path: Path, *, rows: int) -> Path:
    """Write a valid cache with ``encoder``/``param`` strings and two extra float columns."""
    rng = np.random.default_rng(11)
    columns: dict[str, pa.Array] = {
        name: pa.array(rng.uniform(0.2, 1.0, rows).astype(np.float32)) for name in FEATURE_COLUMNS
    }
    columns["source"] = pa.array([f"src{i % 40:02d}" for i in range(rows)])
    columns["encoder"] = pa.array([("libx264", "libx265", "libsvtav1")[i % 3] for i in range(rows)])
    columns["param"] = pa.array([f"crf={20 + i % 30},preset=medium" for i in range(rows)])
    columns["frame"] = pa.array(np.arange(rows, dtype=np.int64))
    columns["psnr_y"] = pa.array(rng.uniform(20, 50, rows).astype(np.float32))
    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


def compare_speed(base: Path, head: Path, *, rows: int, repeats: int) -> None:
    """Print the median load time of a valid cache under two engines, runs interleaved."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_wide_cache(Path(folder) / "wide.parquet", rows=rows)
        medians: dict[Path, list[float]] = {base: [], head: []}
        for _ in range(repeats):
            for root in (base, head):
                env = dict(os.environ, PYTHONPATH=str(root))
                done = subprocess.run(
                    [sys.executable, "-c", _LOAD, str(path), "3"],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=root,
                    check=True,
                )
                medians[root].append(json.loads(done.stdout.strip().splitlines()[-1])["median_s"])
        before, after = sorted(medians[base])[repeats // 2], sorted(medians[head])[repeats // 2]
        print(
            f"rows={rows}: base {before:.3f} s, head {after:.3f} s, base/head {before / after:.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    """Build every attack, read each in a subprocess, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument(
        "--speed-against",
        type=Path,
        help="instead: time loading a valid 1M-row cache under this engine root and --engine-root",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.speed_against is not None:
        compare_speed(
            args.speed_against.resolve(),
            args.engine_root.resolve(),
            rows=args.rows,
            repeats=args.repeats,
        )
        return 0
    print("| attack | file KB | read s | peak RSS MiB (after imports) | outcome |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, build in ATTACKS.items():
            path = build(Path(folder))
            result = measure(path, engine_root=args.engine_root.resolve())
            print(
                f"| {name} | {path.stat().st_size / 1024:.0f} | {result['seconds']:.2f} | "
                f"{result['peak_mib']:.0f} ({result['imported_mib']:.0f}) | {result['outcome']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
