"""The app factory: settings in, an aiohttp application out; everything started and stopped via cleanup_ctx."""

from collections.abc import AsyncIterator, Sequence
from functools import partial

from aiohttp import web
from gidgethub import routing

from bot.ingress import receive
from bot.routing import Planner
from bot.settings import Settings
from bot.store import JobState, SqliteStore, Store
from bot.telemetry import CONTENT_TYPE_LATEST, Telemetry

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
TELEMETRY = web.AppKey("telemetry", Telemetry)
PLANNER = web.AppKey("planner", Planner)


def create_app(
    settings: Settings, *, store: Store | None = None, routers: Sequence[routing.Router] = ()
) -> web.Application:
    """Assemble the service; no work happens until the app starts."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[TELEMETRY] = Telemetry.create()
    app[PLANNER] = Planner(routers)
    app.cleanup_ctx.append(partial(_store_context, given=store))
    app.router.add_post("/webhook", _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


async def _store_context(app: web.Application, *, given: Store | None) -> AsyncIterator[None]:
    """Open the store (SQLite at MODEL_GUARD_DB unless one is given) and requeue abandoned jobs."""
    store = given if given is not None else SqliteStore(app[SETTINGS].database)
    await store.open()
    await store.requeue_abandoned()
    app[STORE] = store
    yield
    await store.close()


async def _webhook(request: web.Request) -> web.Response:
    app = request.app
    return await receive(
        request,
        settings=app[SETTINGS],
        store=app[STORE],
        planner=app[PLANNER],
        telemetry=app[TELEMETRY],
    )


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
