"""libvmaf through ffmpeg: the six canonical features and VMAF of every frame of a clip pair.

ffmpeg runs as a subprocess (never through a shell) with its ``libvmaf`` filter; the
filter's JSON log is read into one ``VmafFrame`` per compared frame. libvmaf's log keys
carry an ``integer_`` prefix (``integer_adm2``, ...); rows use the canonical names of
``engine.features.FEATURES``. See docs/real-video-cache.md.

Mismatched clips are handled explicitly, never silently: the distorted clip is resampled
to the reference frame rate with the ``fps`` filter when the rates differ, scaled to the
reference size with a named scaler (``bicubic`` by default) when the sizes differ, both
are converted to 8-bit 4:2:0 and given frame-index timestamps, and the comparison stops at
the shorter clip (both are trimmed to the common frame count).
"""

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import MediaError, one_line
from engine.features import FEATURES

VMAF_MODEL = "vmaf_v0.6.1"
DEFAULT_SCALER = "bicubic"
# swscale's scaler names (ffmpeg's ``scale=flags=...``); an unknown name would be an ffmpeg error.
SCALERS = frozenset(
    {
        "fast_bilinear",
        "bilinear",
        "bicubic",
        "neighbor",
        "area",
        "gauss",
        "sinc",
        "lanczos",
        "spline",
    }
)
# libvmaf's log key for each canonical feature.
LOG_KEYS: dict[str, str] = {name: f"integer_{name}" for name in FEATURES}
FFMPEG_TIMEOUT_S = 900.0
_LOG_NAME = "vmaf.json"
_STREAM = re.compile(r"Stream #\d+:\d+[^:]*: Video: (?P<info>.*)")
_SIZE = re.compile(r"(?<![0-9])(?P<w>[1-9][0-9]{0,4})x(?P<h>[1-9][0-9]{0,4})(?![0-9])")
_RATE = re.compile(r"(?P<fps>[0-9]+(?:\.[0-9]+)?)(?P<k>k?) (?:fps|tbr)")
_FRAME = re.compile(r"frame=\s*(?P<n>[0-9]+)")


@dataclass(frozen=True)
class Ffmpeg:
    """An ffmpeg binary known to have the libvmaf filter."""

    path: Path
    version: str


@dataclass(frozen=True)
class ClipInfo:
    """What ffmpeg says about a clip's first video stream: size, frame rate, decoded frames."""

    width: int
    height: int
    fps: Fraction
    frames: int


@dataclass(frozen=True)
class VmafFrame:
    """One compared frame: its index, the six features in ``FEATURES`` order, and VMAF."""

    frame: int
    features: tuple[float, ...]
    vmaf: float


@dataclass(frozen=True)
class VmafResult:
    """libvmaf's verdict on a clip pair: per-frame rows, its pooled (mean) VMAF, and how it ran."""

    frames: tuple[VmafFrame, ...]
    pooled_vmaf: float
    libvmaf_version: str
    reference: ClipInfo
    distorted: ClipInfo
    filter_graph: str


def find_ffmpeg(path: Path | None = None) -> Ffmpeg:
    """Return the ffmpeg to use (``path``, else imageio-ffmpeg's); refuse one without libvmaf."""
    if path is None:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise MediaError(
                "no ffmpeg: install the 'imageio-ffmpeg' package (pip install -e '.[dev]') "
                "or pass --ffmpeg PATH"
            ) from None
        try:
            path = Path(imageio_ffmpeg.get_ffmpeg_exe())
        except RuntimeError as error:
            raise MediaError(f"imageio-ffmpeg has no usable ffmpeg: {one_line(error)}") from None
    return _checked_ffmpeg(str(Path(path).absolute()))


@cache
def _checked_ffmpeg(path: str) -> Ffmpeg:
    """Run ``path -version`` and ``-filters`` once per process; refuse one without libvmaf."""
    binary = Path(path)
    if not binary.is_file():
        raise MediaError(f"{binary}: ffmpeg not found")
    version = run_ffmpeg(binary, ["-version"], stdout=True).splitlines()
    filters = run_ffmpeg(binary, ["-filters"], stdout=True)
    if not re.search(r"^\s*\S+\s+libvmaf\s", filters, flags=re.MULTILINE):
        raise MediaError(
            f"{binary}: this ffmpeg has no libvmaf filter (Debian's has none); use the one "
            "from the 'imageio-ffmpeg' package or pass --ffmpeg PATH to one built with libvmaf"
        )
    return Ffmpeg(path=binary, version=version[0].strip() if version else "unknown")


def run_ffmpeg(
    binary: Path, arguments: list[str], *, cwd: Path | None = None, stdout: bool = False
) -> str:
    """Run ffmpeg with ``arguments`` (no shell); return stderr (stdout if asked); one-line errors."""
    command = [str(binary), "-nostdin", "-hide_banner", *arguments]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FFMPEG_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise MediaError(f"{binary}: ffmpeg not found") from None
    except PermissionError:
        raise MediaError(f"{binary}: ffmpeg is not executable") from None
    except OSError as error:
        raise MediaError(f"{binary}: cannot run ffmpeg: {one_line(error)}") from None
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg ran over {FFMPEG_TIMEOUT_S:g} s and was stopped") from None
    errors = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        lines = [line.strip() for line in errors.splitlines() if line.strip()]
        # The first line naming an error is the cause; the last one is often a consequence.
        causes = [line for line in lines if re.search(r"error|invalid", line, re.IGNORECASE)]
        cause = (causes or lines or [f"exit status {done.returncode}"])[0 if causes else -1]
        raise MediaError(f"ffmpeg failed: {one_line(cause)}")
    return done.stdout.decode("utf-8", "replace") if stdout else errors


def input_argument(path: Path) -> str:
    """Return ``path`` as an ffmpeg input that is never read as a protocol or an option."""
    return f"file:{Path(path).absolute()}"


def probe_clip(ffmpeg: Ffmpeg, path: Path) -> ClipInfo:
    """Decode a clip's first video stream to count its frames; read its size and frame rate."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such video file")
    try:
        log = run_ffmpeg(
            ffmpeg.path,
            ["-threads", "1", "-i", input_argument(path), "-map", "0:v:0", "-f", "null", "-"],
        )
    except MediaError as error:
        raise MediaError(f"{path}: not a readable video ({error})") from None
    stream = _STREAM.search(log)
    if stream is None:
        raise MediaError(f"{path}: no video stream")
    size, rate = _SIZE.search(stream["info"]), _RATE.search(stream["info"])
    if size is None or rate is None:
        raise MediaError(f"{path}: cannot read the video's size and frame rate")
    counts = _FRAME.findall(log)
    frames = int(counts[-1]) if counts else 0
    if frames == 0:
        raise MediaError(f"{path}: the video has no frames")
    fps = Fraction(rate["fps"]) * (1000 if rate["k"] else 1)
    return ClipInfo(int(size["w"]), int(size["h"]), fps.limit_denominator(1001), frames)


def filter_graph(
    reference: ClipInfo, distorted: ClipInfo, *, scaler: str = DEFAULT_SCALER, log: str = _LOG_NAME
) -> str:
    """Return the ffmpeg filter graph comparing input 0 (distorted) with input 1 (reference)."""
    if scaler not in SCALERS:
        raise MediaError(f"unknown scaler {scaler!r} (known: {', '.join(sorted(SCALERS))})")
    common = min(reference.frames, distorted.frames)
    steps = ["setpts=PTS-STARTPTS"]
    if distorted.fps != reference.fps:
        rate = reference.fps
        steps.append(f"fps={rate.numerator}/{rate.denominator}")
        common = min(reference.frames, round(distorted.frames * rate / distorted.fps))
    if (distorted.width, distorted.height) != (reference.width, reference.height):
        steps.append(f"scale={reference.width}:{reference.height}:flags={scaler}")
    # Frame-index timestamps on both sides: libvmaf pairs frame k with frame k.
    tail = f"format=yuv420p,trim=end_frame={common},settb=1,setpts=N"
    options = f"model=version={VMAF_MODEL}:log_fmt=json:log_path={log}:n_threads=1:shortest=1"
    return (
        f"[0:v]{','.join(steps)},{tail}[dist];"
        f"[1:v]setpts=PTS-STARTPTS,{tail}[ref];"
        f"[dist][ref]libvmaf={options}"
    )


def measure_pair(
    distorted: Path, reference: Path, *, ffmpeg: Ffmpeg, scaler: str = DEFAULT_SCALER
) -> VmafResult:
    """Run libvmaf on (distorted, reference); return its per-frame features and VMAF."""
    reference_info = probe_clip(ffmpeg, reference)
    distorted_info = probe_clip(ffmpeg, distorted)
    graph = filter_graph(reference_info, distorted_info, scaler=scaler)
    arguments = [
        *("-threads", "1", "-filter_complex_threads", "1"),
        *("-i", input_argument(distorted), "-i", input_argument(reference)),
        *("-filter_complex", graph, "-f", "null", "-"),
    ]
    with tempfile.TemporaryDirectory(prefix="model-guard-vmaf-") as scratch:
        run_ffmpeg(ffmpeg.path, arguments, cwd=Path(scratch))
        log_path = Path(scratch) / _LOG_NAME
        try:
            document = json.loads(log_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise MediaError(f"libvmaf wrote no readable log: {one_line(error)}") from None
    frames, pooled, version = parse_log(document)
    if not frames:
        raise MediaError(f"{distorted} vs {reference}: libvmaf compared no frames")
    return VmafResult(frames, pooled, version, reference_info, distorted_info, graph)


def parse_log(document: Any) -> tuple[tuple[VmafFrame, ...], float, str]:
    """Read libvmaf's JSON log: per-frame rows, the pooled mean VMAF and libvmaf's version."""
    try:
        rows = []
        for entry in document["frames"]:
            metrics = entry["metrics"]
            rows.append(
                VmafFrame(
                    frame=int(entry["frameNum"]),
                    features=tuple(float(metrics[LOG_KEYS[name]]) for name in FEATURES),
                    vmaf=float(metrics["vmaf"]),
                )
            )
        pooled = float(document["pooled_metrics"]["vmaf"]["mean"]) if rows else float("nan")
        version = str(document.get("version", "unknown"))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MediaError(f"libvmaf's log is not as expected: missing or bad {error}") from None
    return tuple(rows), pooled, version


@dataclass(frozen=True)
class SvrModel:
    """A libvmaf libsvm nu-SVR (RBF) model with its linear_rescale normalisation."""

    feature_order: tuple[str, ...]
    support: npt.NDArray[np.float64]  # [S, F] support vectors (normalised space)
    coefficients: npt.NDArray[np.float64]  # [S]
    rho: float
    gamma: float
    slopes: npt.NDArray[np.float64]  # [1 + F]: score first, then features
    intercepts: npt.NDArray[np.float64]
    clip: tuple[float, float]


def load_svr_model(path: Path | None = None) -> SvrModel:
    """Read a libvmaf JSON model (default: the bundled vmaf_v0.6.1) into an ``SvrModel``."""
    try:
        if path is None:
            text = (resources.files("engine") / "data" / f"{VMAF_MODEL}.json").read_text("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        model = json.loads(text)["model_dict"]
        names = tuple(
            str(name).removeprefix("VMAF_integer_feature_").removesuffix("_score")
            for name in model["feature_names"]
        )
        header, _, body = model["model"].partition("\nSV\n")
        settings = dict(line.split(" ", 1) for line in header.splitlines() if " " in line)
        if settings.get("kernel_type") != "rbf" or model.get("norm_type") != "linear_rescale":
            raise MediaError("only RBF libsvm models with linear_rescale are supported")
        coefficients, support = [], []
        for line in body.splitlines():
            if not line.strip():
                continue
            head, *pairs = line.split()
            vector = np.zeros(len(names))
            for pair in pairs:  # libsvm's sparse format: an absent index is 0
                index, value = pair.split(":")
                vector[int(index) - 1] = float(value)
            coefficients.append(float(head))
            support.append(vector)
        low, high = model.get("score_clip", [0.0, 100.0])
        return SvrModel(
            feature_order=names,
            support=np.array(support),
            coefficients=np.array(coefficients),
            rho=float(settings["rho"]),
            gamma=float(settings["gamma"]),
            slopes=np.array(model["slopes"], dtype=np.float64),
            intercepts=np.array(model["intercepts"], dtype=np.float64),
            clip=(float(low), float(high)),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise MediaError(f"cannot read the VMAF model: {one_line(error)}") from None


def predict_vmaf(features: npt.ArrayLike, model: SvrModel) -> npt.NDArray[np.float64]:
    """Return VMAF for rows of the six features in ``FEATURES`` order (libsvm RBF nu-SVR)."""
    x = np.asarray(features, dtype=np.float64)
    order = [FEATURES.index(name) for name in model.feature_order]
    normalised = x[:, order] * model.slopes[1:] + model.intercepts[1:]
    distance = (
        np.sum(normalised**2, axis=1)[:, None]
        - 2 * normalised @ model.support.T
        + np.sum(model.support**2, axis=1)[None, :]
    )
    raw = np.exp(-model.gamma * np.maximum(distance, 0.0)) @ model.coefficients - model.rho
    score = (raw - model.intercepts[0]) / model.slopes[0]
    clipped: npt.NDArray[np.float64] = np.clip(score, *model.clip)
    return clipped
