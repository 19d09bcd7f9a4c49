"""``model-guard cache build|check``: the synthetic and real-video golden caches, fitted timelines."""

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.commands.arguments import (
    MAX_SEED,
    existing_file,
    existing_folder,
    output_folder,
    thread_count,
    whole_number_in,
)
from engine.commands.options import EXIT_BAD_INPUT, EXIT_OK, CommandParser
from engine.errors import UsageError


def add_parser(commands: Any) -> None:
    """Add ``cache build`` and ``cache check``."""
    cache = commands.add_parser("cache", help="golden feature cache commands")
    cache_commands = cache.add_subparsers(
        dest="cache_command", required=True, parser_class=CommandParser
    )
    build = cache_commands.add_parser("build", help="build a golden cache deterministically")
    kind = build.add_mutually_exclusive_group(required=True)
    kind.add_argument("--synthetic", action="store_true", help="generate synthetic data")
    kind.add_argument(
        "--from-videos",
        type=existing_file,
        metavar="MANIFEST",
        help="encode and measure the real sources of a video manifest (docs/real-video-cache.md)",
    )
    kind.add_argument(
        "--timelines-on",
        type=existing_file,
        metavar="FEATURES",
        help="fit the bundled regression and all-good timelines to a feature cache",
    )
    build.add_argument(
        "--seed", type=whole_number_in(0, MAX_SEED), help="with --synthetic or --timelines-on"
    )
    build.add_argument("--out", type=output_folder, required=True)
    _add_video_flags(build)
    build.set_defaults(run=run_build)
    check = cache_commands.add_parser("check", help="rebuild a golden cache and report any drift")
    check.add_argument("directory", type=existing_folder)
    _add_video_flags(check)
    check.set_defaults(run=run_check)


def _add_video_flags(parser: argparse.ArgumentParser) -> None:
    """Add --jobs and --ffmpeg (real-video caches only)."""
    parser.add_argument(
        "--jobs",
        type=thread_count,
        default=1,
        help="clips encoded and measured in parallel (real-video caches; default 1)",
    )
    parser.add_argument(
        "--ffmpeg",
        type=existing_file,
        help="an ffmpeg built with libvmaf (default: the one of the imageio-ffmpeg package)",
    )


def _progress(line: str) -> None:
    """Print one progress line on stderr."""
    print(line, file=sys.stderr, flush=True)


def run_build(args: argparse.Namespace) -> int:
    """Build the synthetic golden cache, or the real-video one, into a folder."""
    if args.from_videos is not None:
        return _build_from_videos(args.from_videos, args.out, jobs=args.jobs, ffmpeg=args.ffmpeg)
    from engine.cache import build_fitted_timelines, build_synthetic_cache

    flag = "--synthetic" if args.synthetic else "--timelines-on"
    if args.seed is None:
        raise UsageError(f"cache build {flag} needs --seed")
    if args.synthetic:
        written = build_synthetic_cache(args.out, seed=args.seed)
    else:
        written = build_fitted_timelines(args.timelines_on, args.out, seed=args.seed)
    print(f"wrote {len(written)} files to {args.out}")
    return EXIT_OK


def _build_from_videos(manifest: Path, out: Path, *, jobs: int, ffmpeg: Path | None) -> int:
    """Build the real-video cache of a manifest; progress on stderr, summary on stdout."""
    from engine.videocache import build_video_cache, read_manifest, source_summary_lines
    from engine.vmaf import find_ffmpeg

    binary = find_ffmpeg(ffmpeg)
    report = build_video_cache(
        read_manifest(manifest), out, ffmpeg=binary, jobs=jobs, progress=_progress
    )
    for line in source_summary_lines(report):
        print(line)
    print(
        f"wrote {report.rows} rows to {out} ({report.encoded} clips encoded, "
        f"{report.reused} reused)"
    )
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    """Rebuild a golden cache in a temporary folder and report any drift; exit 1 on drift."""
    from engine.cache import check_cache
    from engine.videocache import check_video_cache, is_video_cache

    if is_video_cache(args.directory):
        from engine.vmaf import find_ffmpeg

        drift = check_video_cache(
            args.directory, ffmpeg=find_ffmpeg(args.ffmpeg), jobs=args.jobs, progress=_progress
        )
    else:
        drift = check_cache(args.directory)
    for item in drift:
        print(f"DRIFT {item.file}: {item.detail}")
    if drift:
        return EXIT_BAD_INPUT
    print(f"{args.directory}: no drift")
    return EXIT_OK
