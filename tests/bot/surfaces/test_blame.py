"""Blame over real HTTP against the sandbox: the commit and pull request that introduced a row."""

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI

from bot.store import SqliteStore
from bot.surfaces import blame as blame_module
from bot.surfaces.blame import Blame, blame_row, row_digest
from sandbox import Sandbox
from sandbox.records import MergeMethod, Repo
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"
REGISTRY = "models/registry.json"


def model(model_id: str, timeline: int, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "onnx": f"{model_id}.onnx", "timeline": timeline, **extra}


def registry(*rows: dict[str, Any]) -> bytes:
    return json.dumps({"schema_version": 1, "models": list(rows)}, indent=2).encode()


@dataclass
class World:
    """acme/models with a registry, an API client over HTTP and a store."""

    sandbox: Sandbox
    repo: Repo
    gh: GitHubAPI
    store: SqliteStore

    def head(self) -> str:
        return self.sandbox.state.branches[self.repo.id]["main"]

    def merge(self, branch: str, files: dict[str, bytes], *, title: str) -> tuple[int, str]:
        """Open a pull request with ``files`` and merge it: its number and its own commit."""
        state = self.sandbox.state
        pull = state.add_pull(self.repo, head=branch, files=files, title=title)
        commit = state.pull_head(self.repo, pull)
        state.merge_pull(self.repo, pull.number)
        return pull.number, commit

    async def blame(self, model_id: str, at_sha: str | None = None) -> Blame | None:
        return await blame_row(
            self.gh,
            self.store,
            repo=REPO,
            registry_path=REGISTRY,
            model_id=model_id,
            at_sha=at_sha or self.head(),
        )

    def requests(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.sandbox.requests]


@pytest.fixture
async def world(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[World]:
    installation, repo = seed_repo(
        sandbox.state, {"README.md": b"models\n", REGISTRY: registry(model("fr-v1", 0))}
    )
    token = await installation_token(sandbox, installation)
    async with (
        aiohttp.ClientSession() as session,
        SqliteStore(tmp_path / "store.db") as store,
    ):
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield World(sandbox, repo, gh, store)


@dataclass
class History:
    """A row added by one merged pull request, changed by another, then left alone."""

    added: tuple[int, str]
    changed: tuple[int, str]


def changed_history(world: World) -> History:
    v1, v2 = model("fr-v1", 0), model("fr-v2", 1)
    added = world.merge("add-v2", {REGISTRY: registry(v1, v2)}, title="Add fr-v2")
    v2_fixed = model("fr-v2", 1, notes="retrained")
    changed = world.merge(
        "retrain-v2", {REGISTRY: registry(v1, v2_fixed)}, title="Retrain *fr-v2* [fast]"
    )
    # Later commits: one changes another row, one does not touch the registry.
    world.merge("add-v3", {REGISTRY: registry(v1, v2_fixed, model("fr-v3", 2))}, title="Add v3")
    world.sandbox.state.commit(world.repo, {"README.md": b"# models\n"}, message="readme")
    return History(added, changed)


def test_row_digest_ignores_key_order_and_formatting_but_not_values() -> None:
    row = model("fr-v1", 0)
    same = json.dumps({"models": [dict(reversed(list(row.items())))]}).encode()
    assert row_digest(registry(row), "fr-v1") == row_digest(same, "fr-v1")
    assert row_digest(registry(model("fr-v1", 1)), "fr-v1") != row_digest(registry(row), "fr-v1")
    assert row_digest(registry(row), "fr-v9") is None
    with pytest.raises(ValueError, match="not JSON"):
        row_digest(b"{", "fr-v1")


async def test_blame_names_the_commit_that_last_changed_the_row_and_its_merged_pull(
    world: World,
) -> None:
    history = changed_history(world)
    number, commit = history.changed
    found = await world.blame("fr-v2")
    assert found == Blame(
        model_id="fr-v2",
        commit_sha=commit,
        commit_url=f"https://github.com/{REPO}/commit/{commit}",
        pull_number=number,
        pull_url=f"https://github.com/{REPO}/pull/{number}",
        pull_title="Retrain *fr-v2* [fast]",
    )
    assert found.markdown() == (
        f"Introduced by [`{commit[:7]}`](https://github.com/{REPO}/commit/{commit}) in "
        f"[#{number}](https://github.com/{REPO}/pull/{number}) (Retrain \\*fr-v2\\* \\[fast\\])"
    )


async def test_blame_of_a_row_only_added_names_the_adding_commit(world: World) -> None:
    history = changed_history(world)
    found = await world.blame("fr-v2", at_sha=history.added[1])
    assert found is not None
    assert (found.commit_sha, found.pull_number) == (history.added[1], history.added[0])
    initial = await world.blame("fr-v1")
    assert initial is not None and initial.pull_number is None
    assert (
        initial.commit_sha
        == world.sandbox.state.objects[world.repo.id].ancestors(history.added[1])[-1]
    )
    assert initial.markdown().startswith(f"Introduced by [`{initial.commit_sha[:7]}`](")


async def test_blame_of_a_squash_merged_row_names_the_squash_commit(world: World) -> None:
    state = world.sandbox.state
    pull = state.add_pull(
        world.repo, head="v2", files={REGISTRY: registry(model("fr-v1", 0), model("fr-v2", 1))}
    )
    squash = state.merge_pull(world.repo, pull.number, method=MergeMethod.SQUASH)
    found = await world.blame("fr-v2")
    assert found is not None and (found.commit_sha, found.pull_number) == (squash, pull.number)


async def test_blame_of_a_row_not_in_the_registry_is_none(world: World) -> None:
    assert await world.blame("fr-v9") is None
    before = len(world.requests())
    assert await world.blame("fr-v9") is None
    assert len(world.requests()) == before  # the answer is remembered too


async def test_the_same_night_again_costs_no_request(world: World) -> None:
    changed_history(world)
    first = await world.blame("fr-v2")
    asked = world.requests()
    path = r"/repos/acme/models"
    assert asked.count(f"GET {path}/commits") == 1
    assert (
        sum(r.startswith(f"GET {path}/contents/") for r in asked) == 3
    )  # v3, v2', v2: it stops there
    assert sum(r.endswith("/pulls") for r in asked) == 1
    assert await world.blame("fr-v2") == first
    assert world.requests() == asked


async def test_a_new_head_with_the_same_history_costs_only_the_listing(world: World) -> None:
    history = changed_history(world)
    first = await world.blame("fr-v2")
    before = len(world.requests())
    world.sandbox.state.commit(world.repo, {"README.md": b"# models!\n"}, message="readme again")
    assert await world.blame("fr-v2") == first
    assert world.requests()[before:] == ["GET /repos/acme/models/commits"]
    # A head that touches the registry but not the row costs one read more.
    rows = registry(model("fr-v1", 0, notes="renamed"), model("fr-v2", 1, notes="retrained"))
    world.sandbox.state.commit(world.repo, {REGISTRY: rows}, message="note on v1")
    before = len(world.requests())
    again = await world.blame("fr-v2")
    assert again is not None and again.commit_sha == history.changed[1]
    assert world.requests()[before:] == [
        "GET /repos/acme/models/commits",
        f"GET /repos/acme/models/contents/{REGISTRY}",
    ]


async def test_a_row_changed_back_is_blamed_on_the_commit_that_changed_it_back(
    world: World,
) -> None:
    v1 = model("fr-v1", 0)
    world.merge("change", {REGISTRY: registry(model("fr-v1", 0, notes="x"))}, title="x")
    number, back = world.merge("back", {REGISTRY: registry(v1)}, title="Revert x")
    found = await world.blame("fr-v1")
    assert found is not None and (found.commit_sha, found.pull_number) == (back, number)


async def test_blame_pages_through_a_long_history(world: World) -> None:
    state = world.sandbox.state
    rows = [model("fr-v1", 0)]
    for index in range(1, 106):
        rows.append(model(f"fr-v{index + 1}", index))
        state.commit(world.repo, {REGISTRY: registry(*rows)}, message=f"add {index}")
    initial = state.objects[world.repo.id].ancestors(world.head())[-1]
    found = await world.blame("fr-v1")
    assert found is not None and found.commit_sha == initial
    assert world.requests().count("GET /repos/acme/models/commits") == 2


async def test_blame_gives_up_past_its_commit_limit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blame_module, "MAX_COMMITS", 3)
    rows = [model("fr-v1", 0)]
    for index in range(1, 4):
        rows.append(model(f"fr-v{index + 1}", index))
        world.sandbox.state.commit(world.repo, {REGISTRY: registry(*rows)}, message=f"{index}")
    assert await world.blame("fr-v1") is None
    assert await world.blame("fr-v4") is not None


async def test_github_failing_gives_no_blame_and_is_not_remembered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    history = changed_history(world)
    world.sandbox.faults.fail_next("GET", r"/repos/acme/models/commits/[0-9a-f]+/pulls", status=502)
    with caplog.at_level(logging.WARNING, logger="model_guard.blame"):
        assert await world.blame("fr-v2") is None
    assert "no blame for fr-v2" in caplog.text
    found = await world.blame("fr-v2")
    assert found is not None and found.pull_number == history.changed[0]


async def test_a_registry_unreadable_at_an_old_commit_gives_no_blame(world: World) -> None:
    state = world.sandbox.state
    state.commit(world.repo, {REGISTRY: b"{ not json"}, message="broken")
    state.commit(world.repo, {REGISTRY: registry(model("fr-v1", 0))}, message="fixed")
    rows = registry(model("fr-v1", 0), model("fr-v2", 1))
    added = state.commit(world.repo, {REGISTRY: rows}, message="add v2")
    # The walk for fr-v1 reaches the broken commit; the one for fr-v2 stops before it.
    assert await world.blame("fr-v1") is None
    found = await world.blame("fr-v2")
    assert found is not None and found.commit_sha == added
    before = len(world.requests())
    assert await world.blame("fr-v1") is None
    assert len(world.requests()) > before  # not remembered: asked again next time


def test_markdown_without_links_still_names_the_commit_and_the_pull() -> None:
    bare = Blame("fr-v1", "a" * 40, "", pull_number=3, pull_url=None, pull_title=" Fix\n  v1 ")
    assert bare.markdown() == "Introduced by `aaaaaaa` in #3 (Fix v1)"
