"""Webhook deliveries are signed like GitHub's, recorded, listed and redelivered on request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gidgethub import sansio
from multidict import CIMultiDict

from sandbox import Sandbox
from sandbox.webhooks import load_example
from tests.conftest import app_jwt


@dataclass
class Receiver:
    """A stand-in App endpoint that stores what it was sent and answers ``status``."""

    url: str = ""
    status: int = 202
    received: list[tuple[CIMultiDict[str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.copy(), await request.read()))
        self.arrived.set()
        return web.Response(status=self.status)


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    """A receiver listening on loopback at ``/webhook``."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", found.handle)
    server = await aiohttp_server(app)
    found.url = str(server.make_url("/webhook"))
    return found


async def test_delivery_is_signed_with_sha256_and_the_apps_secret(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    payload = load_example("issue_comment", "created")
    delivery = await sandbox.deliver(receiver.url, "issue_comment", payload, guid="guid-1")
    headers, body = receiver.received[0]
    secret = sandbox.state.app.webhook_secret
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected
    assert headers["X-GitHub-Event"] == "issue_comment"
    assert headers["X-GitHub-Delivery"] == "guid-1"
    assert json.loads(body) == payload
    event = sansio.Event.from_http(headers, body, secret=secret)
    assert (event.event, event.data["action"]) == ("issue_comment", "created")
    assert (delivery.status_code, delivery.ok, delivery.action) == (202, True, "created")


async def test_delivery_with_a_wrong_secret_fails_the_apps_check(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    await sandbox.deliver(
        receiver.url, "ping", b'{"zen": "Keep it logically awesome."}', secret="x"
    )
    headers, body = receiver.received[0]
    with pytest.raises(Exception, match="signature"):
        sansio.Event.from_http(headers, body, secret=sandbox.state.app.webhook_secret)


async def test_unreachable_app_is_recorded_as_a_failed_delivery(sandbox: Sandbox) -> None:
    delivery = await sandbox.deliver(f"{sandbox.url}/_sandbox/nowhere", "ping", {"zen": "z"})
    assert not delivery.ok
    assert sandbox.state.deliveries[delivery.id] == delivery


async def test_deliveries_are_listed_and_redelivered_through_the_api(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    receiver.status = 500
    first = await sandbox.deliver(receiver.url, "ping", {"zen": "z", "hook_id": 1})
    receiver.status = 202
    receiver.arrived.clear()
    headers = {"Authorization": f"Bearer {app_jwt(sandbox.state)}"}
    base = f"{sandbox.url}/app/hook/deliveries"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(base, params={"status": "failure"}) as response:
            failed: list[dict[str, Any]] = await response.json()
        assert [d["guid"] for d in failed] == [first.guid]
        assert failed[0]["status_code"] == 500
        async with session.post(f"{base}/{first.id}/attempts") as response:
            assert response.status == 202
        await asyncio.wait_for(receiver.arrived.wait(), timeout=10)
        async with session.get(base) as response:
            listed: list[dict[str, Any]] = await response.json()
    # Redelivery runs in the background; the listing may or may not include it yet.
    assert receiver.received[1][0]["X-GitHub-Delivery"] == first.guid
    assert receiver.received[1][1] == receiver.received[0][1]
    assert listed[-1]["guid"] == first.guid


async def test_broken_payload_is_still_sent_byte_for_byte(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    delivery = await sandbox.deliver(receiver.url, "issues", b"{truncated")
    assert receiver.received[0][1] == b"{truncated"
    assert (delivery.action, delivery.installation_id) == (None, None)


async def test_pull_request_events_carry_the_real_numbers_and_shas(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    installation = state.add_installation("acme")
    repo = state.add_repo("acme", "models", {"a.txt": b"a"}, installation=installation)
    pull = state.add_pull(repo, head="feature", files={"b.txt": b"b"})
    before = state.pull_head(repo, pull)
    await sandbox.deliver_pull_request(receiver.url, repo, pull)
    after = state.commit(repo, {"c.txt": b"c"}, message="c", branch="feature")
    delivery = await sandbox.deliver_pull_request(
        receiver.url, repo, pull, action="synchronize", before=before
    )
    secret = state.app.webhook_secret
    opened, synchronized = (
        sansio.Event.from_http(headers, body, secret=secret) for headers, body in receiver.received
    )
    assert (opened.event, opened.data["action"], opened.data["number"]) == (
        "pull_request",
        "opened",
        pull.number,
    )
    assert opened.data["pull_request"]["head"]["sha"] == before
    assert opened.data["pull_request"]["url"] == f"{sandbox.url}/repos/acme/models/pulls/1"
    assert opened.data["installation"]["id"] == installation.id
    assert opened.data["repository"]["full_name"] == "acme/models"
    assert (synchronized.data["before"], synchronized.data["after"]) == (before, after)
    assert synchronized.data["pull_request"]["commits"] == 2
    assert (delivery.action, delivery.installation_id, delivery.repository_id) == (
        "synchronize",
        installation.id,
        repo.id,
    )


async def test_ready_for_review_event_is_shaped_like_reopened_with_the_draft_flag_cleared(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    installation = state.add_installation("acme")
    repo = state.add_repo("acme", "models", {"a.txt": b"a"}, installation=installation)
    pull = state.add_pull(repo, head="feature", files={"b.txt": b"b"})
    await sandbox.deliver_pull_request(receiver.url, repo, pull, action="ready_for_review")
    ((headers, body),) = receiver.received
    event = sansio.Event.from_http(headers, body, secret=state.app.webhook_secret)
    assert (event.data["action"], event.data["number"]) == ("ready_for_review", pull.number)
    assert event.data["pull_request"]["head"]["sha"] == state.pull_head(repo, pull)
    assert event.data["pull_request"]["draft"] is False


async def test_check_suite_rerequested_event_names_the_suite_and_its_commit(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    installation = state.add_installation("acme")
    repo = state.add_repo("acme", "models", {"a.txt": b"a"}, installation=installation)
    head = state.branches[repo.id]["main"]
    run = state.create_check_run(repo, name="model-guard", head_sha=head)
    await sandbox.deliver_check_suite(receiver.url, repo, run.check_suite_id)
    headers, body = receiver.received[0]
    event = sansio.Event.from_http(headers, body, secret=state.app.webhook_secret)
    suite = event.data["check_suite"]
    assert (event.event, event.data["action"]) == ("check_suite", "rerequested")
    assert (suite["id"], suite["head_sha"], suite["head_branch"]) == (
        run.check_suite_id,
        head,
        "main",
    )
    assert suite["app"]["id"] == state.app.id
    assert event.data["installation"]["id"] == installation.id


async def test_issue_comment_created_on_a_pull_request_names_the_comment_and_links_the_pull(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    installation = state.add_installation("acme")
    repo = state.add_repo("acme", "models", {"a.txt": b"a"}, installation=installation)
    pull = state.add_pull(repo, head="feature", files={"b.txt": b"b"})
    comment = state.add_comment(repo, pull.number, "/bisect --full", user="maintainer")
    delivery = await sandbox.deliver_issue_comment(receiver.url, repo, comment)
    headers, body = receiver.received[0]
    event = sansio.Event.from_http(headers, body, secret=state.app.webhook_secret)
    assert (event.event, event.data["action"]) == ("issue_comment", "created")
    assert "changes" not in event.data
    assert event.data["comment"]["id"] == comment.id
    assert event.data["comment"]["body"] == "/bisect --full"
    assert event.data["comment"]["user"]["login"] == "maintainer"
    assert event.data["comment"]["user"]["type"] == "User"
    assert event.data["sender"]["login"] == "maintainer"
    assert event.data["issue"]["number"] == pull.number
    pull_url = f"{sandbox.url}/repos/acme/models/pulls/{pull.number}"
    assert event.data["issue"]["pull_request"]["url"] == pull_url
    assert event.data["installation"]["id"] == installation.id
    assert (delivery.action, delivery.repository_id) == ("created", repo.id)


async def test_issue_comment_on_a_plain_issue_has_no_pull_request_link(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    repo = state.add_repo(
        "acme", "models", {"a.txt": b"a"}, installation=state.add_installation("acme")
    )
    issue = state.add_issue(repo, "A bug")
    comment = state.add_comment(repo, issue.number, "/bisect")
    await sandbox.deliver_issue_comment(receiver.url, repo, comment)
    event = json.loads(receiver.received[0][1])
    assert event["issue"]["number"] == issue.number
    assert "pull_request" not in event["issue"]


async def test_issue_comment_edited_says_the_body_it_replaced(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    repo = state.add_repo(
        "acme", "models", {"a.txt": b"a"}, installation=state.add_installation("acme")
    )
    pull = state.add_pull(repo, head="feature", files={"b.txt": b"b"})
    comment = state.add_comment(repo, pull.number, "looks good")
    edited = state.update_comment(repo, comment.id, "/bisect", editor=comment.user)
    await sandbox.deliver_issue_comment(receiver.url, repo, edited, action="edited")
    event = json.loads(receiver.received[0][1])
    assert event["action"] == "edited"
    assert event["changes"] == {"body": {"from": "looks good"}}
    assert event["comment"]["body"] == "/bisect"


async def test_issue_comment_payload_refuses_an_action_without_an_example(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    state = sandbox.state
    repo = state.add_repo(
        "acme", "models", {"a.txt": b"a"}, installation=state.add_installation("acme")
    )
    pull = state.add_pull(repo, head="feature", files={"b.txt": b"b"})
    comment = state.add_comment(repo, pull.number, "/bisect")
    with pytest.raises(ValueError, match="no issue_comment example"):
        await sandbox.deliver_issue_comment(receiver.url, repo, comment, action="deleted")
    assert receiver.received == []
