"""Bisect a repository's model timeline at one commit: fetch files lazily, judge in the engine pool.

The engine work is ``engine.timeline``'s three steps, each one call into the pool: read the
timeline (the registry is parsed there, once), judge one model, assemble the report.

The search itself is the engine's pure ``find_first_regression``. It runs here, on the event
loop, over a memo of finished evaluations: when it asks for a model not judged yet, the
model's blob (and only that one) is fetched and judged in the engine pool, and the search
is replayed. The search costs microseconds, so replaying it ``ceil(log2 N) + 2`` times is
free, and the bisect fetches only the models it visits.
"""

import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gidgethub.abc import GitHubAPI

from bot.github.repofiles import RepoFileError, RepoFiles, RepoSnapshot
from bot.judging.pool import EnginePool
from bot.repoconfig import RepoConfig
from engine.bisection import BisectResult, Outcome, find_first_regression
from engine.evaluation import DEFAULT_LIMITS, MetricSettings, StepRecord, broken_step
from engine.report import TableFormat, render_table, summarise
from engine.scoring import ScoringLimits
from engine.threshold import Thresholds
from engine.timeline import Timeline, assemble_report, judge_model, read_timeline

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
    limits: ScoringLimits = DEFAULT_LIMITS

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

    async def _engine(self, run: "_Run", fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the engine pool within what is left of the run's time limit."""
        return await self.pool.run_before(run.deadline, self.time_limit, fn, *args, **kwargs)

    async def _judge(
        self, run: "_Run", config: RepoConfig, *, full: bool, started: float
    ) -> TimelineRun:
        gh, snapshot, root = run.gh, run.snapshot, run.root
        await self.files.fetch_to(gh, snapshot, config.registry, root, max_bytes=MAX_REGISTRY_BYTES)
        await self.files.fetch_to(gh, snapshot, config.features, root, max_bytes=MAX_FEATURES_BYTES)
        timeline = await self._engine(run, read_timeline, root, config.registry, config.features)
        thresholds, settings = config.thresholds(), config.metric_settings()
        memo: dict[int, StepRecord] = {}
        while not isinstance(found := _search(len(timeline.models), memo, full=full), BisectResult):
            if run.stop is not None and await run.stop():
                raise RunStopped(f"stopped before judging model {found} of {snapshot.repo}")
            memo[found] = await self._evaluate(
                run, timeline, found, thresholds=thresholds, settings=settings
            )
        report = await self._engine(
            run,
            assemble_report,
            root,
            timeline,
            found,
            thresholds=thresholds,
            settings=settings,
            wall_time_s=time.time() - started,
        )
        return TimelineRun(
            repo=snapshot.repo,
            commit_sha=snapshot.commit_sha,
            outcome=found.outcome,
            summary=summarise(report),
            markdown=render_table(report, fmt=TableFormat.MARKDOWN),
            report=report,
            fetched_models=len(memo),
        )

    async def _evaluate(
        self,
        run: "_Run",
        timeline: Timeline,
        index: int,
        *,
        thresholds: Thresholds,
        settings: MetricSettings,
    ) -> StepRecord:
        """Fetch one model (and its external data) and judge it in the engine pool."""
        model = timeline.models[index]
        try:
            for path in (model.onnx, *model.external):
                await self.files.fetch_to(
                    run.gh, run.snapshot, path, run.root, max_bytes=MAX_MODEL_BYTES
                )
        except RepoFileError as error:
            # A model the App cannot fetch counts as broken (failing), like an unloadable one.
            return broken_step(model.name, model.onnx, str(error))
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
class _Run:
    """One bisect in progress: where it reads from, its working copy and its deadline."""

    gh: GitHubAPI
    snapshot: RepoSnapshot
    root: Path
    deadline: float
    stop: StopCheck | None = None
