"""The scheduler's source over real HTTP: every installed repository with its configured cron."""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from bot.github import GitHubClient
from bot.jobs.scheduler import ScheduledRepo
from bot.jobs.schedules import InstalledSchedules
from bot.repoconfig import CONFIG_PATH, default_config
from sandbox import Sandbox
from tests.conftest import FakeClock, seed_repo

DEFAULT_CRON = default_config().schedule
CONTENTS = r"/repos/[^/]+/[^/]+/contents/\.github/model-guard\.yml"
CONFIGS = {
    "scheduled": b'version: 1\nnightly:\n  schedule: "5 1 * * *"\n',
    "paused": b"version: 1\nnightly:\n  enabled: false\n",
    "plain": None,
    "minutely": b'version: 1\nnightly:\n  schedule: "*/5 * * * *"\n',
    "garbled": b"version: 1\nnightly: [unclosed\n",
    "neverfiring": b'version: 1\nnightly:\n  schedule: "0 0 30 2 *"\n',
    "surrogate": b'version: 1\ntracking_issue:\n  label: "\\uD800"\n',
}


@dataclass
class World:
    """Seeded repositories, the App's GitHub client and the schedules it reads."""

    sandbox: Sandbox
    client: GitHubClient
    clock: FakeClock
    schedules: InstalledSchedules

    def contents_requests(self) -> int:
        return len(self.sandbox.requests_to("GET", CONTENTS))


@pytest.fixture
async def world(sandbox: Sandbox) -> AsyncIterator[World]:
    for name, config in CONFIGS.items():
        files = {"README.md": f"{name}\n".encode()}
        if config is not None:
            files[CONFIG_PATH] = config
        seed_repo(sandbox.state, files, name=name)
    # Another account's installation, whose repository's default branch is not main.
    other = sandbox.state.add_installation("zenith")
    sandbox.state.add_repo(
        "zenith",
        "models",
        {CONFIG_PATH: b'nightly:\n  schedule: "15 3 * * 1"\n'},
        installation=other,
        default_branch="trunk",
    )
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        client = GitHubClient(
            session,
            app_id=str(sandbox.state.app.id),
            private_key=sandbox.state.private_key_pem,
            api_url=sandbox.url,
        )
        try:
            schedules = InstalledSchedules(client, refresh_seconds=600.0, clock=clock)
            yield World(sandbox, client, clock, schedules)
        finally:
            await client.close()


def by_repo(found: object) -> dict[str, ScheduledRepo]:
    assert isinstance(found, list)
    return {item.repo: item for item in found}


async def test_every_installed_repository_is_listed_with_its_configured_cron(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="model_guard.installed"):
        found = by_repo(await world.schedules())
    assert set(found) == {f"acme/{name}" for name in CONFIGS} | {"zenith/models"}
    assert found["acme/scheduled"].cron == "5 1 * * *" and found["acme/scheduled"].enabled
    assert found["zenith/models"].cron == "15 3 * * 1"  # read from its default branch, trunk
    acme = found["acme/scheduled"].installation_id
    assert all(found[f"acme/{name}"].installation_id == acme for name in CONFIGS)
    assert found["zenith/models"].installation_id != acme
    trunk = world.sandbox.requests_to("GET", r"/repos/zenith/models/contents/.*")
    assert [r.query.get("ref") for r in trunk] == ["trunk"]
    # The nightly job is told the default branch, so it need not ask GitHub for it.
    assert found["zenith/models"].default_branch == "trunk"


async def test_nightly_disabled_in_the_config_is_listed_as_disabled(world: World) -> None:
    paused = by_repo(await world.schedules())["acme/paused"]
    assert paused.enabled is False
    assert paused.cron == DEFAULT_CRON


async def test_repository_without_a_config_gets_the_default_cron_without_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="model_guard.installed"):
        plain = by_repo(await world.schedules())["acme/plain"]
    assert plain.cron == DEFAULT_CRON and plain.enabled
    assert not [r for r in caplog.records if "acme/plain" in r.getMessage()]


@pytest.mark.parametrize("name", ["minutely", "garbled", "neverfiring", "surrogate"])
async def test_invalid_config_gets_the_default_cron_and_a_one_line_warning(
    world: World, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="model_guard.installed"):
        broken = by_repo(await world.schedules())[f"acme/{name}"]
    # Still scheduled: the nightly run then explains the problem in the tracking comment.
    assert broken.cron == DEFAULT_CRON and broken.enabled
    warnings = [r.getMessage() for r in caplog.records if f"acme/{name}" in r.getMessage()]
    assert len(warnings) == 1
    assert "invalid config" in warnings[0] and "default schedule" in warnings[0]
    assert "\n" not in warnings[0]
    warnings[0].encode("utf-8")  # no surrogate reaches the log


async def test_config_that_cannot_be_read_gets_the_default_cron_and_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    repo = world.sandbox.state.find_repo("acme", "scheduled")
    assert repo is not None
    # A directory where the file should be: the contents API answers a listing, not a file.
    world.sandbox.state.commit(
        repo, {CONFIG_PATH: None, f"{CONFIG_PATH}/nested.yml": b"x: 1\n"}, message="oops"
    )
    with caplog.at_level(logging.WARNING, logger="model_guard.installed"):
        found = by_repo(await world.schedules())["acme/scheduled"]
    assert found.cron == DEFAULT_CRON
    (warning,) = [r.getMessage() for r in caplog.records if "acme/scheduled" in r.getMessage()]
    assert "config not readable" in warning and "is not a file" in warning
    # The other repositories are still scheduled from their own files.
    assert by_repo(await world.schedules())["zenith/models"].cron == "15 3 * * 1"


async def test_second_call_within_the_refresh_interval_makes_no_request(world: World) -> None:
    first = await world.schedules()
    seen = len(world.sandbox.requests)
    world.clock.advance(599.0)
    again = await world.schedules()
    assert again == first
    assert len(world.sandbox.requests) == seen


async def test_after_the_refresh_interval_the_config_is_read_with_a_conditional_get(
    world: World,
) -> None:
    await world.schedules()
    before = world.contents_requests()
    assert before == len(CONFIGS) + 1
    world.clock.advance(600.0)
    found = by_repo(await world.schedules())
    assert found["acme/scheduled"].cron == "5 1 * * *"
    again = world.sandbox.requests_to("GET", CONTENTS)[before:]
    assert len(again) == len(CONFIGS) + 1
    present = [r for r in again if "/plain/" not in r.path]
    assert all({k.lower(): v for k, v in r.headers.items()}.get("if-none-match") for r in present)
    assert {r.status for r in present} == {304}


async def test_a_changed_config_is_picked_up_after_the_refresh_interval(world: World) -> None:
    assert by_repo(await world.schedules())["acme/scheduled"].cron == "5 1 * * *"
    repo = world.sandbox.state.find_repo("acme", "scheduled")
    assert repo is not None
    world.sandbox.state.commit(
        repo, {CONFIG_PATH: b'nightly:\n  schedule: "45 23 * * *"\n'}, message="later"
    )
    assert by_repo(await world.schedules())["acme/scheduled"].cron == "5 1 * * *"  # cached
    world.clock.advance(600.0)
    assert by_repo(await world.schedules())["acme/scheduled"].cron == "45 23 * * *"


async def test_a_repository_installed_later_is_listed_at_once_after_forget(world: World) -> None:
    before = by_repo(await world.schedules())
    installation = next(iter(world.sandbox.state.installations.values()))
    world.sandbox.state.add_repo(
        installation.account.login, "fresh", {"README.md": b"new\n"}, installation=installation
    )
    assert by_repo(await world.schedules()).keys() == before.keys()  # kept for 600 s
    world.schedules.forget()
    after = by_repo(await world.schedules())
    assert set(after) - set(before) == {f"{installation.account.login}/fresh"}
