"""Bisect a repository's model timeline at one commit: fetch files lazily, judge in the engine pool.

The search itself is the engine's pure ``find_first_regression``. It runs here, on the event
loop, over a memo of finished evaluations: when it asks for a model not judged yet, the
model's blob (and only that one) is fetched and judged in the engine pool, and the search
is replayed. The search costs microseconds, so replaying it ``ceil(log2 N) + 2`` times is
free, and the bisect fetches only the models it visits.
"""

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.enginejobs import Timeline, assemble_report, evaluate_model, read_timeline
from bot.enginepool import EnginePool
from bot.repoconfig import RepoConfig
from bot.repofiles import RepoFileError, RepoFiles, RepoSnapshot
from engine.bisection import BisectResult, Outcome, find_first_regression
from engine.evaluation import MetricSettings, StepRecord
from engine.report import summarise
from engine.threshold import StepStatus, Thresholds

MAX_REGISTRY_BYTES = 1024 * 1024
MAX_FEATURES_BYTES = 256 * 1024 * 1024
# The engine's scoring cap (engine.scoring.ScoringLimits): a larger model is refused anyway.
MAX_MODEL_BYTES = 16 * 1024 * 1024


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


def _unreadable(name: str, path: str, reason: str) -> StepRecord:
    """A model the App could not fetch counts as broken (failing), like an unloadable one."""
    return StepRecord(
        name=name,
        path=path,
        sha256=None,
        status=StepStatus.FAIL,
        reasons=(f"broken: {reason}",),
        broken=reason,
        metrics=None,
        seconds=0.0,
    )


@dataclass(frozen=True)
class TimelineJudge:
    """Everything a bisect of a repository needs besides the repository itself."""

    files: RepoFiles
    pool: EnginePool
    workdir: Path
    evaluations: Path

    async def judge(
        self, gh: GitHubAPI, snapshot: RepoSnapshot, config: RepoConfig, *, full: bool = False
    ) -> TimelineRun:
        """Bisect the timeline of ``config.registry`` at the snapshot's commit."""
        started = time.time()
        root = self.workdir / f"{snapshot.commit_sha[:12]}-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True, exist_ok=True)
        try:
            return await self._judge(gh, snapshot, config, root=root, full=full, started=started)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    async def _judge(
        self,
        gh: GitHubAPI,
        snapshot: RepoSnapshot,
        config: RepoConfig,
        *,
        root: Path,
        full: bool,
        started: float,
    ) -> TimelineRun:
        await self.files.fetch_to(gh, snapshot, config.registry, root, max_bytes=MAX_REGISTRY_BYTES)
        await self.files.fetch_to(gh, snapshot, config.features, root, max_bytes=MAX_FEATURES_BYTES)
        timeline: Timeline = await self.pool.run(
            read_timeline, str(root), config.registry, config.features
        )
        thresholds, settings = config.thresholds(), config.metric_settings()
        memo: dict[int, StepRecord] = {}
        while not isinstance(found := _search(len(timeline.models), memo, full=full), BisectResult):
            memo[found] = await self._evaluate(
                gh, snapshot, timeline, found, root=root, thresholds=thresholds, settings=settings
            )
        scored = sum(1 for record in memo.values() if not record.cached)
        rendered = await self.pool.run(
            assemble_report,
            str(root),
            timeline,
            found,
            thresholds=thresholds,
            settings=settings,
            scored=scored,
            from_store=len(memo) - scored,
            started=started,
        )
        return TimelineRun(
            repo=snapshot.repo,
            commit_sha=snapshot.commit_sha,
            outcome=found.outcome,
            summary=summarise(rendered.report),
            markdown=rendered.markdown,
            report=rendered.report,
            fetched_models=len(memo),
        )

    async def _evaluate(
        self,
        gh: GitHubAPI,
        snapshot: RepoSnapshot,
        timeline: Timeline,
        index: int,
        *,
        root: Path,
        thresholds: Thresholds,
        settings: MetricSettings,
    ) -> StepRecord:
        """Fetch one model (and its external data) and judge it in the engine pool."""
        model = timeline.models[index]
        try:
            for path in (model.onnx, *model.external):
                await self.files.fetch_to(gh, snapshot, path, root, max_bytes=MAX_MODEL_BYTES)
        except RepoFileError as error:
            return _unreadable(model.name, model.onnx, str(error))
        record: StepRecord = await self.pool.run(
            evaluate_model,
            str(root),
            timeline.registry,
            timeline.features,
            index,
            thresholds=thresholds,
            settings=settings,
            cache_dir=str(self.evaluations),
        )
        return record
