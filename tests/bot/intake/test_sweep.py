"""The missed-delivery sweep over real HTTP: deliveries that failed while the App was down come back once."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.app import SERVICES, STORE, create_app
from bot.github import GitHubClient
from bot.intake.sweep import DeliverySweep
from bot.jobs.scheduler import ScheduledRepo
from bot.settings import Settings
from bot.store import SqliteStore
from sandbox import Sandbox
from sandbox.webhooks import load_example
from tests.bot.handlers.conftest import app_settings
from tests.bot.servicehelpers import free_port, wait_until

ATTEMPTS = r"^/app/hook/deliveries/\d+/attempts$"


async def no_schedules() -> list[ScheduledRepo]:
    """No nightly: only the sweep reaches out."""
    return []


@asynccontextmanager
async def serving(settings: Settings, port: int) -> AsyncIterator[web.Application]:
    """The service on ``port`` with its scheduler (and so its sweep) running."""
    runner = web.AppRunner(create_app(settings, schedule_source=no_schedules), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield runner.app
    finally:
        await runner.cleanup()


async def test_deliveries_missed_while_down_are_redelivered_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    # While nothing listens: three handled events fail to connect, and a ping (not handled).
    missed = [
        await sandbox.deliver(url, "installation", load_example("installation", "created"))
        for _ in range(3)
    ]
    await sandbox.deliver(url, "ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert all(d.status_code == 0 for d in missed)
    settings = replace(app_settings(sandbox, tmp_path), sweep_s=3600.0)
    async with serving(settings, port) as app:
        # A delivery the App refused on purpose (a wrong signature): not worth asking again.
        refused = await sandbox.deliver(url, "installation", missed[0].body, secret="wrong")
        assert refused.status_code == 401
        store = app[STORE]
        guids = {d.guid for d in missed}

        async def all_stored() -> bool:
            return await store.known_deliveries(guids) == guids

        await wait_until(all_stored, what="the missed deliveries to be redelivered and stored")
        asked = sandbox.requests_to("POST", ATTEMPTS)
        assert len(asked) == 3
        # The next sweep (this replica holds the claim) finds nothing to ask for.
        again = await app[SERVICES].sweep.sweep()  # type: ignore[union-attr]
        assert again.swept and again.asked == () and again.already_stored == 3
        assert again.not_retryable == 1  # the refused delivery
        assert len(sandbox.requests_to("POST", ATTEMPTS)) == 3
        # The first sweep only listed deliveries: it did not wait for GitHub to send them.
        assert {r.path for r in sandbox.requests_to("GET", r"^/app/hook/deliveries")} == {
            "/app/hook/deliveries"
        }


async def test_a_delivery_asked_for_is_not_asked_for_again_and_replicas_take_turns(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"  # never served: every redelivery fails again
    for _ in range(2):
        await sandbox.deliver(url, "installation", load_example("installation", "created"))
    state = sandbox.state
    async with aiohttp.ClientSession() as session, SqliteStore(tmp_path / "s.db") as store:
        client = GitHubClient(
            session,
            app_id=str(state.app.id),
            private_key=state.private_key_pem,
            api_url=sandbox.url,
        )
        events = {"installation"}
        first = DeliverySweep(store, client.app_api, events=events, interval_seconds=60)
        other = DeliverySweep(store, client.app_api, events=events, interval_seconds=60)
        done = await first.sweep()
        assert done.swept and len(done.asked) == 2
        assert not (await other.sweep()).swept  # this interval is the first replica's
        await wait_until(
            lambda: len(state.deliveries) == 4, what="the sandbox to try the redeliveries"
        )
        # The redeliveries failed too (still down); each was asked for once, and stays so.
        again = await first.sweep()
        assert again.asked == () and again.already_asked == 2
        assert len(sandbox.requests_to("POST", ATTEMPTS)) == 2
        await client.close()


async def test_old_deliveries_are_left_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/webhook"
    await sandbox.deliver(url, "installation", load_example("installation", "created"))
    state = sandbox.state
    async with aiohttp.ClientSession() as session, SqliteStore(tmp_path / "s.db") as store:
        client = GitHubClient(
            session,
            app_id=str(state.app.id),
            private_key=state.private_key_pem,
            api_url=sandbox.url,
        )
        later = datetime.fromtimestamp(state.now(), UTC) + timedelta(days=3, minutes=1)
        sweep = DeliverySweep(store, client.app_api, events={"installation"}, clock=lambda: later)
        result = await sweep.sweep()
        assert result.swept and result.asked == ()
        assert sandbox.requests_to("POST", ATTEMPTS) == []
        await client.close()
