"""Git data endpoints: create blobs, trees, commits and refs, and read refs and commits.

Every object gets the id git gives it (sandbox/gitobjects.py), so a client can build a
commit on a new branch over HTTP exactly as ``git hash-object``/``mktree``/``commit-tree``
and ``update-ref`` would: https://docs.github.com/rest/guides/using-the-rest-api-to-interact-with-your-git-database
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from sandbox.errors import ApiError, invalid_field, missing_field, not_found
from sandbox.gitobjects import FileMode, ObjectStore, Signature, TreeEntry
from sandbox.records import Repo
from sandbox.routing import Call, Need, Reply, RouteTable, optional_str, optional_time, required_str

routes = RouteTable()
READ = Need("contents", "read")
WRITE = Need("contents", "write")
TREE_DOCS = "https://docs.github.com/rest/git/trees#create-a-tree"
COMMIT_DOCS = "https://docs.github.com/rest/git/commits#create-a-commit"
REF_DOCS = "https://docs.github.com/rest/git/refs#create-a-reference"
# Submodules (160000) and symlinks (120000) are documented but the object store holds neither.
_MODES = {"100644": FileMode.FILE, "100755": FileMode.EXECUTABLE, "040000": FileMode.TREE}


@routes.route("POST", "/repos/{owner}/{repo}/git/blobs", need=WRITE)
async def create_blob(call: Call) -> Reply:
    """``POST …/git/blobs``: ``content`` as ``utf-8`` (default) or ``base64``."""
    repo = call.repo()
    body = call.json_object()
    content = required_str(body, "content", resource="Blob")
    encoding = optional_str(body, "encoding", resource="Blob") or "utf-8"
    if encoding == "utf-8":
        data = content.encode()
    elif encoding == "base64":
        try:
            data = base64.b64decode(content, validate=False)
        except (binascii.Error, ValueError) as error:
            raise invalid_field("Blob", "content", "content is not valid Base64") from error
    else:
        raise invalid_field("Blob", "encoding", f"encoding {encoding!r} is not supported")
    sha = call.state.objects[repo.id].put_blob(data)
    url = f"{call.render.api}/repos/{repo.full_name}/git/blobs/{sha}"
    return Reply(status=201, body={"url": url, "sha": sha}, headers={"Location": url})


def _bad_tree(message: str) -> ApiError:
    return ApiError(422, message, documentation_url=TREE_DOCS)


def _apply_tree_item(store: ObjectStore, files: dict[str, TreeEntry], item: Any) -> None:
    if not isinstance(item, Mapping):
        raise _bad_tree("Invalid tree info")
    path, mode, kind = item.get("path"), item.get("mode"), item.get("type")
    if not isinstance(path, str) or not path.strip("/"):
        raise _bad_tree("tree.path is missing or empty")
    path = path.strip("/")
    if mode not in _MODES:
        raise _bad_tree(f"tree.mode {mode!r} is not supported by the sandbox")
    file_mode = _MODES[mode]
    expected = "tree" if file_mode is FileMode.TREE else "blob"
    if kind != expected:
        raise _bad_tree(f"tree.type must be {expected!r} for mode {mode}")
    if "sha" in item and "content" in item:
        raise _bad_tree("Use either tree.sha or content, not both")
    # The old entry at ``path`` goes, file or directory, whatever replaces it.
    for old in [p for p in files if p == path or p.startswith(path + "/")]:
        del files[old]
    if "content" in item:
        content = item["content"]
        if not isinstance(content, str) or kind != "blob":
            raise _bad_tree("tree.content must be a string, for blobs only")
        files[path] = TreeEntry(path, file_mode, store.put_blob(content.encode()))
        return
    sha = item.get("sha")
    if sha is None:
        if "sha" not in item:
            raise _bad_tree("Must supply either tree.sha or content")
        return  # null sha: the entry is deleted
    if kind == "tree":
        if sha not in store.trees:
            raise _bad_tree(f"tree.sha {sha} is not a valid tree")
        files.update(store.flat_entries(sha, prefix=path + "/"))
    else:
        if sha not in store.blobs:
            raise _bad_tree(f"tree.sha {sha} is not a valid blob")
        files[path] = TreeEntry(path, file_mode, sha)


@routes.route("POST", "/repos/{owner}/{repo}/git/trees", need=WRITE)
async def create_tree(call: Call) -> Reply:
    """``POST …/git/trees``: entries by path (nested paths allowed) over ``base_tree``."""
    repo = call.repo()
    body = call.json_object()
    items = body.get("tree")
    if items is None:
        raise missing_field("Tree", "tree", documentation_url=TREE_DOCS)
    if not isinstance(items, list):
        raise invalid_field("Tree", "tree", documentation_url=TREE_DOCS)
    store = call.state.objects[repo.id]
    base = optional_str(body, "base_tree", resource="Tree")
    files: dict[str, TreeEntry] = {}
    if base is not None:
        if base not in store.trees:
            raise _bad_tree(f"base_tree {base} is not a valid tree")
        files = store.flat_entries(base)
    for item in items:
        _apply_tree_item(store, files, item)
    try:
        sha = store.write_entries(files)
    except ValueError as error:
        raise _bad_tree(str(error)) from error
    rendered = call.render.tree(repo, sha, recursive=False)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})


def _signature(call: Call, raw: Any, *, field: str, default: Signature) -> Signature:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise invalid_field("Commit", field, documentation_url=COMMIT_DOCS)
    name = required_str(raw, "name", resource="Commit")
    email = required_str(raw, "email", resource="Commit")
    # Git keeps the author's offset; the sandbox writes every date in UTC (+0000).
    when = optional_time(raw, "date", resource="Commit")
    return Signature(name, email, int(when if when is not None else call.state.now()))


@routes.route("POST", "/repos/{owner}/{repo}/git/commits", need=WRITE)
async def create_commit(call: Call) -> Reply:
    """``POST …/git/commits``: a commit of ``tree`` on ``parents``; author defaults to the App."""
    repo = call.repo()
    body = call.json_object()
    store = call.state.objects[repo.id]
    message = required_str(body, "message", resource="Commit")
    tree = required_str(body, "tree", resource="Commit")
    if tree not in store.trees:
        raise ApiError(422, "Tree SHA does not exist", documentation_url=COMMIT_DOCS)
    parents = body.get("parents") or []
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise invalid_field("Commit", "parents", documentation_url=COMMIT_DOCS)
    if any(p not in store.commits for p in parents):
        raise ApiError(
            422,
            "Parent SHA does not exist or is not a commit object",
            documentation_url=COMMIT_DOCS,
        )
    bot = call.actor
    app_identity = Signature(
        bot.login, f"{bot.id}+{bot.login}@users.noreply.github.com", int(call.state.now())
    )
    author = _signature(call, body.get("author"), field="author", default=app_identity)
    committer = _signature(call, body.get("committer"), field="committer", default=author)
    commit = store.put_commit(
        tree, tuple(parents), message=message, author=author, committer=committer
    )
    rendered = call.render.git_commit(repo, commit)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})


@routes.route("GET", "/repos/{owner}/{repo}/git/commits/{commit_sha}", need=READ)
async def get_git_commit(call: Call) -> Reply:
    """``GET …/git/commits/{sha}``: one commit object (a full sha, as GitHub requires)."""
    repo = call.repo()
    commit = call.state.objects[repo.id].commits.get(call.params["commit_sha"])
    if commit is None:
        raise not_found("https://docs.github.com/rest/git/commits#get-a-commit-object")
    return Reply(body=call.render.git_commit(repo, commit))


def _branch_of(ref: str) -> str | None:
    return (
        ref.removeprefix("refs/").removeprefix("heads/")
        if ref.startswith(("refs/heads/", "heads/"))
        else None
    )


@routes.route("POST", "/repos/{owner}/{repo}/git/refs", need=WRITE)
async def create_ref(call: Call) -> Reply:
    """``POST …/git/refs``: a new ``refs/heads/…`` branch at a commit (422 if it exists)."""
    repo = call.repo()
    body = call.json_object()
    ref = required_str(body, "ref", resource="Reference")
    sha = required_str(body, "sha", resource="Reference")
    if not ref.startswith("refs/") or ref.count("/") < 2:
        raise ApiError(
            422,
            "Reference name must start with 'refs/' and have at least two slashes.",
            documentation_url=REF_DOCS,
        )
    branch = _branch_of(ref)
    if branch is None:
        raise ApiError(422, "The sandbox stores branches (refs/heads/…) only.")
    if sha not in call.state.objects[repo.id].commits:
        raise ApiError(422, "Object does not exist", documentation_url=REF_DOCS)
    if branch in call.state.branches[repo.id]:
        raise ApiError(422, "Reference already exists", documentation_url=REF_DOCS)
    call.state.create_branch(repo, branch, from_ref=sha)
    rendered = call.render.git_ref(repo, branch, sha)
    return Reply(status=201, body=rendered, headers={"Location": rendered["url"]})


@routes.route("GET", "/repos/{owner}/{repo}/git/ref/{ref:.+}", need=READ)
async def get_ref(call: Call) -> Reply:
    """``GET …/git/ref/heads/{branch}``: one branch ref (404 for anything else)."""
    repo: Repo = call.repo()
    branch = _branch_of(call.params["ref"])
    sha = call.state.branches[repo.id].get(branch) if branch else None
    if branch is None or sha is None:
        raise not_found("https://docs.github.com/rest/git/refs#get-a-reference")
    return Reply(body=call.render.git_ref(repo, branch, sha))
