"""Sticky comments over real HTTP against the GitHub sandbox: create, update, find, dedupe, refuse."""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI
from prometheus_client import CollectorRegistry, Counter

from bot.store import SqliteStore
from bot.surfaces.sticky import (
    MAX_COMMENT_CHARS,
    IssueUnavailable,
    Section,
    StickyComments,
    StickyError,
    StickyOutcome,
    fit_sections,
    marker,
)
from sandbox import Sandbox
from sandbox.records import IssueState, Repo, UserType
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"
MARK = marker("nightly")


@dataclass
class World:
    """A seeded sandbox repo with one open issue, an API client and a store."""

    sandbox: Sandbox
    repo: Repo
    issue: int
    gh: GitHubAPI
    store: SqliteStore
    registry: CollectorRegistry
    outcomes: Counter

    def sticky(self, store: SqliteStore | None = None) -> StickyComments:
        return StickyComments(
            store or self.store,
            bot_login=self.sandbox.state.app.bot.login,
            app_id=self.sandbox.state.app.id,
            outcomes=self.outcomes,
        )

    def live(self, number: int | None = None) -> list[Any]:
        return self.sandbox.state.issue_comments(self.repo, number or self.issue)

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value("model_guard_sticky_total", {"outcome": outcome})
        return value or 0.0

    async def post_own(self, body: str, number: int | None = None) -> int:
        """Comment as the App through the API (the way a sticky comment is written)."""
        data = await self.gh.post(
            f"/repos/{REPO}/issues/{number or self.issue}/comments", data={"body": body}
        )
        return int(data["id"])


@pytest.fixture
async def world(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[World]:
    installation, repo = seed_repo(sandbox.state, {"README.md": b"models\n"})
    issue = sandbox.state.add_issue(repo, "model-guard: nightly", labels=["model-guard"])
    token = await installation_token(sandbox, installation)
    registry = CollectorRegistry()
    outcomes = Counter("model_guard_sticky", "Sticky outcomes", ["outcome"], registry=registry)
    async with (
        aiohttp.ClientSession() as session,
        SqliteStore(tmp_path / "store.db") as store,
    ):
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield World(sandbox, repo, issue.number, gh, store, registry, outcomes)


def writes(sandbox: Sandbox, method: str) -> list[Any]:
    path = r"/repos/acme/models/issues/(\d+/comments|comments/\d+)"
    return sandbox.requests_to(method, path)


# ---- fitting a body under the limit ----------------------------------------------------------


def test_marker_refuses_purpose_outside_lowercase_words() -> None:
    assert marker("pr-check") == "<!-- model-guard:pr-check -->"
    with pytest.raises(ValueError, match="purpose"):
        marker("Nightly run")


def test_fit_sections_keeps_everything_that_fits() -> None:
    body = fit_sections("nightly", [Section("summary"), Section("details", 1, "Details")])
    assert body == f"{MARK}\n\nsummary\n\ndetails"


def test_fit_sections_drops_highest_priority_number_first_with_visible_note() -> None:
    sections = [
        Section("S" * 100),
        Section("H" * 300, priority=1, label="Run history"),
        Section("T" * 300, priority=2, label="Per-model table"),
    ]
    body = fit_sections("nightly", sections, limit=600)
    assert len(body) <= 600
    assert "S" * 100 in body and "H" * 300 in body and "T" * 300 not in body
    assert (
        "_Per-model table left out: the comment would exceed GitHub's 65,536-character limit._"
        in body
    )
    assert body.startswith(MARK)


def test_fit_sections_drops_later_section_first_on_equal_priority() -> None:
    sections = [Section("a" * 200, 1, "First"), Section("b" * 200, 1, "Second")]
    body = fit_sections("nightly", sections, limit=400)
    assert "a" * 200 in body and "b" * 200 not in body
    assert "_Second left out" in body


def test_fit_sections_truncates_priority_zero_text_with_note_and_closes_code_fence() -> None:
    text = "intro\n```\n" + "\n".join(f"row {i}" for i in range(20_000))
    body = fit_sections("nightly", [Section(text), Section("extra", 3, "Extra")])
    assert len(body) <= MAX_COMMENT_CHARS
    assert body.startswith(f"{MARK}\n\nintro\n```\nrow 0\n")
    truncated = "_… truncated: the comment would exceed GitHub's 65,536-character limit._"
    assert f"\n```\n\n{truncated}" in body  # the fence is closed before the note
    assert body.count("```") == 2
    # The dropped section's note survives the truncation of the text before it.
    assert body.endswith(
        "_Extra left out: the comment would exceed GitHub's 65,536-character limit._"
    )


def test_fit_sections_truncates_the_last_priority_zero_section_first() -> None:
    first, second = Section("keep me whole"), Section("w" * 70_000)
    body = fit_sections("nightly", [first, second])
    assert len(body) <= MAX_COMMENT_CHARS
    assert body.startswith(f"{MARK}\n\nkeep me whole\n\nwww")
    assert body.endswith("truncated: the comment would exceed GitHub's 65,536-character limit._")


def test_fit_sections_result_never_exceeds_a_small_limit() -> None:
    sections = [Section("a" * 500), *(Section(f"s{i}" * 50, i % 3, f"Part {i}") for i in range(40))]
    for limit in (200, 333, 1_000, 2_500):
        body = fit_sections("nightly", sections, limit=limit)
        assert len(body) <= limit and body.startswith(MARK)


def test_fit_sections_fits_70000_characters_under_limit_with_note() -> None:
    sections = [Section("## Nightly bisect\nv3 regressed."), Section("x" * 70_000, 1, "Full log")]
    body = fit_sections("nightly", sections)
    assert len(body) <= MAX_COMMENT_CHARS
    assert "v3 regressed." in body
    assert "_Full log left out: the comment would exceed" in body


# ---- upsert against the sandbox --------------------------------------------------------------


async def test_first_upsert_creates_one_comment_starting_with_marker(world: World) -> None:
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="all models pass"
    )
    assert result.outcome is StickyOutcome.CREATED
    [comment] = world.live()
    assert comment.id == result.comment_id
    assert comment.body == f"{MARK}\n\nall models pass"
    assert comment.via_app and comment.user.type is UserType.BOT
    assert result.html_url is not None and result.html_url.endswith(f"#issuecomment-{comment.id}")
    assert await world.store.get_sticky(REPO, world.issue, MARK) == comment.id
    assert world.count("created") == 1


async def test_same_body_again_is_unchanged_and_sends_no_patch(world: World) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="same"
    )
    again = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="same"
    )
    assert again.outcome is StickyOutcome.UNCHANGED
    assert again.comment_id == first.comment_id
    assert writes(world.sandbox, "PATCH") == []
    assert len(writes(world.sandbox, "POST")) == 1
    assert world.count("unchanged") == 1


async def test_changed_body_is_one_patch_of_the_same_comment(world: World) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="v1 passes"
    )
    second = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="v2 regressed"
    )
    assert second.outcome is StickyOutcome.UPDATED
    assert second.comment_id == first.comment_id
    [patch] = writes(world.sandbox, "PATCH")
    assert patch.body == {"body": f"{MARK}\n\nv2 regressed"}
    assert [c.body for c in world.live()] == [f"{MARK}\n\nv2 regressed"]


async def test_body_already_starting_with_marker_is_sent_as_given(world: World) -> None:
    body = f"{MARK}\nexact text"
    await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body=body
    )
    assert [c.body for c in world.live()] == [body]


async def test_human_comment_with_marker_is_never_edited_or_deleted(world: World) -> None:
    pasted = world.sandbox.state.add_comment(
        world.repo, world.issue, f"{MARK}\nI copied the bot's comment", user="maintainer"
    )
    other_bot = world.sandbox.state.user("other-app[bot]", type=UserType.BOT)
    imitation = world.sandbox.state.add_comment(world.repo, world.issue, MARK, user=other_bot.login)
    # Even a remembered id pointing at the person's comment is not trusted.
    await world.store.set_sticky(REPO, world.issue, MARK, pasted.id)
    sticky = world.sticky()
    result = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="report"
    )
    await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="report 2"
    )
    assert result.outcome is StickyOutcome.CREATED
    assert result.comment_id not in (pasted.id, imitation.id)
    bodies = {c.id: c.body for c in world.live()}
    assert bodies[pasted.id] == f"{MARK}\nI copied the bot's comment"
    assert bodies[imitation.id] == MARK
    assert bodies[result.comment_id] == f"{MARK}\n\nreport 2"
    touched = {r.path.rsplit("/", 1)[-1] for r in writes(world.sandbox, "PATCH")}
    touched |= {r.path.rsplit("/", 1)[-1] for r in writes(world.sandbox, "DELETE")}
    assert touched == {str(result.comment_id)}


async def test_stored_id_of_deleted_comment_is_forgotten_and_found_again_by_scan(
    world: World,
) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="one"
    )
    survivor = await world.post_own(f"{MARK}\n\nwritten by another replica")
    world.sandbox.state.delete_comment(world.repo, first.comment_id)
    result = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="two"
    )
    assert (result.comment_id, result.outcome) == (survivor, StickyOutcome.UPDATED)
    assert [c.body for c in world.live()] == [f"{MARK}\n\ntwo"]
    assert await world.store.get_sticky(REPO, world.issue, MARK) == survivor


async def test_comment_on_page_three_of_250_is_found_with_fresh_store(world: World) -> None:
    state = world.sandbox.state
    for i in range(220):
        state.add_comment(world.repo, world.issue, f"comment {i}", user=f"user{i % 7}")
    own = await world.post_own(f"{MARK}\n\nold report")
    for i in range(29):
        state.add_comment(world.repo, world.issue, f"later {i}", user="maintainer")
    assert len(world.live()) == 250
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="new report"
    )
    assert (result.comment_id, result.outcome) == (own, StickyOutcome.UPDATED)
    pages = world.sandbox.requests_to("GET", rf"/repos/acme/models/issues/{world.issue}/comments")
    assert sorted(r.query.get("page", "1") for r in pages) == ["1", "2", "3"]
    assert len(writes(world.sandbox, "POST")) == 1  # only the seeding post
    assert state.comments[own].body == f"{MARK}\n\nnew report"


async def test_duplicates_keep_oldest_and_delete_the_rest(world: World) -> None:
    ids = [await world.post_own(f"{MARK}\n\ncopy {i}") for i in range(3)]
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="merged"
    )
    assert result.comment_id == ids[0]
    assert sorted(result.removed_duplicates) == sorted(ids[1:])
    assert [(c.id, c.body) for c in world.live()] == [(ids[0], f"{MARK}\n\nmerged")]
    assert len(writes(world.sandbox, "DELETE")) == 2


async def test_other_purpose_markers_are_left_alone(world: World) -> None:
    other = await world.post_own(f"{marker('pr-check')}\n\nPR summary")
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="nightly"
    )
    assert result.outcome is StickyOutcome.CREATED
    assert {c.id for c in world.live()} == {other, result.comment_id}


async def test_fifty_concurrent_upserts_leave_exactly_one_comment(world: World) -> None:
    sticky = world.sticky()
    bodies = [f"run {i}" for i in range(50)]
    results = await asyncio.gather(
        *(
            sticky.upsert(
                world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body=body
            )
            for body in bodies
        )
    )
    [comment] = world.live()
    assert comment.body in {f"{MARK}\n\n{body}" for body in bodies}
    assert {r.comment_id for r in results} == {comment.id}
    assert len(writes(world.sandbox, "POST")) == 1
    assert [r.outcome for r in results].count(StickyOutcome.CREATED) == 1


class BarrierBeforeComment(GitHubAPI):
    """A real client that holds comment POSTs until every racer got there (two processes racing)."""

    def __init__(self, *args: Any, barrier: asyncio.Barrier, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier

    async def post(self, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.endswith("/comments"):
            await self.barrier.wait()
        return await super().post(url, *args, **kwargs)


async def test_two_instances_racing_on_one_store_end_with_one_comment(
    world: World, tmp_path: Path
) -> None:
    barrier = asyncio.Barrier(2)
    token = world.gh.oauth_token
    async with (
        aiohttp.ClientSession() as session,
        SqliteStore(tmp_path / "store.db") as second_store,
    ):
        racers = [
            BarrierBeforeComment(
                session, "tests", oauth_token=token, base_url=world.sandbox.url, barrier=barrier
            )
            for _ in range(2)
        ]
        first, second = world.sticky(), world.sticky(second_store)
        results = await asyncio.gather(
            first.upsert(
                racers[0], repo=REPO, issue_number=world.issue, purpose="nightly", body="A"
            ),
            second.upsert(
                racers[1], repo=REPO, issue_number=world.issue, purpose="nightly", body="B"
            ),
        )
    assert len(writes(world.sandbox, "POST")) == 2  # both created: the race really happened
    [comment] = world.live()
    assert comment.body in (f"{MARK}\n\nA", f"{MARK}\n\nB")
    assert {r.comment_id for r in results} == {comment.id}
    assert await world.store.get_sticky(REPO, world.issue, MARK) == comment.id
    # Later upserts from either instance keep using the one comment.
    again = await first.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="C"
    )
    assert again.comment_id == comment.id and len(world.live()) == 1


async def test_70000_character_body_is_fitted_and_accepted_by_github(world: World) -> None:
    sections = [Section("Summary: v4 regressed"), Section("y" * 70_000, 2, "Raw scores")]
    body = fit_sections("nightly", sections)
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body=body
    )
    stored = world.sandbox.state.comments[result.comment_id].body
    assert len(stored) <= MAX_COMMENT_CHARS
    assert (
        "_Raw scores left out: the comment would exceed GitHub's 65,536-character limit._" in stored
    )


async def test_oversized_plain_body_is_truncated_with_note_not_refused(world: World) -> None:
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="z" * 70_000
    )
    stored = world.sandbox.state.comments[result.comment_id].body
    assert stored.startswith(MARK) and len(stored) <= MAX_COMMENT_CHARS
    assert stored.endswith(
        "_… truncated: the comment would exceed GitHub's 65,536-character limit._"
    )


async def test_locked_issue_raises_issue_unavailable_and_writes_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    locked = world.sandbox.state.add_issue(world.repo, "Heated", locked=True)
    with (
        caplog.at_level(logging.WARNING, logger="model_guard.sticky"),
        pytest.raises(IssueUnavailable) as raised,
    ):
        await world.sticky().upsert(
            world.gh, repo=REPO, issue_number=locked.number, purpose="nightly", body="x"
        )
    assert raised.value.reason == "locked"
    assert str(raised.value) == f"{REPO}#{locked.number} is locked, so the App cannot comment"
    assert world.live(locked.number) == []
    assert [r.status for r in writes(world.sandbox, "POST")] == [403]
    assert await world.store.get_sticky(REPO, locked.number, MARK) is None
    assert any("is locked" in record.getMessage() for record in caplog.records)
    assert world.count("locked") == 1


async def test_missing_issue_raises_issue_unavailable(world: World) -> None:
    with pytest.raises(IssueUnavailable) as raised:
        await world.sticky().upsert(
            world.gh, repo=REPO, issue_number=999, purpose="nightly", body="x"
        )
    assert raised.value.reason == "missing"
    assert "acme/models#999" in str(raised.value) and "\n" not in str(raised.value)
    assert writes(world.sandbox, "POST") == []
    assert world.count("missing") == 1


async def test_deleted_issue_is_missing(world: World) -> None:
    world.sandbox.state.update_issue(world.repo, world.issue, deleted=True)
    with pytest.raises(IssueUnavailable) as raised:
        await world.sticky().upsert(
            world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="b"
        )
    assert raised.value.reason == "missing"
    assert writes(world.sandbox, "POST") == []


async def test_closed_issue_still_gets_its_comment_updated(world: World) -> None:
    sticky = world.sticky()
    await sticky.upsert(world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="a")
    world.sandbox.state.update_issue(world.repo, world.issue, state=IssueState.CLOSED)
    result = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="b"
    )
    assert result.outcome is StickyOutcome.UPDATED


async def test_bad_repository_name_is_one_line_error(world: World) -> None:
    with pytest.raises(StickyError, match=r"^repository must be 'owner/name', got 'models'$"):
        await world.sticky().upsert(
            world.gh, repo="models", issue_number=1, purpose="nightly", body="x"
        )


async def test_own_comment_whose_marker_was_edited_out_is_left_and_a_new_one_made(
    world: World,
) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="report"
    )
    maintainer = world.sandbox.state.user("maintainer")
    world.sandbox.state.update_comment(world.repo, first.comment_id, "resolved", editor=maintainer)
    second = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="report"
    )
    assert second.outcome is StickyOutcome.CREATED and second.comment_id != first.comment_id
    assert world.sandbox.state.comments[first.comment_id].body == "resolved"
    assert await world.store.get_sticky(REPO, world.issue, MARK) == second.comment_id


# ---- requests per upsert ---------------------------------------------------------------------


async def test_a_new_body_for_the_apps_own_comment_is_one_patch_and_no_get(world: World) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="night 1"
    )
    before = len(world.sandbox.requests)
    second = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="night 2"
    )
    made = [(r.method, r.path) for r in world.sandbox.requests[before:]]
    assert made == [("PATCH", f"/repos/{REPO}/issues/comments/{first.comment_id}")]
    assert (second.comment_id, second.outcome) == (first.comment_id, StickyOutcome.UPDATED)
    assert [c.body for c in world.live()] == [f"{MARK}\n\nnight 2"]


async def test_the_same_body_again_is_one_get_and_no_edit(world: World) -> None:
    sticky = world.sticky()
    await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="steady"
    )
    before = len(world.sandbox.requests)
    again = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="steady"
    )
    assert [r.method for r in world.sandbox.requests[before:]] == ["GET"]
    assert again.outcome is StickyOutcome.UNCHANGED
    assert [c.edits for c in world.live()] == [()]


async def test_a_patch_answered_404_writes_the_comment_again_when_a_person_deleted_it(
    world: World,
) -> None:
    sticky = world.sticky()
    first = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="night 1"
    )
    world.sandbox.state.delete_comment(world.repo, first.comment_id)
    second = await sticky.upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="night 2"
    )
    assert second.outcome is StickyOutcome.CREATED and second.comment_id != first.comment_id
    assert [c.body for c in world.live()] == [f"{MARK}\n\nnight 2"]
    assert await world.store.get_sticky(REPO, world.issue, MARK) == second.comment_id
    [patch] = writes(world.sandbox, "PATCH")
    assert patch.status == 404


async def test_an_id_the_app_did_not_write_is_verified_before_any_edit(world: World) -> None:
    """Only the App's own last write is PATCHed blind: a remembered id set otherwise is checked."""
    mine = await world.post_own(f"{MARK}\n\nolder")
    await world.store.set_sticky(REPO, world.issue, MARK, mine)
    before = len(world.sandbox.requests)
    result = await world.sticky().upsert(
        world.gh, repo=REPO, issue_number=world.issue, purpose="nightly", body="new"
    )
    made = [r.method for r in world.sandbox.requests[before:]]
    assert made == ["GET", "PATCH"] and result.comment_id == mine
