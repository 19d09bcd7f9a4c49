"""Trees and blobs round-trip the committed bytes, and every sha is the id real git computes."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from sandbox import Sandbox
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
