"""Repository endpoints: the repo, branches, commits, compare, git trees/blobs, contents."""

from __future__ import annotations

import datetime
import io
import tarfile
from urllib.parse import quote

from sandbox.errors import ApiError, not_found
from sandbox.gitobjects import FileChange, FileMode, ObjectStore, diff_trees
from sandbox.pagination import paginate
from sandbox.records import Repo
from sandbox.render import wrapped_base64
from sandbox.routing import Access, Call, Need, Reply, RouteTable
from sandbox.state import SandboxState

routes = RouteTable()
CONTENTS = Need("contents", "read")
METADATA = Need("metadata", "read")
RAW_TYPES = ("application/vnd.github.raw", "application/vnd.github.v3.raw")
# https://docs.github.com/rest/repos/contents#get-repository-content: 1-100 MB files come
# back with an empty "content" and encoding "none"
MAX_INLINE_CONTENT = 1024 * 1024


def _wants_raw(call: Call) -> bool:
    return any(kind in call.accept for kind in RAW_TYPES)


def _resolve_or_422(call: Call, repo: Repo, ref: str) -> str:
    sha = call.state.resolve_ref(repo, ref)
    if sha is None:
        raise ApiError(422, f"No commit found for SHA: {ref}")
    return sha


def merge_base(state: SandboxState, repo: Repo, base: str, head: str) -> str | None:
    """The newest common ancestor of two commits, or None."""
    store = state.objects[repo.id]
    base_side = set(store.ancestors(base))
    return next((sha for sha in store.ancestors(head) if sha in base_side), None)


def commits_between(state: SandboxState, repo: Repo, base: str, head: str) -> list[str]:
    """Commits reachable from ``head`` but not from ``base``, oldest first."""
    store = state.objects[repo.id]
    excluded = set(store.ancestors(base))
    return [sha for sha in reversed(store.ancestors(head)) if sha not in excluded]


def changes_between(state: SandboxState, repo: Repo, base: str, head: str) -> list[FileChange]:
    """The files changed from the merge base of ``base`` and ``head`` to ``head``."""
    store = state.objects[repo.id]
    common = merge_base(state, repo, base, head)
    old_tree = store.commits[common].tree if common else None
    return diff_trees(store, old_tree, store.commits[head].tree)


@routes.route("GET", "/repos/{owner}/{repo}", need=METADATA)
async def get_repo(call: Call) -> Reply:
    """``GET /repos/{o}/{r}``: the full repository."""
    return Reply(body=call.render.repo(call.repo(), full=True))


@routes.route("GET", "/repos/{owner}/{repo}/branches/{branch:.+}", need=CONTENTS)
async def get_branch(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/branches/{branch}``: a branch and its head commit."""
    repo = call.repo()
    name = call.params["branch"]
    sha = call.state.branches[repo.id].get(name)
    if sha is None:
        raise ApiError(
            404,
            "Branch not found",
            documentation_url="https://docs.github.com/rest/branches/branches#get-a-branch",
        )
    return Reply(body=call.render.branch(repo, name, sha))


def _blob_at(store: ObjectStore, sha: str, path: str) -> str | None:
    entry = store.lookup(store.commits[sha].tree, path)
    return entry.sha if entry else None


def _touches(store: ObjectStore, sha: str, path: str) -> bool:
    """True when commit ``sha`` changed ``path``, as ``git log -- <path>`` lists commits.

    A merge that kept one parent's version of the path did not change it (git's default
    history simplification: https://git-scm.com/docs/git-log#_history_simplification).
    """
    commit = store.commits[sha]
    now = _blob_at(store, sha, path)
    if not commit.parents:
        return now is not None
    return all(_blob_at(store, parent, path) != now for parent in commit.parents)


def _query_time(call: Call, name: str) -> float | None:
    raw = call.query.get(name)
    if raw is None:
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError as error:
        raise ApiError(400, f"Invalid {name} parameter") from error


@routes.route("GET", "/repos/{owner}/{repo}/commits", need=CONTENTS)
async def list_commits(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/commits``: history from ``sha`` (default branch), ``path``-filtered."""
    repo = call.repo()
    start = call.state.resolve_ref(repo, call.query.get("sha") or repo.default_branch)
    if start is None:
        raise not_found("https://docs.github.com/rest/commits/commits#list-commits")
    store = call.state.objects[repo.id]
    shas = store.ancestors(start)
    path = call.query.get("path")
    if path:
        shas = [sha for sha in shas if _touches(store, sha, path)]
    since, until = _query_time(call, "since"), _query_time(call, "until")
    if since is not None:
        shas = [s for s in shas if store.commits[s].committer.timestamp >= since]
    if until is not None:
        shas = [s for s in shas if store.commits[s].committer.timestamp <= until]
    page = paginate(shas, call.url)
    body = [call.render.commit(repo, store.commits[sha]) for sha in page.items]
    return Reply(body=body, headers=page.headers)


@routes.route("GET", "/repos/{owner}/{repo}/commits/{ref:.+}", need=CONTENTS)
async def get_commit(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/commits/{ref}``: one commit with its files and stats."""
    repo = call.repo()
    sha = _resolve_or_422(call, repo, call.params["ref"])
    if "application/vnd.github.sha" in call.accept:
        return Reply(raw=sha.encode(), content_type="application/vnd.github.sha")
    return Reply(body=call.render.commit(repo, call.state.git_commit(repo, sha), with_files=True))


@routes.route("GET", "/repos/{owner}/{repo}/compare/{basehead:.+}", need=CONTENTS)
async def compare(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/compare/{base}...{head}``: commits and files between two refs."""
    repo = call.repo()
    base_ref, sep, head_ref = call.params["basehead"].partition("...")
    if not sep:
        raise not_found()
    base = call.state.resolve_ref(repo, base_ref.rpartition(":")[2])
    head = call.state.resolve_ref(repo, head_ref.rpartition(":")[2])
    if base is None or head is None:
        raise not_found("https://docs.github.com/rest/commits/commits#compare-two-commits")
    common = merge_base(call.state, repo, base, head)
    ahead = commits_between(call.state, repo, base, head)
    behind = commits_between(call.state, repo, head, base)
    if not ahead and not behind:
        status = "identical"
    elif not behind:
        status = "ahead"
    elif not ahead:
        status = "behind"
    else:
        status = "diverged"
    render = call.render
    url = f"{render.api}/repos/{repo.full_name}/compare/{quote(call.params['basehead'])}"
    html = f"{render.html}/{repo.full_name}/compare/{call.params['basehead']}"
    store = call.state.objects[repo.id]
    body = {
        "url": url,
        "html_url": html,
        "permalink_url": f"{render.html}/{repo.full_name}/compare/{base[:7]}...{head[:7]}",
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "base_commit": render.commit(repo, store.commits[base]),
        "merge_base_commit": render.commit(repo, store.commits[common or base]),
        "status": status,
        "ahead_by": len(ahead),
        "behind_by": len(behind),
        "total_commits": len(ahead),
        "commits": [render.commit(repo, store.commits[sha]) for sha in ahead],
        "files": [
            render.diff_entry(repo, change, ref=head)
            for change in changes_between(call.state, repo, base, head)
        ],
    }
    return Reply(body=body)


@routes.route("GET", "/repos/{owner}/{repo}/git/trees/{tree_sha:.+}", need=CONTENTS)
async def get_tree(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/git/trees/{sha}``: a tree (by tree sha, commit sha or branch)."""
    repo = call.repo()
    store = call.state.objects[repo.id]
    wanted = call.params["tree_sha"]
    tree = wanted if wanted in store.trees else None
    if tree is None:
        sha = call.state.resolve_ref(repo, wanted)
        tree = store.commits[sha].tree if sha else None
    if tree is None:
        raise not_found("https://docs.github.com/rest/git/trees#get-a-tree")
    recursive = "recursive" in call.query
    return Reply(body=call.render.tree(repo, tree, recursive=recursive))


@routes.route("GET", "/repos/{owner}/{repo}/git/blobs/{file_sha}", need=CONTENTS)
async def get_blob(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/git/blobs/{sha}``: a blob, base64 (or raw with the raw media type)."""
    repo = call.repo()
    sha = call.params["file_sha"]
    data = call.state.objects[repo.id].blobs.get(sha)
    if data is None:
        raise not_found("https://docs.github.com/rest/git/blobs#get-a-blob")
    if _wants_raw(call):
        return Reply(raw=data, content_type="application/vnd.github.raw")
    return Reply(body=call.render.blob(repo, sha, data))


@routes.route("GET", "/repos/{owner}/{repo}/contents", need=CONTENTS)
@routes.route("GET", "/repos/{owner}/{repo}/contents/{path:.*}", need=CONTENTS)
async def get_contents(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/contents/{path}?ref=``: a file (base64) or a directory listing."""
    repo = call.repo()
    ref = call.query.get("ref") or repo.default_branch
    sha = call.state.resolve_ref(repo, ref)
    if sha is None:
        raise ApiError(404, f"No commit found for the ref {ref}")
    store = call.state.objects[repo.id]
    path = call.params.get("path", "").strip("/")
    entry = store.lookup(store.commits[sha].tree, path)
    if entry is None:
        raise not_found("https://docs.github.com/rest/repos/contents#get-repository-content")
    render = call.render
    if entry.mode is FileMode.TREE:
        listing = []
        for child in store.trees[entry.sha]:
            child_path = f"{path}/{child.name}" if path else child.name
            is_dir = child.mode is FileMode.TREE
            size = 0 if is_dir else len(store.blobs[child.sha])
            kind = "dir" if is_dir else "file"
            listing.append(
                render.content_entry(repo, child_path, sha=child.sha, kind=kind, size=size, ref=ref)
            )
        return Reply(body=listing)
    data = store.blobs[entry.sha]
    if _wants_raw(call):
        return Reply(raw=data, content_type="application/vnd.github.raw")
    body = render.content_entry(repo, path, sha=entry.sha, kind="file", size=len(data), ref=ref)
    if len(data) > MAX_INLINE_CONTENT:
        body |= {"content": "", "encoding": "none"}
    else:
        body |= {"content": wrapped_base64(data), "encoding": "base64"}
    return Reply(body=body)


@routes.route("GET", "/repos/{owner}/{repo}/tarball/{ref:.*}", need=CONTENTS)
async def get_tarball(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/tarball/{ref}``: 302 to a download URL (served by the sandbox)."""
    repo = call.repo()
    ref = call.params.get("ref") or repo.default_branch
    sha = call.state.resolve_ref(repo, ref)
    if sha is None:
        raise not_found()
    location = f"{call.render.api}/_sandbox/codeload/{repo.full_name}/legacy.tar.gz/{sha}"
    return Reply(status=302, headers={"Location": location})


@routes.route("GET", "/_sandbox/codeload/{owner}/{repo}/legacy.tar.gz/{sha}", access=Access.PUBLIC)
async def download_tarball(call: Call) -> Reply:
    """The tarball behind the 302: ``{owner}-{repo}-{sha7}/`` plus the files."""
    repo = call.state.find_repo(call.params["owner"], call.params["repo"])
    sha = call.params["sha"]
    if repo is None or sha not in call.state.objects[repo.id].commits:
        raise not_found()
    files = call.state.files_at(repo, sha)
    prefix = f"{repo.owner.login}-{repo.name}-{sha[:7]}"
    stamp = call.state.git_commit(repo, sha).committer.timestamp
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{prefix}/{path}")
            info.size, info.mtime, info.mode = len(data), stamp, 0o644
            archive.addfile(info, io.BytesIO(data))
    return Reply(raw=buffer.getvalue(), content_type="application/x-gzip")


@routes.route("GET", "/_sandbox/raw/{owner}/{repo}/{ref}/{path:.+}", access=Access.PUBLIC)
async def download_raw(call: Call) -> Reply:
    """The ``download_url`` of a file (like raw.githubusercontent.com)."""
    repo = call.state.find_repo(call.params["owner"], call.params["repo"])
    if repo is None:
        raise not_found()
    try:
        data = call.state.files_at(repo, call.params["ref"])[call.params["path"]]
    except KeyError as error:
        raise not_found() from error
    return Reply(raw=data, content_type="text/plain; charset=utf-8")


@routes.route("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission", need=METADATA)
async def get_permission(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/collaborators/{u}/permission``: a user's role on the repo."""
    repo = call.repo()
    user = call.state.users.get(call.params["username"].lower())
    if user is None:
        raise not_found()
    permission = call.state.permission_of(repo, user.login)
    return Reply(body=call.render.collaborator_permission(repo, user, permission))
