"""Git data round-trips the committed bytes, and every sha is the id real git computes."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from sandbox.records import DEFAULT_APP_PERMISSIONS
from tests.conftest import installation_token, seed_repo

FILES = {
    "registry.yaml": b"models:\n  - fr-v1\n  - fr-v2\n",
    "models/fr-v1.onnx": bytes(range(256)) * 4,
    "models/fr-v2.onnx": b"\x00\x01binary\xff",
    "models/ensembles/fr-ens-v1.yaml": b"members: [fr-v1, fr-v2]\n",
    "empty.txt": b"",
}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


async def fetch(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, object] = await response.json()
        return body


async def test_recursive_tree_and_blobs_round_trip_the_committed_bytes(sandbox: Sandbox) -> None:
    installation, repo = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    base = f"{sandbox.url}/repos/acme/models"
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        commit = await fetch(session, f"{base}/commits/main")
        tree_sha = commit["commit"]["tree"]["sha"]  # type: ignore[index]
        tree = await fetch(session, f"{base}/git/trees/{tree_sha}?recursive=1")
        blobs = [e for e in tree["tree"] if e["type"] == "blob"]  # type: ignore[attr-defined]
        got = {}
        for entry in blobs:
            blob = await fetch(session, f"{base}/git/blobs/{entry['sha']}")
            got[entry["path"]] = base64.b64decode(blob["content"])  # type: ignore[arg-type]
            assert blob["size"] == entry["size"] == len(got[entry["path"]])
        async with session.get(
            f"{base}/git/blobs/{blobs[0]['sha']}",
            headers={"Accept": "application/vnd.github.raw"},
        ) as raw:
            assert await raw.read() == FILES[blobs[0]["path"]]
    assert got == FILES
    assert {e["path"]: e["sha"] for e in blobs} == {p: git_blob_id(d) for p, d in FILES.items()}
    dirs = {e["path"] for e in tree["tree"] if e["type"] == "tree"}  # type: ignore[attr-defined]
    assert dirs == {"models", "models/ensembles"}
    assert tree["truncated"] is False
    assert sandbox.state.files_at(repo) == FILES


async def test_non_recursive_tree_lists_only_the_top_level(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session:
        tree = await fetch(session, f"{sandbox.url}/repos/acme/models/git/trees/main")
    paths = {e["path"] for e in tree["tree"]}  # type: ignore[attr-defined]
    assert paths == {"registry.yaml", "models", "empty.txt"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")
def test_tree_sha_equals_git_write_tree_of_the_same_files(tmp_path: Path) -> None:
    from sandbox import SandboxState

    state = SandboxState()
    _, repo = seed_repo(state, FILES)
    head = state.branches[repo.id]["main"]
    for path, data in FILES.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    commit = state.git_commit(repo, head)
    signature = commit.author
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": signature.name,
        "GIT_AUTHOR_EMAIL": signature.email,
        "GIT_AUTHOR_DATE": f"{signature.timestamp} +0000",
        "GIT_COMMITTER_NAME": signature.name,
        "GIT_COMMITTER_EMAIL": signature.email,
        "GIT_COMMITTER_DATE": f"{signature.timestamp} +0000",
    }

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return done.stdout.strip()

    git("init", "-q")
    git("add", "--", *FILES)
    assert git("write-tree") == commit.tree
    assert git("commit-tree", commit.tree, "-m", commit.message) == head
    assert git("hash-object", "models/fr-v1.onnx") == git_blob_id(FILES["models/fr-v1.onnx"])


@pytest.fixture
async def writer(sandbox: Sandbox) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A session whose installation may write contents on acme/models, and the repo's API URL."""
    permissions = dict(DEFAULT_APP_PERMISSIONS) | {"contents": "write"}
    installation = sandbox.state.add_installation("acme", permissions=permissions)
    seed_repo(sandbox.state, FILES, installation=installation)
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session:
        yield session, f"{sandbox.url}/repos/acme/models"


async def post(session: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_commit_built_over_http_lands_on_a_new_branch_with_gits_ids(
    sandbox: Sandbox, writer: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = writer
    state = sandbox.state
    repo = state.find_repo("acme", "models")
    assert repo is not None
    main = await fetch(session, f"{base}/git/ref/heads/main")
    head = main["object"]["sha"]  # type: ignore[index]
    head_commit = await fetch(session, f"{base}/git/commits/{head}")
    new_model = bytes(range(200))
    status, blob = await post(
        session,
        f"{base}/git/blobs",
        {"content": base64.b64encode(new_model).decode(), "encoding": "base64"},
    )
    assert (status, blob["sha"]) == (201, git_blob_id(new_model))
    entries = [
        {"path": "models/fr-v3.onnx", "mode": "100644", "type": "blob", "sha": blob["sha"]},
        {"path": "registry.yaml", "mode": "100644", "type": "blob", "content": "models: []\n"},
        {"path": "models/fr-v2.onnx", "mode": "100644", "type": "blob", "sha": None},
    ]
    status, tree = await post(
        session,
        f"{base}/git/trees",
        {"base_tree": head_commit["tree"]["sha"], "tree": entries},  # type: ignore[index]
    )
    assert status == 201
    expected = dict(FILES) | {"models/fr-v3.onnx": new_model, "registry.yaml": b"models: []\n"}
    del expected["models/fr-v2.onnx"]
    # The seeding path writes trees like `git write-tree` (test above); the API must agree.
    assert tree["sha"] == state.objects[repo.id].write_tree(expected)
    author = {"name": "Maria", "email": "maria@example.org", "date": "2026-01-02T03:04:05Z"}
    status, commit = await post(
        session,
        f"{base}/git/commits",
        {"message": "Add fr-v3", "tree": tree["sha"], "parents": [head], "author": author},
    )
    assert status == 201
    assert commit["author"] == commit["committer"] == author
    assert [p["sha"] for p in commit["parents"]] == [head]
    status, ref = await post(
        session, f"{base}/git/refs", {"ref": "refs/heads/add-v3", "sha": commit["sha"]}
    )
    assert (status, ref["ref"], ref["object"]["sha"]) == (201, "refs/heads/add-v3", commit["sha"])
    assert await fetch(session, f"{base}/git/ref/heads/add-v3") == ref
    assert await fetch(session, f"{base}/git/commits/{commit['sha']}") == commit
    assert state.files_at(repo, "add-v3") == expected
    assert state.branches[repo.id]["main"] == head


async def test_git_writes_refuse_unknown_objects_and_taken_refs(
    sandbox: Sandbox, writer: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = writer
    head = (await fetch(session, f"{base}/git/ref/heads/main"))["object"]["sha"]  # type: ignore[index]
    missing = "0" * 40
    bad_blob = {"tree": [{"path": "x", "mode": "100644", "type": "blob", "sha": missing}]}
    status, body = await post(session, f"{base}/git/trees", bad_blob)
    assert status == 422 and missing in body["message"]
    status, body = await post(session, f"{base}/git/commits", {"message": "m", "tree": missing})
    assert (status, body["message"]) == (422, "Tree SHA does not exist")
    status, body = await post(session, f"{base}/git/refs", {"ref": "refs/heads/main", "sha": head})
    assert (status, body["message"]) == (422, "Reference already exists")
    status, body = await post(session, f"{base}/git/refs", {"ref": "main", "sha": head})
    assert status == 422
    for url in (f"{base}/git/ref/heads/nowhere", f"{base}/git/commits/{missing}"):
        async with session.get(url) as response:
            assert response.status == 404


async def test_read_only_installation_may_not_write_git_objects(sandbox: Sandbox) -> None:
    installation, _ = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    url = f"{sandbox.url}/repos/acme/models/git/blobs"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session,
        session.post(url, json={"content": "x"}) as response,
    ):
        assert response.status == 403
