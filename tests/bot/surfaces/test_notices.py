"""One-off notices over real HTTP against the sandbox: posted once per key, never twice."""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI

from bot.surfaces.notices import notice_marker, post_notice_once
from sandbox import Sandbox
from sandbox.records import Issue
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[tuple[GitHubAPI, Issue, str]]:
    installation, repo = seed_repo(sandbox.state, {"README.md": b"models\n"})
    issue = sandbox.state.add_issue(repo, "Tracking")
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession() as session:
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield gh, issue, sandbox.state.app.bot.login


def posted(sandbox: Sandbox) -> list[str]:
    return [c.body for c in sandbox.state.comments.values() if not c.deleted]


async def test_a_notice_is_posted_once_per_key_however_often_it_is_asked(
    sandbox: Sandbox, api: tuple[GitHubAPI, Issue, str]
) -> None:
    gh, issue, bot = api
    first = await post_notice_once(
        gh, repo=REPO, issue_number=issue.number, key="k1", body="red", bot_login=bot
    )
    again = await post_notice_once(
        gh, repo=REPO, issue_number=issue.number, key="k1", body="red", bot_login=bot
    )
    other = await post_notice_once(
        gh, repo=REPO, issue_number=issue.number, key="k2", body="green", bot_login=bot
    )
    assert first.created and not again.created and other.created
    assert again.comment_id == first.comment_id
    assert posted(sandbox) == [f"{notice_marker('k1')}\nred", f"{notice_marker('k2')}\ngreen"]


async def test_a_lost_answer_does_not_post_the_notice_twice(
    sandbox: Sandbox, api: tuple[GitHubAPI, Issue, str]
) -> None:
    gh, issue, bot = api
    sandbox.faults.lose_answer("POST", r"/comments$", status=502)
    notice = await post_notice_once(
        gh, repo=REPO, issue_number=issue.number, key="k", body="red", bot_login=bot
    )
    assert not notice.created  # found where the lost create put it
    assert len(posted(sandbox)) == 1


async def test_a_person_pasting_the_marker_does_not_silence_the_notice(
    sandbox: Sandbox, api: tuple[GitHubAPI, Issue, str]
) -> None:
    gh, issue, bot = api
    repo = sandbox.state.find_repo("acme", "models")
    assert repo is not None
    sandbox.state.add_comment(repo, issue.number, f"{notice_marker('k')} copied")
    notice = await post_notice_once(
        gh, repo=REPO, issue_number=issue.number, key="k", body="red", bot_login=bot
    )
    assert notice.created and len(posted(sandbox)) == 2
