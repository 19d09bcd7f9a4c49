"""The golden caches' model timelines: the synthetic cache, timelines fitted to a real cache, a drift check.

The synthetic cache is a deterministic feature parquet and two model timelines built around
its generating function. ``build_fitted_timelines`` builds the same two timelines (same
seeds, same injected regression) around a teacher fitted to another feature cache, the
real-video one (``testdata/videos/real``), and writes them beside a ``cache.json`` that
names that cache by content hash.

Bytes must not depend on the machine: every random draw comes from
``numpy.random.default_rng`` seeded from the user's seed, every value computed with
floating-point maths (exp, power, division) is rounded before it is stored, so an ulp of
difference between two libm or SIMD implementations never reaches a file, and no stored
value comes out of BLAS. The parquet file is compared by decoded content (its footer names
the pyarrow version that wrote it); ONNX and JSON files must be byte-identical.
"""

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import least_squares

from engine.errors import EvidenceError, FeatureCacheError, RegistryError, UsageError
from engine.evidence import read_json, write_bytes, write_json, write_parquet
from engine.features import (
    FEATURES,
    SOURCE,
    TARGET,
    FeatureTable,
    describe_difference,
    load_features,
)
from engine.hashing import sha256_bytes
from engine.onnxbuild import OPSET, Activation, Dense, build_mlp

GENERATOR = "model-guard synthetic golden cache"
# Bump whenever any byte (or decoded parquet value) the generator writes changes.
GENERATOR_VERSION = 1
FITTED_GENERATOR = "model-guard timelines fitted to a feature cache"
FITTED_GENERATOR_VERSION = 1
MANIFEST = "cache.json"
FEATURES_FILE = "features.parquet"
REGISTRY_FILE = "registry.json"
REGRESSION_DIR = "regression"
ALLGOOD_DIR = "allgood"
# Hand-written documentation that may sit beside the generated files.
DOCUMENTATION = frozenset({"README.md"})

FIRST_BAD_INDEX = 6
DOC_MIN_PLCC = 0.9
# Design targets the build asserts on its own (numpy) forward pass of every model.
GOOD_MIN_PLCC = 0.92
BAD_MAX_PLCC = 0.80

REGRESSION_MODELS = 10
ALLGOOD_MODELS = 8
INJECTED_REGRESSION = (
    "from fr-mlp-v06 on, the models were trained on a refactored feature pipeline that "
    "read vif_scale1 and vif_scale3 in swapped order and fed motion2 with its sign inverted: "
    "the models weigh vif_scale1 with vif_scale3's statistics and weight (and vice versa) and "
    "penalise motion about four times as strongly as the true function masks it"
)
_FITTED_INJECTED_REGRESSION = (
    "from fr-mlp-v06 on, the models were trained on a refactored feature pipeline that "
    "read vif_scale1 and vif_scale3 in swapped order and fed motion2 with its sign inverted: "
    "the models weigh vif_scale1 with vif_scale3's statistics and weight (and vice versa) and "
    "penalise motion about ten times as strongly as the teacher weighs it"
)


@dataclass(frozen=True)
class Drift:
    """One way a golden cache on disk differs from what the generator writes today."""

    file: str
    detail: str


@dataclass(frozen=True)
class ModelPlcc:
    """The PLCC of one timeline model's predictions against ``mos``."""

    timeline: int
    model_id: str
    plcc: float


@dataclass(frozen=True)
class SourceProfile:
    """A synthetic content: how hard it is to encode and how much it moves."""

    source_id: str
    description: str
    complexity: float
    motion: float


@dataclass(frozen=True)
class EncoderProfile:
    """An encoder: its efficiency (distortion multiplier) and the CRF ladder encoded with it."""

    name: str
    efficiency: float
    preset: str
    crfs: tuple[int, ...]


SOURCES: tuple[SourceProfile, ...] = (
    SourceProfile("src01", "talking head, static camera", 0.20, 1.5),
    SourceProfile("src02", "interview, slow pan", 0.35, 4.0),
    SourceProfile("src03", "street scene, handheld", 0.50, 9.0),
    SourceProfile("src04", "football, fast pans", 0.65, 16.0),
    SourceProfile("src05", "foliage and water, detailed texture", 0.80, 3.0),
    SourceProfile("src06", "animation, flat colours, fast cuts", 0.30, 12.0),
    SourceProfile("src07", "documentary, mixed", 0.55, 6.0),
    SourceProfile("src08", "confetti and crowd, very busy", 0.75, 19.0),
    SourceProfile("src09", "video game capture", 0.45, 7.5),
)
ENCODERS: tuple[EncoderProfile, ...] = (
    EncoderProfile("libx264", 1.00, "preset=medium", (16, 20, 24, 28, 32, 36, 40, 44)),
    EncoderProfile("libx265", 0.86, "preset=medium", (16, 20, 24, 28, 32, 36, 40, 44)),
    EncoderProfile("libsvtav1", 0.80, "preset=8", (20, 26, 32, 38, 44, 50, 56, 62)),
)
SEGMENTS = 28  # rows per encode: 9 sources x 3 encoders x 8 CRFs x 28 segments = 6048 rows

# The "true" perceptual function: mos = 5 + 90 * sigmoid(bias + weights . standardised(x)).
# A 6 -> H -> 1 sigmoid MLP represents it exactly, which is how the timelines are built.
_CENTRE = np.array([0.85, 0.45, 0.55, 0.65, 0.72, 8.0])
_SCALE = np.array([0.10, 0.22, 0.20, 0.17, 0.14, 5.0])
_WEIGHTS = np.array([0.45, 0.13, 0.16, 0.19, 0.13, 0.16])  # motion2 > 0: mild motion masking
_BIAS = 0.25
_MOS_FLOOR = 5.0
_MOS_SPAN = 90.0
_SOURCE_OFFSET_SD = 3.5
_NOISE_SD = 4.5
_VIF_RATES = np.array([2.1, 1.6, 1.2, 0.9])  # vif_scale_k ~ exp(-rate_k * distortion)

_HIDDEN = 8
_BAD_MOTION_FACTOR = -4.0
_BAD_ORDER = [0, 1, 4, 3, 2, 5]  # vif_scale1 <-> vif_scale3
_REGRESSION_NOISE = (0.5, 0.4, 0.32, 0.25, 0.2, 0.15, 0.12, 0.1, 0.1, 0.08)
_ALLGOOD_NOISE = (0.4, 0.35, 0.3, 0.25, 0.2, 0.18, 0.16, 0.14)
_REGRESSION_NOTES = (
    "first release",
    "retrained with a longer schedule",
    "retrained with weight decay",
    "retrained on the refreshed subjective scores",
    "retrained with early stopping",
    "retrained with a learning-rate warm-up",
    "retrained after the feature-pipeline refactor",
    "hyper-parameter sweep on the refactored pipeline",
    "retrained with more encodes on the refactored pipeline",
    "retrained with label smoothing on the refactored pipeline",
)
# Random-stream ids under the user's seed, so one artefact's draws never shift another's.
_STREAM_FEATURES = 0
_STREAM_REGRESSION = 1
_STREAM_ALLGOOD = 2


@dataclass(frozen=True)
class _Teacher:
    """The function a timeline is built around: score = floor + span * sigmoid(bias + w . z).

    ``z`` is the features standardised with ``centre`` and ``scale``; the broken models of
    the regression timeline multiply the motion2 weight by ``bad_motion_factor``.
    """

    weights: np.ndarray
    bias: float
    centre: np.ndarray
    scale: np.ndarray
    floor: float
    span: float
    bad_motion_factor: float


_SYNTHETIC_TEACHER = _Teacher(
    _WEIGHTS, _BIAS, _CENTRE, _SCALE, _MOS_FLOOR, _MOS_SPAN, _BAD_MOTION_FACTOR
)
# On the real cache a 4x motion penalty (with the swap) still scores PLCC 0.92 (the real
# sources move less than the synthetic ones), so the fitted timelines' broken models
# penalise motion 10x: the same injected fault, strong enough to fail plcc >= 0.9.
_FITTED_BAD_MOTION_FACTOR = -10.0


@dataclass(frozen=True)
class _ModelSpec:
    """Everything needed to serialise one timeline model."""

    model_id: str
    timeline: int
    notes: str
    layers: tuple[Dense, ...]
    activation: Activation
    input_mean: np.ndarray
    input_std: np.ndarray


def build_synthetic_cache(out: Path, *, seed: int) -> list[Path]:
    """Write the synthetic golden cache for ``seed`` into ``out``; return the files written."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, not {seed!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    table = _feature_table(seed)
    timelines = {
        REGRESSION_DIR: _regression_models(seed),
        ALLGOOD_DIR: _allgood_models(seed),
    }
    matrix = np.column_stack([table.column(name).to_numpy() for name in FEATURES])
    _check_design(seed, matrix, table.column(TARGET).to_numpy(), timelines)
    for folder in timelines:
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = [out / FEATURES_FILE]
    write_parquet(
        written[0],
        table,
        compression="zstd",
        compression_level=3,
        version="2.6",
        write_statistics=True,
    )
    for folder, specs in timelines.items():
        written.extend(_write_timeline(out / folder, specs))
    names = sorted(path.relative_to(out).as_posix() for path in written)
    manifest = out / MANIFEST
    write_json(manifest, _manifest(seed, names))
    written.append(manifest)
    return written


def build_fitted_timelines(features: Path, out: Path, *, seed: int) -> list[Path]:
    """Fit a teacher to ``features`` and write both timelines around it into ``out``.

    The timelines have the synthetic cache's structure (same ids, notes, noise schedule
    and injected regression at FIRST_BAD_INDEX) with unit 0 set to the teacher; the build
    refuses a seed whose models miss the design bands on ``features``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, not {seed!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    table = load_features(Path(features))
    matrix, target = table.matrix().astype(np.float64), table.target().astype(np.float64)
    teacher = _fit_teacher(matrix, target)
    timelines = {
        REGRESSION_DIR: _regression_models(seed, teacher),
        ALLGOOD_DIR: _allgood_models(seed, teacher),
    }
    _check_design(seed, matrix, target, timelines, teacher)
    origin = f"model-guard test model fitted to the feature cache {table.content_hash[:16]}"
    written: list[Path] = []
    for folder, specs in timelines.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        written.extend(_write_timeline(out / folder, specs, teacher=teacher, origin=origin))
    names = sorted(path.relative_to(out).as_posix() for path in written)
    manifest = _manifest(seed, names, injected=_FITTED_INJECTED_REGRESSION)
    manifest.update(
        generator=FITTED_GENERATOR,
        generator_version=FITTED_GENERATOR_VERSION,
        features={
            "path": Path(os.path.relpath(Path(features).resolve(), out.resolve())).as_posix(),
            "content_hash": table.content_hash,
            "rows": len(target),
            "sources": len(set(np.asarray(table.groups()).tolist())),
        },
        teacher=_teacher_document(teacher, pearson(_teacher_scores(teacher, matrix), target)),
    )
    write_json(out / MANIFEST, manifest)
    written.append(out / MANIFEST)
    return written


def _fit_teacher(matrix: np.ndarray, target: np.ndarray) -> _Teacher:
    """Least-squares fit of floor + span * sigmoid(bias + w . z) to ``target``, rounded to 4 decimals.

    ``z`` standardises with the table's own mean and standard deviation. Rounding keeps
    the ulps a BLAS or libm leaves in the optimum out of the written models.
    """
    centre = np.round(matrix.mean(axis=0), 4)
    scale = np.round(matrix.std(axis=0), 4)
    if np.any(scale <= 0):
        raise FeatureCacheError("a feature is constant on this cache; cannot fit a teacher")
    z = (matrix - centre) / scale
    width = len(FEATURES)

    def residual(p: np.ndarray) -> np.ndarray:
        logit = np.clip(p[width] + z @ p[:width], -60, 60)
        result: np.ndarray = p[width + 1] + p[width + 2] / (1 + np.exp(-logit)) - target
        return result

    start = np.concatenate([np.full(width, 0.3), [0.0, float(target.min()), float(np.ptp(target))]])
    fitted = np.round(least_squares(residual, start, method="lm").x, 4)
    return _Teacher(
        weights=fitted[:width],
        bias=float(fitted[width]),
        centre=centre,
        scale=scale,
        floor=float(fitted[width + 1]),
        span=float(fitted[width + 2]),
        bad_motion_factor=_FITTED_BAD_MOTION_FACTOR,
    )


def _teacher_scores(teacher: _Teacher, matrix: np.ndarray) -> np.ndarray:
    """Score ``matrix`` with the teacher itself."""
    logit = teacher.bias + ((matrix - teacher.centre) / teacher.scale) @ teacher.weights
    scores: np.ndarray = teacher.floor + teacher.span / (1 + np.exp(-logit))
    return scores


def _teacher_document(teacher: _Teacher, plcc: float) -> dict[str, Any]:
    """The teacher as cache.json records it."""
    return {
        "form": "floor + span * sigmoid(bias + sum_k weight_k * (x_k - centre_k) / scale_k)",
        "features": list(FEATURES),
        "weights": [float(w) for w in teacher.weights],
        "bias": teacher.bias,
        "centre": [float(c) for c in teacher.centre],
        "scale": [float(c) for c in teacher.scale],
        "floor": teacher.floor,
        "span": teacher.span,
        "bad_motion_factor": teacher.bad_motion_factor,
        "plcc": round(plcc, 4),
    }


def check_cache(directory: Path) -> list[Drift]:
    """Rebuild the cache recorded in ``directory``'s cache.json and return every difference."""
    directory = Path(directory)
    seed, features = _read_manifest(directory)
    with tempfile.TemporaryDirectory(prefix="model-guard-cache-") as scratch:
        fresh = Path(scratch)
        if features is None:
            build_synthetic_cache(fresh, seed=seed)
        else:
            _build_fitted_as_recorded(directory, features, fresh, seed=seed)
        expected, actual = _files_under(fresh), _files_under(directory)
        drift: list[Drift] = []
        for name in sorted(expected | actual):
            if name not in actual:
                drift.append(Drift(name, "missing (the generator writes it)"))
            elif name not in expected:
                if name not in DOCUMENTATION:
                    drift.append(Drift(name, "extra file (the generator does not write it)"))
            elif (detail := _compare(fresh / name, directory / name)) is not None:
                drift.append(Drift(name, detail))
    return drift


def measure_timeline(
    registry: Path,
    table: FeatureTable,
    *,
    predict: Callable[[Path, np.ndarray], np.ndarray],
) -> list[ModelPlcc]:
    """Return each model's PLCC on ``table``, oldest first; ``predict(onnx_path, matrix)`` scores."""
    try:
        document = read_json(registry).value
        models = sorted(document["models"], key=lambda model: int(model["timeline"]))
    except EvidenceError as error:
        raise RegistryError(f"cannot read registry: {error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise RegistryError(f"{registry}: cannot read registry: {error}") from None
    matrix, target = table.matrix(), table.target()
    results = []
    for model in models:
        scores = np.asarray(predict(Path(registry).parent / str(model["onnx"]), matrix))
        results.append(
            ModelPlcc(
                timeline=int(model["timeline"]),
                model_id=str(model["id"]),
                plcc=pearson(scores.reshape(-1), target),
            )
        )
    return results


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Pearson correlation of two equal-length vectors, computed in float64."""
    x = np.asarray(a, dtype=np.float64) - np.mean(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64) - np.mean(b, dtype=np.float64)
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def _feature_table(seed: int) -> pa.Table:
    """Draw the feature cache: per-source character, per-encode distortion, per-segment noise."""
    rng = np.random.default_rng([seed, _STREAM_FEATURES])
    complexity = np.round(
        np.array([s.complexity for s in SOURCES]) + rng.uniform(-0.05, 0.05, len(SOURCES)), 3
    )
    motion = np.round(
        np.array([s.motion for s in SOURCES]) * np.exp(rng.normal(0.0, 0.1, len(SOURCES))), 3
    )
    offsets = np.round(rng.normal(0.0, _SOURCE_OFFSET_SD, len(SOURCES)), 2)
    distortion, motion2, sources, encoders, params = [], [], [], [], []
    for index, source in enumerate(SOURCES):
        for encoder in ENCODERS:
            for level, crf in enumerate(encoder.crfs):
                hardness = 0.65 + 0.7 * complexity[index]
                base = encoder.efficiency * (0.06 + 0.86 * level / 7) * hardness
                base = round(base + rng.normal(0.0, 0.03), 6)
                moving = np.clip(
                    np.round(motion[index] * np.exp(rng.normal(0.0, 0.35, SEGMENTS)), 5), 0, 25
                )
                jitter = rng.normal(0.0, 0.12, SEGMENTS)
                distortion.append(
                    np.clip(np.round(base * (1 + jitter) + 0.06 * moving / 25, 6), 0.005, 0.995)
                )
                motion2.append(moving)
                sources.extend([source.source_id] * SEGMENTS)
                encoders.extend([encoder.name] * SEGMENTS)
                params.extend([f"crf={crf},{encoder.preset}"] * SEGMENTS)
    d = np.concatenate(distortion)
    n = len(d)
    adm2 = np.clip(np.round(1 - 0.36 * d**1.1 + rng.normal(0.0, 0.012, n), 5), 0.55, 1.0)
    vif = np.exp(-np.outer(d, _VIF_RATES)) * (1 + rng.normal(0.0, 0.025, (n, 4)))
    # Sorted per row after rounding: scale 0 is always the lowest, scale 3 the highest.
    vif = np.sort(np.clip(np.round(vif, 5), 0.05, 1.0), axis=1)
    features = np.column_stack([adm2, vif, np.concatenate(motion2)]).astype(np.float32)
    source_index = np.repeat(np.arange(len(SOURCES)), n // len(SOURCES))
    clean = _true_mos(features)
    noisy = clean + offsets[source_index] + rng.normal(0.0, _NOISE_SD, n)
    mos = np.clip(np.round(noisy, 2), 0.0, 100.0).astype(np.float32)
    columns: dict[str, Any] = {name: features[:, k] for k, name in enumerate(FEATURES)}
    columns[TARGET] = mos
    columns[SOURCE] = sources
    columns["encoder"] = encoders
    columns["param"] = params
    schema = pa.schema(
        [pa.field(name, pa.float32(), nullable=False) for name in (*FEATURES, TARGET)]
        + [pa.field(name, pa.string(), nullable=False) for name in (SOURCE, "encoder", "param")]
    )
    return pa.table(columns, schema=schema)


def _true_mos(features: np.ndarray) -> np.ndarray:
    """Return the generating function on stored (float32) features, rounded to 4 decimals."""
    x = features.astype(np.float64)
    logit = np.full(len(x), _BIAS)
    for k in range(len(FEATURES)):  # an explicit sum: no BLAS in stored values
        logit = logit + _WEIGHTS[k] * ((x[:, k] - _CENTRE[k]) / _SCALE[k])
    result: np.ndarray = np.round(_MOS_FLOOR + _MOS_SPAN / (1 + np.exp(-logit)), 4)
    return result


def _sigmoid_net(
    rng: np.random.Generator, noise: float, *, broken: bool, teacher: _Teacher
) -> tuple[tuple[Dense, ...], np.ndarray, np.ndarray]:
    """Return a 6 -> 8 -> 1 sigmoid net: unit 0 is the teacher off by up to ``noise`` (relative)."""
    w0 = np.zeros((len(FEATURES), _HIDDEN))
    b0 = np.zeros(_HIDDEN)
    # Bounded relative noise: an unlucky draw cannot push a "good" model below its band.
    w0[:, 0] = teacher.weights * (1 + rng.uniform(-noise, noise, len(FEATURES)))
    b0[0] = teacher.bias + rng.uniform(-noise, noise) / 4
    w0[:, 1:] = rng.normal(0.0, 0.7, (len(FEATURES), _HIDDEN - 1))
    b0[1:] = rng.normal(0.0, 0.5, _HIDDEN - 1)
    w1 = np.zeros((_HIDDEN, 1))
    w1[0, 0] = 1 + rng.uniform(-noise, noise) / 2
    w1[1:, 0] = rng.uniform(-noise, noise, _HIDDEN - 1) / 10
    b1 = np.array([rng.uniform(-noise, noise) / 10])
    mean, std = teacher.centre.copy(), teacher.scale.copy()
    if broken:
        motion = len(FEATURES) - 1
        w0[motion, 0] *= teacher.bad_motion_factor
        w0, mean, std = w0[_BAD_ORDER], mean[_BAD_ORDER], std[_BAD_ORDER]
    layers = (Dense(np.round(w0, 4), np.round(b0, 4)), Dense(np.round(w1, 4), np.round(b1, 4)))
    return layers, np.round(mean, 4), np.round(std, 4)


def _regression_models(seed: int, teacher: _Teacher = _SYNTHETIC_TEACHER) -> list[_ModelSpec]:
    """Return the regression timeline: improving models, broken from FIRST_BAD_INDEX on."""
    specs = []
    for index in range(REGRESSION_MODELS):
        rng = np.random.default_rng([seed, _STREAM_REGRESSION, index])
        layers, mean, std = _sigmoid_net(
            rng, _REGRESSION_NOISE[index], broken=index >= FIRST_BAD_INDEX, teacher=teacher
        )
        specs.append(
            _ModelSpec(
                model_id=f"fr-mlp-v{index:02d}",
                timeline=index,
                notes=f"v{index:02d}: {_REGRESSION_NOTES[index]}",
                layers=layers,
                activation=Activation.SIGMOID,
                input_mean=mean,
                input_std=std,
            )
        )
    return specs


def _allgood_models(seed: int, teacher: _Teacher = _SYNTHETIC_TEACHER) -> list[_ModelSpec]:
    """Return the all-good timeline: tanh nets (sigmoid rewritten exactly), every one passing."""
    specs = []
    for index in range(ALLGOOD_MODELS):
        rng = np.random.default_rng([seed, _STREAM_ALLGOOD, index])
        (hidden, output), mean, std = _sigmoid_net(
            rng, _ALLGOOD_NOISE[index], broken=False, teacher=teacher
        )
        # sigmoid(z) = 0.5 + 0.5 * tanh(z / 2): the same function with a tanh hidden layer.
        tanh_hidden = Dense(np.round(hidden.weight / 2, 4), np.round(hidden.bias / 2, 4))
        tanh_output = Dense(
            np.round(output.weight / 2, 4),
            np.round(output.bias + output.weight.sum() / 2, 4),
        )
        specs.append(
            _ModelSpec(
                model_id=f"fr-mlp-good-v{index:02d}",
                timeline=index,
                notes=f"good-v{index:02d}: tanh MLP, retrain {index}",
                layers=(tanh_hidden, tanh_output),
                activation=Activation.TANH,
                input_mean=mean,
                input_std=std,
            )
        )
    return specs


def _forward(spec: _ModelSpec, matrix: np.ndarray, teacher: _Teacher) -> np.ndarray:
    """Score with a float64 numpy forward pass of a spec's weights (design check only)."""
    current = (matrix.astype(np.float64) - spec.input_mean) / spec.input_std
    for position, layer in enumerate(spec.layers):
        current = current @ layer.weight + layer.bias
        if position < len(spec.layers) - 1:
            if spec.activation is Activation.SIGMOID:
                current = 1 / (1 + np.exp(-current))
            else:
                current = np.tanh(current)
    scores: np.ndarray = teacher.floor + teacher.span * current[:, 0]
    return scores


def _check_design(
    seed: int,
    matrix: np.ndarray,
    target: np.ndarray,
    timelines: dict[str, list[_ModelSpec]],
    teacher: _Teacher = _SYNTHETIC_TEACHER,
) -> None:
    """Refuse to write a cache whose models miss the documented PLCC bands for this seed."""
    for folder, specs in timelines.items():
        for spec in specs:
            plcc = pearson(_forward(spec, matrix, teacher), target)
            bad = folder == REGRESSION_DIR and spec.timeline >= FIRST_BAD_INDEX
            if (bad and plcc > BAD_MAX_PLCC) or (not bad and plcc < GOOD_MIN_PLCC):
                band = f"<= {BAD_MAX_PLCC}" if bad else f">= {GOOD_MIN_PLCC}"
                raise FeatureCacheError(
                    f"seed {seed}: {folder}/{spec.model_id} has PLCC {plcc:.3f}, "
                    f"outside its design band ({band}); choose another seed"
                )


def _write_timeline(
    folder: Path,
    specs: Sequence[_ModelSpec],
    *,
    teacher: _Teacher = _SYNTHETIC_TEACHER,
    origin: str = "synthetic model-guard test model",
) -> list[Path]:
    """Write each spec's ONNX file and the timeline's registry.json; return the paths."""
    written: list[Path] = []
    entries: list[dict[str, Any]] = []
    for spec in specs:
        data = build_mlp(
            spec.layers,
            activation=spec.activation,
            input_mean=spec.input_mean,
            input_std=spec.input_std,
            output_scale=teacher.span,
            output_offset=teacher.floor,
            name=spec.model_id,
            doc=f"{spec.model_id}: {origin} ({spec.notes})",
        )
        path = folder / f"{spec.model_id}.onnx"
        write_bytes(path, data)
        written.append(path)
        entries.append(
            {
                "id": spec.model_id,
                "kind": "fr",
                "onnx": path.name,
                "sha256": sha256_bytes(data),
                "smoke": True,
                "opset": OPSET,
                "license": "MIT",
                "notes": spec.notes,
                "timeline": spec.timeline,
            }
        )
    registry = folder / REGISTRY_FILE
    write_json(registry, {"schema_version": 1, "models": entries})
    written.append(registry)
    return written


def _build_fitted_as_recorded(directory: Path, features: str, fresh: Path, *, seed: int) -> None:
    """Rebuild fitted timelines into ``fresh`` exactly as ``directory``'s cache.json records them."""
    source = directory / features
    if not source.is_file():
        raise FeatureCacheError(f"{directory / MANIFEST}: its feature cache {source} is not found")
    written = build_fitted_timelines(source, fresh, seed=seed)
    # cache.json names the features relative to its own folder: write it as the original does.
    manifest = read_json(fresh / MANIFEST).value
    manifest["features"]["path"] = features
    write_json(written[-1], manifest)


def _manifest(
    seed: int, files: list[str], *, injected: str = INJECTED_REGRESSION
) -> dict[str, Any]:
    """Return cache.json's content."""
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "files": files,
        "timelines": {
            REGRESSION_DIR: {
                "registry": f"{REGRESSION_DIR}/{REGISTRY_FILE}",
                "models": REGRESSION_MODELS,
                "first_bad_index": FIRST_BAD_INDEX,
                "min_plcc": DOC_MIN_PLCC,
                "injected_regression": injected,
            },
            ALLGOOD_DIR: {
                "registry": f"{ALLGOOD_DIR}/{REGISTRY_FILE}",
                "models": ALLGOOD_MODELS,
                "first_bad_index": None,
                "min_plcc": DOC_MIN_PLCC,
            },
        },
    }


def _read_manifest(directory: Path) -> tuple[int, str | None]:
    """Return the seed (and the fitted cache's features path) of a cache.json, or raise one line."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FeatureCacheError(f"{directory}: not a folder")
    if not path.is_file():
        raise FeatureCacheError(f"{path}: not found; is {directory} a golden cache?")
    try:
        document = read_json(path).value
    except EvidenceError as error:
        raise FeatureCacheError(str(error)) from None
    generator = document.get("generator") if isinstance(document, dict) else None
    if generator not in (GENERATOR, FITTED_GENERATOR):
        raise FeatureCacheError(f"{path}: not written by the {GENERATOR!r} generator")
    seed = document.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FeatureCacheError(f"{path}: 'seed' must be a non-negative integer, not {seed!r}")
    if generator == GENERATOR:
        return seed, None
    features = document.get("features")
    name = features.get("path") if isinstance(features, dict) else None
    if not isinstance(name, str) or not name:
        raise FeatureCacheError(f"{path}: 'features.path' must name the fitted feature cache")
    return seed, name


def _files_under(root: Path) -> set[str]:
    """Return the posix paths of every file under ``root``, relative to it."""
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def _compare(expected: Path, actual: Path) -> str | None:
    """Describe how ``actual`` differs from the freshly built ``expected``, or return None."""
    if expected.suffix == ".parquet":
        return _compare_parquet(expected, actual)
    want, have = expected.read_bytes(), actual.read_bytes()
    if want == have:
        return None
    if expected.suffix == ".json":
        return _first_line_difference(want, have)
    offset = next(
        (i for i, (x, y) in enumerate(zip(want, have, strict=False)) if x != y),
        min(len(want), len(have)),
    )
    return f"bytes differ from offset {offset} (expected {len(want)} bytes, found {len(have)})"


def _first_line_difference(want: bytes, have: bytes) -> str:
    """Describe the first differing line of two text files."""
    want_lines = want.decode("utf-8", "replace").splitlines()
    have_lines = have.decode("utf-8", "replace").splitlines()
    for number, (x, y) in enumerate(zip(want_lines, have_lines, strict=False), start=1):
        if x != y:
            return f"line {number}: expected {x.strip()!r}, found {y.strip()!r}"
    if len(want_lines) != len(have_lines):
        return f"expected {len(want_lines)} lines, found {len(have_lines)}"
    return "bytes differ (line endings or trailing whitespace)"


def _compare_parquet(expected: Path, actual: Path) -> str | None:
    """Compare two parquet files by schema (names, logical types) and decoded content.

    String encodings are not drift: ``string``, ``large_string``, ``string_view``,
    UTF-8 ``binary``/``large_binary`` and dictionary-encoded strings all hold the same text
    (an unchanged pandas round trip turns ``string`` into ``large_string``). A change of
    kind (integer to float, string to integer) still is.
    """
    try:
        have = pq.read_table(actual)
    except (pa.ArrowException, OSError, ValueError) as error:
        return f"unreadable parquet: {' '.join(str(error).split())[:200]}"
    want = pq.read_table(expected)
    want_fields = [(f.name, _logical_type(f.type)) for f in want.schema]
    have_fields = [(f.name, _logical_type(f.type)) for f in have.schema]
    if want_fields != have_fields:
        return (
            f"schema differs: expected {[(f.name, str(f.type)) for f in want.schema]}, "
            f"found {[(f.name, str(f.type)) for f in have.schema]}"
        )
    try:
        have = _plain_strings(have)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        return f"content differs: text column is not UTF-8 ({' '.join(str(error).split())[:120]})"
    difference = describe_difference(_plain_strings(want).to_pandas(), have.to_pandas())
    return None if difference is None else f"content differs: {difference}"


def _logical_type(data_type: pa.DataType) -> str:
    """Name a column type with every string encoding as ``string`` (others as pyarrow names them)."""
    if pa.types.is_dictionary(data_type):
        return _logical_type(data_type.value_type)
    if _is_text(data_type):
        return "string"
    return str(data_type)


def _is_text(data_type: pa.DataType) -> bool:
    """True for the string and binary encodings a text column can come back in."""
    checks = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        getattr(pa.types, "is_string_view", lambda _: False),
        getattr(pa.types, "is_binary_view", lambda _: False),
    )
    return any(check(data_type) for check in checks)


def _plain_strings(table: pa.Table) -> pa.Table:
    """Decode every text column to plain ``string`` (binary must be UTF-8: ArrowInvalid otherwise)."""
    columns = []
    for column, field in zip(table.columns, table.schema, strict=True):
        if _logical_type(field.type) == "string" and field.type != pa.string():
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)
