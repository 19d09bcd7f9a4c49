"""Judge a pull request's registry change: fetch what it touches, review it in the engine, bisect both sides.

The review itself is the engine's pure ``review_registry_change`` (registry diff,
validation, the safety check of new and changed models, promotion verification under the
repository's policy). This module fetches only what that review reads:

1. the registry at the base and at the head commit;
2. the files of every new or changed row at the head (unchanged rows were judged when they
   landed; their files are not fetched);
3. when a row needs a verdict, every ``PROMOTE.json`` (or ``*_PROMOTE.json``) at the head
   and the files each one names (feature table, LOSO reports, models), at their paths
   relative to the verdict.

Then the head's timeline is bisected (and the base's, to say what the change did), with
the nightly's lazy bisect: models unchanged since the base are judged once and remembered.

As in ``bot.judging.bisect_run``, the engine's registry and review modules (which load
numpy, pandas and onnxruntime) are imported where a review runs, not when the web process
imports this module.
"""

from __future__ import annotations

import posixpath
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gidgethub.abc import GitHubAPI

from bot.github.repofiles import RepoFileError, RepoFiles, RepoSnapshot, normalise_path
from bot.judging.bisect_run import (
    MAX_FEATURES_BYTES,
    MAX_MODEL_BYTES,
    MAX_REGISTRY_BYTES,
    TimelineJudge,
    TimelineRun,
)
from bot.judging.pool import EnginePool, EnginePoolError
from bot.repoconfig import RepoConfig
from engine.errors import EngineError, RegistryError, one_line
from engine.policy import PromotionPolicy

if TYPE_CHECKING:
    from engine.registry_review import RegistryReview

# A pull request that names more verdicts than this is judged on the first ones (sorted by
# path); each verdict can pull in a feature table, so the number is kept small.
MAX_VERDICTS = 20
MAX_EVIDENCE_BYTES = 4 * 1024 * 1024
VERDICT_NAME = "PROMOTE.json"


@dataclass(frozen=True)
class SideRun:
    """One side's bisect (base or head): the run, or why it could not run."""

    run: TimelineRun | None
    error: str | None = None


@dataclass(frozen=True)
class ChangeRun:
    """What judging a pull request's registry change found."""

    review: RegistryReview
    head: SideRun
    base: SideRun | None  # None: the base commit has no registry
    verdicts: tuple[str, ...]  # the verdict files read at the head


@dataclass(frozen=True)
class FetchPlan:
    """What the review needs beyond the two registries (from ``plan_fetch``)."""

    model_files: tuple[str, ...]  # repo-relative files of new and changed rows at the head
    needs_verdict: bool


def plan_fetch(base_root: Path | None, head_root: Path, registry: str) -> FetchPlan:
    """The head files of new and changed rows, and whether any row needs a verdict (engine pool).

    A head registry that cannot be loaded needs nothing more: the review reports why.
    """
    from engine.registry import load_registry
    from engine.registry_diff import diff_registries
    from engine.registry_review import changed_model_files

    files = changed_model_files(base_root, head_root, registry)
    try:
        head = load_registry(head_root / registry)
    except RegistryError:
        return FetchPlan(files, needs_verdict=False)
    base = None
    if base_root is not None:
        try:
            base = load_registry(base_root / registry)
        except RegistryError:
            base = None  # the review says the base could not be read
    return FetchPlan(files, needs_verdict=bool(diff_registries(base, head).needs_verdict))


def verdict_paths(snapshot: RepoSnapshot) -> tuple[str, ...]:
    """The PROMOTE verdicts at a commit (``PROMOTE.json`` or ``<name>_PROMOTE.json``), sorted."""
    found = sorted(
        path
        for path, entry in snapshot.files.items()
        if not entry.is_dir
        and (PurePosixPath(path).name == VERDICT_NAME or path.endswith("_" + VERDICT_NAME))
    )
    return tuple(found[:MAX_VERDICTS])


@dataclass(frozen=True)
class RegistryChangeJudge:
    """Everything a pull request's review needs besides the pull request itself."""

    files: RepoFiles
    pool: EnginePool
    timeline: TimelineJudge
    workdir: Path
    time_limit: float = 900.0

    async def judge(
        self,
        gh: GitHubAPI,
        *,
        base: RepoSnapshot,
        head: RepoSnapshot,
        config: RepoConfig,
        base_config: RepoConfig,
        policy: PromotionPolicy,
        full: bool = False,
    ) -> ChangeRun:
        """Review the change of ``config.registry`` from ``base`` to ``head``, then bisect both."""
        root = self.workdir / f"pr-{head.commit_sha[:12]}-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + self.time_limit
        try:
            review, verdicts = await self._review(
                gh,
                root,
                base=base,
                head=head,
                registry=config.registry,
                policy=policy,
                deadline=deadline,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        head_run = await self._bisect(gh, head, config, full=full)
        base_run = None
        if self.files.exists(base, base_config.registry):
            base_run = await self._bisect(gh, base, base_config, full=full)
        return ChangeRun(review=review, head=head_run, base=base_run, verdicts=verdicts)

    async def _review(
        self,
        gh: GitHubAPI,
        root: Path,
        *,
        base: RepoSnapshot,
        head: RepoSnapshot,
        registry: str,
        policy: PromotionPolicy,
        deadline: float,
    ) -> tuple[RegistryReview, tuple[str, ...]]:
        from engine.registry_review import review_registry_change

        base_root, head_root = root / "base", root / "head"
        head_root.mkdir(parents=True)
        await self.files.fetch_to(gh, head, registry, head_root, max_bytes=MAX_REGISTRY_BYTES)
        has_base = self.files.exists(base, registry)
        if has_base:
            base_root.mkdir(parents=True)
            await self.files.fetch_to(gh, base, registry, base_root, max_bytes=MAX_REGISTRY_BYTES)
        plan = await self._engine(
            deadline, plan_fetch, base_root if has_base else None, head_root, registry
        )
        for path in plan.model_files:
            await self._fetch_if_present(gh, head, path, head_root, max_bytes=MAX_MODEL_BYTES)
        verdicts = verdict_paths(head) if plan.needs_verdict else ()
        for verdict in verdicts:
            await self._fetch_evidence(gh, head, verdict, head_root, deadline=deadline)
        review = await self._engine(
            deadline,
            review_registry_change,
            base_root if has_base else None,
            head_root,
            registry,
            verdicts=verdicts,
            policy=policy,
            limits=self.timeline.limits,
        )
        return review, verdicts

    async def _fetch_evidence(
        self, gh: GitHubAPI, head: RepoSnapshot, verdict: str, root: Path, *, deadline: float
    ) -> None:
        """Fetch a verdict and the files it names (a missing one is the review's to report)."""
        from engine.registry_review import verdict_inputs

        await self.files.fetch_to(gh, head, verdict, root, max_bytes=MAX_EVIDENCE_BYTES)
        try:
            named = await self._engine(deadline, verdict_inputs, root / verdict, root=root)
        except (EngineError, EnginePoolError):
            return  # not a readable verdict: the review says why
        folder = PurePosixPath(verdict).parent
        for relative in named:
            path = _join(folder, relative)
            if path is None:
                continue  # outside the repository: the review refuses it
            limit = MAX_FEATURES_BYTES if path.endswith(".parquet") else MAX_MODEL_BYTES
            await self._fetch_if_present(gh, head, path, root, max_bytes=limit)

    async def _fetch_if_present(
        self, gh: GitHubAPI, snapshot: RepoSnapshot, path: str, root: Path, *, max_bytes: int
    ) -> None:
        """Fetch ``path`` when the commit has it; a missing or refused file is left for the review."""
        if not self.files.exists(snapshot, path):
            return
        try:
            await self.files.fetch_to(gh, snapshot, path, root, max_bytes=max_bytes)
        except RepoFileError:
            return  # too large, a symlink, a submodule: absent for the review, which says so

    async def _engine(self, deadline: float, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await self.pool.run_before(deadline, self.time_limit, fn, *args, **kwargs)

    async def _bisect(
        self, gh: GitHubAPI, snapshot: RepoSnapshot, config: RepoConfig, *, full: bool
    ) -> SideRun:
        """Bisect one side; what the repository holds that stops it is a reason, not an error."""
        try:
            return SideRun(await self.timeline.judge(gh, snapshot, config, full=full))
        except (RepoFileError, EngineError, EnginePoolError) as error:
            return SideRun(None, error=one_line(error))


def _join(folder: PurePosixPath, relative: str) -> str | None:
    """``folder/relative`` normalised inside the repository, or None if it leaves it."""
    try:
        return normalise_path(posixpath.normpath((folder / relative).as_posix()))
    except ValueError:
        return None
