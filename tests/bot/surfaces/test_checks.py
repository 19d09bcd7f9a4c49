"""Check runs over real HTTP against the sandbox: found again by external id, completed, clipped."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI

from bot.surfaces.checks import (
    CLIP_NOTE,
    MAX_ANNOTATIONS_PER_REQUEST,
    MAX_OUTPUT_BYTES,
    CheckAction,
    CheckAnnotation,
    CheckOutput,
    Conclusion,
    finish_check_run,
    note_check_run,
    open_check_run,
)
from bot.surfaces.checks import (
    CheckStatus as Status,
)
from sandbox import Sandbox
from sandbox.records import CheckConclusion, CheckStatus, Repo
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"
CHECK = "model-guard/nightly"
CREATE = r"/repos/acme/models/check-runs"


@dataclass
class World:
    """A seeded repository, its head commit and an installation API client."""

    sandbox: Sandbox
    repo: Repo
    head: str
    gh: GitHubAPI

    async def open(self, external_id: str, *, head: str | None = None) -> int:
        return await open_check_run(
            self.gh,
            REPO,
            head or self.head,
            name=CHECK,
            external_id=external_id,
            title="Judging the timeline",
        )


@pytest.fixture
async def world(sandbox: Sandbox) -> AsyncIterator[World]:
    installation, repo = seed_repo(sandbox.state, {"README.md": b"models\n"})
    token = await installation_token(sandbox, installation)
    head = sandbox.state.branches[repo.id]["main"]
    async with aiohttp.ClientSession() as session:
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield World(sandbox, repo, head, gh)


async def test_open_check_run_creates_an_in_progress_run_carrying_the_external_id(
    world: World,
) -> None:
    check_id = await world.open("nightly:acme/models:2026-12-01")
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.IN_PROGRESS and run.conclusion is None
    assert run.external_id == "nightly:acme/models:2026-12-01"
    assert run.name == CHECK and run.head_sha == world.head
    assert run.started_at is not None
    assert run.output.title == "Judging the timeline"


async def test_open_check_run_again_with_the_same_external_id_reuses_the_run_without_a_post(
    world: World,
) -> None:
    first = await world.open("nightly:acme/models:2026-12-01")
    again = await world.open("nightly:acme/models:2026-12-01")
    assert again == first
    assert len(world.sandbox.requests_to("POST", CREATE)) == 1
    assert len(world.sandbox.state.check_runs_for(world.repo, world.head)) == 1


async def test_open_check_run_with_another_external_id_creates_a_second_run(
    world: World,
) -> None:
    first = await world.open("nightly:acme/models:2026-12-01")
    second = await world.open("nightly:acme/models:2026-12-02")
    assert second != first
    assert len(world.sandbox.requests_to("POST", CREATE)) == 2
    ids = {run.id for run in world.sandbox.state.check_runs_for(world.repo, world.head)}
    assert ids == {first, second}


async def test_open_check_run_on_another_commit_does_not_reuse_a_run_of_the_same_key(
    world: World,
) -> None:
    first = await world.open("nightly:acme/models:2026-12-01")
    other = world.sandbox.state.commit(world.repo, {"README.md": b"models v2\n"}, message="v2")
    second = await world.open("nightly:acme/models:2026-12-01", head=other)
    assert second != first
    assert world.sandbox.state.check_run(second, repo=world.repo).head_sha == other


async def test_finish_check_run_completes_it_with_the_conclusion_and_output(
    world: World,
) -> None:
    check_id = await world.open("nightly:acme/models:2026-12-01")
    output = CheckOutput(title="❌ regression", summary="fr-mlp-v06 fails", text="| table |")
    await finish_check_run(world.gh, REPO, check_id, conclusion=Conclusion.FAILURE, output=output)
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.COMPLETED
    assert run.conclusion is CheckConclusion.FAILURE
    assert run.completed_at is not None
    assert (run.output.title, run.output.summary, run.output.text) == (
        "❌ regression",
        "fr-mlp-v06 fails",
        "| table |",
    )


async def test_note_check_run_updates_the_output_and_keeps_the_run_in_progress(
    world: World,
) -> None:
    check_id = await world.open("nightly:acme/models:2026-12-01")
    await note_check_run(
        world.gh, REPO, check_id, output=CheckOutput(title="Retrying", summary="GitHub 502")
    )
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.IN_PROGRESS and run.conclusion is None
    assert run.output.summary == "GitHub 502"


@pytest.mark.parametrize("unit", ["x", "é", "❌"], ids=["ascii", "two-byte", "emoji"])
async def test_output_over_githubs_limit_is_clipped_with_a_note_and_accepted(
    world: World, unit: str
) -> None:
    # GitHub counts UTF-8 bytes (https://github.com/github/docs/issues/35252): an emoji-heavy
    # table under 65,535 characters can still be refused.
    long = unit * 70_000
    check_id = await world.open("nightly:acme/models:2026-12-01")
    output = CheckOutput(title="big", summary=long, text=long)
    await finish_check_run(world.gh, REPO, check_id, conclusion=Conclusion.FAILURE, output=output)
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.COMPLETED
    for shown in (run.output.summary, run.output.text):
        assert shown is not None and shown.endswith(CLIP_NOTE)
        assert len(shown.encode("utf-8")) <= MAX_OUTPUT_BYTES
        kept = shown[: -len(CLIP_NOTE)]
        assert kept == unit * len(kept)  # cut on a character boundary, nothing mangled
        assert len(kept.encode("utf-8")) > MAX_OUTPUT_BYTES - len(CLIP_NOTE) - len(unit.encode())


def test_output_within_the_limit_is_sent_unchanged_and_text_left_out_when_empty() -> None:
    exact = "a" * MAX_OUTPUT_BYTES
    assert CheckOutput(title="t", summary=exact).to_json() == {"title": "t", "summary": exact}
    body = CheckOutput(title="t" * 2000, summary="s", text="table").to_json()
    assert body == {"title": "t" * 1000, "summary": "s", "text": "table"}


async def test_run_is_found_again_past_the_first_page_of_a_busy_commit(world: World) -> None:
    first = await world.open("nightly:acme/models:2026-01-01")
    for day in range(2, 122):  # 120 more runs of the same check on the same commit
        world.sandbox.state.create_check_run(
            world.repo, name=CHECK, head_sha=world.head, external_id=f"day-{day}"
        )
    posts = len(world.sandbox.requests_to("POST", CREATE))
    assert await world.open("nightly:acme/models:2026-01-01") == first
    assert len(world.sandbox.requests_to("POST", CREATE)) == posts
    pages = world.sandbox.requests_to("GET", r"/repos/acme/models/commits/[0-9a-f]+/check-runs")
    assert any(r.query.get("page") == "2" for r in pages)


async def test_finished_check_carries_its_buttons_and_github_limits_are_refused_before_sending(
    world: World,
) -> None:
    check_id = await world.open("nightly:acme/models:2026-12-03")
    buttons = (
        CheckAction("Full scan", "Judge every model of this commit", "full-scan"),
        CheckAction("Re-run", "Bisect this commit again", "rerun"),
    )
    output = CheckOutput(title="ok", summary="ok")
    await finish_check_run(
        world.gh, REPO, check_id, conclusion=Conclusion.SUCCESS, output=output, actions=buttons
    )
    run = world.sandbox.state.check_runs[check_id]
    assert [(a.label, a.identifier) for a in run.actions] == [
        ("Full scan", "full-scan"),
        ("Re-run", "rerun"),
    ]
    with pytest.raises(ValueError, match="label must be 1-20 characters"):
        CheckAction("A label far too long for GitHub", "d", "x")
    with pytest.raises(ValueError, match="at most 3 actions"):
        await finish_check_run(
            world.gh,
            REPO,
            check_id,
            conclusion=Conclusion.SUCCESS,
            output=output,
            actions=buttons * 2,
        )


async def test_queued_run_has_no_start_until_it_is_noted_started(world: World) -> None:
    check_id = await open_check_run(
        world.gh,
        REPO,
        world.head,
        name=CHECK,
        external_id="registry:acme/models#1:d",
        title="Judging",
        status=Status.QUEUED,
    )
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.QUEUED
    await note_check_run(
        world.gh, REPO, check_id, output=CheckOutput(title="Judging", summary="now"), started=True
    )
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.IN_PROGRESS and run.started_at is not None


async def test_annotations_go_fifty_to_a_request_and_all_arrive_in_order(world: World) -> None:
    """120 problems: three PATCHes (50, 50, then 20 with the completion); GitHub keeps all 120."""
    check_id = await world.open("registry:acme/models#1:d")
    annotations = tuple(
        CheckAnnotation("model/registry.json", line, "failure", f"problem {line}", title="bad")
        for line in range(1, 121)
    )
    output = CheckOutput(title="120 problems", summary="see the lines", annotations=annotations)
    await finish_check_run(world.gh, REPO, check_id, conclusion=Conclusion.FAILURE, output=output)
    patches = world.sandbox.requests_to("PATCH", rf"{CREATE}/{check_id}")
    assert len(patches) == 3
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.status is CheckStatus.COMPLETED and run.conclusion is CheckConclusion.FAILURE
    assert run.output.annotations_count == 120
    assert [a["start_line"] for a in run.output.annotations] == list(range(1, 121))
    assert MAX_ANNOTATIONS_PER_REQUEST == 50
    world.sandbox.assert_valid()


async def test_cancelled_is_a_conclusion_github_accepts(world: World) -> None:
    check_id = await world.open("registry:acme/models#1:d")
    output = CheckOutput(title="Superseded by abc1234", summary="a newer push")
    await finish_check_run(world.gh, REPO, check_id, conclusion=Conclusion.CANCELLED, output=output)
    run = world.sandbox.state.check_run(check_id, repo=world.repo)
    assert run.conclusion is CheckConclusion.CANCELLED


def test_annotations_refuse_what_github_refuses() -> None:
    with pytest.raises(ValueError, match="level"):
        CheckAnnotation("a.json", 1, "error", "x")
    with pytest.raises(ValueError, match="line"):
        CheckAnnotation("a.json", 0, "failure", "x")
