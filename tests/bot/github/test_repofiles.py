"""Reading files at a commit over real HTTP against the sandbox: one tree, verified cached blobs."""

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI

from bot.github.repofiles import (
    MIB,
    RepoFileError,
    RepoFiles,
    RepoSnapshot,
    TreeFile,
    blob_sha,
    decode_blob,
)
from sandbox import Sandbox
from sandbox.records import Repo
from tests.conftest import installation_token, seed_repo

REPO = "acme/models"
CACHE = random.Random(7).randbytes(3 * MIB + 12_345)  # a parquet-sized binary blob
FILES = {
    ".github/model-guard.yml": b"registry: registry.json\ncache: golden/features.parquet\n",
    "registry.json": b'{"models": ["v1", "v2"]}\n',
    "golden/features.parquet": CACHE,
    "models/v1.onnx": b"\x08\x07onnx v1\x00\xff",
    "models/v2.onnx": b"\x08\x07onnx v2\x00\xfe",
}
BLOBS = r"/repos/acme/models/git/blobs/[0-9a-f]{40}"


@dataclass
class World:
    """A seeded sandbox repo, an API client and a RepoFiles on a temporary cache."""

    sandbox: Sandbox
    repo: Repo
    gh: GitHubAPI
    files: RepoFiles
    tmp: Path

    def blob_requests(self) -> int:
        return len(self.sandbox.requests_to("GET", BLOBS))


@pytest.fixture
async def world(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[World]:
    installation, repo = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    async with aiohttp.ClientSession() as session:
        gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
        yield World(sandbox, repo, gh, RepoFiles(tmp_path / "cache"), tmp_path)


def test_blob_sha_is_gits_object_id() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert blob_sha(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_decode_blob_refuses_content_not_matching_its_sha() -> None:
    payload = {"content": "aGVsbG8K\n", "encoding": "base64"}
    assert decode_blob(payload, sha=blob_sha(b"hello\n")) == b"hello\n"
    with pytest.raises(ValueError, match=r"^blob content does not match its sha$"):
        decode_blob(payload, sha=blob_sha(b"hello!\n"))
    with pytest.raises(ValueError, match="not valid base64"):
        decode_blob({"content": "@@@", "encoding": "base64"}, sha="0" * 40)


async def test_snapshot_and_read_round_trip_committed_bytes(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    head = world.sandbox.state.branches[world.repo.id]["main"]
    assert snapshot.commit_sha == head and snapshot.ref == "main" and not snapshot.truncated
    assert {p for p, f in snapshot.files.items() if not f.is_dir} == set(FILES)
    assert snapshot.files["golden/features.parquet"].size == len(CACHE)
    for path, data in FILES.items():
        assert await world.files.read(world.gh, snapshot, path) == data
    trees = world.sandbox.requests_to("GET", r"/repos/acme/models/git/trees/[0-9a-f]{40}")
    assert len(trees) == 1 and trees[0].query.get("recursive") == "1"
    assert world.blob_requests() == len(FILES)


async def test_only_the_blobs_read_are_downloaded(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    await world.files.read(world.gh, snapshot, "models/v2.onnx")
    [request] = world.sandbox.requests_to("GET", BLOBS)
    assert request.path.endswith(snapshot.files["models/v2.onnx"].sha)


async def test_second_read_is_served_from_cache_even_at_a_new_commit(world: World) -> None:
    first = await world.files.snapshot(world.gh, REPO, "main")
    assert await world.files.read(world.gh, first, "golden/features.parquet") == CACHE
    world.sandbox.state.commit(world.repo, {"registry.json": b"{}\n"}, message="Bump")
    second = await world.files.snapshot(world.gh, REPO, "main")
    assert second.commit_sha != first.commit_sha
    fresh = RepoFiles(world.tmp / "cache")  # another job, same cache directory
    assert await fresh.read(world.gh, second, "golden/features.parquet") == CACHE
    assert await world.files.read(world.gh, first, "golden/features.parquet") == CACHE
    assert world.blob_requests() == 1
    assert await fresh.read(world.gh, second, "registry.json") == b"{}\n"
    assert world.blob_requests() == 2


async def test_blob_over_limit_is_refused_before_any_blob_request(world: World) -> None:
    small = RepoFiles(world.tmp / "cache", max_blob_bytes=1 * MIB)
    snapshot = await small.snapshot(world.gh, REPO, "main")
    with pytest.raises(RepoFileError) as raised:
        await small.read(world.gh, snapshot, "golden/features.parquet")
    short = snapshot.commit_sha[:7]
    assert str(raised.value) == (
        f"golden/features.parquet at {short}: 3,158,073 bytes is over the 1 MiB limit"
    )
    with pytest.raises(RepoFileError, match="over the 10 bytes limit"):
        await world.files.read(world.gh, snapshot, "registry.json", max_bytes=10)
    assert world.blob_requests() == 0


async def test_missing_path_and_directory_path_are_one_line_errors(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    short = snapshot.commit_sha[:7]
    with pytest.raises(RepoFileError, match=rf"^models/v9.onnx at {short}: missing$"):
        await world.files.read(world.gh, snapshot, "models/v9.onnx")
    with pytest.raises(RepoFileError, match=rf"^models at {short}: a directory, not a file$"):
        await world.files.read(world.gh, snapshot, "models")
    with pytest.raises(RepoFileError, match="a directory"):
        await world.files.read(world.gh, snapshot, "models/")
    assert world.files.exists(snapshot, "models/v1.onnx")
    assert not world.files.exists(snapshot, "models")
    assert not world.files.exists(snapshot, "models/v9.onnx")
    assert world.blob_requests() == 0


async def test_unknown_ref_is_one_line_error(world: World) -> None:
    with pytest.raises(
        RepoFileError, match=r"^acme/models at no-such-branch: no commit found for this ref$"
    ):
        await world.files.snapshot(world.gh, REPO, "no-such-branch")


async def test_branch_name_with_slash_resolves(world: World) -> None:
    state = world.sandbox.state
    state.commit(world.repo, {"models/v3.onnx": b"v3"}, message="v3", branch="feature/v3")
    snapshot = await world.files.snapshot(world.gh, REPO, "feature/v3")
    assert snapshot.commit_sha == state.branches[world.repo.id]["feature/v3"]
    assert await world.files.read(world.gh, snapshot, "models/v3.onnx") == b"v3"


async def test_corrupt_cache_file_is_refetched_and_repaired(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    await world.files.read(world.gh, snapshot, "models/v1.onnx")
    cached = world.files.cache_path(snapshot.files["models/v1.onnx"].sha)
    cached.write_bytes(b"half a file")
    assert await world.files.read(world.gh, snapshot, "models/v1.onnx") == FILES["models/v1.onnx"]
    assert world.blob_requests() == 2
    assert cached.read_bytes() == FILES["models/v1.onnx"]


async def test_tampered_blob_is_refused_and_not_cached(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    sha = snapshot.files["registry.json"].sha
    world.sandbox.state.objects[world.repo.id].blobs[sha] = b'{"models": ["evil"]}\n'
    with pytest.raises(RepoFileError) as raised:
        await world.files.read(world.gh, snapshot, "registry.json")
    assert str(raised.value) == (
        f"registry.json at {snapshot.commit_sha[:7]}: blob content does not match its sha"
    )
    assert not world.files.cache_path(sha).exists()


async def test_fetch_to_writes_the_file_under_dest_root(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    dest = world.tmp / "job"
    written = await world.files.fetch_to(world.gh, snapshot, "models/v2.onnx", dest)
    assert written == (dest / "models" / "v2.onnx").resolve()
    assert written.read_bytes() == FILES["models/v2.onnx"]


@pytest.mark.parametrize("path", ["../x", "models/../../x", "/etc/passwd", "..", "."])
async def test_fetch_to_refuses_paths_escaping_dest_root(world: World, path: str) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    dest = world.tmp / "job"
    with pytest.raises(RepoFileError, match=rf"^{path.rstrip('/')} at [0-9a-f]{{7}}: "):
        await world.files.fetch_to(world.gh, snapshot, path, dest)
    assert world.blob_requests() == 0
    assert not (world.tmp / "x").exists()


async def test_fetch_to_refuses_dest_directory_linked_outside(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    dest, outside = world.tmp / "job", world.tmp / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "models").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RepoFileError, match="the destination escapes"):
        await world.files.fetch_to(world.gh, snapshot, "models/v1.onnx", dest)
    assert list(outside.iterdir()) == []


def with_entries(snapshot: RepoSnapshot, *entries: TreeFile, truncated: bool) -> RepoSnapshot:
    files = {**snapshot.files, **{e.path: e for e in entries}}
    return replace(snapshot, files=MappingProxyType(files), truncated=truncated)


async def test_symlink_in_tree_is_refused_before_any_request(world: World) -> None:
    snapshot = await world.files.snapshot(world.gh, REPO, "main")
    link = TreeFile("models/latest.onnx", blob_sha(b"../../etc/passwd"), 16, "120000")
    linked = with_entries(snapshot, link, truncated=False)
    with pytest.raises(RepoFileError, match="a symbolic link, which is not followed"):
        await world.files.fetch_to(world.gh, linked, "models/latest.onnx", world.tmp / "job")
    assert not world.files.exists(linked, "models/latest.onnx")
    assert world.blob_requests() == 0


async def test_truncated_tree_is_an_error_only_for_an_absent_path(world: World) -> None:
    snapshot = with_entries(await world.files.snapshot(world.gh, REPO, "main"), truncated=True)
    assert await world.files.read(world.gh, snapshot, "registry.json") == FILES["registry.json"]
    with pytest.raises(RepoFileError, match="GitHub truncated"):
        await world.files.read(world.gh, snapshot, "models/v9.onnx")
    with pytest.raises(RepoFileError, match="GitHub truncated"):
        world.files.exists(snapshot, "models/v9.onnx")
