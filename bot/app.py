"""The app factory: settings in, an aiohttp application out; everything started and stopped via cleanup_ctx.

Start order (and the reverse on shutdown): the store, the GitHub client with its HTTP
session, the engine pool, the job workers, the resumer of parked runs, the scheduler.
Shutting down therefore stops scheduling first, lets running jobs finish (up to a grace
period), and closes the store last.
"""

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial

import aiohttp
from aiohttp import web
from gidgethub import routing

from bot.github import GitHubClient, GitHubClientError
from bot.github.policy import ClientPolicy
from bot.github.repofiles import RepoFiles
from bot.handlers import (
    ALWAYS_SENT_EVENTS,
    HANDLED_EVENTS,
    ROUTERS,
    SCHEDULED_KIND,
    job_handlers,
)
from bot.handlers.run import RunServices
from bot.intake.ingress import BodyGate, receive
from bot.intake.planner import Planner
from bot.intake.sweep import DeliverySweep
from bot.jobs.parking import Resumer
from bot.jobs.scheduler import Scheduler, ScheduleSource
from bot.jobs.schedules import InstalledSchedules
from bot.jobs.worker import WorkerPool
from bot.judging.bisect_run import TimelineJudge
from bot.judging.pool import EnginePool
from bot.judging.registry_run import RegistryChangeJudge
from bot.settings import Settings
from bot.store import JobState, Store
from bot.store.select import create_store
from bot.telemetry import CONTENT_TYPE_LATEST, Telemetry

log = logging.getLogger("model_guard.app")


@dataclass(frozen=True)
class Services:
    """What the running service holds besides the store: client, pool, workers, scheduler, resumer.

    ``runs`` is what every job kind's runs share (the client, the store, the bot identity and
    the one sticky-comment service); each job kind's runner is built on it
    (``bot.handlers.job_handlers``).
    """

    client: GitHubClient
    pool: EnginePool
    workers: WorkerPool
    scheduler: Scheduler | None
    resumer: Resumer
    sweep: DeliverySweep | None
    runs: RunServices
    schedules: InstalledSchedules | None  # None when a schedule source was given


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
TELEMETRY = web.AppKey("telemetry", Telemetry)
PLANNER = web.AppKey("planner", Planner)
BODY_GATE = web.AppKey("body_gate", BodyGate)
SERVICES = web.AppKey("services", Services)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    routers: Sequence[routing.Router] = ROUTERS,
    schedule_source: ScheduleSource | None = None,
    run_jobs: bool = True,
    schedule: bool = True,
    github_policy: ClientPolicy | None = None,
) -> web.Application:
    """Assemble the service; no work happens until the app starts.

    ``run_jobs=False`` gives the ingress alone (deliveries are stored, nothing runs);
    ``schedule_source`` replaces the list of installed repositories the scheduler reads;
    ``github_policy`` the GitHub client's retry and pacing limits (GitHub's by default, its
    writes shared among ``settings.replicas``).
    """
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[TELEMETRY] = Telemetry.create()
    app[PLANNER] = Planner(routers)
    app[BODY_GATE] = BodyGate(settings.max_pending_bodies, telemetry=app[TELEMETRY])
    app.cleanup_ctx.append(partial(_store_context, given=store))
    if run_jobs:
        app.cleanup_ctx.append(
            partial(
                _services_context,
                source=schedule_source,
                schedule=schedule,
                policy=settings.github_policy(github_policy),
            )
        )
    app.router.add_post("/webhook", _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


async def _store_context(app: web.Application, *, given: Store | None) -> AsyncIterator[None]:
    """Open the store MODEL_GUARD_DB names (SQLite file or PostgreSQL URL) unless one is given."""
    settings = app[SETTINGS]
    store = (
        given
        if given is not None
        else create_store(settings.database, pool_size=settings.database_pool)
    )
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _services_context(
    app: web.Application,
    *,
    source: ScheduleSource | None,
    schedule: bool,
    policy: ClientPolicy,
) -> AsyncIterator[None]:
    """Start the GitHub client, engine pool, workers and scheduler; stop them in reverse."""
    settings, store, telemetry = app[SETTINGS], app[STORE], app[TELEMETRY]
    if settings.app_id is None or settings.private_key is None:
        log.error("GITHUB_APP_ID and a private key are not set: deliveries are stored, no job runs")
        yield
        return
    session = aiohttp.ClientSession()
    try:
        client = GitHubClient(
            session,
            app_id=settings.app_id,
            private_key=settings.private_key,
            api_url=settings.api_url,
            telemetry=telemetry,
            policy=policy,
        )
    except GitHubClientError:
        await session.close()  # else "Unclosed client session" follows the one-line error
        raise
    pool = EnginePool(processes=settings.engine_processes, timeout=settings.job_timeout_s)
    data = settings.data_dir
    files = RepoFiles(data / "blobs")
    judge = TimelineJudge(
        files=files,
        pool=pool,
        workdir=data / "work",
        evaluations=data / "evaluations",
        time_limit=settings.job_timeout_s,
        limits=settings.scoring_limits(),
    )
    change = RegistryChangeJudge(
        files=files,
        pool=pool,
        timeline=judge,
        workdir=data / "work",
        time_limit=settings.job_timeout_s,
    )
    runs = RunServices(client=client, store=store, telemetry=telemetry)
    schedules: InstalledSchedules | None = None
    listing: ScheduleSource
    if source is None:
        schedules = listing = InstalledSchedules(client)
    else:
        listing = source
    workers = WorkerPool(
        store,
        job_handlers(runs, files=files, judge=judge, change=change),
        options=settings.worker_options(),
        telemetry=telemetry,
    )
    scheduler = (
        Scheduler(
            store,
            listing,
            kind=SCHEDULED_KIND,
            interval_seconds=settings.schedule_s,
            on_enqueued=workers.wake,
        )
        if schedule
        else None
    )
    resumer = Resumer(
        store,
        partial(client.app_api().getitem, "/app"),
        interval_seconds=settings.resume_s,
        on_enqueued=workers.wake,
    )
    # The sweep goes with the scheduler: both reach out to GitHub unasked, and a service
    # started without a schedule (tests, a replica kept for ingress) does neither.
    sweep = (
        DeliverySweep(
            store, client.app_api, events=HANDLED_EVENTS, interval_seconds=settings.sweep_s
        )
        if schedule
        else None
    )
    app[SERVICES] = Services(
        client=client,
        pool=pool,
        workers=workers,
        scheduler=scheduler,
        resumer=resumer,
        sweep=sweep,
        runs=runs,
        schedules=schedules,
    )
    await workers.start()
    await resumer.start()
    if scheduler is not None:
        await scheduler.start()
    if sweep is not None:
        await sweep.start()
    try:
        yield
    finally:
        if sweep is not None:
            await sweep.stop()
        if scheduler is not None:
            await scheduler.stop()
        await resumer.stop()
        await workers.stop()
        await pool.close()
        await client.close()
        await session.close()


async def _webhook(request: web.Request) -> web.Response:
    app = request.app
    services = app.get(SERVICES)
    response = await receive(
        request,
        settings=app[SETTINGS],
        store=app[STORE],
        planner=app[PLANNER],
        telemetry=app[TELEMETRY],
        gate=app[BODY_GATE],
        on_jobs=None if services is None else services.workers.wake,
    )
    # Installed on (or removed from) repositories: the scheduler reads its list again at
    # its next tick instead of up to ten minutes later (this replica; others refresh then).
    event = request.headers.get("X-GitHub-Event", "")
    schedules = None if services is None else services.schedules
    if response.status == 202 and event in ALWAYS_SENT_EVENTS and schedules is not None:
        schedules.forget()
    return response


async def _healthz(request: web.Request) -> web.Response:
    """Answer 200 when the store answers."""
    counts = await request.app[STORE].job_counts()
    return web.json_response(
        {"status": "ok", "jobs": {state.value: n for state, n in counts.items()}}
    )


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition, with job counts read fresh from the store."""
    telemetry = request.app[TELEMETRY]
    counts = await request.app[STORE].job_counts()
    for state in JobState:
        telemetry.jobs.labels(state=state.value).set(counts.get(state, 0))
    return web.Response(body=telemetry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
