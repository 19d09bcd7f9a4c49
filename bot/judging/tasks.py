"""Engine work that runs inside the engine pool's processes: read a timeline, judge one model, report.

Every function here is module-level and takes and returns plain picklable values, so the
event loop never parses parquet, opens ONNX or computes a metric. Paths are given as a
folder (the job's working copy of the repository) plus repository-relative names; what
comes back names files by their repository paths, never by the worker's temporary folder.
"""

import posixpath
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.bisection import BisectResult
from engine.evaluation import EvaluationStore, Evaluator, MetricSettings, refs_from_registry
from engine.features import FeatureTable, load_features
from engine.registry import CodecSpec, load_registry
from engine.report import TableFormat, build_report, render_table
from engine.threshold import Thresholds


@dataclass(frozen=True)
class TimelineModel:
    """One model of the timeline, named by repository paths so the App can fetch it lazily."""

    name: str
    onnx: str
    sha256: str
    external: tuple[str, ...]
    codec: CodecSpec | None


@dataclass(frozen=True)
class Timeline:
    """A registry's timeline (oldest first) and the feature cache it is judged on."""

    registry: str
    features: str
    models: tuple[TimelineModel, ...]
    feature_rows: int
    features_hash: str


@dataclass(frozen=True)
class RenderedReport:
    """The JSON report of a run and its GitHub markdown rendering."""

    report: dict[str, Any]
    markdown: str


def repo_path(registry: str, relative: str) -> str:
    """The repository path of a file the registry names relative to its own folder."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(registry), relative))


@lru_cache(maxsize=4)
def _features(path: str, size: int, mtime_ns: int) -> FeatureTable:
    """Parse a feature cache once per worker process (keyed by path, size and mtime)."""
    return load_features(Path(path))


def _load_features(path: Path) -> FeatureTable:
    stat = path.stat() if path.is_file() else None
    if stat is None:
        return load_features(path)  # raises the engine's one-line "not found" error
    return _features(str(path), stat.st_size, stat.st_mtime_ns)


def read_timeline(root: str, registry: str, features: str) -> Timeline:
    """Check the registry's structure and the feature cache's schema; list the timeline."""
    loaded = load_registry(Path(root) / registry)
    table = _load_features(Path(root) / features)
    models = tuple(
        TimelineModel(
            name=entry.id,
            onnx=repo_path(registry, entry.onnx),
            sha256=entry.sha256,
            external=tuple(repo_path(registry, path) for path in entry.files()[1:]),
            codec=entry.codec,
        )
        for entry in loaded.models
    )
    return Timeline(
        registry=registry,
        features=features,
        models=models,
        feature_rows=table.n_rows,
        features_hash=table.content_hash,
    )


def evaluate_model(
    root: str,
    registry: str,
    features: str,
    index: int,
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    cache_dir: str,
) -> Any:
    """Judge the model at timeline ``index`` (a ``StepRecord``; its file must be in ``root``)."""
    loaded = load_registry(Path(root) / registry)
    table = _load_features(Path(root) / features)
    evaluator = Evaluator(
        refs_from_registry(loaded),
        table,
        thresholds,
        settings=settings,
        store=EvaluationStore(Path(cache_dir)),
    )
    record = evaluator(index)
    return replace(record, path=repo_path(registry, loaded.models[index].onnx))


def assemble_report(
    root: str,
    timeline: Timeline,
    result: BisectResult[Any],
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    scored: int,
    from_store: int,
    started: float,
) -> RenderedReport:
    """Build the versioned JSON report and its markdown, naming repository paths."""
    refs = refs_from_registry(load_registry(Path(root) / timeline.registry))
    table = _load_features(Path(root) / timeline.features)
    report = build_report(
        result,
        models=refs,
        features=table,
        thresholds=thresholds,
        settings=settings,
        scored=scored,
        from_store=from_store,
        wall_time_s=time.time() - started,
        registry=timeline.registry,
    )
    report["features"]["path"] = timeline.features
    return RenderedReport(report=report, markdown=render_table(report, fmt=TableFormat.MARKDOWN))
