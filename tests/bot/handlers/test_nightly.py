"""End-to-end tests of the nightly job: the real App over HTTP on loopback against the sandbox.

Every test runs the real pieces (SqliteStore in tmp_path, WorkerPool, EnginePool, GitHubClient,
the nightly runner) against the shared GitHub sandbox and asserts on what the sandbox recorded and
on what a maintainer sees there: the tracking comment and the check run. Most tests assemble the
pieces as ``create_app`` does, with an injected clock and sleep, so the client's retries and
rate-limit waits cost no wall time; the scheduler and webhook tests run ``create_app`` itself.
"""

import asyncio
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from gidgethub import sansio

from bot.app import SERVICES
from bot.github import GitHubClient
from bot.github.repofiles import RepoFiles, blob_sha
from bot.handlers.nightly import (
    FIRST_RUNS_PER_EVENT,
    JUDGED_NAMESPACE,
    KIND,
    nightly_runner,
    plan_first_runs,
    plan_rerun,
    plan_suite_rerun,
)
from bot.handlers.nightly_view import NIGHTLY_CHECK, NIGHTLY_PURPOSE, NightlyView, render_alert
from bot.handlers.run import RunServices
from bot.jobs.parking import NAMESPACE as PARKED
from bot.jobs.parking import Resumer
from bot.jobs.scheduler import ScheduledRepo, latest_fire_time
from bot.jobs.worker import WorkerOptions, WorkerPool
from bot.judging.bisect_run import TimelineJudge
from bot.judging.pool import EnginePool
from bot.repoconfig import default_config
from bot.store import Job, JobSpec, JobState, RunRecord, SqliteStore, Store
from bot.surfaces.sticky import marker
from engine.bisection import Outcome
from sandbox import Sandbox
from sandbox.records import (
    CheckConclusion,
    CheckRun,
    CheckStatus,
    Comment,
    Issue,
    IssueState,
    Repo,
)
from sandbox.webhooks import load_example
from tests.bot.handlers.conftest import (
    BISECT,
    CONFIG,
    CONFIG_PATH,
    app_settings,
    repo_files,
    running_app,
    seeded,
    wait_for_jobs,
)

LABELLED_CONFIG = CONFIG + b"tracking_issue:\n  label: video-quality\n"
# Hostile configurations: a label GitHub cannot be sent (a YAML escape naming a lone UTF-16
# surrogate), and a cron with no date to fire on.
SURROGATE_LABEL_CONFIG = CONFIG + b'tracking_issue:\n  label: "\\uD800"\n'
SURROGATE_LABEL_EXPLAINED = (
    "line 7, tracking_issue.label: contains `\\uD800`, a lone UTF-16 surrogate, which is not a "
    "Unicode character"
)
NEVER_FIRING_CONFIG = CONFIG + b'nightly:\n  schedule: "0 0 30 2 *"\n'
NEVER_FIRING_EXPLAINED = (
    "line 7, nightly.schedule: `0 0 30 2 *` never fires: no date in the next 366 days"
)
DAY = "2026-12-01"
DEFAULT_CRON = default_config().schedule
TAG = marker(NIGHTLY_PURPOSE)
# The bisect of the regression timeline (10 models, first bad v06) visits these, and only these.
REGRESSION_VISITED = ("fr-mlp-v00", "fr-mlp-v04", "fr-mlp-v05", "fr-mlp-v06", "fr-mlp-v09")


class FakeTime:
    """The GitHub client's clock and sleep: time moves on (by the slept amount) without waiting."""

    def __init__(self) -> None:
        """Start at the real time, so the sandbox accepts the App's JWTs and tokens."""
        self.offset = 0.0
        self.jobs_offset = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        """The real time plus everything slept so far."""
        return time.time() + self.offset

    def jobs_now(self) -> datetime:
        """The worker pool's clock: real time plus ``advance_jobs`` (never sent to GitHub)."""
        return datetime.now(UTC) + timedelta(seconds=self.jobs_offset)

    def advance_jobs(self, seconds: float) -> None:
        """Let a job's retry backoff pass; GitHub's clock (JWTs, tokens) does not move."""
        self.jobs_offset += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait and let other tasks run; no wall time passes."""
        self.slept.append(seconds)
        self.offset += max(seconds, 0.0)
        await asyncio.sleep(0)


@dataclass
class Service:
    """The App's job side, assembled as ``create_app`` does; ``run`` runs one nightly job."""

    store: Store
    workers: WorkerPool
    data: Path
    time: FakeTime
    resumer: Resumer

    async def run(
        self,
        repo: Repo,
        *,
        installation_id: int,
        key: str | None = None,
        default_branch: str | None = None,
    ) -> JobState:
        """Enqueue the nightly job of ``repo`` for DAY, run the workers until idle, return its state."""
        job = await self.enqueue(
            repo, installation_id=installation_id, key=key, default_branch=default_branch
        )
        return await self.run_due(job)

    async def enqueue(
        self,
        repo: Repo,
        *,
        installation_id: int,
        key: str | None = None,
        default_branch: str | None = None,
    ) -> Job:
        """Enqueue the nightly job of ``repo`` for DAY (two attempts), as the scheduler does.

        ``default_branch``: as the scheduler's installation listing names it in the payload.
        """
        payload: dict[str, Any] = {
            "installation_id": installation_id,
            "repo": repo.full_name,
            "day": DAY,
        }
        if default_branch is not None:
            payload["default_branch"] = default_branch
        spec = JobSpec(
            kind=KIND,
            key=key or f"{KIND}:{repo.full_name}:{DAY}",
            payload=payload,
            max_attempts=2,
        )
        job = await self.store.enqueue(spec)
        assert job is not None, f"job {spec.key} already exists"
        return job

    async def run_due(self, job: Job) -> JobState:
        """Run the workers until no job is due; return the state ``job`` is left in."""
        await self.workers.run_until_idle()
        found = await self.store.get_job(job.id)
        assert found is not None
        return found.state


@asynccontextmanager
async def service(
    sandbox: Sandbox, root: Path, *, evaluations: Path, pool: EnginePool
) -> AsyncIterator[Service]:
    """Start the job side of the App on ``root`` (store, blobs), judging with ``evaluations``."""
    fake = FakeTime()
    state = sandbox.state
    data = root / "data"
    async with aiohttp.ClientSession() as session, SqliteStore(root / "store.sqlite3") as store:
        client = GitHubClient(
            session,
            app_id=str(state.app.id),
            private_key=state.private_key_pem,
            api_url=sandbox.url,
            clock=fake.clock,
            sleep=fake.sleep,
        )
        files = RepoFiles(data / "blobs")
        judge = TimelineJudge(
            files=files, pool=pool, workdir=data / "work", evaluations=evaluations
        )
        nightly = nightly_runner(
            RunServices(client=client, store=store), files=files, timeline=judge
        )
        workers = WorkerPool(
            store, {KIND: nightly}, options=WorkerOptions(workers=1), clock=fake.jobs_now
        )
        resumer = Resumer(store, partial(client.app_api().getitem, "/app"))
        try:
            yield Service(store=store, workers=workers, data=data, time=fake, resumer=resumer)
        finally:
            await client.close()


@pytest.fixture(scope="module")
def engine_pool() -> Iterator[EnginePool]:
    """One engine pool for the module, as the service keeps one for its life.

    Its process pays the interpreter start and the onnxruntime import once, not per test; each
    run still gets its own working folder, so nothing a test judged leaks into another.
    """
    pool = EnginePool(processes=1, timeout=120.0)
    yield pool
    asyncio.run(pool.close())


@pytest.fixture(scope="module")
def shared_evaluations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One evaluation store for the module: a model scored once is read back in later tests."""
    return tmp_path_factory.mktemp("evaluations")


@pytest.fixture
async def app_service(
    sandbox: Sandbox, tmp_path: Path, shared_evaluations: Path, engine_pool: EnginePool
) -> AsyncIterator[Service]:
    """The App's job side over the test's sandbox, sharing the module's evaluation store."""
    async with service(
        sandbox, tmp_path, evaluations=shared_evaluations, pool=engine_pool
    ) as running:
        yield running


# ---- what a maintainer sees --------------------------------------------------------------


def nightly_checks(sandbox: Sandbox, repo: Repo) -> list[CheckRun]:
    """The nightly check runs on ``repo``, oldest first."""
    runs = [
        run
        for run in sandbox.state.check_runs.values()
        if run.repo_id == repo.id and run.name == NIGHTLY_CHECK
    ]
    return sorted(runs, key=lambda run: run.id)


def only_check(sandbox: Sandbox, repo: Repo) -> CheckRun:
    """The one nightly check run on ``repo``, completed."""
    runs = nightly_checks(sandbox, repo)
    assert len(runs) == 1, runs
    assert runs[0].status is CheckStatus.COMPLETED
    return runs[0]


def app_comments(sandbox: Sandbox, repo: Repo) -> list[Comment]:
    """Every live comment the App wrote on ``repo``."""
    return [
        c
        for c in sandbox.state.comments.values()
        if c.repo_id == repo.id and c.via_app and not c.deleted
    ]


def only_comment(sandbox: Sandbox, repo: Repo) -> Comment:
    """The App's one tracking comment on ``repo``."""
    comments = app_comments(sandbox, repo)
    assert len(comments) == 1, [c.body[:80] for c in comments]
    assert TAG in comments[0].body
    return comments[0]


def issues_of(sandbox: Sandbox, repo: Repo) -> list[Issue]:
    """The repository's issues, by number."""
    return sorted(
        (i for (rid, _), i in sandbox.state.issues.items() if rid == repo.id),
        key=lambda i: i.number,
    )


def head_sha(sandbox: Sandbox, repo: Repo) -> str:
    """The commit the default branch points at."""
    sha = sandbox.state.resolve_ref(repo, repo.default_branch)
    assert sha is not None
    return sha


def blob_requests(sandbox: Sandbox, repo: Repo) -> list[str]:
    """The shas of every blob the App downloaded from ``repo``, answered or not, in order."""
    pattern = f"/repos/{re.escape(repo.full_name)}/git/blobs/([0-9a-f]{{40}})"
    return [
        r.path.rsplit("/", 1)[-1] for r in sandbox.requests_to("GET", pattern) if r.status == 200
    ]


def table_rows(body: str) -> list[str]:
    """The model names of the bisect table's rows, in order."""
    return re.findall(r"^\| \d+ \| `([^`]+)` \|", body, flags=re.MULTILINE)


def normalised(text: str) -> str:
    """``text`` without what differs between two identical runs: shas, clock times, durations."""
    text = re.sub(r"\b[0-9a-f]{7,64}\b", "<sha>", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}( UTC)?", "<when>", text)
    text = re.sub(r"/repos?/acme/[a-z-]+|acme/[a-z-]+", "<repo>", text)
    text = re.sub(r"issues/\d+#issuecomment-\d+", "<comment>", text)
    return re.sub(r"\d+(\.\d+)? s\b", "<seconds>", text)


# ---- the real app ------------------------------------------------------------------------


def scheduled_key(repo: Repo, *, cron: str = DEFAULT_CRON) -> str:
    """The job key (and so the check's external id) of the scheduler's latest run of ``repo``."""
    day = latest_fire_time(cron, datetime.now(UTC)).date().isoformat()
    return f"{KIND}:{repo.full_name}:{day}"


# ---- the verdicts ----------------------------------------------------------------------


async def test_scheduled_nightly_on_regression_fails_check_and_opens_labelled_issue(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The real app: the scheduler fires, the worker bisects, the maintainer sees the table."""
    installation_id, repo = seeded(sandbox, repo_files(config=LABELLED_CONFIG))
    settings = app_settings(sandbox, tmp_path)

    async def source() -> list[ScheduledRepo]:
        return [ScheduledRepo(installation_id, repo.full_name, "0 0 * * *")]

    async with running_app(settings, schedule_source=source) as running:
        await wait_for_jobs(running.store, done=1)
    check = only_check(sandbox, repo)
    assert check.head_sha == head_sha(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    assert check.external_id == scheduled_key(repo, cron="0 0 * * *")
    assert check.output.title is not None and "regression" in check.output.title
    assert "fr-mlp-v06 (index 6) is the first model that fails" in (check.output.summary or "")
    assert table_rows(check.output.text or "") == list(REGRESSION_VISITED)
    (issue,) = issues_of(sandbox, repo)
    assert issue.labels == ("video-quality",)
    assert issue.user == sandbox.state.app.bot
    comment = only_comment(sandbox, repo)
    assert comment.issue_number == issue.number
    assert "## model-guard nightly: ❌ regression" in comment.body
    assert "fr-mlp-v06 (index 6) is the first model that fails plcc >= 0.9" in comment.body
    assert table_rows(comment.body) == list(REGRESSION_VISITED)
    assert "| 6 | `fr-mlp-v06` | ❌ fail |" in comment.body
    assert f"issuecomment-{comment.id}" in (check.output.summary or "")


async def test_allgood_timeline_passes_and_says_no_regression(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    first = head_sha(sandbox, repo)
    sandbox.state.commit(repo, {"README.md": b"# models\n"}, message="Docs")
    sandbox.state.create_branch(repo, "experiment")
    sandbox.state.commit(repo, {"notes.txt": b"wip\n"}, message="WIP", branch="experiment")
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    # The default branch's head: not its first commit, not another branch's newer one.
    assert check.head_sha == head_sha(sandbox, repo) != first
    assert "No regression" in (check.output.summary or "")
    comment = only_comment(sandbox, repo)
    assert "## model-guard nightly: ✅ no regression" in comment.body
    assert "No regression" in comment.body
    (issue,) = issues_of(sandbox, repo)
    assert issue.labels == ("model-guard",) and comment.issue_number == issue.number


async def test_existing_labelled_issue_is_reused_for_the_comment(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood", config=LABELLED_CONFIG))
    other = sandbox.state.add_issue(repo, "Unrelated bug", labels=["bug"])
    closed = sandbox.state.add_issue(
        repo, "Old quality report", labels=["video-quality"], state=IssueState.CLOSED
    )
    ours = sandbox.state.add_issue(repo, "Model quality", labels=["video-quality"], user="alice")
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    numbers = [other.number, closed.number, ours.number]
    assert [i.number for i in issues_of(sandbox, repo)] == numbers
    assert only_comment(sandbox, repo).issue_number == ours.number
    assert sandbox.requests_to("POST", f"/repos/{repo.full_name}/issues") == []


# ---- lazy fetching, the evaluation store and a second run ---------------------------------


async def test_regression_bisect_downloads_only_the_models_it_visits(
    sandbox: Sandbox, app_service: Service
) -> None:
    files = repo_files()
    installation_id, repo = seeded(sandbox, files)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    wanted = [CONFIG_PATH, "models/registry.json", "golden/features.parquet"] + [
        f"models/{name}.onnx" for name in REGRESSION_VISITED
    ]
    fetched = blob_requests(sandbox, repo)
    assert len(fetched) == 3 + 5
    assert sorted(fetched) == sorted(blob_sha(files[path]) for path in wanted)


async def test_allgood_bisect_downloads_only_the_head_model(
    sandbox: Sandbox, app_service: Service
) -> None:
    files = repo_files("allgood")
    installation_id, repo = seeded(sandbox, files)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    wanted = [CONFIG_PATH, "models/registry.json", "golden/features.parquet"]
    wanted.append("models/fr-mlp-good-v07.onnx")
    assert sorted(blob_requests(sandbox, repo)) == sorted(blob_sha(files[p]) for p in wanted)


async def test_rerun_same_day_edits_the_comment_and_rescores_nothing(
    sandbox: Sandbox, tmp_path: Path, engine_pool: EnginePool
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    # Its own evaluation store: the first run must score, the second must not.
    evaluations = tmp_path / "evaluations"
    async with service(sandbox, tmp_path, evaluations=evaluations, pool=engine_pool) as app:
        assert await app.run(repo, installation_id=installation_id) is JobState.DONE
        first = only_comment(sandbox, repo)
        assert "5 scored, 0 from the evaluation store" in first.body
        assert "### History (the last 1 run)" in first.body
        blobs = len(blob_requests(sandbox, repo))
        # A re-run of the same commit judges again (an unchanged scheduled night would not).
        rerun = JobSpec(
            kind=KIND,
            key=f"{KIND}:{repo.full_name}:{DAY}:again",
            payload={
                "installation_id": installation_id,
                "repo": repo.full_name,
                "day": DAY,
                "ref": head_sha(sandbox, repo),
                "reason": "re-run requested",
            },
        )
        job = await app.store.enqueue(rerun)
        assert job is not None and await app.run_due(job) is JobState.DONE
    second = only_comment(sandbox, repo)
    assert second.id == first.id
    assert [edit.previous_body for edit in second.edits] == [first.body]
    assert "0 scored, 5 from the evaluation store" in second.body
    assert "### History (the last 2 runs)" in second.body
    assert second.body.count("| ❌ regression |") == 2
    assert table_rows(second.body) == list(REGRESSION_VISITED)
    assert len(issues_of(sandbox, repo)) == 1
    # The blobs come from the disk cache the second time.
    assert len(blob_requests(sandbox, repo)) == blobs
    runs = nightly_checks(sandbox, repo)
    assert [run.conclusion for run in runs] == [CheckConclusion.FAILURE] * 2


async def test_a_regression_names_the_commit_and_the_merged_pull_request_that_introduced_it(
    sandbox: Sandbox, app_service: Service
) -> None:
    state = sandbox.state
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    regression = {f"models/{p.name}": p.read_bytes() for p in (BISECT / "regression").iterdir()}
    pull = state.add_pull(repo, head="promote", files=regression, title="Promote fr-mlp-v06_v09")
    introduced = state.pull_head(repo, pull)
    state.merge_pull(repo, pull.number)
    state.commit(repo, {"README.md": b"# models\n"}, message="Docs")
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    line = (
        f"Introduced by [`{introduced[:7]}`](https://github.com/acme/models/commit/{introduced})"
        f" in [#{pull.number}](https://github.com/acme/models/pull/{pull.number})"
        " (Promote fr-mlp-v06\\_v09)"
    )
    comment = only_comment(sandbox, repo)
    assert "fr-mlp-v06 (index 6) is the first model that fails" in comment.body
    assert line in comment.body
    assert line in (only_check(sandbox, repo).output.summary or "")
    # The listing, the registry at the pull's commit and at the first one, the pull: then
    # the same commit judged again asks GitHub nothing more about who introduced it.
    blame_reads = r"/repos/acme/models/(commits|contents/models/registry\.json|commits/\w+/pulls)"
    assert len(sandbox.requests_to("GET", blame_reads)) == 4
    again = f"{KIND}:{repo.full_name}:{DAY}:again"
    assert await app_service.run(repo, installation_id=installation_id, key=again) is JobState.DONE
    assert len(sandbox.requests_to("GET", blame_reads)) == 4
    assert line in only_comment(sandbox, repo).body


async def test_github_failing_the_blame_still_reports_the_regression(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    sandbox.faults.fail_next("GET", r"/repos/acme/models/commits$", status=502, times=None)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    assert only_check(sandbox, repo).conclusion is CheckConclusion.FAILURE
    comment = only_comment(sandbox, repo)
    assert "fr-mlp-v06 (index 6) is the first model that fails" in comment.body
    assert "Introduced by" not in comment.body


# ---- GitHub failing and recovering ----------------------------------------------------------


async def test_502s_and_secondary_rate_limit_are_retried_to_the_same_result(
    sandbox: Sandbox, app_service: Service
) -> None:
    files = repo_files()
    clean_id, clean = seeded(sandbox, files, name="clean")
    faulty_id, faulty = seeded(sandbox, files, name="faulty")
    assert await app_service.run(clean, installation_id=clean_id) is JobState.DONE
    # The same blobs would come from the disk cache: the faulted run must download them again.
    shutil.rmtree(app_service.data / "blobs")
    base = "/repos/acme/faulty"
    faults = sandbox.faults
    faults.fail_next("GET", f"^{base}/git/blobs/", status=502, times=2)
    faults.fail_next("GET", f"^{base}/git/trees/", status=502, times=2)
    faults.fail_next("POST", f"^{base}/issues/\\d+/comments$", status=502, times=2)
    faults.fail_next("PATCH", f"^{base}/check-runs/\\d+$", status=502, times=2)
    faults.secondary_rate_limit("POST", f"^{base}/check-runs$", retry_after=1)
    assert await app_service.run(faulty, installation_id=faulty_id) is JobState.DONE
    assert faults.pending == []
    assert len(faults.fired) == 9
    assert 1.0 in app_service.time.slept  # the secondary limit's retry-after was honoured
    got, want = only_check(sandbox, faulty), only_check(sandbox, clean)
    assert got.head_sha == head_sha(sandbox, faulty)
    assert got.conclusion is want.conclusion is CheckConclusion.FAILURE
    for part in ("title", "summary", "text"):
        assert normalised(getattr(got.output, part)) == normalised(getattr(want.output, part))
    assert normalised(only_comment(sandbox, faulty).body) == normalised(
        only_comment(sandbox, clean).body
    )
    assert len(issues_of(sandbox, faulty)) == len(issues_of(sandbox, clean)) == 1
    assert len(blob_requests(sandbox, faulty)) == len(blob_requests(sandbox, clean)) == 8


# ---- what the repository gets wrong ---------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "explained"),
    [
        (
            CONFIG.replace(b"min_plcc: 0.9", b"min_plcc: 2"),
            "line 5, gate.min_plcc: must be at most 1, not `2`",
        ),
        (
            CONFIG.replace(b"gate:", b"gatee:"),
            "line 4, gatee: is not a known key; did you mean `gate`?",
        ),
        (SURROGATE_LABEL_CONFIG, SURROGATE_LABEL_EXPLAINED),
        (NEVER_FIRING_CONFIG, NEVER_FIRING_EXPLAINED),
    ],
    ids=["out-of-range", "typo-key", "lone-surrogate-label", "never-firing-cron"],
)
async def test_invalid_config_fails_the_check_and_explains_line_and_key(
    sandbox: Sandbox, app_service: Service, config: bytes, explained: str
) -> None:
    installation_id, repo = seeded(sandbox, repo_files(config=config))
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    assert explained in (check.output.summary or "")
    assert CONFIG_PATH in (check.output.text or "")
    body = only_comment(sandbox, repo).body
    assert "## model-guard nightly: ⚠️ could not judge" in body
    assert explained in body
    # Nothing was judged, and the configured paths are unknown: the built-in defaults are not
    # what this repository asked for, so the comment must not name them.
    assert "Could not judge [`" in body and "Judged [`" not in body
    assert "model/registry.json" not in body and "testdata/bisect" not in body
    # Nothing was judged, so no model was downloaded.
    assert blob_requests(sandbox, repo) == [blob_sha(config)]


@pytest.mark.parametrize(
    ("config", "explained"),
    [
        (SURROGATE_LABEL_CONFIG, SURROGATE_LABEL_EXPLAINED),
        (NEVER_FIRING_CONFIG, NEVER_FIRING_EXPLAINED),
    ],
    ids=["lone-surrogate-label", "never-firing-cron"],
)
async def test_scheduler_runs_a_hostile_config_on_the_default_cron_and_the_run_explains_it(
    sandbox: Sandbox, tmp_path: Path, config: bytes, explained: str
) -> None:
    """The real app and scheduler source: the repository is not silently skipped or wedged."""
    _, repo = seeded(sandbox, repo_files(config=config))
    async with running_app(app_settings(sandbox, tmp_path)) as running:
        await wait_for_jobs(running.store, done=1)
        scheduler = running.app[SERVICES].scheduler
        assert scheduler is not None
        # Ticking again neither raises nor enqueues: the day's run is claimed once.
        assert await scheduler.tick() == []
        assert await scheduler.tick() == []
        counts = await running.store.job_counts()
    assert {state: n for state, n in counts.items() if n} == {JobState.DONE: 1}
    check = only_check(sandbox, repo)
    # Scheduled on the default cron: an invalid file keeps the repository running.
    assert check.external_id == scheduled_key(repo)
    assert check.conclusion is CheckConclusion.FAILURE
    assert explained in (check.output.summary or "")
    body = only_comment(sandbox, repo).body
    assert "## model-guard nightly: ⚠️ could not judge" in body
    assert explained in body
    (issue,) = issues_of(sandbox, repo)
    assert issue.labels == ("model-guard",)  # the default label, not the refused one


async def test_missing_registry_gives_one_line_reason_in_check_and_comment(
    sandbox: Sandbox, app_service: Service
) -> None:
    config = CONFIG.replace(b"models/registry.json", b"models/nope.json")
    installation_id, repo = seeded(sandbox, repo_files(config=config))
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    summary = (check.output.summary or "").split("\n\n")[0]
    assert "models/nope.json" in summary and "missing" in summary
    assert "\n" not in summary and "Traceback" not in (check.output.text or "")
    body = only_comment(sandbox, repo).body
    assert f"**{summary}**" in body
    assert "Could not judge [`" in body and "registry `models/nope.json`" in body


async def test_model_that_is_not_onnx_shows_as_broken_in_the_table(
    sandbox: Sandbox, app_service: Service
) -> None:
    files = repo_files()
    garbage = b"this is not an ONNX model\n"
    files["models/fr-mlp-v09.onnx"] = garbage
    # The registry vouches for the file's bytes, so it is the ONNX parse that fails, not the sha.
    registry = json.loads(files["models/registry.json"])
    for entry in registry["models"]:
        if entry["id"] == "fr-mlp-v09":
            entry["sha256"] = hashlib.sha256(garbage).hexdigest()
    files["models/registry.json"] = json.dumps(registry).encode()
    installation_id, repo = seeded(sandbox, files)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    body = only_comment(sandbox, repo).body
    (row,) = [line for line in body.splitlines() if line.startswith("| 9 | `fr-mlp-v09` |")]
    assert "| ❌ fail |" in row and "broken: not a valid ONNX file" in row
    assert "Traceback" not in body
    assert "fr-mlp-v06 (index 6) is the first model that fails" in body


# ---- the tracking issue as people leave it ---------------------------------------------------


async def test_locked_tracking_issue_still_completes_the_check_and_logs_why(
    sandbox: Sandbox, app_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    issue = sandbox.state.add_issue(repo, "Model quality", labels=["model-guard"], locked=True)
    with caplog.at_level(logging.WARNING):
        assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    # The maintainer looking at the check learns why there is no comment to follow.
    summary = check.output.summary or ""
    assert "Tracking comment:" not in summary
    assert f"{repo.full_name}#{issue.number} is locked, so the App cannot comment" in summary
    assert app_comments(sandbox, repo) == []
    assert len(issues_of(sandbox, repo)) == 1
    lines = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert any(f"#{issue.number}" in line and "locked" in line for line in lines), lines


async def test_human_comment_with_the_marker_is_never_edited(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    issue = sandbox.state.add_issue(repo, "Model quality", labels=["model-guard"])
    pasted = f"{TAG}\nI copied the bot's comment here to discuss it."
    human = sandbox.state.add_comment(repo, issue.number, pasted, user="alice")
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    again = f"{KIND}:{repo.full_name}:{DAY}:again"
    assert await app_service.run(repo, installation_id=installation_id, key=again) is JobState.DONE
    kept = sandbox.state.comments[human.id]
    assert kept.body == pasted and kept.edits == () and not kept.deleted
    ours = only_comment(sandbox, repo)
    assert ours.id != human.id and ours.issue_number == issue.number
    assert sandbox.requests_to("PATCH", f".*/issues/comments/{human.id}") == []
    assert sandbox.requests_to("DELETE", f".*/issues/comments/{human.id}") == []


# ---- Re-run on the check ---------------------------------------------------------------------


def rerequested(repo: Repo, *, installation_id: int, sha: str) -> dict[str, Any]:
    """octokit's real ``check_run.rerequested`` example, pointed at the sandbox's nightly check."""
    payload = load_example("check_run", "rerequested")
    payload["repository"].update(
        id=repo.id, name=repo.name, full_name=repo.full_name, default_branch=repo.default_branch
    )
    payload["repository"]["owner"].update(login=repo.owner.login, id=repo.owner.id)
    payload["installation"]["id"] = installation_id
    payload["check_run"].update(name=NIGHTLY_CHECK, head_sha=sha)
    payload["check_run"]["check_suite"]["head_branch"] = repo.default_branch
    return payload


def test_rerun_plan_judges_the_checked_commit_and_names_its_branch() -> None:
    payload = load_example("check_run", "rerequested")
    payload["check_run"].update(name=NIGHTLY_CHECK, head_sha="d" * 40)
    payload["check_run"]["check_suite"]["head_branch"] = "release/2.1"
    jobs: list[JobSpec] = []
    plan_rerun(sansio.Event(payload, event="check_run", delivery_id="abc-1"), jobs)
    (job,) = jobs
    assert (job.kind, job.key) == ("nightly", "nightly-rerun:abc-1")
    # Every nightly job of a repository shares one serial key, the scheduler's too.
    assert job.serial_key == f"{payload['repository']['full_name'].lower()}#nightly"
    assert job.payload["ref"] == "d" * 40 and job.payload["branch"] == "release/2.1"
    assert job.payload["repo"] == payload["repository"]["full_name"]
    # Another App's check run (or a check of another name) plans nothing.
    payload["check_run"]["name"] = "ci/build"
    plan_rerun(sansio.Event(payload, event="check_run", delivery_id="abc-2"), jobs)
    assert len(jobs) == 1


async def test_rerequested_check_reruns_into_the_same_comment_and_redelivery_runs_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sha = head_sha(sandbox, repo)
    settings = app_settings(sandbox, tmp_path)
    # The real scheduler source: the installed repositories and the cron of each one's config.
    async with running_app(settings) as running:
        await wait_for_jobs(running.store, done=1)
        before = only_comment(sandbox, repo)
        payload = rerequested(repo, installation_id=installation_id, sha=sha)
        guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        delivery = await sandbox.deliver(running.webhook_url, "check_run", payload, guid=guid)
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=2)
        after = only_comment(sandbox, repo)
        checks = nightly_checks(sandbox, repo)
        again = await sandbox.deliver(running.webhook_url, "check_run", payload, guid=guid)
        assert again.status_code == 202
        # The ingress stored (or refused) the delivery before answering: nothing new is queued.
        counts = await running.store.job_counts()
        deliveries = await running.store.delivery_count()
    assert {state: n for state, n in counts.items() if n} == {JobState.DONE: 2}
    assert deliveries == 1
    assert after.id == before.id
    assert [edit.previous_body for edit in after.edits] == [before.body]
    assert "### History (the last 2 runs)" in after.body
    assert f"on `{repo.default_branch}`" in after.body
    assert len(issues_of(sandbox, repo)) == 1
    assert [run.external_id for run in checks] == [scheduled_key(repo), f"nightly-rerun:{guid}"]
    assert {run.head_sha for run in checks} == {sha}
    assert all(run.conclusion is CheckConclusion.SUCCESS for run in checks)
    assert nightly_checks(sandbox, repo) == checks
    assert only_comment(sandbox, repo) == after


# ---- buttons on the nightly check --------------------------------------------------------------


def pressed(
    repo: Repo, *, installation_id: int, sha: str, identifier: str, name: str = NIGHTLY_CHECK
) -> dict[str, Any]:
    """octokit's real ``check_run.requested_action`` example: ``identifier`` pressed."""
    payload = rerequested(repo, installation_id=installation_id, sha=sha)
    example = load_example("check_run", "requested_action")
    payload.update(action="requested_action", requested_action={"identifier": identifier})
    payload["check_run"]["name"] = name
    assert example["action"] == "requested_action"
    return payload


def test_button_plans_a_full_scan_or_a_rerun_of_the_checked_commit_and_nothing_else() -> None:
    payload = load_example("check_run", "requested_action")
    payload["check_run"].update(name=NIGHTLY_CHECK, head_sha="e" * 40)
    jobs: list[JobSpec] = []
    for identifier in ("full-scan", "rerun", "lgtm|26764"):
        payload["requested_action"] = {"identifier": identifier}
        plan_rerun(sansio.Event(payload, event="check_run", delivery_id=identifier), jobs)
    full, rerun = jobs
    assert (full.key, full.payload["full"], full.payload["ref"]) == (
        "nightly-full-scan:full-scan",
        True,
        "e" * 40,
    )
    assert rerun.key == "nightly-rerun:rerun" and "full" not in rerun.payload


async def test_nightly_check_offers_full_scan_and_rerun_and_a_full_scan_judges_every_model(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("regression"))
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    (first,) = nightly_checks(sandbox, repo)
    assert [a.identifier for a in first.actions] == ["full-scan", "rerun"]
    assert len(table_rows(only_comment(sandbox, repo).body)) < 10  # the bisect visits 5
    jobs: list[JobSpec] = []
    payload = pressed(
        repo, installation_id=installation_id, sha=head_sha(sandbox, repo), identifier="full-scan"
    )
    plan_rerun(sansio.Event(payload, event="check_run", delivery_id="press-1"), jobs)
    (spec,) = jobs
    job = await app_service.store.enqueue(spec)
    assert job is not None
    assert await app_service.run_due(job) is JobState.DONE
    full = next(c for c in nightly_checks(sandbox, repo) if c.external_id == spec.key)
    assert full.conclusion is CheckConclusion.FAILURE
    assert len(table_rows(full.output.text or "")) == 10  # every model judged
    assert "fr-mlp-v06" in (full.output.summary or "")


def test_rerun_of_all_checks_on_a_commit_judges_that_commit_again() -> None:
    payload = load_example("check_suite", "rerequested")
    jobs: list[JobSpec] = []
    # octokit's example is a pull request's suite (branch "changes"): the registry check's,
    # not the nightly's, so it plans no nightly.
    plan_suite_rerun(sansio.Event(payload, event="check_suite", delivery_id="s-0"), jobs)
    assert jobs == []
    payload["check_suite"].update(head_branch=payload["repository"]["default_branch"])
    plan_suite_rerun(sansio.Event(payload, event="check_suite", delivery_id="s-1"), jobs)
    (job,) = jobs
    suite = payload["check_suite"]
    assert (job.kind, job.key) == (KIND, "nightly-suite:s-1")
    assert (job.payload["ref"], job.payload["branch"]) == (suite["head_sha"], suite["head_branch"])
    assert job.payload["installation_id"] == payload["installation"]["id"]
    del payload["check_suite"]["head_sha"]
    plan_suite_rerun(sansio.Event(payload, event="check_suite", delivery_id="s-2"), jobs)
    assert len(jobs) == 1  # a malformed payload plans nothing


async def test_rerun_all_checks_on_the_nightly_commit_judges_it_again_into_the_same_comment(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    _, repo = seeded(sandbox, repo_files("allgood"))
    async with running_app(app_settings(sandbox, tmp_path)) as running:
        await wait_for_jobs(running.store, done=1)
        (first,) = nightly_checks(sandbox, repo)
        delivery = await sandbox.deliver_check_suite(
            running.webhook_url, repo, first.check_suite_id
        )
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=2)
    first_run, again = nightly_checks(sandbox, repo)
    assert again.external_id is not None and again.external_id.startswith("nightly-suite:")
    assert again.head_sha == first_run.head_sha
    assert again.conclusion is CheckConclusion.SUCCESS
    assert "### History (the last 2 runs)" in only_comment(sandbox, repo).body


# ---- onboarding: a repository the App was just installed on is judged at once -----------------


def installed(repo: Repo, *, installation_id: int) -> dict[str, Any]:
    """octokit's real ``installation_repositories.added`` example, adding ``repo``."""
    payload = load_example("installation_repositories", "added")
    payload["installation"]["id"] = installation_id
    payload["repositories_added"] = [
        {"id": repo.id, "name": repo.name, "full_name": repo.full_name, "private": False}
    ]
    return payload


def test_first_run_plan_judges_each_installed_repository_once_now() -> None:
    created = load_example("installation", "created")
    jobs: list[JobSpec] = []
    plan_first_runs(sansio.Event(created, event="installation", delivery_id="d-1"), jobs)
    names = [r["full_name"] for r in created["repositories"]]
    assert [job.payload["repo"] for job in jobs] == names
    assert {job.kind for job in jobs} == {KIND}
    assert jobs[0].key == f"nightly-installed:d-1:{names[0]}"
    assert jobs[0].serial_key == f"{names[0].lower()}#nightly"
    assert "ref" not in jobs[0].payload  # the default branch's head
    added = load_example("installation_repositories", "added")
    added["repositories_added"] += [{"full_name": "../escape"}, {"full_name": 7}, "junk"]
    jobs.clear()
    plan_first_runs(sansio.Event(added, event="installation_repositories", delivery_id="d-2"), jobs)
    assert [job.payload["repo"] for job in jobs] == ["Codertocat/Space"]


def test_first_runs_are_capped_per_event_the_scheduler_reaches_the_rest() -> None:
    added = load_example("installation_repositories", "added")
    added["repositories_added"] = [{"full_name": f"org/repo-{i}"} for i in range(500)]
    jobs: list[JobSpec] = []
    plan_first_runs(sansio.Event(added, event="installation_repositories", delivery_id="d"), jobs)
    assert len(jobs) == FIRST_RUNS_PER_EVENT


async def test_installing_on_a_repository_shows_the_tracking_comment_without_waiting_for_night(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("regression"))
    async with running_app(app_settings(sandbox, tmp_path), schedule=False) as running:
        schedules = running.app[SERVICES].schedules
        assert schedules is not None
        assert [s.repo for s in await schedules()] == [repo.full_name]  # the kept list
        later = sandbox.state.add_repo(
            repo.owner.login,
            "later",
            repo_files("allgood"),
            installation=sandbox.state.installations[installation_id],
        )
        payload = installed(repo, installation_id=installation_id)
        delivery = await sandbox.deliver(running.webhook_url, "installation_repositories", payload)
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=1)
        # The scheduler's next tick sees the repositories as they are now, not ten minutes on.
        assert {s.repo for s in await schedules()} == {repo.full_name, later.full_name}
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    assert check.external_id is not None and check.external_id.startswith("nightly-installed:")
    assert "fr-mlp-v06" in only_comment(sandbox, repo).body
    assert len(issues_of(sandbox, repo)) == 1


@pytest.mark.parametrize(
    ("config", "explained"),
    [
        (SURROGATE_LABEL_CONFIG, SURROGATE_LABEL_EXPLAINED),
        (NEVER_FIRING_CONFIG, NEVER_FIRING_EXPLAINED),
    ],
    ids=["lone-surrogate-label", "never-firing-cron"],
)
async def test_installing_on_a_repository_with_a_hostile_config_explains_it_at_once(
    sandbox: Sandbox, tmp_path: Path, config: bytes, explained: str
) -> None:
    installation_id, repo = seeded(sandbox, repo_files(config=config))
    async with running_app(app_settings(sandbox, tmp_path), schedule=False) as running:
        payload = installed(repo, installation_id=installation_id)
        delivery = await sandbox.deliver(running.webhook_url, "installation_repositories", payload)
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=1)
    check = only_check(sandbox, repo)
    assert check.external_id is not None and check.external_id.startswith("nightly-installed:")
    assert check.conclusion is CheckConclusion.FAILURE
    assert explained in (check.output.summary or "")
    assert explained in only_comment(sandbox, repo).body


# ---- GitHub down for longer than the client retries --------------------------------------------


async def test_github_down_past_client_retries_notes_retry_then_next_attempt_finishes_same_check(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    # Five 502s: every attempt the client makes for the first blob fails.
    sandbox.faults.fail_next("GET", "/git/blobs/", status=502, times=5)
    job = await app_service.enqueue(repo, installation_id=installation_id)
    assert await app_service.run_due(job) is JobState.QUEUED
    (running,) = nightly_checks(sandbox, repo)
    assert running.status is CheckStatus.IN_PROGRESS
    assert running.output.title == "Retrying: GitHub did not answer"
    assert "Attempt 1 of 2 failed" in (running.output.summary or "")
    assert app_comments(sandbox, repo) == []
    app_service.time.advance_jobs(3600)  # the job's backoff passes
    assert await app_service.run_due(job) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.id == running.id  # found again by its external id, not opened twice
    assert check.conclusion is CheckConclusion.SUCCESS
    assert "No regression" in only_comment(sandbox, repo).body


async def test_github_down_on_the_last_attempt_reports_the_error_in_check_and_comment(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sandbox.faults.fail_next("GET", "/git/blobs/", status=502, times=None)
    job = await app_service.enqueue(repo, installation_id=installation_id)
    assert await app_service.run_due(job) is JobState.QUEUED
    app_service.time.advance_jobs(3600)
    assert await app_service.run_due(job) is JobState.DONE
    sandbox.faults.clear()
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    summary = (check.output.summary or "").split("\n\n")[0]
    assert summary == (
        "The timeline could not be judged: GitHub kept failing (Bad Gateway) on every attempt"
    )
    assert "This is GitHub failing, not the repository" in (check.output.text or "")
    assert f"**{summary}**" in only_comment(sandbox, repo).body


async def test_comment_writes_failing_on_every_attempt_still_complete_the_check(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sandbox.faults.fail_next("POST", "/issues/\\d+/comments$", status=502, times=None)
    job = await app_service.enqueue(repo, installation_id=installation_id)
    assert await app_service.run_due(job) is JobState.QUEUED
    (running,) = nightly_checks(sandbox, repo)
    assert running.status is CheckStatus.IN_PROGRESS
    assert running.output.title == "Retrying: GitHub did not answer"
    app_service.time.advance_jobs(3600)
    assert await app_service.run_due(job) is JobState.DONE
    sandbox.faults.clear()
    # The verdict reaches the maintainer on the check, with the reason the comment is missing.
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    summary = check.output.summary or ""
    assert summary.startswith("No regression")
    assert "Tracking comment not written: GitHub kept failing (Bad Gateway)" in summary
    assert app_comments(sandbox, repo) == []
    assert len(issues_of(sandbox, repo)) == 1  # the second attempt found the issue it opened


# ---- what the run skeleton guarantees ----------------------------------------------------------


async def test_a_502_after_github_created_the_check_run_leaves_one_check_run(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sandbox.faults.lose_answer("POST", "/check-runs$", status=502)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    # The create was not resent blind: the run GitHub made was found by its external id.
    assert len(sandbox.requests_to("POST", r".*/check-runs")) == 1
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    assert "No regression" in only_comment(sandbox, repo).body


async def test_a_502_after_github_created_the_comment_and_the_issue_leaves_one_of_each(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sandbox.faults.lose_answer("POST", r"/issues$", status=502)
    sandbox.faults.lose_answer("POST", r"/issues/\d+/comments$", status=504)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    assert len(sandbox.requests_to("POST", r".*/issues")) == 1
    assert len(sandbox.requests_to("POST", r".*/issues/\d+/comments")) == 1
    assert len(issues_of(sandbox, repo)) == 1
    assert "No regression" in only_comment(sandbox, repo).body
    check = only_check(sandbox, repo)
    assert f"#issuecomment-{only_comment(sandbox, repo).id}" in (check.output.summary or "")


async def test_an_outage_longer_than_every_attempt_is_run_again_once_github_answers(
    sandbox: Sandbox, app_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("regression"))
    sandbox.faults.fail_next("*", ".*", status=502, times=None)  # GitHub is down
    job = await app_service.enqueue(repo, installation_id=installation_id)
    assert await app_service.run_due(job) is JobState.QUEUED
    app_service.time.advance_jobs(600)  # ten minutes: the retry is due, GitHub is still down
    with caplog.at_level(logging.INFO):
        assert await app_service.run_due(job) is JobState.FAILED
    assert nightly_checks(sandbox, repo) == [] and app_comments(sandbox, repo) == []
    parked = [r for r in caplog.records if "runs again once GitHub answers" in r.getMessage()]
    assert [r.levelno for r in parked] == [logging.ERROR]
    assert list(await app_service.store.list_values(PARKED)) == [job.key]
    # While GitHub is down the resumer only asks; nothing is enqueued.
    assert await app_service.resumer.resume() == []
    sandbox.faults.clear()  # GitHub answers again
    (resumed,) = await app_service.resumer.resume()
    assert resumed == f"{job.key}~resume1"
    assert await app_service.store.list_values(PARKED) == {}
    await app_service.workers.run_until_idle()
    check = only_check(sandbox, repo)
    assert check.external_id == job.key  # the day's own check run
    assert check.conclusion is CheckConclusion.FAILURE
    assert "fr-mlp-v06" in only_comment(sandbox, repo).body
    (run,) = await app_service.store.recent_runs(repo.full_name)
    assert run.day == DAY and run.outcome == "regression"
    assert await app_service.resumer.resume() == []  # nothing left parked


async def test_github_failing_the_judging_on_the_last_attempt_reports_it_then_runs_again(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))
    sandbox.faults.fail_next("GET", "/git/blobs/", status=502, times=None)
    job = await app_service.enqueue(repo, installation_id=installation_id)
    assert await app_service.run_due(job) is JobState.QUEUED
    app_service.time.advance_jobs(3600)
    assert await app_service.run_due(job) is JobState.DONE
    reported = only_check(sandbox, repo)
    assert reported.conclusion is CheckConclusion.FAILURE  # the user sees why, at once
    sandbox.faults.clear()
    assert len(await app_service.resumer.resume()) == 1
    await app_service.workers.run_until_idle()
    check = only_check(sandbox, repo)
    assert check.id == reported.id
    assert check.conclusion is CheckConclusion.SUCCESS
    sticky, alert = app_comments(sandbox, repo)
    assert "No regression" in sticky.body and TAG in sticky.body
    assert "could not judge → green" in alert.body  # the watchers learn it is judged now
    # The history tells both: GitHub failing the first run, then the verdict.
    runs = await app_service.store.recent_runs(repo.full_name)
    assert [run.outcome for run in runs] == ["no_regression", "error"]


async def test_a_bug_while_writing_the_comment_still_completes_the_check_saying_why(
    sandbox: Sandbox, app_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    installation_id, repo = seeded(sandbox, repo_files("allgood"))

    def broken(*args: object, **kwargs: object) -> str:
        raise KeyError("history")

    monkeypatch.setattr("bot.handlers.nightly.render_tracking_comment", broken)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    assert "Tracking comment not written: model-guard failed: KeyError: 'history'" in (
        check.output.summary or ""
    )


# ---- alerts when the outcome changes ----------------------------------------------------------


def alerts_of(sandbox: Sandbox, repo: Repo) -> list[Comment]:
    """The App's alert comments on ``repo`` (new comments, not the sticky one)."""
    return [c for c in app_comments(sandbox, repo) if "model-guard:notice:" in c.body]


async def test_a_green_to_red_night_posts_exactly_one_alert_and_a_steady_night_none(
    sandbox: Sandbox, app_service: Service
) -> None:
    mentioned = CONFIG + b"alerts:\n  mention: ['@acme/vq-team']\n"
    installation_id, repo = seeded(sandbox, repo_files("allgood", config=mentioned))
    green = await app_service.run(repo, installation_id=installation_id, key="nightly:day-1")
    assert green is JobState.DONE
    assert alerts_of(sandbox, repo) == []  # the first run changes nothing
    regression = {f"models/{p.name}": p.read_bytes() for p in (BISECT / "regression").iterdir()}
    sandbox.state.commit(repo, regression, message="Promote fr-mlp-v06..v09")
    red = await app_service.run(repo, installation_id=installation_id, key="nightly:day-2")
    assert red is JobState.DONE
    (alert,) = alerts_of(sandbox, repo)
    assert "green → red" in alert.body and "fr-mlp-v06" in alert.body
    assert "#issuecomment-" in alert.body  # it links the tracking comment
    assert alert.body.endswith("cc @acme/vq-team")
    # The same run again (a crashed worker's job re-run) and a steady red night add nothing.
    job = await app_service.store.enqueue(
        JobSpec(
            kind=KIND,
            key="nightly:day-2~again",
            payload={"installation_id": installation_id, "repo": repo.full_name, "day": DAY},
        )
    )
    assert job is not None and await app_service.run_due(job) is JobState.DONE
    assert len(alerts_of(sandbox, repo)) == 1
    assert len(app_comments(sandbox, repo)) == 2  # the sticky comment and the one alert


def test_alert_names_the_change_and_mentions_whom_the_repository_configured() -> None:
    now = datetime(2026, 12, 5, 4, 37, tzinfo=UTC)
    view = NightlyView(
        repo="acme/models",
        branch="main",
        commit_sha="a" * 40,
        outcome=Outcome.NO_REGRESSION,
        summary="No regression | all good",
        details="",
        finished_at=now,
        registry="models/registry.json",
        features="golden/features.parquet",
    )
    red = RunRecord("acme/models", "2026-12-04", "b" * 40, "regression", "Regression", now)
    green = replace(red, outcome="no_regression")
    error = replace(red, outcome="error")
    assert render_alert(view, None, comment_url=None) is None
    assert render_alert(view, green, comment_url=None) is None
    text = render_alert(view, red, comment_url="u", mentions=("@acme/vq-team", "@octocat"))
    assert text is not None
    assert text.startswith("**model-guard nightly: red → green** on `main`")
    assert "No regression \\| all good" in text and "[the tracking comment](u)" in text
    assert text.endswith("cc @acme/vq-team @octocat")
    assert "could not judge → green" in (render_alert(view, error, comment_url=None) or "")


# ---- families: one timeline per family, frame models not judged ---------------------------


def mixed_repo(config: bytes = CONFIG) -> dict[str, bytes]:
    """Two FR families (one regressing, one fine) and three frame models, as in tests/families.py."""
    from tests.families import mixed_files

    return {**mixed_files(), CONFIG_PATH: config}


async def test_nightly_judges_each_family_in_one_comment_and_never_alarms_on_frame_models(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, mixed_repo())
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE  # the worst family regresses
    assert "fr-mlp-v06" in (check.output.title or "")
    comment = only_comment(sandbox, repo)
    body = comment.body
    assert "#### Family `fr/features6`: ❌ Regression: fr-mlp-v06 (index 6)" in body
    assert "#### Family `fr/good`: ✅ No regression" in body
    assert "`nr-frames-v1` (nr/frames): not judged (kind nr: needs frames)" in body
    assert "`filter-denoise-v1` (filter/frames): not judged (kind filter: needs frames)" in body
    assert "broken" not in body


async def test_nightly_config_selects_the_families_it_judges(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, mixed_repo(CONFIG + b"families: [fr/good]\n"))
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.SUCCESS
    body = only_comment(sandbox, repo).body
    assert "fr/good" in body and "fr-mlp-v06" not in body
    assert "not judged (kind nr: needs frames)" in body


async def test_nightly_with_an_unknown_family_fails_in_one_line_naming_the_known_ones(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, mixed_repo(CONFIG + b"families: [fr/missing]\n"))
    await app_service.run(repo, installation_id=installation_id)
    check = only_check(sandbox, repo)
    assert check.conclusion is CheckConclusion.FAILURE
    shown = f"{check.output.summary}\n{check.output.text}"
    assert "unknown family 'fr/missing'" in shown and "fr/features6, fr/good" in shown


async def test_nightly_checks_quantised_twins_against_their_parent_in_the_comment(
    sandbox: Sandbox, app_service: Service
) -> None:
    # The App fetches each int8 twin and its parent and checks the PLCC drop, as the CLI does.
    import pandas as pd

    from tests.engine.onnx_factory import int8_model, linear_model
    from tests.families import BISECT, FEATURES, REGISTRY

    golden = pd.read_parquet(BISECT / "features.parquet")
    x = golden[["adm2", "vif_scale0", "vif_scale1", "vif_scale2", "vif_scale3", "motion2"]]
    solution, *_ = np.linalg.lstsq(
        np.c_[x.to_numpy(np.float64), np.ones(len(x))], golden["mos"].to_numpy(), rcond=None
    )
    weight = solution[:6].reshape(6, 1).astype(np.float32)
    skewed = weight.copy()
    skewed[5] *= -20  # a twin much worse than its parent
    models = {
        "fp32": linear_model(weight).SerializeToString(),
        "fp32.int8": int8_model(weight).SerializeToString(),
        "bad.int8": int8_model(skewed).SerializeToString(),
    }
    rows: list[dict[str, object]] = []
    for number, (name, data) in enumerate(models.items()):
        row: dict[str, object] = {
            "id": name,
            "kind": "fr",
            "onnx": f"{name}.onnx",
            "sha256": hashlib.sha256(data).hexdigest(),
            "smoke": True,
            "opset": 17,
            "license": "MIT",
            "timeline": number,
        }
        if name == "fp32":
            row["quant_accuracy_budget_plcc"] = 0.02
        else:
            row["quantised_from"] = "fp32"
        rows.append(row)
    files = {f"models/{name}.onnx": data for name, data in models.items()}
    files[REGISTRY] = json.dumps({"schema_version": 1, "models": rows}).encode()
    files[FEATURES] = (BISECT / "features.parquet").read_bytes()
    files[CONFIG_PATH] = CONFIG
    installation_id, repo = seeded(sandbox, files)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    body = only_comment(sandbox, repo).body
    assert "fp32.int8 vs fp32: pass" in body
    assert "bad.int8 vs fp32: FAIL" in body
    assert "But 1 quantised twin(s) fail their PLCC budget: bad.int8." in body


async def test_nightly_judges_an_imported_field_registry_without_a_false_alarm(
    sandbox: Sandbox, app_service: Service, tmp_path: Path
) -> None:
    # The 24-row registry in the field's format (frame models, probes, standardised and
    # codec-aware regressors, int8 twins), imported beside its source, judged by the App.
    from engine.registry_import import import_registry
    from tests.families import BISECT, FEATURES
    from tests.fixtures.foreign_registry import write_foreign_registry

    source = write_foreign_registry(tmp_path / "tiny").registry
    imported = import_registry(source)
    folder = source.parent
    files = {
        f"model/tiny/{path.relative_to(folder).as_posix()}": path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    files["model/tiny/model-guard.json"] = json.dumps(imported.document, indent=2).encode()
    files[FEATURES] = (BISECT / "features.parquet").read_bytes()
    files[CONFIG_PATH] = CONFIG.replace(b"models/registry.json", b"model/tiny/model-guard.json")
    installation_id, repo = seeded(sandbox, files)
    assert await app_service.run(repo, installation_id=installation_id) is JobState.DONE
    check = only_check(sandbox, repo)
    body = only_comment(sandbox, repo).body
    assert check.conclusion is CheckConclusion.SUCCESS, body
    for family in ("fr/features6", "fr/features6+codec14", "fr/features6+codec18"):
        assert f"Family `{family}`: ✅ No regression" in body
    assert "`nr_metric_v1` (nr/frames): not judged (kind nr: needs frames)" in body
    assert "fr_tiny_v3_int8 vs fr_tiny_v3: pass" in body
    assert "broken" not in body


# ---- requests per night ----------------------------------------------------------------------


def repo_requests(sandbox: Sandbox, since: int) -> list[str]:
    """``METHOD /route`` of every request about a repository since ``since`` (not tokens, /app)."""
    return [sandbox.route_of(r) for r in sandbox.requests[since:] if r.path.startswith("/repos/")]


def with_new_model(files: dict[str, bytes]) -> dict[str, bytes]:
    """The changes that add ``fr-mlp-v10`` (the regression timeline's bad head) to the registry."""
    model = (BISECT / "regression" / "fr-mlp-v09.onnx").read_bytes()
    registry = json.loads(files["models/registry.json"])
    registry["models"].append(
        {
            **registry["models"][-1],
            "id": "fr-mlp-v10",
            "onnx": "fr-mlp-v10.onnx",
            "sha256": hashlib.sha256(model).hexdigest(),
            "notes": "v10: a new model",
            "timeline": len(registry["models"]),
        }
    )
    text = json.dumps(registry, indent=2).encode() + b"\n"
    return {"models/registry.json": text, "models/fr-mlp-v10.onnx": model}


async def night(app: Service, repo: Repo, installation_id: int, key: str) -> JobState:
    """A scheduled nightly, the default branch named in its payload as the scheduler names it."""
    return await app.run(
        repo, installation_id=installation_id, key=key, default_branch=repo.default_branch
    )


async def test_an_unchanged_night_makes_three_requests_and_still_shows_it_ran(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    assert await night(app_service, repo, installation_id, "nightly:day-1") is JobState.DONE
    judged = only_comment(sandbox, repo)
    blobs = len(blob_requests(sandbox, repo))
    before = len(sandbox.requests)
    assert await night(app_service, repo, installation_id, "nightly:day-2") is JobState.DONE
    made = repo_requests(sandbox, before)
    assert len(made) <= 3, made
    assert made == [
        "GET /repos/{owner}/{repo}/commits/{ref:.+}",
        "GET /repos/{owner}/{repo}/issues/{issue_number}",
        "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}",
    ]
    # One comment, edited: tonight's row in the history and the line saying it was checked.
    comment = only_comment(sandbox, repo)
    assert comment.id == judged.id
    assert "### History (the last 2 runs)" in comment.body
    assert comment.body.count("| ❌ regression |") == 2
    assert "Last checked at" in comment.body and "not judged again" in comment.body
    assert table_rows(comment.body) == list(REGRESSION_VISITED)
    # The commit's one check run still carries the verdict; nothing was downloaded again.
    assert only_check(sandbox, repo).conclusion is CheckConclusion.FAILURE
    assert len(blob_requests(sandbox, repo)) == blobs
    runs = await app_service.store.recent_runs(repo.full_name, limit=5)
    assert [run.outcome for run in runs] == ["regression", "regression"]


async def test_an_unchanged_night_after_the_comment_was_deleted_writes_it_again(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    assert await night(app_service, repo, installation_id, "nightly:day-1") is JobState.DONE
    sandbox.state.delete_comment(repo, only_comment(sandbox, repo).id)  # a person deleted it
    assert await night(app_service, repo, installation_id, "nightly:day-2") is JobState.DONE
    comment = only_comment(sandbox, repo)
    assert "### History (the last 2 runs)" in comment.body
    assert "❌ regression" in comment.body and "Last checked at" in comment.body
    assert only_check(sandbox, repo).conclusion is CheckConclusion.FAILURE


async def test_an_unchanged_night_after_the_issue_was_closed_reports_on_a_new_issue(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    assert await night(app_service, repo, installation_id, "nightly:day-1") is JobState.DONE
    (first,) = issues_of(sandbox, repo)
    sandbox.state.update_issue(repo, first.number, state=IssueState.CLOSED)
    assert await night(app_service, repo, installation_id, "nightly:day-2") is JobState.DONE
    (_, second) = issues_of(sandbox, repo)
    assert second.state is IssueState.OPEN
    live = [c for c in app_comments(sandbox, repo) if c.issue_number == second.number]
    assert len(live) == 1 and "Last checked at" in live[0].body


async def test_an_unchanged_night_that_cannot_comment_says_so_on_a_completed_check(
    sandbox: Sandbox, app_service: Service
) -> None:
    installation_id, repo = seeded(sandbox, repo_files())
    assert await night(app_service, repo, installation_id, "nightly:day-1") is JobState.DONE
    (issue,) = issues_of(sandbox, repo)
    # A maintainer deleted the comment and locked the issue: no new comment can be written.
    sandbox.state.delete_comment(repo, only_comment(sandbox, repo).id)
    sandbox.state.update_issue(repo, issue.number, locked=True)
    assert await night(app_service, repo, installation_id, "nightly:day-2") is JobState.DONE
    first, second = nightly_checks(sandbox, repo)
    assert second.head_sha == first.head_sha and second.external_id == "nightly:day-2"
    assert second.status is CheckStatus.COMPLETED
    assert second.conclusion is CheckConclusion.FAILURE
    assert "Tracking comment not written" in (second.output.summary or "")
    assert "is locked" in (second.output.summary or "")


@pytest.mark.parametrize("change", ["new model", "config", "model-guard"])
async def test_a_night_after_anything_that_decides_the_verdict_changed_judges_again(
    sandbox: Sandbox, app_service: Service, change: str
) -> None:
    files = repo_files("allgood")
    installation_id, repo = seeded(sandbox, files)
    assert await night(app_service, repo, installation_id, "nightly:day-1") is JobState.DONE
    assert only_check(sandbox, repo).conclusion is CheckConclusion.SUCCESS
    if change == "new model":
        sandbox.state.commit(repo, with_new_model(files), message="Add fr-mlp-v10")
    elif change == "config":
        sandbox.state.commit(repo, {CONFIG_PATH: CONFIG.replace(b"0.9", b"0.999")}, message="Gate")
    else:  # the store remembers a verdict another model-guard judged
        store = app_service.store
        text = await store.get_value(JUDGED_NAMESPACE, repo.full_name.lower())
        assert text is not None
        await store.set_value(
            JUDGED_NAMESPACE,
            repo.full_name.lower(),
            text.replace('"fingerprint": "', '"fingerprint": "x'),
        )
    before = len(sandbox.requests)
    assert await night(app_service, repo, installation_id, "nightly:day-2") is JobState.DONE
    made = repo_requests(sandbox, before)
    # A job's first attempt opens its check run without listing the commit's check runs.
    assert "GET /repos/{owner}/{repo}/commits/{ref:.+}/check-runs" not in made
    assert made.count("POST /repos/{owner}/{repo}/check-runs") == 1
    runs = nightly_checks(sandbox, repo)
    assert len(runs) == 2 and runs[1].status is CheckStatus.COMPLETED
    assert runs[1].head_sha == head_sha(sandbox, repo)
    (comment,) = [c for c in app_comments(sandbox, repo) if TAG in c.body]
    assert "Last checked at" not in comment.body
    if change == "new model":
        assert runs[1].conclusion is CheckConclusion.FAILURE
        assert "fr-mlp-v10" in comment.body
        # Only what changed is downloaded: the registry and the new model (the rest is cached).
        downloaded = {r.path.rsplit("/", 1)[-1] for r in sandbox.requests[before:]}
        new = with_new_model(files)
        assert {blob_sha(new[p]) for p in new} <= downloaded
        assert len(blob_requests(sandbox, repo)) == len(set(blob_requests(sandbox, repo)))
