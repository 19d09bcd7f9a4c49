"""The App's GitHub client over real HTTP on loopback, against the shared GitHub sandbox.

The client and the sandbox share one fake clock; the client's ``sleep`` advances it, so rate-limit
waits, backoff and pacing are measured in fake seconds and nothing really waits.
"""

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import aiohttp
import gidgethub
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bot.github import (
    ClientPolicy,
    GitHubClient,
    GitHubClientError,
    GitHubRateLimited,
    GitHubUnavailable,
    InstalledRepo,
)
from bot.github.credentials import parse_token
from bot.github.etags import EtagBudget, EtagCache
from bot.github.pacing import HOUR, MINUTE, WritePacer
from bot.github.policy import Retry, RetryReason, decide_retry
from bot.settings import Settings
from bot.telemetry import Telemetry
from sandbox import Sandbox, SandboxState
from sandbox.records import Installation, Repo
from tests.conftest import seed_repo

START = 1_800_000_000.0
TOKENS = r"/app/installations/\d+/access_tokens"


@dataclass
class FakeTime:
    """A clock that only moves when the client sleeps; every sleep is recorded."""

    now: float = START
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class TopOfRange(random.Random):
    """An rng whose draws sit at the top of the range, so jittered delays show their ceiling."""

    def random(self) -> float:
        return 0.999


@dataclass
class Traffic:
    """What the client's session sent, seen through aiohttp's tracing hooks."""

    time: FakeTime
    starts: list[tuple[str, str, float]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def started(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
            self.starts.append((params.method, params.url.path, self.time.clock()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

        async def ended(*_: Any) -> None:
            self.in_flight -= 1

        config.on_request_start.append(started)
        config.on_request_end.append(ended)
        config.on_request_exception.append(ended)
        return config


@dataclass
class World:
    """A sandbox on the fake clock, an installation with one repo, and a way to make clients."""

    sandbox: Sandbox
    time: FakeTime
    traffic: Traffic
    session: aiohttp.ClientSession
    installation: Installation
    repo: Repo
    telemetry: Telemetry

    def client(self, policy: ClientPolicy | None = None, **kwargs: Any) -> GitHubClient:
        options: dict[str, Any] = {
            "app_id": str(self.sandbox.state.app.id),
            "private_key": self.sandbox.state.private_key_pem,
            "api_url": self.sandbox.url,
            "telemetry": self.telemetry,
            "policy": policy or ClientPolicy(),
            "clock": self.time.clock,
            "sleep": self.time.sleep,
            "rng": random.Random(7),
        }
        options.update(kwargs)
        return GitHubClient(self.session, **options)

    def token_requests(self) -> int:
        return len(self.sandbox.requests_to("POST", TOKENS))

    def count(self, metric: str, **labels: str) -> float:
        value = self.telemetry.registry.get_sample_value(f"model_guard_{metric}_total", labels)
        return value or 0.0


@pytest.fixture
async def world() -> AsyncIterator[World]:
    time = FakeTime()
    state = SandboxState(clock=time.clock)
    installation, repo = seed_repo(state, {"README.md": b"models\n"})
    traffic = Traffic(time)
    async with (
        Sandbox(state) as sandbox,
        aiohttp.ClientSession(trace_configs=[traffic.trace_config()]) as session,
    ):
        yield World(sandbox, time, traffic, session, installation, repo, Telemetry.create())
        # A 304 answers any conditional GET (RFC 9110 section 15.4.5), yet the sandbox's OpenAPI
        # check flags it where GitHub's description omits it (repos/get); reported, not hidden.
        sandbox.violations = [v for v in sandbox.violations if not _undocumented_304(v)]
        sandbox.assert_valid()


def _undocumented_304(violation: str) -> bool:
    return violation.startswith("GET ") and ": response 304: status not documented" in violation


REPO_PATH = "/repos/{owner}/{repo}"


def repo_vars(world: World) -> dict[str, str]:
    return {"owner": world.repo.owner.login, "repo": world.repo.name}


async def get_repo(world: World, client: GitHubClient) -> Any:
    api = await client.installation_api(world.installation.id)
    return await api.getitem(REPO_PATH, url_vars=repo_vars(world))


# ---- installation tokens and the App JWT ------------------------------------------------------


async def test_token_is_fetched_once_for_many_requests(world: World) -> None:
    client = world.client()
    for _ in range(5):
        assert (await get_repo(world, client))["full_name"] == "acme/models"
    assert world.token_requests() == 1
    assert world.sandbox.requests_to("GET", "/repos/acme/models")[-1].installation_id == (
        world.installation.id
    )


async def test_token_is_refreshed_within_60_s_of_expiry_and_not_before(world: World) -> None:
    client = world.client()
    await get_repo(world, client)
    ttl = world.sandbox.state.token_ttl
    world.time.now = START + ttl - 61
    await get_repo(world, client)
    assert world.token_requests() == 1
    world.time.now = START + ttl - 59
    await get_repo(world, client)
    assert world.token_requests() == 2


async def test_two_concurrent_first_requests_fetch_one_token(world: World) -> None:
    client = world.client()
    first, second = await asyncio.gather(get_repo(world, client), get_repo(world, client))
    assert first["id"] == second["id"] == world.repo.id
    assert world.token_requests() == 1


async def test_installation_api_is_the_same_object_for_the_same_id(world: World) -> None:
    client = world.client()
    api = await client.installation_api(world.installation.id)
    assert await client.installation_api(world.installation.id) is api
    other = world.sandbox.state.add_installation("globex")
    assert await client.installation_api(other.id) is not api


async def test_revoked_token_is_dropped_and_the_request_retried_once_with_a_new_one(
    world: World,
) -> None:
    client = world.client()
    await get_repo(world, client)
    world.sandbox.state.tokens.clear()  # GitHub revoked it: the next use answers 401
    assert (await get_repo(world, client))["name"] == "models"
    assert world.token_requests() == 2
    assert world.time.sleeps == []


async def test_persistent_bad_credentials_refreshes_once_then_raises(world: World) -> None:
    client = world.client()
    world.sandbox.faults.fail_next(
        "GET", "^/repos/acme/models$", status=401, message="Bad credentials", times=3
    )
    with pytest.raises(gidgethub.BadRequest) as raised:
        await get_repo(world, client)
    assert raised.value.status_code == 401
    assert len(world.sandbox.requests_to("GET", "/repos/acme/models")) == 2
    assert world.token_requests() == 2


async def test_app_jwt_is_renewed_as_the_clock_moves(world: World) -> None:
    client = world.client()
    app = client.app_api()
    assert (await app.getitem("/app"))["id"] == world.sandbox.state.app.id
    world.time.now += 3 * 3600  # an old JWT would be refused by now
    assert (await app.getitem("/app"))["id"] == world.sandbox.state.app.id


async def test_installation_id_for_names_the_covering_installation(world: World) -> None:
    client = world.client()
    assert await client.installation_id_for("acme/models") == world.installation.id
    with pytest.raises(gidgethub.BadRequest) as raised:
        await client.installation_id_for("acme/elsewhere")
    assert raised.value.status_code == 404
    with pytest.raises(GitHubClientError, match="owner/name"):
        await client.installation_id_for("not-a-full-name")


async def test_installed_repositories_lists_every_installation_and_page(world: World) -> None:
    state = world.sandbox.state
    globex = state.add_installation("globex")
    for number in range(101):  # over one page of 100
        state.add_repo("globex", f"repo-{number:03}", {"a": b"1"}, installation=globex)
    state.add_repo(
        "globex", "trunk-first", {"a": b"1"}, installation=globex, default_branch="trunk"
    )
    paused = state.add_installation("initech")
    state.add_repo("initech", "hidden", {"a": b"1"}, installation=paused)
    state.installations[paused.id] = replace(state.installations[paused.id], suspended_at=START)

    repos = await world.client().installed_repositories()

    assert repos[0] == InstalledRepo(world.installation.id, "acme/models", "main")
    globex_repos = [r for r in repos if r.installation_id == globex.id]
    assert len(globex_repos) == 102
    assert InstalledRepo(globex.id, "globex/trunk-first", "trunk") in globex_repos
    assert not any(r.full_name == "initech/hidden" for r in repos)
    assert len(world.sandbox.requests_to("GET", "/installation/repositories")) == 3


# ---- retries ------------------------------------------------------------------------------


async def test_client_retries_502_twice_then_succeeds_with_growing_backoff(world: World) -> None:
    client = world.client(rng=TopOfRange())
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=502, times=2)
    assert (await get_repo(world, client))["name"] == "models"
    assert len(world.sandbox.requests_to("GET", "/repos/acme/models")) == 3
    assert world.time.sleeps == [pytest.approx(0.4995), pytest.approx(0.999)]
    assert world.count("github_retries", reason="server_error") == 2


async def test_backoff_is_jittered_below_a_ceiling_that_stops_at_max_delay(world: World) -> None:
    policy = ClientPolicy(base_delay=0.5, max_delay=1.5)
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=503, times=4)
    top = world.client(policy, rng=TopOfRange())
    await get_repo(world, top)
    assert world.time.sleeps == pytest.approx([0.4995, 0.999, 1.4985, 1.4985])

    world.time.sleeps.clear()
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=503, times=4)
    await get_repo(world, world.client(policy, rng=random.Random(3)))
    ceilings = [0.5, 1.0, 1.5, 1.5]
    assert len(world.time.sleeps) == 4
    assert all(0 <= s <= c for s, c in zip(world.time.sleeps, ceilings, strict=True))
    assert len(set(world.time.sleeps)) == 4  # jittered, not a fixed schedule


async def test_client_gives_up_with_gidgethubs_error_after_max_attempts(world: World) -> None:
    client = world.client()
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=502, times=5)
    with pytest.raises(gidgethub.GitHubBroken) as raised:
        await get_repo(world, client)
    assert raised.value.status_code == 502
    assert len(world.sandbox.requests_to("GET", "/repos/acme/models")) == 5
    assert len(world.time.sleeps) == 4


async def test_a_post_answered_502_is_not_resent_blind_since_github_may_have_done_it(
    world: World,
) -> None:
    issue = world.sandbox.state.add_issue(world.repo, "Regression")
    client = world.client()
    api = await client.installation_api(world.installation.id)
    world.sandbox.faults.fail_next("POST", "/comments$", status=502)
    with pytest.raises(gidgethub.GitHubBroken):
        await api.post(
            REPO_PATH + "/issues/{number}/comments",
            url_vars={**repo_vars(world), "number": issue.number},
            data={"body": "verdict"},
        )
    assert len(world.sandbox.requests_to("POST", r".*/comments")) == 1
    assert world.time.sleeps == []


async def test_a_post_refused_by_a_secondary_rate_limit_is_sent_again(world: World) -> None:
    issue = world.sandbox.state.add_issue(world.repo, "Regression")
    client = world.client()
    api = await client.installation_api(world.installation.id)
    world.sandbox.faults.secondary_rate_limit("POST", "/comments$", retry_after=2)
    created = await api.post(
        REPO_PATH + "/issues/{number}/comments",
        url_vars={**repo_vars(world), "number": issue.number},
        data={"body": "verdict"},
    )
    assert created["body"] == "verdict"
    assert [r.status for r in world.sandbox.requests_to("POST", r".*/comments")] == [403, 201]


async def test_other_client_errors_are_returned_at_once(world: World) -> None:
    client = world.client()
    api = await client.installation_api(world.installation.id)
    with pytest.raises(gidgethub.BadRequest) as raised:
        await api.getitem("/repos/acme/missing")
    assert raised.value.status_code == 404
    assert len(world.sandbox.requests_to("GET", "/repos/acme/missing")) == 1
    assert world.time.sleeps == []


async def test_dropped_connection_on_a_post_is_not_resent_blind(world: World) -> None:
    issue = world.sandbox.state.add_issue(world.repo, "Regression")
    client = world.client()
    api = await client.installation_api(world.installation.id)
    world.sandbox.faults.drop_connection("POST", "/comments$")
    with pytest.raises(GitHubUnavailable, match="not resent, it may have been done"):
        await api.post(
            REPO_PATH + "/issues/{number}/comments",
            url_vars={**repo_vars(world), "number": issue.number},
            data={"body": "verdict"},
        )
    assert [r.status for r in world.sandbox.requests_to("POST", r".*/comments")] == [0]
    assert world.time.sleeps == []
    assert world.count("github_requests", status="error") == 1


async def test_dropped_connections_on_a_get_are_retried(world: World) -> None:
    # aiohttp itself resends an idempotent request once when a kept-alive connection closes
    # (RFC 9112 section 9.3.1); drops beyond that reach our retries.
    client = world.client()
    world.sandbox.faults.drop_connection("GET", "^/repos/acme/models$", times=3)
    assert (await get_repo(world, client))["name"] == "models"
    assert world.time.sleeps
    assert world.count("github_retries", reason="connection") == len(world.time.sleeps)


async def test_connection_lost_on_every_attempt_is_a_one_line_error(world: World) -> None:
    client = world.client(ClientPolicy(max_attempts=3))
    world.sandbox.faults.drop_connection("GET", "^/repos/acme/models$", times=None)
    with pytest.raises(GitHubUnavailable) as raised:
        await get_repo(world, client)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("GET /repos/acme/models: no answer from GitHub after 3 attempts")
    sent = [path for method, path, _ in world.traffic.starts if path == "/repos/acme/models"]
    assert len(sent) == 3
    assert len(world.time.sleeps) == 2


async def test_request_timeout_is_retried(world: World) -> None:
    client = world.client(ClientPolicy(request_timeout=0.5))
    world.sandbox.faults.slow("GET", "^/repos/acme/models$", seconds=5.0)
    assert (await get_repo(world, client))["name"] == "models"
    assert world.count("github_retries", reason="timeout") == 1


# ---- rate limits --------------------------------------------------------------------------


async def test_secondary_rate_limit_waits_retry_after_then_succeeds(world: World) -> None:
    client = world.client()
    await get_repo(world, client)  # the token is fetched before the fault is armed
    world.sandbox.faults.secondary_rate_limit("GET", "^/repos/acme/models$", retry_after=7)
    assert (await get_repo(world, client))["name"] == "models"
    assert world.time.sleeps == [7.0]
    assert world.count("github_retries", reason="secondary_rate_limit") == 1


async def test_secondary_rate_limit_holds_back_later_requests_of_the_installation(
    world: World,
) -> None:
    release, slept = asyncio.Event(), asyncio.Event()
    sleeps: list[float] = []

    async def held_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        slept.set()
        await release.wait()

    client = world.client(sleep=held_sleep)
    await get_repo(world, client)
    world.sandbox.faults.secondary_rate_limit("GET", "^/repos/acme/models$", retry_after=30)
    limited = asyncio.create_task(get_repo(world, client))
    await slept.wait()
    slept.clear()
    later = asyncio.create_task(get_repo(world, client))
    waiting = asyncio.create_task(slept.wait())
    await asyncio.wait({later, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()

    assert sleeps == [30.0, 30.0]  # the later request waits out the same limit, unsent
    assert [r.status for r in world.sandbox.requests_to("GET", "/repos/acme/models")] == [200, 403]
    world.time.now += 30
    release.set()
    await asyncio.gather(limited, later)
    assert len(world.sandbox.requests_to("GET", "/repos/acme/models")) == 4


async def test_primary_rate_limit_exhausted_waits_until_reset(world: World) -> None:
    client = world.client()
    await get_repo(world, client)
    world.sandbox.faults.primary_rate_limit_exhausted("GET", "^/repos/acme/models$", reset_in=120)
    assert (await get_repo(world, client))["name"] == "models"
    assert world.time.sleeps == [121.0]  # until x-ratelimit-reset, plus one second
    assert world.count("github_retries", reason="primary_rate_limit") == 1


async def test_rate_limit_wait_over_the_cap_raises_without_sleeping(world: World) -> None:
    client = world.client(ClientPolicy(max_rate_limit_wait=900))
    await get_repo(world, client)
    world.sandbox.faults.secondary_rate_limit("GET", "^/repos/acme/models$", retry_after=1000)
    with pytest.raises(GitHubRateLimited) as raised:
        await get_repo(world, client)
    assert raised.value.wait == 1000
    assert "\n" not in str(raised.value) and "1000 s" in str(raised.value)
    assert world.time.sleeps == []
    assert len(world.sandbox.requests_to("GET", "/repos/acme/models")) == 2


# ---- conditional requests -----------------------------------------------------------------


async def test_second_get_is_conditional_and_a_304_returns_the_cached_data(world: World) -> None:
    client = world.client()
    first = await get_repo(world, client)
    bucket = f"installation:{world.installation.id}"
    used = world.sandbox.state.rate_buckets[bucket].used
    second = await get_repo(world, client)

    assert second == first
    initial, repeat = world.sandbox.requests_to("GET", "/repos/acme/models")
    assert "if-none-match" not in initial.headers
    assert repeat.headers["if-none-match"].startswith('W/"')
    assert repeat.status == 304
    assert world.sandbox.state.rate_buckets[bucket].used == used  # a 304 is free
    assert world.count("github_requests", status="304") == 1


async def test_installations_do_not_share_etag_entries(world: World) -> None:
    state = world.sandbox.state
    globex = state.add_installation("globex")
    state.add_repo("globex", "gadgets", {"a": b"1"}, installation=globex)
    client = world.client()
    acme = await client.installation_api(world.installation.id)
    other = await client.installation_api(globex.id)

    acme_repos = [
        r["full_name"]
        async for r in acme.getiter("/installation/repositories", iterable_key="repositories")
    ]
    other_repos = [
        r["full_name"]
        async for r in other.getiter("/installation/repositories", iterable_key="repositories")
    ]

    assert acme_repos == ["acme/models"]
    assert other_repos == ["globex/gadgets"]
    listings = world.sandbox.requests_to("GET", "/installation/repositories")
    assert [r.installation_id for r in listings] == [world.installation.id, globex.id]
    assert all("if-none-match" not in r.headers for r in listings)
    assert all(r.status == 200 for r in listings)


# ---- pacing and concurrency ---------------------------------------------------------------


async def test_200_posts_never_start_more_than_64_in_any_60_s_window(world: World) -> None:
    # GitHub allows 80 a minute counted on arrival; sending at most 64 keeps a margin.
    issue = world.sandbox.state.add_issue(world.repo, "Many comments")
    client = world.client()
    api = await client.installation_api(world.installation.id)
    url = REPO_PATH + "/issues/{number}/comments"
    url_vars = {**repo_vars(world), "number": issue.number}

    await asyncio.gather(
        *(api.post(url, url_vars=url_vars, data={"body": f"note {n}"}) for n in range(200))
    )

    starts = sorted(t for method, path, t in world.traffic.starts if path.endswith("/comments"))
    assert len(starts) == 200
    assert all(starts[i + 64] - starts[i] >= 60 for i in range(len(starts) - 64))
    assert starts[-1] - starts[0] >= 180  # 200 writes need four windows
    assert len(world.sandbox.state.issue_comments(world.repo, issue.number)) == 200


async def test_three_replicas_told_of_each_other_stay_under_64_writes_a_minute_together(
    world: World,
) -> None:
    # Each replica has its own pacer; GitHub counts the installation's writes together.
    issue = world.sandbox.state.add_issue(world.repo, "Many comments")
    policy = Settings(webhook_secret="x", replicas=3).github_policy()
    assert (policy.writes_per_minute, policy.writes_per_hour) == (21, 150)
    url = REPO_PATH + "/issues/{number}/comments"
    url_vars = {**repo_vars(world), "number": issue.number}
    replicas = [await world.client(policy).installation_api(world.installation.id) for _ in "abc"]

    await asyncio.gather(
        *(
            api.post(url, url_vars=url_vars, data={"body": f"note {n}"})
            for api in replicas
            for n in range(40)
        )
    )

    starts = sorted(t for method, path, t in world.traffic.starts if path.endswith("/comments"))
    assert len(starts) == 120
    assert all(starts[i + 64] - starts[i] >= 60 for i in range(len(starts) - 64))


async def test_a_write_held_for_the_limits_is_logged_not_silent(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # An hour's budget spent holds writes for many minutes: the log says why a job waits.
    issue = world.sandbox.state.add_issue(world.repo, "Held")
    client = world.client(ClientPolicy(writes_per_minute=2))
    api = await client.installation_api(world.installation.id)
    url = REPO_PATH + "/issues/{number}/comments"
    url_vars = {**repo_vars(world), "number": issue.number}
    with caplog.at_level(logging.WARNING, logger="model_guard.github"):
        for n in range(3):
            await api.post(url, url_vars=url_vars, data={"body": f"note {n}"})
    held = [r for r in caplog.records if "content-creation limits" in r.getMessage()]
    assert len(held) == 1
    assert held[0].recent_writes == 2 and 55 <= held[0].wait_s <= 60  # type: ignore[attr-defined]


async def test_the_pacer_keeps_under_the_hourly_limit_as_well() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = WritePacer(((64, MINUTE), (450, HOUR)), clock=lambda: now[0], sleep=sleep)
    starts = [await pacer.wait_turn() for _ in range(1000)]
    assert all(starts[i + 64] - starts[i] >= MINUTE for i in range(len(starts) - 64))
    assert all(starts[i + 450] - starts[i] >= HOUR for i in range(len(starts) - 450))
    assert starts[449] < MINUTE * 8  # the hour's allowance is spent at the minute's pace


def test_pacing_windows_are_checked() -> None:
    with pytest.raises(ValueError, match="pacing windows"):
        WritePacer(((0, MINUTE),), clock=lambda: 0.0, sleep=asyncio.sleep)


async def test_reads_are_not_paced(world: World) -> None:
    client = world.client()
    await asyncio.gather(*(get_repo(world, client) for _ in range(100)))
    assert world.time.sleeps == []


async def test_no_more_than_the_cap_is_in_flight_for_one_installation(world: World) -> None:
    client = world.client(ClientPolicy(per_installation_concurrency=3))
    await get_repo(world, client)
    world.traffic.most_in_flight = 0
    world.sandbox.faults.slow("GET", "^/repos/acme/models$", seconds=0.05, times=None)
    await asyncio.gather(*(get_repo(world, client) for _ in range(12)))
    assert world.traffic.most_in_flight == 3


# ---- telemetry, logs, input checks ----------------------------------------------------------


async def test_telemetry_counts_every_response_by_status(world: World) -> None:
    client = world.client()
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=500)
    await get_repo(world, client)
    api = await client.installation_api(world.installation.id)
    with pytest.raises(gidgethub.BadRequest):
        await api.getitem("/repos/acme/missing")
    assert world.count("github_requests", status="201") == 1  # the token
    assert world.count("github_requests", status="500") == 1
    assert world.count("github_requests", status="200") == 1
    assert world.count("github_requests", status="404") == 1


async def test_logs_never_carry_tokens_or_jwts(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = world.client()
    world.sandbox.faults.fail_next("GET", "^/repos/acme/models$", status=502)
    await get_repo(world, client)
    assert any(r.getMessage() == "retrying GitHub request" for r in caplog.records)
    (token,) = world.sandbox.state.tokens
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert token not in logged
    assert "eyJ" not in logged  # no JWT


async def test_closed_client_refuses_requests(world: World) -> None:
    client = world.client()
    await get_repo(world, client)
    await client.close()
    with pytest.raises(GitHubClientError, match="closed"):
        await get_repo(world, client)


@pytest.mark.parametrize(
    "key",
    [
        "not a key",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode(),
    ],
    ids=["text", "truncated-pem", "ec-key"],
)
def test_bad_private_key_is_a_one_line_error(key: str) -> None:
    session: Any = SimpleNamespace()  # never used: the key is checked before any request
    with pytest.raises(GitHubClientError) as raised:
        GitHubClient(session, app_id="1", private_key=key, api_url="http://127.0.0.1:1")
    assert "\n" not in str(raised.value)
    assert "AAAA" not in str(raised.value)
    assert "private key" in str(raised.value)


def test_app_id_must_be_a_string() -> None:
    session: Any = SimpleNamespace()
    with pytest.raises(GitHubClientError, match="App id must be a non-empty string"):
        GitHubClient(session, app_id=42, private_key="x", api_url="http://127.0.0.1:1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [({"max_attempts": 0}, "max_attempts"), ({"base_delay": -1.0}, "base_delay")],
)
def test_policy_refuses_values_that_break_the_client(
    changes: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(GitHubClientError, match=f"ClientPolicy.{field_name}"):
        ClientPolicy(**changes)


async def test_closed_client_makes_no_new_installation_apis(world: World) -> None:
    client = world.client()
    await client.close()
    with pytest.raises(GitHubClientError, match="closed"):
        await client.installation_api(world.installation.id)


async def test_an_installation_removed_after_listing_is_skipped(world: World) -> None:
    state = world.sandbox.state
    gone = state.add_installation("globex")
    state.add_repo("globex", "gadgets", {"a": b"1"}, installation=gone)
    world.sandbox.faults.fail_next(
        "POST", f"/app/installations/{gone.id}/access_tokens", status=404
    )
    repos = await world.client().installed_repositories()
    assert [r.full_name for r in repos] == ["acme/models"]


async def test_etag_cache_is_bounded_least_recently_used_first(world: World) -> None:
    client = world.client(ClientPolicy(etag_cache_entries=1))
    api = await client.installation_api(world.installation.id)
    await api.getitem("/repos/acme/models")
    await api.getitem("/installation/repositories")  # evicts the repository
    await api.getitem("/repos/acme/models")
    repo_gets = world.sandbox.requests_to("GET", "/repos/acme/models")
    assert [("if-none-match" in r.headers) for r in repo_gets] == [False, False]


async def test_an_answer_over_the_entry_limit_is_not_kept_for_a_conditional_get(
    world: World,
) -> None:
    small = world.client(ClientPolicy(etag_entry_max_bytes=64))
    api = await small.installation_api(world.installation.id)
    await api.getitem("/repos/acme/models")  # a repository answer is far over 64 bytes
    await api.getitem("/repos/acme/models")
    roomy = world.client()
    api = await roomy.installation_api(world.installation.id)
    await api.getitem("/repos/acme/models")
    await api.getitem("/repos/acme/models")
    repo_gets = world.sandbox.requests_to("GET", "/repos/acme/models")
    assert [("if-none-match" in r.headers) for r in repo_gets] == [False, False, False, True]


async def test_the_etag_caches_of_a_client_hold_at_most_its_byte_budget(world: World) -> None:
    budget = 6_000
    client = world.client(ClientPolicy(etag_cache_bytes=budget, etag_entry_max_bytes=budget))
    api = await client.installation_api(world.installation.id)
    urls = ["/repos/acme/models", "/installation/repositories", "/repos/acme/models/issues"]
    for _ in range(3):
        for url in urls:
            await api.getitem(url)
            assert 0 < api.cache.held_bytes <= budget  # type: ignore[attr-defined]


# ---- the pure parts: retry decisions, the LRU mapping, token parsing -----------------------

NOW = 1_000.0


def body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "message", "attempt", "expected"),
    [
        (502, {}, "Bad Gateway", 1, Retry(RetryReason.SERVER_ERROR)),
        (401, {}, "Bad credentials", 1, Retry(RetryReason.BAD_CREDENTIALS, 0.0)),
        (401, {}, "Requires authentication", 1, None),
        (403, {"retry-after": "7"}, "slow down", 1, Retry(RetryReason.SECONDARY_RATE_LIMIT, 7.0)),
        (
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"},
            "API rate limit exceeded",
            1,
            Retry(RetryReason.PRIMARY_RATE_LIMIT, 101.0),
        ),
        (
            429,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "900"},
            "API rate limit exceeded",
            1,
            Retry(RetryReason.PRIMARY_RATE_LIMIT, 1.0),
        ),
        (
            403,
            {},
            "You have exceeded a secondary rate limit.",
            2,
            Retry(RetryReason.SECONDARY_RATE_LIMIT, 120.0),
        ),
        (429, {}, "Too Many Requests", 1, Retry(RetryReason.SECONDARY_RATE_LIMIT, 60.0)),
        (403, {"x-ratelimit-remaining": "12"}, "Resource not accessible by integration", 1, None),
        (403, {"retry-after": "nan"}, "Forbidden", 1, None),
        (404, {}, "Not Found", 1, None),
        (422, {}, "Validation Failed", 1, None),
    ],
    ids=[
        "5xx-backs-off",
        "bad-credentials",
        "other-401",
        "retry-after",
        "primary-reset",
        "primary-reset-passed",
        "secondary-without-header-doubles",
        "bare-429",
        "permission-403",
        "unreadable-retry-after",
        "404",
        "422",
    ],
)
def test_decide_retry_follows_githubs_rate_limit_advice(
    status: int, headers: dict[str, str], message: str, attempt: int, expected: Retry | None
) -> None:
    assert decide_retry(status, headers, body=body(message), now=NOW, attempt=attempt) == expected


def test_etag_cache_evicts_the_least_recently_used_url() -> None:
    cache = EtagCache(2)
    cache["a"] = ("1", None, {}, None)
    cache["b"] = ("2", None, {}, None)
    assert cache["a"][0] == "1"  # a is now the most recent
    cache["c"] = ("3", None, {}, None)
    assert sorted(cache) == ["a", "c"]


def test_an_etag_budget_drops_the_least_recently_used_answer_of_any_installation() -> None:
    budget = EtagBudget(100, max_entry_bytes=60)
    first, second = EtagCache(10, budget), EtagCache(10, budget)
    first.note_size("a", 40)
    first["a"] = ("1", None, {}, None)
    second.note_size("b", 40)
    second["b"] = ("2", None, {}, None)
    assert first["a"][0] == "1"  # a is now the most recent: b goes first
    first.note_size("c", 40)
    first["c"] = ("3", None, {}, None)
    assert (sorted(first), sorted(second), budget.total) == (["a", "c"], [], 80)
    # A 304 stores the same answer again and keeps the size it arrived with.
    first["a"] = ("1", None, {}, None)
    assert (first.held_bytes, budget.total) == (80, 80)
    # An answer over the entry limit is not kept, and drops what was kept for its URL.
    first.note_size("c", 61)
    first["c"] = ("4", None, {}, None)
    assert (sorted(first), budget.total) == (["a"], 40)
    del first["a"]
    assert (len(first), budget.total) == (0, 0)


def test_client_policy_refuses_a_non_positive_etag_budget() -> None:
    for options in ({"etag_cache_bytes": 0}, {"etag_entry_max_bytes": -1}):
        with pytest.raises(GitHubClientError, match="must be a positive integer"):
            ClientPolicy(**options)


@pytest.mark.parametrize(
    "response",
    [{"token": "ghs_x"}, {"expires_at": "2030-01-01T00:00:00Z"}, {"token": "", "expires_at": "x"}],
)
def test_malformed_token_response_is_a_one_line_error(response: dict[str, str]) -> None:
    with pytest.raises(GitHubClientError, match="installation 9") as raised:
        parse_token(response, installation_id=9)
    assert "\n" not in str(raised.value)


def test_token_expiry_is_read_as_utc() -> None:
    token = parse_token({"token": "ghs_x", "expires_at": "2030-01-01T00:00:00Z"}, installation_id=1)
    assert token.expires_at == 1_893_456_000.0
