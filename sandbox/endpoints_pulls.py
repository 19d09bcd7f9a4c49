"""Pull-request endpoints: list, create, get, changed files, and the pulls of a commit."""

from __future__ import annotations

from sandbox.endpoints_repo import changes_between, commits_between
from sandbox.errors import ApiError, invalid_field, not_found
from sandbox.pagination import paginate
from sandbox.records import Issue, Repo
from sandbox.routing import Call, Need, Reply, RouteTable, optional_str, required_str

routes = RouteTable()
READ = Need("pull_requests", "read")
WRITE = Need("pull_requests", "write")
RESOURCE = "PullRequest"
LIST_DOCS = "https://docs.github.com/rest/pulls/pulls#list-pull-requests"


def _pull_or_404(call: Call, repo: Repo, docs: str) -> Issue:
    pull = call.state.issue(repo, call.int_param("pull_number"))
    if pull.pull is None:
        raise not_found(docs)
    return pull


def _render_full(call: Call, repo: Repo, pull: Issue) -> Reply:
    assert pull.pull is not None
    heads = call.state.branches[repo.id]
    base, head = heads[pull.pull.base_ref], heads[pull.pull.head_ref]
    changes = changes_between(call.state, repo, base, head)
    commits = len(commits_between(call.state, repo, base, head))
    return Reply(body=call.render.pull(repo, pull, changes, commits))


def _filter_pulls(call: Call, repo: Repo, pulls: list[Issue]) -> list[Issue]:
    # https://docs.github.com/rest/pulls/pulls#list-pull-requests
    state = call.query.get("state", "open")
    if state not in ("open", "closed", "all"):
        raise ApiError(422, f"Invalid value for state: {state!r}", documentation_url=LIST_DOCS)
    if state != "all":
        pulls = [p for p in pulls if p.state.value == state]
    head = call.query.get("head")
    if head:
        owner, _, branch = head.rpartition(":")
        same_owner = not owner or owner.lower() == repo.owner.login.lower()
        pulls = [p for p in pulls if same_owner and p.pull and p.pull.head_ref == branch]
    base = call.query.get("base")
    if base:
        pulls = [p for p in pulls if p.pull and p.pull.base_ref == base]
    sort = call.query.get("sort", "created")
    keys = {
        "created": lambda p: (p.created_at, p.number),
        "updated": lambda p: (p.updated_at, p.number),
        "popularity": lambda p: (len(call.state.issue_comments(repo, p.number)), p.number),
        "long-running": lambda p: (p.created_at, p.number),
    }
    # Descending by default only for "created"; "long-running" puts the oldest first.
    default = "desc" if sort in ("created", "popularity") else "asc"
    descending = call.query.get("direction", default) == "desc"
    return sorted(pulls, key=keys.get(sort, keys["created"]), reverse=descending)


@routes.route("GET", "/repos/{owner}/{repo}/pulls", need=READ)
async def list_pulls(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/pulls``: ``state``/``head``/``base`` filters, sorted, paginated."""
    repo = call.repo()
    pulls = [i for i in call.state.list_issues(repo) if i.pull is not None]
    page = paginate(_filter_pulls(call, repo, pulls), call.url)
    return Reply(body=[call.render.pull_simple(repo, p) for p in page.items], headers=page.headers)


@routes.route("POST", "/repos/{owner}/{repo}/pulls", need=WRITE)
async def create_pull(call: Call) -> Reply:
    """``POST /repos/{o}/{r}/pulls``: open a pull request from ``head`` into ``base``."""
    repo = call.repo()
    body = call.json_object()
    draft = body.get("draft", False)
    if not isinstance(draft, bool):
        raise invalid_field(RESOURCE, "draft")
    pull = call.state.create_pull(
        repo,
        head=required_str(body, "head", resource=RESOURCE),
        base=required_str(body, "base", resource=RESOURCE),
        title=optional_str(body, "title", resource=RESOURCE) or "",
        body=optional_str(body, "body", resource=RESOURCE),
        user=call.actor,
        draft=draft,
    )
    reply = _render_full(call, repo, pull)
    return Reply(status=201, body=reply.body, headers={"Location": reply.body["url"]})


@routes.route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", need=READ)
async def get_pull(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/pulls/{n}``: a pull request."""
    repo = call.repo()
    pull = _pull_or_404(call, repo, "https://docs.github.com/rest/pulls/pulls#get-a-pull-request")
    return _render_full(call, repo, pull)


@routes.route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/files", need=READ)
async def list_pull_files(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/pulls/{n}/files``: the changed files, paginated."""
    repo = call.repo()
    pull = _pull_or_404(
        call, repo, "https://docs.github.com/rest/pulls/pulls#list-pull-requests-files"
    )
    assert pull.pull is not None
    heads = call.state.branches[repo.id]
    head = heads[pull.pull.head_ref]
    changes = changes_between(call.state, repo, heads[pull.pull.base_ref], head)
    page = paginate(changes, call.url)
    body = [call.render.diff_entry(repo, change, ref=head) for change in page.items]
    return Reply(body=body, headers=page.headers)


@routes.route("GET", "/repos/{owner}/{repo}/commits/{commit_sha}/pulls", need=READ)
async def list_pulls_for_commit(call: Call) -> Reply:
    """``GET /repos/{o}/{r}/commits/{sha}/pulls``: pull requests that carry the commit."""
    repo = call.repo()
    wanted = call.params["commit_sha"]
    sha = call.state.resolve_ref(repo, wanted)
    if sha is None:
        raise ApiError(422, f"No commit found for SHA: {wanted}")
    page = paginate(call.state.pulls_for_commit(repo, sha), call.url)
    return Reply(body=[call.render.pull_simple(repo, p) for p in page.items], headers=page.headers)
