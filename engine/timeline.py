"""A model timeline to bisect: read it once, judge one model of it, assemble the report.

The CLI's ``bisect`` and the App's lazy, pooled bisect both go through these three steps.
Each takes and returns plain picklable values, so each can run in another process: the
registry is parsed once, in ``read_timeline``, and the ``Timeline`` it returns is all a
later step needs. Files are named by '/'-paths relative to a ``root`` folder (the App's
working copy of a repository, or the CLI's working folder), so what comes back never
names a temporary folder.
"""

import posixpath
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.bisection import BisectResult
from engine.declaration import RowDeclaration, resolve_declaration
from engine.errors import EngineError, UsageError
from engine.evaluation import (
    DEFAULT_LIMITS,
    EvaluationStore,
    Evaluator,
    MetricSettings,
    ModelRef,
    StepRecord,
)
from engine.families import (
    FamilyPlan,
    NotJudged,
    is_judged_kind,
    judged,
    plan_families,
    require_judged,
    safe_reader,
    select_families,
    signature,
    why_not_judged,
)
from engine.features import DEFAULT_TABLE_LIMITS, FeatureTable, TableLimits, load_features
from engine.quantisation import TwinCheck, check_twins
from engine.registry import CodecSpec, ExternalData, ModelEntry, Registry, load_registry
from engine.report import build_report, combine_reports
from engine.scoring import ScoringLimits, read_graph_inputs
from engine.threshold import Thresholds


@dataclass(frozen=True)
class TimelineModel:
    """One model of a timeline, named by paths under the root so it can be fetched lazily.

    ``external`` lists the external-data files' paths; ``external_data`` is what the
    registry expects of them (None for a model given without a registry).
    """

    name: str
    onnx: str
    sha256: str | None
    external: tuple[str, ...]
    codec: CodecSpec | None
    external_data: tuple[ExternalData, ...] | None = None
    family: str | None = None  # the row's declared family, if any
    kind: str = "fr"
    declared: RowDeclaration | None = None
    # The registry's folder under the root (a sidecar is read relative to it).
    folder: str = "."
    quantised_from: str | None = None
    quant_budget_plcc: float | None = None


@dataclass(frozen=True)
class Timeline:
    """A timeline (oldest first) and the feature cache it is judged on, both under one root."""

    registry: str | None
    features: str
    models: tuple[TimelineModel, ...]
    feature_rows: int
    features_hash: str
    family: str | None = None
    # Quantised twins: not steps of the timeline, each checked against its parent.
    twins: tuple[TimelineModel, ...] = ()


@dataclass(frozen=True)
class TimelineSet:
    """A registry's families, each its own timeline on one feature cache, and the rows not judged."""

    timelines: tuple[Timeline, ...]
    not_judged: tuple[NotJudged, ...]
    known: tuple[str, ...]  # every family the registry has, selected or not


def repo_path(registry: str, relative: str) -> str:
    """The root-relative path of a file the registry names relative to its own folder."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(registry), relative))


def read_timeline(root: Path, registry: str, features: str) -> Timeline:
    """Check the registry's structure and the feature cache's schema; list the timeline."""
    loaded = load_registry(Path(root) / registry)
    models = tuple(_timeline_model(registry, entry) for entry in loaded.timeline_models)
    twins = tuple(_timeline_model(registry, entry) for entry in loaded.twins)
    return replace(_timeline(root, registry, features, models), twins=twins)


def _timeline_model(registry: str, entry: ModelEntry) -> TimelineModel:
    """A registry row as a timeline model, its files named by root-relative paths."""
    return TimelineModel(
        name=entry.id,
        onnx=repo_path(registry, entry.onnx),
        sha256=entry.sha256,
        external=tuple(repo_path(registry, path) for path in entry.files()[1:]),
        codec=entry.codec,
        external_data=entry.external_data,
        family=entry.family,
        kind=entry.kind,
        declared=entry.declared,
        folder=posixpath.dirname(registry) or ".",
        quantised_from=entry.quantised_from,
        quant_budget_plcc=entry.quant_budget_plcc if entry.quantised_from else None,
    )


def read_timelines(
    root: Path,
    registry: str,
    features: str,
    *,
    families: Sequence[str] | None = None,
    limits: ScoringLimits = DEFAULT_LIMITS,
) -> TimelineSet:
    """Split the registry into families (graph headers read under ``limits``); one timeline each.

    ``families`` selects by name (None or empty: all); an unknown name is a one-line
    ``UsageError`` naming the known ones. A graph file missing under ``root`` is placed as
    its registry row declares (it will be broken when visited).
    """
    loaded = load_registry(Path(root) / registry)
    plan = family_plan(root, registry, loaded, limits=limits)
    chosen = select_families(plan, families)
    require_judged(chosen)
    table = cached_features(Path(root) / features)
    twins = loaded.twins
    # Each twin is checked in its parent's family.
    family_of = {entry.id: family.name for family in chosen.families for entry in family.models}
    timelines = tuple(
        Timeline(
            registry=registry,
            features=features,
            models=tuple(_timeline_model(registry, entry) for entry in family.models),
            feature_rows=table.n_rows,
            features_hash=table.content_hash,
            family=family.name,
            twins=tuple(
                _timeline_model(registry, twin)
                for twin in twins
                if family_of.get(twin.quantised_from or "") == family.name
            ),
        )
        for family in chosen.families
    )
    skipped = tuple(replace(i, onnx=repo_path(registry, i.onnx)) for i in chosen.not_judged)
    # A twin of a row no family judges is not judged either (listed, so nothing goes unseen).
    unjudged = {item.name: item for item in plan.not_judged}
    twins_skipped = tuple(
        NotJudged(
            twin.id,
            twin.kind,
            repo_path(registry, twin.onnx),
            unjudged[twin.quantised_from].family,
            f"int8 twin of {twin.quantised_from}, which is not judged",
        )
        for twin in twins
        if twin.quantised_from in unjudged
    )
    return TimelineSet(timelines, skipped + twins_skipped, plan.names)


def family_plan(
    root: Path, registry: str, loaded: Registry, *, limits: ScoringLimits = DEFAULT_LIMITS
) -> FamilyPlan:
    """The loaded registry's families and rows not judged, reading graph headers under ``root``."""

    def read(entry: ModelEntry) -> Any:
        return read_graph_inputs(Path(root) / repo_path(registry, entry.onnx), limits=limits)

    folder = Path(root) / (posixpath.dirname(registry) or ".")

    def declared_width(entry: ModelEntry) -> int | None:
        if entry.declared is None:
            return None
        try:
            return resolve_declaration(entry.declared, root=folder).codec_width
        except EngineError:
            return None  # a bad declaration: the model is broken when visited

    return plan_families(
        loaded.timeline_models, read_inputs=safe_reader(read), declared_codec_width=declared_width
    )


def graphs_of_other_kinds(root: Path, registry: str) -> tuple[str, ...]:
    """Root-relative files the App fetches before ``read_timelines`` to plan the families.

    The graphs of rows of kinds other than fr (their inputs say why they are not judged),
    and every row's sidecar (its declaration says which family a regressor belongs to).
    A regressor's graph is fetched only when the bisect visits it, and ``unjudgeable``
    then checks its inputs.
    """
    loaded = load_registry(Path(root) / registry)
    graphs = [repo_path(registry, e.onnx) for e in loaded.models if not is_judged_kind(e.kind)]
    sidecars = [
        repo_path(registry, e.declared.sidecar)
        for e in loaded.models
        if e.declared is not None and e.declared.sidecar is not None
    ]
    return tuple(dict.fromkeys([*graphs, *sidecars]))


def unjudgeable(
    root: Path, timeline: Timeline, index: int, *, limits: ScoringLimits = DEFAULT_LIMITS
) -> NotJudged | None:
    """Why a fetched model of a family cannot be judged on a feature table, or None when it can.

    A graph that cannot be read is judgeable here: scoring it then says why it is broken.
    """
    model = timeline.models[index]
    try:
        inputs = read_graph_inputs(Path(root) / model.onnx, limits=limits)
    except EngineError:
        return None
    if judged(model.kind, inputs, declared_family=model.family):
        return None  # scoring says why it is broken, if it is
    why = why_not_judged(inputs)
    if why is None:
        return None
    family = model.family or f"{model.kind}/{signature(inputs)}"
    return NotJudged(model.name, model.kind, model.onnx, family, f"kind {model.kind}: {why}")


def timeline_of_files(root: Path, models: Sequence[str], features: str) -> Timeline:
    """List plain ONNX files (oldest first, named by file stem) as a timeline without a registry."""
    listed = tuple(
        TimelineModel(
            name=Path(path).stem,
            onnx=path,
            sha256=None,
            external=(),
            codec=None,
            # No registry: the model's own folder bounds what it may read.
            folder=posixpath.dirname(path) or ".",
        )
        for path in models
    )
    return _timeline(root, None, features, listed)


def timeline_evaluator(
    root: Path,
    timeline: Timeline,
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    limits: ScoringLimits = DEFAULT_LIMITS,
    store: EvaluationStore | None = None,
) -> Evaluator:
    """Return an evaluator of the timeline's models, then its twins (files read under ``root``).

    Index ``i < len(timeline.models)`` is a timeline step; ``len(timeline.models) + j`` is
    twin ``j`` (``engine.quantisation`` checks those).
    """
    return Evaluator(
        [_reference(root, model) for model in (*timeline.models, *timeline.twins)],
        cached_features(Path(root) / timeline.features),
        thresholds,
        settings=settings,
        limits=limits,
        store=store,
    )


def judge_model(
    root: Path,
    timeline: Timeline,
    index: int,
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    limits: ScoringLimits = DEFAULT_LIMITS,
    store_dir: Path | None = None,
) -> StepRecord:
    """Judge the model at timeline ``index`` (its files must be under ``root``)."""
    evaluator = timeline_evaluator(
        root,
        timeline,
        thresholds=thresholds,
        settings=settings,
        limits=limits,
        store=_store_at(store_dir),
    )
    return name_record(evaluator(index), timeline, index)


def _store_at(store_dir: Path | None) -> EvaluationStore | None:
    """The evaluation store in ``store_dir`` (None: no store), for calls that cross processes."""
    return None if store_dir is None else EvaluationStore(Path(store_dir))


def judge_twins(
    root: Path,
    timeline: Timeline,
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    limits: ScoringLimits = DEFAULT_LIMITS,
    store_dir: Path | None = None,
) -> tuple[TwinCheck, ...]:
    """Check the timeline's quantised twins against their parents (their files under ``root``)."""
    if not timeline.twins:
        return ()
    evaluator = timeline_evaluator(
        root,
        timeline,
        thresholds=thresholds,
        settings=settings,
        limits=limits,
        store=_store_at(store_dir),
    )
    return check_quantised_twins(timeline, evaluator)


def name_record(record: StepRecord, timeline: Timeline, index: int) -> StepRecord:
    """Name a record's model by its root-relative path (not where the evaluator opened it)."""
    return replace(record, path=timeline.models[index].onnx)


def assemble_report(
    root: Path,
    timeline: Timeline,
    result: BisectResult[StepRecord],
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    wall_time_s: float,
) -> dict[str, Any]:
    """Build the versioned JSON report of a bisect, naming root-relative paths."""
    cached = sum(1 for visit in result.visits if visit.result.cached)
    report = build_report(
        result,
        models=[_reference(root, model) for model in timeline.models],
        features=cached_features(Path(root) / timeline.features),
        thresholds=thresholds,
        settings=settings,
        scored=result.evaluations - cached,
        from_store=cached,
        wall_time_s=wall_time_s,
        registry=timeline.registry,
    )
    report["features"]["path"] = timeline.features
    return report


def assemble_family_report(
    root: Path,
    timelines: TimelineSet,
    results: Sequence[BisectResult[StepRecord]],
    *,
    thresholds: Thresholds,
    settings: MetricSettings,
    wall_time_s: float,
    twins: Sequence[Sequence[TwinCheck]] = (),
) -> dict[str, Any]:
    """One report for every family's bisect: a section each, the worst family's verdict on top.

    ``twins`` are each family's quantised-twin checks (``check_quantised_twins``); each family
    report lists its own, and the top level lists them all, so a failing twin in any family
    is named in the headline.
    """
    if len(results) != len(timelines.timelines):
        raise UsageError("one bisect result is needed per family")
    if twins and len(twins) != len(results):
        raise UsageError("one list of twin checks is needed per family")
    reports = [
        assemble_report(
            root,
            timeline,
            result,
            thresholds=thresholds,
            settings=settings,
            wall_time_s=wall_time_s,
        )
        for timeline, result in zip(timelines.timelines, results, strict=True)
    ]
    for report, checks in zip(reports, twins, strict=False):
        if checks:
            report["quantised_twins"] = [check.to_dict() for check in checks]
    combined = combine_reports(
        reports,
        families=[timeline.family or "" for timeline in timelines.timelines],
        not_judged=[item.to_dict() for item in timelines.not_judged],
    )
    every = [check.to_dict() for checks in twins for check in checks]
    if every:
        combined["quantised_twins"] = every
    else:
        combined.pop("quantised_twins", None)
    return combined


def cached_features(path: Path, *, limits: TableLimits = DEFAULT_TABLE_LIMITS) -> FeatureTable:
    """Load a feature cache, parsed once per process while its size and mtime stay the same.

    At most one decoded table is kept per process (a pool worker judges one timeline's
    models in a row): a table may decode to ``limits.max_decoded_bytes``, so keeping
    several per worker would multiply that. The kept table is dropped before another is
    decoded, so two are never held at once.
    """
    stat = path.stat() if path.is_file() else None
    if stat is None:
        return load_features(path, limits=limits)  # raises the engine's one-line error
    key = _TableKey(str(path), stat.st_size, stat.st_mtime_ns, limits)
    with _KEPT_LOCK:
        if _KEPT and _KEPT[0][0] == key:
            return _KEPT[0][1]
        _KEPT.clear()
        table = load_features(path, limits=limits)
        _KEPT.append((key, table))
        return table


def kept_tables() -> int:
    """Return how many decoded feature tables this process keeps (0 or 1)."""
    return len(_KEPT)


@dataclass(frozen=True)
class _TableKey:
    """What identifies a decoded table: the file (path, size, mtime) and the caps it was read under."""

    path: str
    size: int
    mtime_ns: int
    limits: TableLimits


_KEPT: list[tuple[_TableKey, FeatureTable]] = []
_KEPT_LOCK = threading.Lock()


def _timeline(
    root: Path, registry: str | None, features: str, models: tuple[TimelineModel, ...]
) -> Timeline:
    """Check the feature cache and wrap the models into a timeline."""
    table = cached_features(Path(root) / features)
    return Timeline(
        registry=registry,
        features=features,
        models=models,
        feature_rows=table.n_rows,
        features_hash=table.content_hash,
    )


def _reference(root: Path, model: TimelineModel) -> ModelRef:
    """Return the evaluator's reference to a timeline model under ``root``."""
    return ModelRef(
        name=model.name,
        path=Path(root) / model.onnx,
        expected_sha256=model.sha256,
        external_data=None
        if model.external_data is None
        else {item.path: item.sha256 for item in model.external_data},
        codec=model.codec,
        declared=model.declared,
        root=Path(root) / model.folder,
    )


def check_quantised_twins(timeline: Timeline, evaluator: Evaluator) -> tuple[TwinCheck, ...]:
    """Judge each quantised twin of the timeline against its parent (``engine.quantisation``)."""
    parents = {model.name: index for index, model in enumerate(timeline.models)}
    twins = [
        (twin.name, str(twin.quantised_from), float(twin.quant_budget_plcc or 0.0))
        for twin in timeline.twins
    ]
    return check_twins(
        twins, parents=parents, evaluate=evaluator, first_twin_index=len(timeline.models)
    )
