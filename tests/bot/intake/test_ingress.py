"""End-to-end tests of webhook ingress over real HTTP on loopback, with octokit's real payloads."""

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from gidgethub import routing, sansio

from bot.app import STORE, create_app
from bot.settings import Settings
from bot.store import JobSpec, JobState
from sandbox.webhooks import example_path

SECRET = "s3cret-for-tests"


def example(event: str, name: str) -> bytes:
    return example_path(event, name).read_bytes()


def headers(
    event: str, body: bytes, *, delivery: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


def planning_router() -> routing.Router:
    """A router that plans one job per pull_request event, to exercise delivery + jobs together."""
    router = routing.Router()

    @router.register("pull_request")
    async def plan(event: sansio.Event, jobs: list[JobSpec]) -> None:
        jobs.append(
            JobSpec(
                kind="test",
                key=f"test:{event.delivery_id}",
                payload={"number": event.data["number"]},
            )
        )

    return router


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = Settings(
        webhook_secret=SECRET, database=tmp_path / "store.sqlite3", max_body_bytes=64 * 1024
    )
    return await aiohttp_client(create_app(settings, routers=[planning_router()]))


async def stored(client: Any) -> tuple[int, dict[JobState, int]]:
    store = client.server.app[STORE]
    return await store.delivery_count(), await store.job_counts()


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("pull_request", "opened"),
        ("issue_comment", "created"),
        ("installation", "created"),
        ("push", "event"),
        ("check_run", "rerequested"),
    ],
)
async def test_signed_octokit_payload_is_accepted_and_recorded(
    client: Any, event: str, name: str
) -> None:
    body = example(event, name)
    response = await client.post("/webhook", data=body, headers=headers(event, body))
    assert response.status == 202
    assert (await stored(client))[0] == 1


async def test_pull_request_delivery_is_stored_with_its_jobs(client: Any) -> None:
    body = example("pull_request", "synchronize")
    response = await client.post("/webhook", data=body, headers=headers("pull_request", body))
    assert (await response.json())["jobs"] == 1
    deliveries, jobs = await stored(client)
    assert deliveries == 1 and jobs[JobState.QUEUED] == 1


async def test_redelivered_delivery_id_runs_nothing_twice(client: Any) -> None:
    body = example("pull_request", "opened")
    same = headers("pull_request", body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    first = await client.post("/webhook", data=body, headers=same)
    second = await client.post("/webhook", data=body, headers=same)
    assert (first.status, second.status) == (202, 202)
    assert (await second.json())["duplicate"] is True
    deliveries, jobs = await stored(client)
    assert deliveries == 1 and jobs[JobState.QUEUED] == 1


@pytest.mark.parametrize("case", ["unsigned", "sha1_only", "wrong_secret", "tampered"])
async def test_bad_signatures_are_rejected_with_401_and_nothing_stored(
    client: Any, case: str
) -> None:
    body = example("pull_request", "opened")
    sent = headers("pull_request", body, secret="wrong" if case == "wrong_secret" else SECRET)
    if case in {"unsigned", "sha1_only"}:
        del sent["X-Hub-Signature-256"]
    if case == "sha1_only":
        sent["X-Hub-Signature"] = (
            "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        )
    if case == "tampered":
        body = body.replace(b'"opened"', b'"closed"', 1)
    response = await client.post("/webhook", data=body, headers=sent)
    assert response.status == 401
    assert "message" in await response.json()
    assert (await stored(client))[0] == 0


async def test_body_over_limit_gets_413(client: Any) -> None:
    body = json.dumps({"action": "opened", "padding": "x" * 70_000}).encode()
    response = await client.post("/webhook", data=body, headers=headers("pull_request", body))
    assert response.status == 413
    assert (await stored(client))[0] == 0


async def test_signed_malformed_json_gets_400(client: Any) -> None:
    body = b'{"action": "opened",'
    response = await client.post("/webhook", data=body, headers=headers("pull_request", body))
    assert response.status == 400
    assert (await stored(client))[0] == 0


async def test_ping_answers_200_and_stores_nothing(client: Any) -> None:
    body = example("ping", "event.with-app_id")
    response = await client.post("/webhook", data=body, headers=headers("ping", body))
    assert response.status == 200
    assert (await response.json())["message"] == "pong"
    assert (await stored(client))[0] == 0


async def test_healthz_and_metrics_report_deliveries_and_jobs(client: Any) -> None:
    body = example("pull_request", "opened")
    await client.post("/webhook", data=body, headers=headers("pull_request", body))
    await client.post(
        "/webhook",
        data=body,
        headers={**headers("pull_request", body), "X-Hub-Signature-256": "sha256=00"},
    )
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    text = await (await client.get("/metrics")).text()
    assert 'model_guard_deliveries_total{event="pull_request",outcome="accepted"} 1.0' in text
    assert 'model_guard_deliveries_total{event="pull_request",outcome="refused_401"} 1.0' in text
    assert 'model_guard_jobs{state="queued"} 1.0' in text


def test_settings_refuse_to_start_without_a_webhook_secret() -> None:
    from bot.errors import SettingsError

    with pytest.raises(SettingsError, match="GITHUB_WEBHOOK_SECRET"):
        Settings.from_env({"GITHUB_APP_ID": "1"})
    with pytest.raises(SettingsError, match="PORT"):
        Settings.from_env({"GITHUB_WEBHOOK_SECRET": "x", "PORT": "http"})
    settings = Settings.from_env(
        {"GITHUB_WEBHOOK_SECRET": "hunter2-secret", "GITHUB_API_URL": "http://127.0.0.1:9/"}
    )
    assert settings.api_url == "http://127.0.0.1:9" and "hunter2" not in repr(settings)


def test_settings_read_the_per_model_budget_and_hand_it_to_the_engine() -> None:
    from bot.errors import SettingsError

    env = {"GITHUB_WEBHOOK_SECRET": "x"}
    limits = Settings.from_env(env).scoring_limits()
    assert (limits.max_memory_bytes, limits.timeout_s) == (1024 * 1024 * 1024, 60.0)
    tight = Settings.from_env(
        {**env, "MODEL_GUARD_MODEL_MEMORY_MIB": "256", "MODEL_GUARD_MODEL_TIMEOUT_S": "2.5"}
    ).scoring_limits()
    assert (tight.max_memory_bytes, tight.timeout_s) == (256 * 1024 * 1024, 2.5)
    with pytest.raises(SettingsError, match="MODEL_GUARD_MODEL_MEMORY_MIB must be between 16"):
        Settings.from_env({**env, "MODEL_GUARD_MODEL_MEMORY_MIB": "8"})
    with pytest.raises(SettingsError, match="MODEL_GUARD_MODEL_TIMEOUT_S must be a number"):
        Settings.from_env({**env, "MODEL_GUARD_MODEL_TIMEOUT_S": "soon"})
