"""Soak: real ``model-guard serve`` replicas under webhooks, nightly ticks and GitHub failures.

Run: ``python -m bench.soak [--seconds 120] [--store sqlite|postgres] [--replicas N]
[--rate 4] [--no-faults] [--kill-one] [--postgres URL]``.

Starts the in-process GitHub sandbox with a few installed repositories (the bundled
regression timeline, each with a pull request for ``/bisect`` and one changing the
registry), then ``--replicas`` service processes (``python -m bot``) on one fresh store: a
new SQLite file, or a new schema on the PostgreSQL server at ``--postgres`` or
``$MODEL_GUARD_TEST_PG`` (dropped afterwards). For ``--seconds`` it sends signed deliveries
at ``--rate`` a second, spread over the replicas (``/bisect`` commands, ``/bisect help``,
plain comments, pushes to the registry pull request with their ``synchronize``), while
every replica's scheduler ticks every half second (one nightly per repository and day is
all the store lets through) and, unless ``--no-faults``, the sandbox answers 502s, secondary
rate limits and slow answers in bursts. ``--kill-one`` SIGKILLs the first replica while it
runs a job, half way. Then it stops sending, waits for the store to drain, and checks the end
state: every accepted delivery stored once with its jobs, every job done or failed with its
reason, no check run left open, at most one check run per job key and one sticky comment
per marker, one nightly per repository and day. The service processes' resident memory is
sampled every second; the report gives the median of each quarter of the run.

The same machinery (``run_fleet``) backs the multi-replica SIGKILL test and the short soak
tests (``tests/bot/test_replicas.py``). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import memory_mib
from bot.demo import DEFAULT_FEATURES, DEFAULT_REGISTRY, demo_files, manifest_permissions
from bot.handlers.bisect import KIND as BISECT
from bot.handlers.bisect import command_key
from bot.handlers.nightly import KIND as NIGHTLY
from bot.handlers.registry import KIND as REGISTRY
from bot.jobs.parking import NAMESPACE as PARKED
from bot.store import Job, JobState, Store
from bot.store.select import create_store
from sandbox import Sandbox, SandboxState
from sandbox.events import issue_comment_payload, pull_request_payload
from sandbox.records import CheckStatus, Issue, Repo
from sandbox.render import Renderer
from tests.bot.servicehelpers import CONFIG, ServiceProcess, free_port, service_env

ROOT = Path(__file__).resolve().parent.parent
OWNER = "acme"
MAINTAINER = "maintainer"
KINDS = (BISECT, REGISTRY, NIGHTLY)
STICKY = re.compile(r"<!-- model-guard:([a-z0-9-]+) -->")
# The failures GitHub answers with now and then (bursts, each limited, so GitHub recovers).
COMMENT_POST = r"/repos/[^/]+/[^/]+/issues/\d+/comments$"
BLOB_GET = r"/repos/[^/]+/[^/]+/git/blobs/[0-9a-f]+$"
CHECK_WRITE = r"/repos/[^/]+/[^/]+/check-runs(/\d+)?$"


@dataclass(frozen=True)
class FleetPlan:
    """One run: the store, the replicas, what is sent (for ``seconds`` or ``deliveries``)."""

    store: str  # "sqlite" or "postgres"
    replicas: int = 1
    repos: int = 3
    seconds: float | None = None
    deliveries: int | None = None
    rate: float = 4.0  # deliveries a second when sending for ``seconds``
    concurrency: int = 8  # deliveries in flight when sending a count
    faults: bool = True
    kill_one: bool = False
    workers: int = 2
    postgres_url: str | None = None
    drain_s: float = 180.0  # how long the store may take to drain after the last delivery


@dataclass(frozen=True)
class Sample:
    """One replica's resident memory at one moment."""

    replica: int
    at: float
    rss_mib: float


@dataclass(frozen=True)
class KilledJob:
    """The job a replica held when it was killed: its key, its attempt, and whether it was
    still running then (rather than finished a moment before the signal)."""

    key: str
    attempt: int
    mid_job: bool


@dataclass(frozen=True)
class FleetOutcome:
    """What the run left: in the store, in the sandbox, and the memory samples."""

    plan: FleetPlan
    sent: int  # distinct deliveries GitHub (the driver) sent
    accepted: int  # of them, answered 202 by some replica (after retries on another)
    stored: int  # deliveries the store holds
    jobs: tuple[Job, ...]
    expected_keys: frozenset[str]  # the job keys the accepted deliveries plan
    parked: int  # runs still waiting for GitHub to answer
    open_checks: tuple[str, ...]  # check runs not completed: "name external_id status"
    checks_per_key: Mapping[str, int]
    stickies: Mapping[str, int]  # "repo#issue purpose" -> live App comments with that marker
    nightlies: Mapping[str, int]  # "repo day" -> nightly jobs
    repos: tuple[str, ...]
    killed: KilledJob | None  # the job the killed replica was running
    faults_fired: Mapping[str, int]
    violations: int  # OpenAPI violations in the sandbox traffic
    samples: tuple[Sample, ...]
    drained_s: float
    wall_s: float

    @property
    def counts(self) -> Counter[JobState]:
        """Jobs by state."""
        return Counter(job.state for job in self.jobs)

    def problems(self, *, failures_allowed: bool) -> list[str]:
        """Everything that breaks the end-state guarantees, one line each (empty when none)."""
        found: list[str] = []
        keys = Counter(job.key for job in self.jobs)
        found += [f"job key stored {n} times: {key}" for key, n in keys.items() if n > 1]
        found += [f"job lost: {key}" for key in sorted(self.expected_keys - set(keys))]
        if self.stored != self.accepted:
            found.append(f"{self.accepted} deliveries accepted, {self.stored} stored")
        for job in self.jobs:
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                found.append(f"job {job.key} left {job.state.value}")
            elif job.state is JobState.FAILED and not failures_allowed:
                found.append(f"job {job.key} failed: {job.last_error}")
            elif job.state is JobState.FAILED and not job.last_error:
                found.append(f"job {job.key} failed without a recorded reason")
        if self.parked:
            found.append(f"{self.parked} runs still parked")
        found += [f"check run left open: {check}" for check in self.open_checks]
        found += [f"{n} check runs for {k}" for k, n in self.checks_per_key.items() if n > 1]
        found += [f"{n} sticky comments for {k}" for k, n in self.stickies.items() if n > 1]
        found += [f"{n} nightly runs for {k}" for k, n in self.nightlies.items() if n != 1]
        days = {key.split(" ")[0] for key in self.nightlies}
        found += [f"no nightly run for {repo}" for repo in self.repos if repo not in days]
        if self.violations:
            found.append(f"{self.violations} OpenAPI violations in the sandbox traffic")
        return found

    def memory(self) -> dict[int, tuple[float, ...]]:
        """Per replica: the median RSS (MiB) of each quarter of its samples, in time order."""
        figures: dict[int, tuple[float, ...]] = {}
        for replica in sorted({s.replica for s in self.samples}):
            values = [s.rss_mib for s in self.samples if s.replica == replica]
            size = max(1, len(values) // 4)
            quarters = [values[i * size : (i + 1) * size] for i in range(3)] + [values[3 * size :]]
            figures[replica] = tuple(statistics.median(q) for q in quarters if q)
        return figures


# ---- the world: repositories, pull requests, deliveries ------------------------------------


@dataclass
class World:
    """The sandbox's repositories and the pull requests the deliveries are about."""

    sandbox: Sandbox
    repos: list[Repo]
    bisect_pulls: dict[int, Issue] = field(default_factory=dict)  # repo id -> pull request
    registry_pulls: dict[int, Issue] = field(default_factory=dict)
    pushes: Counter[int] = field(default_factory=Counter)


def seed_world(sandbox: Sandbox, count: int) -> World:
    """Install the App on ``count`` repositories, each with a /bisect and a registry pull request.

    Each repository is its own organisation's installation: the App paces its writes per
    installation (GitHub's secondary limits are per installation), so one installation
    for every repository would measure the pacer rather than the replicas.
    """
    state = sandbox.state
    files = demo_files(DEFAULT_REGISTRY, DEFAULT_FEATURES)
    files[".github/model-guard.yml"] = CONFIG
    world = World(sandbox, [])
    for n in range(count):
        owner = f"{OWNER}-{n}"
        installation = state.add_installation(owner, permissions=manifest_permissions())
        repo = state.add_repo(owner, "video-models", files, installation=installation)
        state.set_permission(repo, MAINTAINER, "write")
        world.repos.append(repo)
        world.bisect_pulls[repo.id] = state.add_pull(
            repo, head="docs", files={"README.md": b"# video models\n"}, title="Document"
        )
        world.registry_pulls[repo.id] = state.add_pull(
            repo, head="notes", files={"models/NOTES.md": b"notes\n"}, title="Registry notes"
        )
    return world


@dataclass(frozen=True)
class Planned:
    """One delivery to send: its event, payload, id and the job key it plans (if any)."""

    event: str
    payload: dict[str, Any]
    guid: str
    key: str | None


def next_delivery(world: World, step: int, rng: random.Random) -> Planned:
    """Make one change a person would make on a repository and the delivery GitHub sends."""
    state = world.sandbox.state
    render = Renderer(state, world.sandbox.url)
    repo = world.repos[step % len(world.repos)]
    guid = str(uuid.uuid4())
    roll = rng.random()
    if roll < 0.3:  # a push to the registry pull request: a changed registry row
        pull = world.registry_pulls[repo.id]
        before = state.pull_head(repo, pull)
        world.pushes[repo.id] += 1
        registry = json.loads(state_file(world, repo, pull))
        registry["models"][-1]["notes"] = f"edited {world.pushes[repo.id]} times"
        text = (json.dumps(registry, indent=2) + "\n").encode()
        assert pull.pull is not None
        state.commit(
            repo, {"models/registry.json": text}, message="Edit notes", branch=pull.pull.head_ref
        )
        payload = pull_request_payload(render, repo, pull, action="synchronize", before=before)
        return Planned(
            "pull_request", payload, guid, f"registry:{repo.full_name}#{pull.number}:{guid}"
        )
    pull = world.bisect_pulls[repo.id]
    if roll < 0.6:
        body, plans = "/bisect --min-plcc 0.9", True
    elif roll < 0.7:
        body, plans = "/bisect help", True
    else:
        body, plans = "Looks good to me.", False
    comment = state.add_comment(repo, pull.number, body, user=MAINTAINER)
    payload = issue_comment_payload(render, repo, pull, comment)
    key = command_key(repo.full_name, pull.number, comment.id) if plans else None
    return Planned("issue_comment", payload, guid, key)


def state_file(world: World, repo: Repo, pull: Issue) -> bytes:
    """``models/registry.json`` at the head of ``pull``."""
    state = world.sandbox.state
    store = state.objects[repo.id]
    head = state.pull_head(repo, pull)
    return store.read_files(store.commits[head].tree)["models/registry.json"]


# ---- the replicas ---------------------------------------------------------------------------


@dataclass
class Fleet:
    """The running replicas, in order; ``live`` are those not killed."""

    processes: list[ServiceProcess]
    live: list[int]
    cursor: itertools.count[int] = field(default_factory=itertools.count)

    def next_url(self) -> str:
        """The webhook URL of the next live replica, round robin."""
        index = self.live[next(self.cursor) % len(self.live)]
        return f"{self.processes[index].url}/webhook"


@contextlib.asynccontextmanager
async def fresh_database(plan: FleetPlan, folder: Path) -> AsyncIterator[str]:
    """A new SQLite file, or a new schema on the PostgreSQL server (dropped afterwards)."""
    if plan.store == "sqlite":
        yield str(folder / "store.sqlite3")
        return
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    url = plan.postgres_url or os.environ.get("MODEL_GUARD_TEST_PG")
    if not url:
        raise SystemExit("--store postgres needs --postgres URL or MODEL_GUARD_TEST_PG")
    schema = f"soak_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        # The service takes a URL; libpq's options parameter selects the schema.
        params = conninfo_to_dict(make_conninfo(url, options=f"-c search_path={schema}"))
        yield postgres_uri(params)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def postgres_uri(params: Mapping[str, Any]) -> str:
    """A ``postgresql://`` URI carrying libpq ``params`` (MODEL_GUARD_DB takes URLs only)."""
    from urllib.parse import quote, urlencode

    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host, port, dbname = params.get("host", ""), params.get("port", ""), params.get("dbname", "")
    rest = {
        k: v for k, v in params.items() if k not in ("user", "password", "host", "port", "dbname")
    }
    query = f"?{urlencode(rest, quote_via=quote)}" if rest else ""
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{dbname}{query}"


async def start_fleet(plan: FleetPlan, sandbox: Sandbox, database: str, folder: Path) -> Fleet:
    """Start ``plan.replicas`` service processes on ``database``; return once all answer."""
    processes = []
    for n in range(plan.replicas):
        env = service_env(
            sandbox,
            database=Path(database),
            data_dir=folder / f"data-{n}",
            port=free_port(),
            MODEL_GUARD_WORKERS=str(plan.workers),
            MODEL_GUARD_POLL_S="0.1",
            MODEL_GUARD_LEASE_S="3",  # a killed replica's jobs are taken over after 3 s
            MODEL_GUARD_SCHEDULE_S="0.5",  # every replica ticks often; one run a day gets through
            MODEL_GUARD_RESUME_S="0.5",
        )
        env["MODEL_GUARD_DB"] = database  # a URL stays a URL
        processes.append(ServiceProcess(env, log_path=folder / f"replica-{n}.log"))
    for process in processes:
        await process.start()
    await asyncio.gather(*(p.wait_ready(timeout=90) for p in processes))
    return Fleet(processes, list(range(len(processes))))


def rss_mib(pid: int) -> float | None:
    """Resident memory of a live process in MiB (None once it is gone)."""
    try:
        return memory_mib(pid, "VmRSS")
    except (OSError, RuntimeError):  # gone, or a zombie without memory
        return None


async def sample_memory(fleet: Fleet, samples: list[Sample], started: float) -> None:
    """Every second, the resident memory of every live replica's service process."""
    while True:
        for index in list(fleet.live):
            value = rss_mib(fleet.processes[index].pid)
            if value is not None:
                samples.append(Sample(index, time.monotonic() - started, value))
        await asyncio.sleep(1.0)


async def inject_faults(sandbox: Sandbox, rng: random.Random) -> None:
    """Every couple of seconds, a short burst of what GitHub does under load."""
    faults = sandbox.faults
    while True:
        choice = rng.randrange(3)
        if choice == 0:
            faults.fail_next("*", r"^/repos/", status=502, times=2)
        elif choice == 1:
            faults.secondary_rate_limit("POST", COMMENT_POST, times=1, retry_after=1)
            faults.secondary_rate_limit("PATCH", CHECK_WRITE, times=1, retry_after=1)
        else:
            faults.slow("GET", BLOB_GET, seconds=1.5, times=2)
        await asyncio.sleep(2.0)


async def send(world: World, fleet: Fleet, planned: Planned) -> bool:
    """Deliver ``planned``; on a failed answer GitHub's redelivery goes to another replica."""
    for _ in range(6):
        url = fleet.next_url()
        delivery = await world.sandbox.deliver(
            url, planned.event, planned.payload, guid=planned.guid
        )
        if delivery.status_code == 202:
            return True
        await asyncio.sleep(0.2)
    return False


async def running_job_of(store: Store, pid: int) -> Job | None:
    """A job a worker of the service process ``pid`` holds right now, if any."""
    for kind in KINDS:
        for job in await store.jobs_with_prefix(kind, kind, limit=100_000):
            if job.state is JobState.RUNNING and f":{pid}:" in (job.claimed_by or ""):
                return job
    return None


async def stuck_job_of(store: Store, pid: int) -> Job | None:
    """A job of the service process ``pid`` that is still held by the same attempt 0.2 s after
    it was first seen running (so it waits on a slowed request), or None."""
    job = await running_job_of(store, pid)
    if job is None:
        return None
    await asyncio.sleep(0.2)
    again = await store.get_job(job.id)
    if again is None or again.state is not JobState.RUNNING:
        return None
    if (again.attempts, again.claimed_by) != (job.attempts, job.claimed_by):
        return None
    return again


async def all_jobs(store: Store) -> list[Job]:
    """Every job in the store, of every kind."""
    jobs: list[Job] = []
    for kind in KINDS:
        jobs += await store.jobs_with_prefix(kind, kind, limit=100_000)
    return jobs


async def drained(store: Store, repos: Sequence[str]) -> bool:
    """True when nothing is queued, running or parked and every repository had its nightly."""
    counts = await store.job_counts()
    if counts.get(JobState.QUEUED) or counts.get(JobState.RUNNING):
        return False
    if await store.list_values(PARKED):
        return False
    nightly = {job.payload.get("repo") for job in await store.jobs_with_prefix(NIGHTLY, NIGHTLY)}
    return all(repo in nightly for repo in repos)


async def drive(
    plan: FleetPlan, world: World, fleet: Fleet, store: Store
) -> tuple[int, int, set[str], KilledJob | None]:
    """Send the deliveries (killing one replica half way if asked); sent, accepted, keys, killed job."""
    rng = random.Random(7)
    total = plan.deliveries
    started = time.monotonic()
    sent = accepted = 0
    keys: set[str] = set()
    killed: KilledJob | None = None
    in_flight: set[asyncio.Task[bool]] = set()
    tasks: list[tuple[Planned, asyncio.Task[bool]]] = []

    def finished() -> bool:
        if total is not None:
            return sent >= total
        return time.monotonic() - started >= (plan.seconds or 0.0)

    def halfway() -> bool:
        if total is not None:
            return sent >= total // 2
        return time.monotonic() - started >= (plan.seconds or 0.0) / 2

    step = 0
    while not finished():
        if plan.kill_one and killed is None and halfway() and len(fleet.live) > 1:
            killed = await kill_while_running(fleet, store, world.sandbox)
        planned = next_delivery(world, step, rng)
        step += 1
        task = asyncio.create_task(send(world, fleet, planned))
        tasks.append((planned, task))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
        if total is not None:
            while len(in_flight) >= plan.concurrency:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(1.0 / plan.rate)
    if in_flight:
        await asyncio.wait(in_flight)
    for planned, task in tasks:
        if task.result():
            accepted += 1
            if planned.key is not None:
                keys.add(planned.key)
    return sent, accepted, keys, killed


async def kill_while_running(fleet: Fleet, store: Store, sandbox: Sandbox) -> KilledJob:
    """SIGKILL the first live replica while one of its workers holds a job; which job.

    Check-run writes are slowed for the moment, so a job seen running is still inside its
    handler when the signal lands; the store then shows it still held by the dead replica
    (nothing else may touch it until its lease runs out), which is what ``mid_job`` says.
    """
    victim = fleet.live[0]
    process = fleet.processes[victim]
    stall = sandbox.faults.slow("*", CHECK_WRITE, seconds=1.0, times=None)
    deadline = time.monotonic() + 120
    try:
        while (job := await stuck_job_of(store, process.pid)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {victim} never ran a job:\n{process.logs()}")
            await asyncio.sleep(0.02)
        await process.kill()
    finally:
        sandbox.faults.remove(stall)
    fleet.live.remove(victim)
    after = await store.get_job(job.id)
    mid_job = (
        after is not None
        and after.state is JobState.RUNNING
        and after.attempts == job.attempts
        and after.claimed_by == job.claimed_by
    )
    return KilledJob(key=job.key, attempt=job.attempts, mid_job=mid_job)


async def run_fleet(plan: FleetPlan, folder: Path) -> FleetOutcome:
    """Run ``plan`` in ``folder`` (logs, data, SQLite file) and return what it left."""
    started = time.monotonic()
    async with Sandbox(SandboxState()) as sandbox, fresh_database(plan, folder) as database:
        world = seed_world(sandbox, plan.repos)
        repos = tuple(repo.full_name for repo in world.repos)
        fleet = await start_fleet(plan, sandbox, database, folder)
        samples: list[Sample] = []
        sampler = asyncio.create_task(sample_memory(fleet, samples, started))
        injector = (
            asyncio.create_task(inject_faults(sandbox, random.Random(11))) if plan.faults else None
        )
        background = [task for task in (sampler, injector) if task is not None]
        store = create_store(database, pool_size=2)
        await store.open()
        try:
            sent, accepted, keys, killed = await drive(plan, world, fleet, store)
            if injector is not None:  # GitHub recovers: the drain needs no luck
                injector.cancel()
            sandbox.faults.clear()
            drain_started = time.monotonic()
            while not await drained(store, repos):
                if time.monotonic() - drain_started > plan.drain_s:
                    logs = "\n".join(fleet.processes[i].logs(last=10) for i in fleet.live)
                    raise AssertionError(
                        f"the store did not drain in {plan.drain_s:.0f} s: "
                        f"{await store.job_counts()}\n{logs}"
                    )
                await asyncio.sleep(0.2)
            drained_s = time.monotonic() - drain_started
            for task in background:
                task.cancel()
            for index in list(fleet.live):
                await fleet.processes[index].stop()
            jobs = await all_jobs(store)
            stored = await store.delivery_count()
            parked = len(await store.list_values(PARKED))
        finally:
            for task in background:
                task.cancel()
            for process in fleet.processes:
                await process.stop(grace=5.0)
            await store.close()
        outcome = FleetOutcome(
            plan=plan,
            sent=sent,
            accepted=accepted,
            stored=stored,
            jobs=tuple(jobs),
            expected_keys=frozenset(keys),
            parked=parked,
            open_checks=open_checks(sandbox),
            checks_per_key=checks_per_key(sandbox),
            stickies=stickies(sandbox),
            nightlies=dict(
                Counter(
                    f"{j.payload.get('repo')} {j.payload.get('day')}"
                    for j in jobs
                    if j.key.startswith(f"{NIGHTLY}:") and "~" not in j.key  # scheduled runs
                )
            ),
            repos=repos,
            killed=killed,
            faults_fired=dict(Counter(f.kind.value for f in sandbox.faults.fired)),
            violations=len(sandbox.violations),
            samples=tuple(samples),
            drained_s=drained_s,
            wall_s=time.monotonic() - started,
        )
    return outcome


def open_checks(sandbox: Sandbox) -> tuple[str, ...]:
    """Every check run not completed."""
    return tuple(
        f"{run.name} {run.external_id} {run.status.value}"
        for run in sandbox.state.check_runs.values()
        if run.status is not CheckStatus.COMPLETED
    )


def checks_per_key(sandbox: Sandbox) -> dict[str, int]:
    """How many check runs each job key (the external id) opened."""
    return dict(
        Counter(
            f"{run.name} {run.external_id}"
            for run in sandbox.state.check_runs.values()
            if run.external_id
        )
    )


def stickies(sandbox: Sandbox) -> dict[str, int]:
    """Live App comments per (repository, issue, marker)."""
    state = sandbox.state
    names = {repo.id: repo.full_name for repo in state.repos.values()}
    bot = state.app.bot
    counted: Counter[str] = Counter()
    for comment in state.comments.values():
        if comment.deleted or comment.user != bot:
            continue
        for purpose in set(STICKY.findall(comment.body)):
            counted[f"{names.get(comment.repo_id)}#{comment.issue_number} {purpose}"] += 1
    return dict(counted)


# ---- the command line -----------------------------------------------------------------------


def report(outcome: FleetOutcome) -> str:
    """The run's figures as Markdown lines."""
    plan = outcome.plan
    counts = outcome.counts
    memory = outcome.memory()
    lines = [
        f"- store {plan.store}, {plan.replicas} replica(s) x {plan.workers} workers, "
        f"{plan.repos} repositories, {outcome.wall_s:.0f} s wall "
        f"(drained {outcome.drained_s:.1f} s after the last delivery)",
        f"- deliveries: {outcome.sent} sent, {outcome.accepted} accepted, {outcome.stored} stored",
        "- jobs: "
        + ", ".join(f"{state.value} {counts.get(state, 0)}" for state in JobState)
        + f"; {len(outcome.expected_keys)} planned by the deliveries, "
        + f"{sum(1 for j in outcome.jobs if j.attempts > 1)} ran more than one attempt",
        "- faults fired: "
        + (", ".join(f"{k} {v}" for k, v in sorted(outcome.faults_fired.items())) or "none"),
        "- killed replica's job: "
        + (
            "-"
            if outcome.killed is None
            else f"{outcome.killed.key} attempt {outcome.killed.attempt}"
            + (" (killed mid-job)" if outcome.killed.mid_job else " (had just finished)")
        ),
    ]
    for replica, quarters in memory.items():
        lines.append(
            f"- replica {replica} RSS median by quarter: "
            + " / ".join(f"{value:.0f}" for value in quarters)
            + f" MiB (first to last quarter {quarters[-1] - quarters[0]:+.0f} MiB)"
        )
    failed = [j for j in outcome.jobs if j.state is JobState.FAILED]
    for reason, n in Counter((j.last_error or "")[:100] for j in failed).most_common(5):
        lines.append(f"- failed x{n}: {reason}")
    problems = outcome.problems(failures_allowed=plan.faults)
    lines.append(
        "- end state: " + ("every guarantee held" if not problems else "; ".join(problems[:10]))
    )
    return "\n".join(lines)


def machine() -> str:
    """One line about this machine and commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load = os.getloadavg()[0]
    return (
        f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {load:.1f}, commit {commit or '?'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--replicas", type=int, default=None, help="default: 1 on sqlite, 3 on postgres"
    )
    parser.add_argument("--repos", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4.0, help="deliveries a second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--kill-one", action="store_true")
    parser.add_argument(
        "--postgres", default=None, help="server URL (default $MODEL_GUARD_TEST_PG)"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be positive")
    replicas = args.replicas or (3 if args.store == "postgres" else 1)
    plan = FleetPlan(
        store=args.store,
        replicas=replicas,
        repos=args.repos,
        seconds=args.seconds,
        rate=args.rate,
        faults=not args.no_faults,
        kill_one=args.kill_one,
        workers=args.workers,
        postgres_url=args.postgres,
        drain_s=max(180.0, args.seconds),
    )
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        outcome = asyncio.run(run_fleet(plan, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"soak, {machine()}")
    print(report(outcome))
    return 1 if outcome.problems(failures_allowed=plan.faults) else 0


if __name__ == "__main__":
    sys.exit(main())
