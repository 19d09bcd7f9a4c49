"""Bisect a repository's model timeline at one commit: fetch files lazily, judge in the engine pool.

The engine work is ``engine.timeline``'s three steps, each one call into the pool: read the
timelines (the registry is parsed there, once, and split into families), judge one model,
assemble the report. Each family of six-feature regressors is searched on its own; rows of
other kinds are not judged (their graphs are fetched only to say why, e.g. needs frames).

The search itself is the engine's pure ``find_first_regression``. It runs here, on the event
loop, over a memo of finished evaluations: when it asks for a model not judged yet, the
model's blob (and only that one) is fetched and judged in the engine pool, and the search
is replayed. The search costs microseconds, so replaying it ``ceil(log2 N) + 2`` times is
free, and the bisect fetches only the models it visits.

The engine's numerical modules (numpy, pandas, onnxruntime behind ``engine.timeline``) are
imported inside the methods that run a bisect, not at the top: the web process imports this
module when it starts and should not load them until a job needs them
(``tests/bot/test_import_boundaries.py``).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gidgethub.abc import GitHubAPI

from bot.github.repofiles import RepoFileError, RepoFiles, RepoSnapshot
from bot.judging.pool import EnginePool
from bot.repoconfig import RepoConfig
from engine.bisection import BisectResult, Outcome, find_first_regression
from engine.budget import ScoringLimits
from engine.errors import UsageError
from engine.threshold import Thresholds

if TYPE_CHECKING:
    from engine.evaluation import MetricSettings, StepRecord
    from engine.families import NotJudged
    from engine.quantisation import TwinCheck
    from engine.timeline import Timeline, TimelineModel, TimelineSet

MAX_REGISTRY_BYTES = 1024 * 1024
MAX_FEATURES_BYTES = 256 * 1024 * 1024
# The engine's scoring cap (engine.scoring.ScoringLimits): a larger model is refused anyway.
MAX_MODEL_BYTES = 16 * 1024 * 1024
T = TypeVar("T")
# Asked before each model is fetched and judged: True stops the run (``RunStopped``).
StopCheck = Callable[[], Awaitable[bool]]


class RunStopped(Exception):
    """The caller's ``stop`` check said the run is no longer wanted (a newer request replaces it)."""


@dataclass(frozen=True)
class TimelineRun:
    """What one bisect of a repository found, ready to render."""

    repo: str
    commit_sha: str
    outcome: Outcome
    summary: str
    markdown: str
    report: dict[str, Any]
    fetched_models: int


class _Unjudged(Exception):
    """The search asked for a model that has not been judged yet."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _search(n_models: int, memo: dict[int, StepRecord], *, full: bool) -> BisectResult[Any] | int:
    """Replay the search over ``memo``: the result, or the index it needs next."""

    def evaluate(index: int) -> StepRecord:
        if index not in memo:
            raise _Unjudged(index)
        return memo[index]

    try:
        return find_first_regression(n_models, evaluate, full=full)
    except _Unjudged as wanted:
        return wanted.index


@dataclass(frozen=True)
class TimelineJudge:
    """Everything a bisect of a repository needs besides the repository itself.

    ``time_limit`` bounds the engine work of one whole run (every call into the pool
    shares it), so a timeline of many slow models cannot hold a worker for ever.
    ``limits`` holds each model to its own memory and time budget: a model over it is a
    broken step and the run goes on to the next model.
    """

    files: RepoFiles
    pool: EnginePool
    workdir: Path
    evaluations: Path
    time_limit: float = 900.0
    limits: ScoringLimits = ScoringLimits()  # engine.evaluation.DEFAULT_LIMITS

    async def judge(
        self,
        gh: GitHubAPI,
        snapshot: RepoSnapshot,
        config: RepoConfig,
        *,
        full: bool = False,
        stop: StopCheck | None = None,
    ) -> TimelineRun:
        """Bisect the timeline of ``config.registry`` at the snapshot's commit.

        ``stop`` is asked before each model; when it says True the run raises ``RunStopped``
        at that boundary (an engine call is never cut off half-way).
        """
        root = self.workdir / f"{snapshot.commit_sha[:12]}-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True, exist_ok=True)
        run = _Run(gh, snapshot, root, deadline=time.monotonic() + self.time_limit, stop=stop)
        try:
            return await self._judge(run, config, full=full, started=time.time())
        finally:
            shutil.rmtree(root, ignore_errors=True)

    async def _engine(self, run: _Run, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the engine pool within what is left of the run's time limit."""
        return await self.pool.run_before(run.deadline, self.time_limit, fn, *args, **kwargs)

    async def _judge(
        self, run: _Run, config: RepoConfig, *, full: bool, started: float
    ) -> TimelineRun:
        from engine.report import TableFormat, render_table, summarise
        from engine.timeline import (
            TimelineSet,
            assemble_family_report,
            graphs_of_other_kinds,
            read_timelines,
        )

        gh, snapshot, root = run.gh, run.snapshot, run.root
        await self.files.fetch_to(gh, snapshot, config.registry, root, max_bytes=MAX_REGISTRY_BYTES)
        await self.files.fetch_to(gh, snapshot, config.features, root, max_bytes=MAX_FEATURES_BYTES)
        for path in await self._engine(run, graphs_of_other_kinds, root, config.registry):
            # Graphs of other kinds and sidecars, to plan the families; a file that cannot
            # be fetched leaves its row placed by what the registry row says alone.
            with contextlib.suppress(RepoFileError):
                await self.files.fetch_to(gh, snapshot, path, root, max_bytes=MAX_MODEL_BYTES)
        timelines: TimelineSet = await self._engine(
            run,
            read_timelines,
            root,
            config.registry,
            config.features,
            families=config.families,
            limits=self.limits,
        )
        thresholds, settings = config.thresholds(), config.metric_settings()
        families = [
            await self._search_family(
                run, timeline, full=full, thresholds=thresholds, settings=settings
            )
            for timeline in timelines.timelines
        ]
        judged = [family for family in families if family.result is not None]
        if not judged:
            raise UsageError(
                "nothing to bisect: no model of the selected families is a six-feature regressor"
            )
        results = [family.result for family in judged]
        twins = [
            await self._twins(run, family.timeline, thresholds=thresholds, settings=settings)
            for family in judged
        ]
        skipped = [*timelines.not_judged, *(item for f in families for item in f.dropped)]
        timelines = TimelineSet(
            tuple(family.timeline for family in judged), tuple(skipped), timelines.known
        )
        report = await self._engine(
            run,
            assemble_family_report,
            root,
            timelines,
            results,
            thresholds=thresholds,
            settings=settings,
            wall_time_s=time.time() - started,
            twins=twins,
        )
        outcome = Outcome(report["outcome"])
        return TimelineRun(
            repo=snapshot.repo,
            commit_sha=snapshot.commit_sha,
            outcome=outcome,
            summary=summarise(report),
            markdown=render_table(report, fmt=TableFormat.MARKDOWN),
            report=report,
            fetched_models=sum(family.fetched for family in families),
        )

    async def _search_family(
        self,
        run: _Run,
        timeline: Timeline,
        *,
        full: bool,
        thresholds: Thresholds,
        settings: MetricSettings,
    ) -> _FamilyRun:
        """Bisect one family, fetching only the models the search visits.

        A visited model whose graph turns out not to be a feature regressor (frame inputs)
        leaves the family as not judged, and the search starts again without it.
        """
        from engine.evaluation import StepRecord

        memo: dict[str, StepRecord] = {}  # by model name: indices shift when a model leaves
        dropped: list[NotJudged] = []
        fetched = 0
        while timeline.models:
            by_index = {i: memo[m.name] for i, m in enumerate(timeline.models) if m.name in memo}
            found = _search(len(timeline.models), by_index, full=full)
            if isinstance(found, BisectResult):
                return _FamilyRun(found, timeline, tuple(dropped), fetched)
            if run.stop is not None and await run.stop():
                raise RunStopped(f"stopped before judging model {found} of {run.snapshot.repo}")
            fetched += 1
            record = await self._evaluate(
                run, timeline, found, thresholds=thresholds, settings=settings
            )
            if isinstance(record, StepRecord):
                memo[timeline.models[found].name] = record
                continue
            dropped.append(record)
            timeline = replace(
                timeline, models=tuple(m for i, m in enumerate(timeline.models) if i != found)
            )
        return _FamilyRun(None, timeline, tuple(dropped), fetched)

    async def _fetch_model(self, run: _Run, model: TimelineModel) -> None:
        """Fetch a model's graph and the files its row lists (external data, sidecar)."""
        for path in (model.onnx, *model.external):
            await self.files.fetch_to(
                run.gh, run.snapshot, path, run.root, max_bytes=MAX_MODEL_BYTES
            )

    async def _twins(
        self, run: _Run, timeline: Timeline, *, thresholds: Thresholds, settings: MetricSettings
    ) -> tuple[TwinCheck, ...]:
        """Fetch each quantised twin and its parent, and check the twin against its budget.

        A file that cannot be fetched is left missing: the engine then calls that model
        broken, and the twin fails its check rather than being skipped.
        """
        if not timeline.twins:
            return ()
        from engine.timeline import judge_twins

        parents = {model.name: model for model in timeline.models}
        for twin in timeline.twins:
            parent = parents.get(twin.quantised_from or "")
            for model in (twin, *(() if parent is None else (parent,))):
                with contextlib.suppress(RepoFileError):
                    await self._fetch_model(run, model)
        checks: tuple[TwinCheck, ...] = await self._engine(
            run,
            judge_twins,
            run.root,
            timeline,
            thresholds=thresholds,
            settings=settings,
            limits=self.limits,
            store_dir=self.evaluations,
        )
        return checks

    async def _evaluate(
        self,
        run: _Run,
        timeline: Timeline,
        index: int,
        *,
        thresholds: Thresholds,
        settings: MetricSettings,
    ) -> StepRecord | NotJudged:
        """Fetch one model (and its external data) and judge it in the engine pool.

        A graph that is not a feature regressor comes back as ``NotJudged`` instead.
        """
        from engine.evaluation import broken_step
        from engine.timeline import judge_model, unjudgeable

        model = timeline.models[index]
        try:
            await self._fetch_model(run, model)
        except RepoFileError as error:
            # A model the App cannot fetch counts as broken (failing), like an unloadable one.
            return broken_step(model.name, model.onnx, str(error))
        skip: NotJudged | None = await self._engine(
            run, unjudgeable, run.root, timeline, index, limits=self.limits
        )
        if skip is not None:
            return skip
        # The parsed timeline travels with the call: no worker re-reads the registry.
        record: StepRecord = await self._engine(
            run,
            judge_model,
            run.root,
            timeline,
            index,
            thresholds=thresholds,
            settings=settings,
            limits=self.limits,
            store_dir=self.evaluations,
        )
        return record


@dataclass(frozen=True)
class _FamilyRun:
    """One family's search: its result (None when no model was left), timeline and dropped rows."""

    result: BisectResult[Any] | None
    timeline: Timeline
    dropped: tuple[NotJudged, ...]
    fetched: int


@dataclass(frozen=True)
class _Run:
    """One bisect in progress: where it reads from, its working copy and its deadline."""

    gh: GitHubAPI
    snapshot: RepoSnapshot
    root: Path
    deadline: float
    stop: StopCheck | None = None
