"""Resilience of the running service: racing jobs and replicas, SIGKILL mid-job, signed
deliveries to the real process, and refusing to start on bad settings.

Everything talks to the in-process GitHub sandbox over loopback; the subprocess tests run
the real ``python -m bot`` with its environment, as a deployment would.
"""

import asyncio
import copy
import json
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import SERVICES, STORE
from bot.github.policy import ClientPolicy
from bot.handlers.nightly import HISTORY_RUNS
from bot.handlers.nightly_view import NIGHTLY_CHECK
from bot.jobs.worker import WorkerPool
from bot.store import Job, JobSpec, JobState, SqliteStore, Store
from sandbox import Sandbox, SandboxState
from sandbox.faults import FaultKind
from sandbox.records import CheckConclusion, CheckStatus, Installation, Repo
from sandbox.webhooks import load_example, webhook_headers
from tests.bot.servicehelpers import (
    REPO,
    ROOT,
    UNSCHEDULED_CONFIG,
    Seen,
    ServiceProcess,
    any_completed,
    app_settings,
    completed,
    free_port,
    metric_total,
    parse_metrics,
    replica_in_thread,
    running_app,
    seed_nightly_repo,
    seen,
    service_env,
    wait_until,
)

# Real service processes, engine process pools and races of 50 jobs: out of the quick run.
pytestmark = pytest.mark.slow

RACERS = 50
# How often a service process's workers look for a job: often, the tests wait on it.
POLL_S = "0.05"
REGRESSION = "fr-mlp-v06"
# 50 jobs write ~120 times; GitHub's 80 content writes a minute (which the client paces to,
# tested in test_github) would make the test wait a minute. The sandbox has no such limit.
UNPACED = ClientPolicy(writes_per_minute=10_000, writes_per_hour=100_000)
# A comment being created answers only after this long: meanwhile every other job finds no
# comment yet, so the racers really do try to create it at the same time.
COMMENT_POST = r"/repos/[^/]+/[^/]+/issues/\d+/comments$"
ISSUE_POST = r"/repos/[^/]+/[^/]+/issues$"


def widen_the_race(sandbox: Sandbox) -> None:
    """Slow down every comment creation (not updates), so the creations overlap."""
    sandbox.faults.slow("POST", COMMENT_POST, seconds=1.0, times=None)


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluation store holding the models the bisect visits, scored once for the module.

    Jobs that find their model in it skip the scoring, which keeps 50 jobs fast; the
    fetching, judging and publishing still happen for every job.
    """
    data = tmp_path_factory.mktemp("warm")
    asyncio.run(_run_one_nightly(data))
    return data / "evaluations"


async def _run_one_nightly(data: Path) -> None:
    async with Sandbox(SandboxState()) as sandbox:
        _, repo = seed_nightly_repo(sandbox.state)
        settings = app_settings(sandbox, database=data / "warm.sqlite3", data_dir=data)
        async with running_app(settings):  # the scheduler enqueues today's nightly at start
            await wait_until(
                lambda: completed(seen(sandbox.state, repo).checks), what="the warm-up nightly"
            )


def data_dir_with(evaluations: Path, tmp_path: Path) -> Path:
    """A fresh data folder (no blob cache) that already holds the scored evaluations."""
    data = tmp_path / "data"
    shutil.copytree(evaluations, data / "evaluations")
    return data


def nightly_jobs(installation: Installation, count: int) -> list[JobSpec]:
    """``count`` distinct nightly jobs of the same repository (each key its own check run).

    Each is a re-run of the branch (``ref``), so each judges: a scheduled night would show
    an already judged head again without a check run of its own.
    """
    day = datetime.now(UTC).date().isoformat()
    return [
        JobSpec(
            kind="nightly",
            key=f"nightly:{REPO}:race-{n:02d}",
            payload={
                "installation_id": installation.id,
                "repo": REPO,
                "day": day,
                "ref": "main",
                "branch": "main",
            },
        )
        for n in range(count)
    ]


async def enqueue_all(database: Path, jobs: list[JobSpec]) -> None:
    """Enqueue through a connection of its own, as the scheduler of another replica would."""
    async with SqliteStore(database) as store:
        for job in jobs:
            assert await store.enqueue(job) is not None


async def all_done(store: Store, count: int) -> bool:
    """True when ``count`` jobs are done (and none is failed, which would never change)."""
    counts = await store.job_counts()
    assert counts[JobState.FAILED] == 0, "a racing nightly job failed"
    return counts[JobState.DONE] == count


def assert_one_comment_one_issue(sandbox: Sandbox, repo: Repo, keys: list[str]) -> None:
    """One sticky comment on one tracking issue; one completed check run per job key."""
    view = seen(sandbox.state, repo)
    assert len(view.issues) == 1, [i.title for i in view.issues]
    assert len(view.comments) == 1, [c.id for c in view.comments]
    comment = view.comments[0]
    assert comment.issue_number == view.issues[0].number
    assert REGRESSION in comment.body
    assert f"the last {HISTORY_RUNS} runs" in comment.body  # every run recorded, 14 shown
    assert sorted(r.external_id or "" for r in view.checks) == sorted(keys)
    assert all(r.status is CheckStatus.COMPLETED for r in view.checks)
    assert {r.conclusion for r in view.checks} == {CheckConclusion.FAILURE}


async def race(
    database: Path, store: Store, jobs: list[JobSpec], *, pools: Sequence[WorkerPool]
) -> set[str]:
    """Enqueue ``jobs`` while ``pools`` run, wait until all are done; the workers that ran them."""
    await enqueue_all(database, jobs)
    for pool in pools:
        pool.wake()
    await wait_until(
        lambda: all_done(store, len(jobs)), what=f"{len(jobs)} racing jobs", timeout=90
    )
    assert len(await store.recent_runs(REPO, limit=len(jobs) + 1)) == len(jobs)
    holders = set()
    for job_id in range(1, len(jobs) + 1):
        job = await store.get_job(job_id)
        assert job is not None and job.claimed_by is not None
        holders.add(job.claimed_by)
    return holders


def replicas_that_ran(prefixes: set[str], workers: set[str]) -> set[str]:
    """The replicas (worker prefixes) that ran at least one of the jobs."""
    return {prefix for prefix in prefixes if any(w.startswith(prefix + "/") for w in workers)}


async def test_fifty_nightly_jobs_racing_in_one_pool_leave_one_sticky_comment(
    sandbox: Sandbox, tmp_path: Path, evaluations: Path
) -> None:
    installation, repo = seed_nightly_repo(sandbox.state)
    database = tmp_path / "store.sqlite3"
    jobs = nightly_jobs(installation, RACERS)
    settings = app_settings(
        sandbox,
        database=database,
        data_dir=data_dir_with(evaluations, tmp_path),
        workers=6,
        engine_processes=2,  # six workers on one engine process would wait on it in turn
    )
    widen_the_race(sandbox)
    async with running_app(settings, schedule=False, github_policy=UNPACED) as app:
        workers = await race(database, app[STORE], jobs, pools=[app[SERVICES].workers])
    assert len(workers) > 1, "the jobs never ran concurrently"
    assert_one_comment_one_issue(sandbox, repo, [job.key for job in jobs])


async def test_fifty_nightly_jobs_racing_on_two_replicas_leave_one_sticky_comment(
    sandbox: Sandbox, tmp_path: Path, evaluations: Path
) -> None:
    installation, repo = seed_nightly_repo(sandbox.state)
    database = tmp_path / "store.sqlite3"
    jobs = nightly_jobs(installation, RACERS)
    settings = app_settings(
        sandbox, database=database, data_dir=data_dir_with(evaluations, tmp_path), workers=3
    )
    widen_the_race(sandbox)
    async with (
        running_app(settings, schedule=False, github_policy=UNPACED) as first,
        running_app(settings, schedule=False, github_policy=UNPACED) as second,
    ):
        pools = [first[SERVICES].workers, second[SERVICES].workers]
        workers = await race(database, first[STORE], jobs, pools=pools)
    prefixes = {pool.worker_prefix for pool in pools}
    assert replicas_that_ran(prefixes, workers) == prefixes, "one replica ran every job"
    assert_one_comment_one_issue(sandbox, repo, [job.key for job in jobs])


async def test_replicas_on_their_own_event_loops_racing_settle_on_one_tracking_issue(
    sandbox: Sandbox, tmp_path: Path, evaluations: Path
) -> None:
    installation, repo = seed_nightly_repo(sandbox.state)
    database = tmp_path / "store.sqlite3"
    jobs = nightly_jobs(installation, HISTORY_RUNS + 2)
    settings = app_settings(
        sandbox, database=database, data_dir=data_dir_with(evaluations, tmp_path), workers=3
    )
    widen_the_race(sandbox)
    # Opening the issue takes long enough for the other replica to search and find none.
    sandbox.faults.slow("POST", ISSUE_POST, seconds=3.0, times=None)
    async with (
        running_app(settings, schedule=False, github_policy=UNPACED) as app,
        replica_in_thread(settings, schedule=False, github_policy=UNPACED) as other,
    ):
        workers = await race(database, app[STORE], jobs, pools=[app[SERVICES].workers])
    prefixes = {app[SERVICES].workers.worker_prefix, other}
    assert replicas_that_ran(prefixes, workers) == prefixes, "one replica ran every job"
    # Both replicas may open an issue (neither saw the other's); both then settle on the
    # oldest one, so the sticky comment is on it alone, and the other points to it.
    view = seen(sandbox.state, repo)
    kept = min(view.issues, key=lambda issue: issue.number)
    others = [issue for issue in view.issues if issue.number != kept.number]
    assert len(others) <= 1
    for duplicate in others:
        notes = [
            c.body
            for c in sandbox.state.comments.values()
            if c.repo_id == repo.id and c.issue_number == duplicate.number and not c.deleted
        ]
        assert notes == [
            f"model-guard opened this issue at the same moment as #{kept.number} and "
            f"reports on #{kept.number}; this one can be closed."
        ]
    assert [c.issue_number for c in view.comments] == [kept.number]
    assert REGRESSION in view.comments[0].body
    assert sorted(r.external_id or "" for r in view.checks) == sorted(job.key for job in jobs)


# Where the first process stalls (and is killed): a blob fetch happens while the bisect
# runs, after the check run was opened and before the comment; the check-run PATCH is the
# finish, after the comment was written. The stall outlasts the test (the sandbox wakes it
# at teardown), so only the second process can have finished the job.
STALLS = {
    "after-check-opened-before-comment": ("GET", r"/repos/[^/]+/[^/]+/git/blobs/[0-9a-f]+"),
    "after-comment-before-check-completed": ("PATCH", r"/repos/[^/]+/[^/]+/check-runs/\d+"),
}


@dataclass(frozen=True)
class Restarted:
    """What a service killed at one stall and then restarted left behind."""

    state: SandboxState
    repo: Repo
    at_kill: Seen
    jobs_done_on_health: int
    metrics: Mapping[str, float]
    exit_status: int
    job: Job | None
    counts: Mapping[JobState, int]
    runs: int


async def kill_and_restart(point: str, tmp_path: Path, evaluations: Path) -> Restarted:
    """Start the service, SIGKILL it where ``point`` stalls, start another on the same store."""
    async with Sandbox(SandboxState()) as sandbox:
        _, repo = seed_nightly_repo(sandbox.state)
        database, data = tmp_path / "store.sqlite3", data_dir_with(evaluations, tmp_path)
        method, path = STALLS[point]
        sandbox.faults.slow(method, path, seconds=300, times=1)
        env = service_env(
            sandbox,
            database=database,
            data_dir=data,
            port=free_port(),
            MODEL_GUARD_LEASE_S="3",  # the least Settings takes: the restart waits it out
            MODEL_GUARD_POLL_S=POLL_S,
        )
        first = ServiceProcess(env, log_path=tmp_path / "first.log")
        second = ServiceProcess({**env, "PORT": str(free_port())}, log_path=tmp_path / "second.log")
        try:
            await first.start()
            await wait_until(
                lambda: any(f.kind is FaultKind.SLOW for f in sandbox.faults.fired),
                what=f"the first process to reach {method} {path}",
                details=first.logs,
            )
            at_kill = seen(sandbox.state, repo)
            await first.kill()
            sandbox.faults.clear()

            await second.start()
            await wait_until(
                lambda: any_completed(seen(sandbox.state, repo).checks),
                what="the restarted process to complete a check run",
                details=second.logs,
            )
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{second.url}/healthz") as health:
                    assert health.status == 200
                    done = (await health.json())["jobs"]["done"]
                async with session.get(f"{second.url}/metrics") as response:
                    assert response.status == 200
                    metrics = parse_metrics(await response.text())
            exit_status = await second.stop()
            assert exit_status == 0, second.logs()
        finally:
            await first.kill()
            await second.stop()
        sandbox.assert_valid()

    async with SqliteStore(database) as store:
        job = await store.get_job(1)
        counts = await store.job_counts()
        runs = await store.recent_runs(REPO)
    return Restarted(
        state=sandbox.state,
        repo=repo,
        at_kill=at_kill,
        jobs_done_on_health=done,
        metrics=metrics,
        exit_status=exit_status,
        job=job,
        counts=counts,
        runs=len(runs),
    )


@pytest.fixture(scope="module")
def restarted(
    tmp_path_factory: pytest.TempPathFactory, evaluations: Path
) -> Mapping[str, Restarted]:
    """Both kills and restarts, run at the same time: each has its own sandbox, store and
    processes, so neither sees the other, and the module waits for the slower one only."""

    async def both() -> list[Restarted]:
        return await asyncio.gather(
            *(
                kill_and_restart(point, tmp_path_factory.mktemp(point), evaluations)
                for point in sorted(STALLS)
            )
        )

    return dict(zip(sorted(STALLS), asyncio.run(both()), strict=True))


@pytest.mark.parametrize("point", sorted(STALLS))
def test_service_killed_mid_job_and_restarted_finishes_it_once(
    restarted: Mapping[str, Restarted], point: str
) -> None:
    outcome = restarted[point]
    method, _ = STALLS[point]
    assert len(outcome.at_kill.checks) == 1
    assert outcome.at_kill.checks[0].status is CheckStatus.IN_PROGRESS
    assert len(outcome.at_kill.comments) == (0 if method == "GET" else 1)

    assert outcome.jobs_done_on_health == 1
    metrics = outcome.metrics
    assert metrics['model_guard_jobs{state="done"}'] == 1
    assert metric_total(metrics, "model_guard_github_requests_total") > 0
    # The restarted process wrote (or found unchanged) the one sticky comment.
    assert metric_total(metrics, "model_guard_sticky_comments_total") == 1
    assert outcome.exit_status == 0

    job = outcome.job
    assert job is not None and job.state is JobState.DONE
    assert job.attempts == 2  # the killed attempt, then the one that finished
    assert outcome.counts == {
        JobState.QUEUED: 0,
        JobState.RUNNING: 0,
        JobState.DONE: 1,
        JobState.FAILED: 0,
    }
    assert outcome.runs == 1
    view = seen(outcome.state, outcome.repo)
    assert len(view.issues) == 1
    assert len(view.comments) == 1 and REGRESSION in view.comments[0].body
    (check,) = view.checks_for(job.key)
    assert len(view.checks) == 1
    assert check.conclusion is CheckConclusion.FAILURE
    assert REGRESSION in (check.output.summary or "")


def rerequested_payload(installation: Installation, repo: Repo, head_sha: str) -> dict[str, Any]:
    """octokit's check_run.rerequested example, retargeted at the nightly check of ``repo``."""
    payload = copy.deepcopy(load_example("check_run", "rerequested"))
    payload["installation"]["id"] = installation.id
    payload["repository"].update(
        id=repo.id, name=repo.name, full_name=repo.full_name, default_branch=repo.default_branch
    )
    payload["repository"]["owner"]["login"] = repo.owner.login
    payload["check_run"].update(name=NIGHTLY_CHECK, head_sha=head_sha)
    return payload


async def test_running_service_takes_only_the_signed_delivery(
    sandbox: Sandbox, tmp_path: Path, evaluations: Path
) -> None:
    installation, repo = seed_nightly_repo(sandbox.state, config=UNSCHEDULED_CONFIG)
    head_sha = sandbox.state.resolve_ref(repo, repo.default_branch)
    assert head_sha is not None
    body = json.dumps(rerequested_payload(installation, repo, head_sha)).encode()
    secret = sandbox.state.app.webhook_secret
    database = tmp_path / "store.sqlite3"
    env = service_env(
        sandbox,
        database=database,
        data_dir=data_dir_with(evaluations, tmp_path),
        port=free_port(),
        MODEL_GUARD_POLL_S=POLL_S,
    )
    service = ServiceProcess(env, log_path=tmp_path / "service.log")
    signed = webhook_headers("check_run", str(uuid.uuid4()), body, secret)
    sha1_only = webhook_headers("check_run", str(uuid.uuid4()), body, secret)
    del sha1_only["x-hub-signature-256"]
    attempts = {
        "signed": signed,
        "unsigned": webhook_headers("check_run", str(uuid.uuid4()), body, None),
        "sha1-only": sha1_only,
        "wrong-secret": webhook_headers("check_run", str(uuid.uuid4()), body, "not-the-secret"),
    }
    try:
        await service.start()
        await service.wait_ready()
        statuses = {}
        async with aiohttp.ClientSession() as session:
            for name, headers in attempts.items():
                async with session.post(
                    f"{service.url}/webhook", data=body, headers=headers
                ) as response:
                    statuses[name] = response.status
            rerun = f"nightly-rerun:{signed['x-github-delivery']}"
            await wait_until(
                lambda: completed(seen(sandbox.state, repo).checks_for(rerun)),
                what="the re-run the signed delivery asked for",
                details=service.logs,
            )
            async with session.get(f"{service.url}/metrics") as response:
                metrics = parse_metrics(await response.text())
        assert await service.stop() == 0, service.logs()
    finally:
        await service.stop()
    assert statuses == {"signed": 202, "unsigned": 401, "sha1-only": 401, "wrong-secret": 401}
    deliveries = 'model_guard_deliveries_total{event="check_run",outcome="%s"}'
    assert metrics[deliveries % "accepted"] == 1
    assert metrics[deliveries % "refused_401"] == 3
    async with SqliteStore(database) as store:
        assert await store.delivery_count() == 1
        counts = await store.job_counts()
    assert counts[JobState.DONE] == 1 and sum(counts.values()) == 1
    view = seen(sandbox.state, repo)
    (check,) = view.checks
    assert check.head_sha == head_sha and check.conclusion is CheckConclusion.FAILURE


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``model-guard serve`` (as ``python -m bot``) to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_refusal(
    result: subprocess.CompletedProcess[str], *needles: str, logs: bool = False
) -> None:
    """A non-zero exit, the problem named in one last stderr line; no traceback.

    Before the service starts nothing else is written; once it logs (``logs``), the
    JSON log lines come first.
    """
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    if not logs:
        assert len(lines) == 1, result.stderr
    assert all(line.startswith("{") for line in lines[:-1]), result.stderr
    assert lines[-1].startswith("model-guard: error: "), lines[-1]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[-1]


def base_env(tmp_path: Path) -> dict[str, str]:
    """A service environment with everything but credentials, in ``tmp_path``."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MODEL_GUARD_DB": str(tmp_path / "store.sqlite3"),
        "MODEL_GUARD_DATA": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }


def test_serve_refuses_to_start_without_a_webhook_secret(tmp_path: Path) -> None:
    result = serve(base_env(tmp_path))
    assert_one_line_refusal(result, "GITHUB_WEBHOOK_SECRET")


@pytest.mark.parametrize("where", ["GITHUB_PRIVATE_KEY", "GITHUB_PRIVATE_KEY_PATH"])
def test_serve_refuses_to_start_with_a_malformed_private_key(tmp_path: Path, where: str) -> None:
    env = {**base_env(tmp_path), "GITHUB_WEBHOOK_SECRET": "s3cret", "GITHUB_APP_ID": "1"}
    garbage = "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
    if where == "GITHUB_PRIVATE_KEY":
        env[where] = garbage
    else:
        (tmp_path / "key.pem").write_text(garbage)
        env[where] = str(tmp_path / "key.pem")
    result = serve(env)
    assert_one_line_refusal(result, where, "PEM")
    assert "bm90IGEga2V5" not in result.stderr  # the key itself is never echoed
    assert not (tmp_path / "store.sqlite3").exists()  # refused before anything started


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "GITHUB_WEBHOOK_SECRET": "s3cret"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["PORT"] = str(port)
        result = serve(env)
    assert_one_line_refusal(result, f"cannot listen on 127.0.0.1:{port}", logs=True)
