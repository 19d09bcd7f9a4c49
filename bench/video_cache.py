"""Benchmark: building the real-video golden cache from scratch (encode + libvmaf), per run.

Run: ``python -m bench.video_cache [--manifest testdata/videos/manifest.json] [--jobs 2]
[--repeats 3] [--sources N]``. Each run builds the whole cache into a fresh temporary
folder (no clip is reused), so it measures rendering the working references, every
encode and every libvmaf pass. It prints the median wall time over ``--repeats`` runs,
the frames per second (rows of the table, i.e. compared frames, over wall time), the
1-minute load average before and after, and the machine. ``--sources N`` keeps the
first N sources (a quicker figure).
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from engine.videocache import build_video_cache, parse_manifest
from engine.vmaf import find_ffmpeg

MANIFEST = Path(__file__).resolve().parents[1] / "testdata" / "videos" / "manifest.json"


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sources", type=int, default=0)
    args = parser.parse_args()
    document = json.loads(args.manifest.read_text())
    if args.sources:
        document["sources"] = document["sources"][: args.sources]
    manifest = parse_manifest(document, label=str(args.manifest))
    ffmpeg = find_ffmpeg()
    times, loads = [], []
    rows = 0
    for _ in range(args.repeats):
        before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="model-guard-bench-video-") as scratch:
            start = time.perf_counter()
            report = build_video_cache(manifest, Path(scratch), ffmpeg=ffmpeg, jobs=args.jobs)
            times.append(time.perf_counter() - start)
        loads.append((before, os.getloadavg()[0]))
        rows = report.rows
    median = statistics.median(times)
    clips = len(manifest.sources) * len(manifest.ladder)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {ffmpeg.version}"
    )
    print(
        f"load average (1 min) before/after each run: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in loads)}"
    )
    print()
    print("| sources | clips | frames | jobs | median build (s) | frames/s | runs (s) |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {len(manifest.sources)} | {clips} | {rows} | {args.jobs} | {median:.1f} "
        f"| {rows / median:.0f} | {', '.join(f'{t:.1f}' for t in times)} |"
    )


if __name__ == "__main__":
    main()
