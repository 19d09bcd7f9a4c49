"""The in-memory GitHub world behind the sandbox: the App, installations, repos, issues, checks."""

from __future__ import annotations

import itertools
import secrets
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.errors import ApiError, invalid_field, not_found, validation_failed
from sandbox.gitobjects import GitCommit, ObjectStore, Signature
from sandbox.records import (
    DEFAULT_APP_EVENTS,
    DEFAULT_APP_PERMISSIONS,
    CheckAction,
    CheckConclusion,
    CheckOutput,
    CheckRun,
    CheckStatus,
    Comment,
    CommentEdit,
    Delivery,
    GitHubApp,
    Installation,
    InstallationToken,
    Issue,
    IssueState,
    Label,
    MergeMethod,
    Permission,
    PullInfo,
    RateBucket,
    Reaction,
    ReactionContent,
    ReactionResult,
    Repo,
    StateReason,
    User,
    UserType,
)

MAX_COMMENT_CHARS = 65536
MAX_CHECK_OUTPUT_BYTES = 65535
LOCKED_DOCS = "https://docs.github.com/articles/locking-conversations/"
COMMENT_DOCS = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"
CHECK_DOCS = "https://docs.github.com/rest/checks/runs#create-a-check-run"
PULL_DOCS = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
_LEVELS = {"read": 1, "write": 2, "admin": 3}
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def permission_allows(granted: Mapping[str, str], name: str, level: str) -> bool:
    """True when ``granted`` holds permission ``name`` at ``level`` or above."""
    return _LEVELS.get(granted.get(name, ""), 0) >= _LEVELS[level]


def _generate_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def _custom_422(message: str) -> ApiError:
    # GitHub's "custom" validation errors name no field, only a message.
    error = {"resource": "PullRequest", "code": "custom", "message": message}
    return ApiError(422, "Validation Failed", errors=[error], documentation_url=PULL_DOCS)


class SandboxState:
    """Everything the sandboxed GitHub knows; seed it directly, the server mutates it too."""

    def __init__(
        self,
        *,
        app_id: int = 424242,
        app_slug: str = "model-guard",
        token_ttl: float = 3600.0,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
        html_url: str = "https://github.com",
        webhook_secret: str = "sandbox-webhook-secret",
    ) -> None:
        """Create the world with one GitHub App (fresh RSA key pair) and its bot user."""
        self.clock = clock
        self.token_ttl = token_ttl
        self.rate_limit = rate_limit
        self.html_url = html_url.rstrip("/")
        self._ids = itertools.count(1)
        self._numbers: dict[int, itertools.count[int]] = {}
        self.users: dict[str, User] = {}
        self.installations: dict[int, Installation] = {}
        self.repos: dict[int, Repo] = {}
        self.objects: dict[int, ObjectStore] = {}
        self.branches: dict[int, dict[str, str]] = {}
        self.issues: dict[tuple[int, int], Issue] = {}
        self.comments: dict[int, Comment] = {}
        self.labels: dict[tuple[int, str], Label] = {}
        self.check_runs: dict[int, CheckRun] = {}
        self.check_suites: dict[tuple[int, str], int] = {}
        self.rerequested_suites: list[int] = []
        self.reactions: dict[int, Reaction] = {}
        self.permissions: dict[tuple[int, str], Permission] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.rate_buckets: dict[str, RateBucket] = {}
        self.deliveries: dict[int, Delivery] = {}
        self.manifest_codes: set[str] = set()
        private_pem, public_pem = _generate_key_pair()
        owner = self.user("model-guard-dev")
        bot = self.user(f"{app_slug}[bot]", type=UserType.BOT)
        self.app = GitHubApp(
            id=app_id,
            slug=app_slug,
            name=app_slug,
            client_id=f"Iv1.{secrets.token_hex(8)}",
            client_secret=secrets.token_hex(20),
            webhook_secret=webhook_secret,
            owner=owner,
            bot=bot,
            private_key_pem=private_pem,
            public_key_pem=public_pem,
            permissions=DEFAULT_APP_PERMISSIONS,
            events=DEFAULT_APP_EVENTS,
            created_at=self.clock(),
        )

    # ---- identity -------------------------------------------------------------------------

    @property
    def private_key_pem(self) -> str:
        """The App's private key (PEM), for signing App JWTs."""
        return self.app.private_key_pem

    def next_id(self) -> int:
        """A fresh id, unique across every kind of record (so ids never look like numbers)."""
        return 1_000_000 + next(self._ids)

    def now(self) -> float:
        """The sandbox clock."""
        return self.clock()

    def user(self, login: str, *, type: UserType = UserType.USER) -> User:
        """Get the user called ``login``, creating it on first use."""
        key = login.lower()
        if key not in self.users:
            self.users[key] = User(self.next_id(), login, type)
        return self.users[key]

    # ---- seeding --------------------------------------------------------------------------

    def add_installation(
        self,
        account: str | User,
        *,
        permissions: Mapping[str, str] | None = None,
        events: Iterable[str] | None = None,
    ) -> Installation:
        """Install the App on ``account`` (repositories are added by ``add_repo``)."""
        owner = account if isinstance(account, User) else self.user(account)
        installation = Installation(
            id=self.next_id(),
            account=owner,
            repository_ids=(),
            permissions=MappingProxyType(dict(permissions or self.app.permissions)),
            events=tuple(events or self.app.events),
            created_at=self.now(),
        )
        self.installations[installation.id] = installation
        return installation

    def add_repo(
        self,
        owner: str | User,
        name: str,
        files: Mapping[str, bytes],
        *,
        installation: Installation | None,
        default_branch: str = "main",
        private: bool = False,
        description: str | None = None,
    ) -> Repo:
        """Create a repository with one initial commit of ``files`` and add it to ``installation``."""
        account = owner if isinstance(owner, User) else self.user(owner)
        if self.find_repo(account.login, name) is not None:
            raise ValueError(f"repository {account.login}/{name} already exists")
        repo = Repo(
            id=self.next_id(),
            owner=account,
            name=name,
            default_branch=default_branch,
            private=private,
            description=description,
            created_at=self.now(),
        )
        self.repos[repo.id] = repo
        self.objects[repo.id] = ObjectStore()
        self.branches[repo.id] = {}
        self._numbers[repo.id] = itertools.count(1)
        self.commit(repo, files, message="Initial commit", branch=default_branch, replace=True)
        if installation is not None:
            current = self.installations[installation.id]
            self.installations[installation.id] = replace(
                current, repository_ids=(*current.repository_ids, repo.id)
            )
        return repo

    def commit(
        self,
        repo: Repo,
        files: Mapping[str, bytes | None],
        *,
        message: str,
        branch: str | None = None,
        author: str = "octocat",
        replace: bool = False,
    ) -> str:
        """Commit ``files`` on ``branch`` (default branch if None) and return the commit sha.

        ``files`` changes the branch head's tree: bytes add or overwrite a file, None deletes
        it; with ``replace=True`` the tree is exactly ``files``. A missing branch starts from
        the default branch's head.
        """
        store = self.objects[repo.id]
        heads = self.branches[repo.id]
        name = branch or repo.default_branch
        parent = heads.get(name) or heads.get(repo.default_branch)
        current = {} if replace or parent is None else store.read_files(store.commits[parent].tree)
        for path, data in files.items():
            if data is None:
                current.pop(path.strip("/"), None)
            else:
                current[path.strip("/")] = data
        tree = store.write_tree(current)
        who = self.user(author)
        signature = Signature(who.login, f"{who.login}@users.noreply.github.com", int(self.now()))
        created = store.put_commit(
            tree,
            (parent,) if parent else (),
            message=message,
            author=signature,
            committer=signature,
        )
        heads[name] = created.sha
        return created.sha

    def create_branch(self, repo: Repo, name: str, *, from_ref: str | None = None) -> str:
        """Point a new branch at ``from_ref`` (default branch head if None); return its sha."""
        sha = self.resolve_ref(repo, from_ref or repo.default_branch)
        if sha is None:
            raise ValueError(f"unknown ref {from_ref!r}")
        self.branches[repo.id][name] = sha
        return sha

    def add_issue(
        self,
        repo: Repo,
        title: str,
        *,
        body: str | None = None,
        labels: Iterable[str] = (),
        user: str = "octocat",
        locked: bool = False,
        state: IssueState = IssueState.OPEN,
    ) -> Issue:
        """Open an issue as ``user`` (labels are created on the repo when missing)."""
        names = tuple(self.ensure_label(repo, name).name for name in labels)
        now = self.now()
        issue = Issue(
            id=self.next_id(),
            repo_id=repo.id,
            number=next(self._numbers[repo.id]),
            title=title,
            body=body,
            user=self.user(user),
            state=state,
            locked=locked,
            labels=names,
            created_at=now,
            updated_at=now,
            closed_at=now if state is IssueState.CLOSED else None,
        )
        self.issues[(repo.id, issue.number)] = issue
        return issue

    def update_issue(
        self,
        repo: Repo,
        number: int,
        *,
        locked: bool | None = None,
        state: IssueState | None = None,
        deleted: bool | None = None,
    ) -> Issue:
        """Lock/unlock, close/reopen or delete an issue from the outside (as a maintainer would)."""
        issue = self.issues[(repo.id, number)]
        now = self.now()
        if locked is not None:
            issue = replace(issue, locked=locked)
        if state is not None:
            closed_at = now if state is IssueState.CLOSED else None
            issue = replace(issue, state=state, closed_at=closed_at, state_reason=None)
        if deleted is not None:
            issue = replace(issue, deleted=deleted)
        issue = replace(issue, updated_at=now)
        self.issues[(repo.id, number)] = issue
        return issue

    def add_comment(
        self, repo: Repo, issue_number: int, body: str, *, user: str = "octocat"
    ) -> Comment:
        """Comment as a person (bypasses locking; a human may paste the App's marker)."""
        self._issue_or_raise(repo, issue_number)
        return self._store_comment(repo, issue_number, body, self.user(user), via_app=False)

    def add_label(
        self, repo: Repo, name: str, *, color: str = "ededed", description: str | None = None
    ) -> Label:
        """Create a label on ``repo``."""
        label = Label(self.next_id(), repo.id, name, color, description)
        self.labels[(repo.id, name.lower())] = label
        return label

    def ensure_label(self, repo: Repo, name: str) -> Label:
        """Get a label by name (case-insensitive), creating it when missing."""
        return self.labels.get((repo.id, name.lower())) or self.add_label(repo, name)

    def add_pull(
        self,
        repo: Repo,
        *,
        head: str,
        files: Mapping[str, bytes | None] | None = None,
        base: str | None = None,
        title: str = "Update models",
        body: str | None = None,
        user: str = "octocat",
        draft: bool = False,
    ) -> Issue:
        """Open a pull request from branch ``head`` (``files`` are committed to it first)."""
        base_ref = base or repo.default_branch
        if head not in self.branches[repo.id]:
            self.create_branch(repo, head, from_ref=base_ref)
        if files:
            self.commit(
                repo, files, message=f"Change {len(files)} file(s)", branch=head, author=user
            )
        now = self.now()
        issue = Issue(
            id=self.next_id(),
            repo_id=repo.id,
            number=next(self._numbers[repo.id]),
            title=title,
            body=body,
            user=self.user(user),
            state=IssueState.OPEN,
            locked=False,
            labels=(),
            created_at=now,
            updated_at=now,
            pull=PullInfo(head_ref=head, base_ref=base_ref, draft=draft),
        )
        self.issues[(repo.id, issue.number)] = issue
        return issue

    def merge_pull(
        self,
        repo: Repo,
        number: int,
        *,
        method: MergeMethod = MergeMethod.MERGE,
        user: str = "octocat",
    ) -> str:
        """Merge pull request ``number`` into its base (the merge button); return the base's new head.

        The pull's changes since the merge base are applied to the base's files (refused with a
        ValueError where both sides changed a file differently); the pull is closed as merged
        and keeps its head branch, as GitHub does unless the branch is deleted.
        """
        pull = self._issue_or_raise(repo, number)
        info = pull.pull
        if info is None or info.merged or pull.state is not IssueState.OPEN:
            raise ValueError(f"#{number} is not an open pull request")
        store, heads = self.objects[repo.id], self.branches[repo.id]
        base, head = heads[info.base_ref], heads[info.head_ref]
        carried = self.commits_ahead(repo, base, head)
        if not carried:
            raise ValueError(f"no commits between {info.base_ref} and {info.head_ref}")
        base_side = set(store.ancestors(base))
        common = next((sha for sha in store.ancestors(head) if sha in base_side), None)
        before = store.read_files(store.commits[common].tree) if common else {}
        after = store.read_files(store.commits[head].tree)
        merged = store.read_files(store.commits[base].tree)
        for path in before.keys() | after.keys():
            old, new = before.get(path), after.get(path)
            if old == new:
                continue
            if merged.get(path) not in (old, new):
                raise ValueError(f"merge conflict in {path}")
            if new is None:
                merged.pop(path, None)
            else:
                merged[path] = new
        who = self.user(user)
        signature = Signature(who.login, f"{who.login}@users.noreply.github.com", int(self.now()))
        parents: tuple[str, ...]
        if method is MergeMethod.MERGE:
            parents = (base, head)
            source = f"{repo.owner.login}/{info.head_ref}"
            message = f"Merge pull request #{number} from {source}\n\n{pull.title}"
        else:
            parents, message = (base,), f"{pull.title} (#{number})"
        created = store.put_commit(
            store.write_tree(merged),
            parents,
            message=message,
            author=signature,
            committer=signature,
        )
        heads[info.base_ref] = created.sha
        now = self.now()
        self.issues[(repo.id, number)] = replace(
            pull,
            state=IssueState.CLOSED,
            closed_at=now,
            updated_at=now,
            pull=replace(
                info,
                merged=True,
                merged_at=now,
                merge_commit_sha=created.sha,
                merged_commits=tuple(carried),
            ),
        )
        return created.sha

    def pull_head(self, repo: Repo, pull: Issue) -> str:
        """The head sha of pull request ``pull`` (its head branch's tip)."""
        assert pull.pull is not None
        return self.branches[repo.id][pull.pull.head_ref]

    def commits_ahead(self, repo: Repo, base: str, head: str) -> list[str]:
        """Commits reachable from ``head`` but not from ``base``, oldest first."""
        store = self.objects[repo.id]
        excluded = set(store.ancestors(base))
        return [sha for sha in reversed(store.ancestors(head)) if sha not in excluded]

    def set_permission(self, repo: Repo, username: str, permission: Permission | str) -> None:
        """Make ``username`` a collaborator on ``repo`` with ``permission``."""
        self.user(username)
        self.permissions[(repo.id, username.lower())] = Permission(permission)

    # ---- look-ups -------------------------------------------------------------------------

    def find_repo(self, owner: str, name: str) -> Repo | None:
        """The repository ``owner/name`` (case-insensitive, like GitHub), or None."""
        wanted = f"{owner}/{name}".lower()
        return next((r for r in self.repos.values() if r.full_name.lower() == wanted), None)

    def installation_for(self, repo: Repo) -> Installation | None:
        """The installation that covers ``repo``, or None."""
        return next((i for i in self.installations.values() if repo.id in i.repository_ids), None)

    def resolve_ref(self, repo: Repo, ref: str) -> str | None:
        """A commit sha for a branch name, ``refs/heads/…``, ``heads/…``, or a (short) sha."""
        heads = self.branches[repo.id]
        name = ref.removeprefix("refs/").removeprefix("heads/")
        if name in heads:
            return heads[name]
        commits = self.objects[repo.id].commits
        if ref in commits:
            return ref
        if len(ref) >= 7 and all(c in string.hexdigits for c in ref):
            matches = [sha for sha in commits if sha.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
        return None

    def git_commit(self, repo: Repo, sha: str) -> GitCommit:
        """The commit object ``sha`` of ``repo``."""
        return self.objects[repo.id].commits[sha]

    def files_at(self, repo: Repo, ref: str | None = None) -> dict[str, bytes]:
        """Every file of ``repo`` at ``ref`` (default branch if None)."""
        sha = self.resolve_ref(repo, ref or repo.default_branch)
        if sha is None:
            raise KeyError(ref)
        store = self.objects[repo.id]
        return store.read_files(store.commits[sha].tree)

    def issue(self, repo: Repo, number: int) -> Issue:
        """The issue or pull request ``number`` (GitHub's 404/410 when missing/deleted)."""
        return self._issue_or_raise(repo, number)

    def list_issues(self, repo: Repo) -> list[Issue]:
        """Every issue and pull request of ``repo`` that was not deleted, by number."""
        found = [i for (rid, _), i in self.issues.items() if rid == repo.id and not i.deleted]
        return sorted(found, key=lambda i: i.number)

    def issue_comments(self, repo: Repo, issue_number: int) -> list[Comment]:
        """The live comments on an issue, oldest first."""
        found = [
            c
            for c in self.comments.values()
            if c.repo_id == repo.id and c.issue_number == issue_number and not c.deleted
        ]
        return sorted(found, key=lambda c: c.id)

    def comments_by_app(self, repo: Repo, issue_number: int) -> list[Comment]:
        """The live comments the App (its bot user) wrote on an issue."""
        return [c for c in self.issue_comments(repo, issue_number) if c.user == self.app.bot]

    def comment(self, comment_id: int, *, repo: Repo) -> Comment:
        """A live comment of ``repo`` by id (404 when missing or deleted)."""
        comment = self.comments.get(comment_id)
        if comment is None or comment.deleted or comment.repo_id != repo.id:
            raise not_found("https://docs.github.com/rest/issues/comments#get-an-issue-comment")
        return comment

    def label(self, repo: Repo, name: str) -> Label:
        """A label by name (404 when missing)."""
        label = self.labels.get((repo.id, name.lower()))
        if label is None:
            raise not_found("https://docs.github.com/rest/issues/labels#get-a-label")
        return label

    def repo_labels(self, repo: Repo) -> list[Label]:
        """Every label of ``repo``, by id."""
        found = [label for (rid, _), label in self.labels.items() if rid == repo.id]
        return sorted(found, key=lambda label: label.id)

    def check_run(self, check_run_id: int, *, repo: Repo) -> CheckRun:
        """A check run of ``repo`` by id (404 when missing)."""
        run = self.check_runs.get(check_run_id)
        if run is None or run.repo_id != repo.id:
            raise not_found("https://docs.github.com/rest/checks/runs#get-a-check-run")
        return run

    def check_suite_sha(self, repo: Repo, check_suite_id: int) -> str:
        """The head sha of the App's check suite ``check_suite_id`` on ``repo`` (404 when none)."""
        for (repo_id, sha), suite in self.check_suites.items():
            if repo_id == repo.id and suite == check_suite_id:
                return sha
        raise not_found("https://docs.github.com/rest/checks/suites#rerequest-a-check-suite")

    def rerequest_check_suite(self, repo: Repo, check_suite_id: int) -> str:
        """Remember that someone asked to rerun a check suite; return its head sha."""
        sha = self.check_suite_sha(repo, check_suite_id)
        self.rerequested_suites.append(check_suite_id)
        return sha

    def check_runs_for(self, repo: Repo, sha: str) -> list[CheckRun]:
        """Every check run on commit ``sha``, newest first."""
        runs = [r for r in self.check_runs.values() if r.repo_id == repo.id and r.head_sha == sha]
        return sorted(runs, key=lambda r: r.id, reverse=True)

    def pulls_for_sha(self, repo: Repo, sha: str) -> list[Issue]:
        """Open pull requests of ``repo`` whose head is ``sha``."""
        return [
            i
            for i in self.list_issues(repo)
            if i.pull is not None
            and i.state is IssueState.OPEN
            and self.branches[repo.id].get(i.pull.head_ref) == sha
        ]

    def reactions_on(self, comment_id: int) -> list[Reaction]:
        """The reactions on a comment, oldest first."""
        return [r for r in self.reactions.values() if r.comment_id == comment_id]

    def reactions_on_issue(self, issue: Issue) -> list[Reaction]:
        """The reactions on an issue or pull request itself (not its comments), oldest first."""
        return [r for r in self.reactions.values() if r.issue_id == issue.id]

    def permission_of(self, repo: Repo, username: str) -> Permission:
        """``username``'s role on ``repo``: set, owner's admin, public read, or none."""
        if username.lower() == repo.owner.login.lower():
            return Permission.ADMIN
        explicit = self.permissions.get((repo.id, username.lower()))
        if explicit is not None:
            return explicit
        return Permission.NONE if repo.private else Permission.READ

    def repos_of(self, installation: Installation) -> list[Repo]:
        """The repositories an installation covers."""
        current = self.installations[installation.id]
        return [self.repos[rid] for rid in current.repository_ids]

    # ---- operations the server performs ---------------------------------------------------

    def create_issue(
        self, repo: Repo, *, title: str, body: str | None, labels: Iterable[str], user: User
    ) -> Issue:
        """Open an issue through the API."""
        if body is not None and len(body) > MAX_COMMENT_CHARS:
            raise validation_failed(
                "Issue",
                "body",
                "custom",
                f"body is too long (maximum is {MAX_COMMENT_CHARS} characters)",
            )
        issue = self.add_issue(repo, title, body=body, labels=labels, user=user.login)
        return issue

    def create_pull(
        self,
        repo: Repo,
        *,
        head: str,
        base: str,
        title: str,
        body: str | None,
        user: User,
        draft: bool = False,
    ) -> Issue:
        """Open a pull request through the API (GitHub's 422s for bad branches or no commits)."""
        heads = self.branches[repo.id]
        # ``head`` may name the owner (``acme:feature``); the sandbox has no forks.
        owner, _, branch = head.rpartition(":")
        for name, value in (("base", base), ("head", branch)):
            if value not in heads or (name == "head" and owner and owner != repo.owner.login):
                raise validation_failed("PullRequest", name, "invalid", documentation_url=PULL_DOCS)
        label = f"{repo.owner.login}:{branch}"
        if any(
            i.pull is not None
            and i.state is IssueState.OPEN
            and i.pull.head_ref == branch
            and i.pull.base_ref == base
            for i in self.list_issues(repo)
        ):
            raise _custom_422(f"A pull request already exists for {label}.")
        if not self.commits_ahead(repo, heads[base], heads[branch]):
            raise _custom_422(f"No commits between {base} and {branch}")
        if body is not None and len(body) > MAX_COMMENT_CHARS:
            raise validation_failed(
                "PullRequest", "body", "custom", "body is too long", documentation_url=PULL_DOCS
            )
        return self.add_pull(
            repo, head=branch, base=base, title=title, body=body, user=user.login, draft=draft
        )

    def pulls_for_commit(self, repo: Repo, sha: str) -> list[Issue]:
        """Pull requests whose head is ``sha`` or that carry it between base and head.

        A merged pull request is found by its merge commit and by the commits it carried when
        it was merged (https://docs.github.com/rest/commits/commits#list-pull-requests-associated-with-a-commit).
        """
        found = []
        heads = self.branches[repo.id]
        for issue in self.list_issues(repo):
            if issue.pull is not None and issue.pull.merged:
                if sha == issue.pull.merge_commit_sha or sha in issue.pull.merged_commits:
                    found.append(issue)
                continue
            if issue.pull is None or issue.pull.head_ref not in heads:
                continue
            head = heads[issue.pull.head_ref]
            base = heads.get(issue.pull.base_ref)
            carried = base is not None and sha in self.commits_ahead(repo, base, head)
            if head == sha or carried:
                found.append(issue)
        return found

    def edit_issue(
        self,
        repo: Repo,
        number: int,
        *,
        title: str,
        body: str | None,
        state: IssueState,
        state_reason: StateReason | None,
        labels: Iterable[str],
    ) -> Issue:
        """Update an issue through the API: every field is the new value (the caller fills gaps).

        ``state_reason`` counts only when ``state`` changes: closing defaults it to completed,
        reopening makes it reopened. A locked issue may still be edited: locking stops
        comments, not the people (and Apps) with write access.
        """
        issue = self._issue_or_raise(repo, number)
        if body is not None and len(body) > MAX_COMMENT_CHARS:
            raise validation_failed(
                "Issue",
                "body",
                "custom",
                f"body is too long (maximum is {MAX_COMMENT_CHARS} characters)",
            )
        now = self.now()
        closed_at, reason = issue.closed_at, issue.state_reason
        if state is not issue.state and state is IssueState.CLOSED:
            if state_reason is StateReason.REOPENED:
                raise invalid_field("Issue", "state_reason", "reopened is not a reason to close")
            closed_at, reason = now, state_reason or StateReason.COMPLETED
        elif state is not issue.state:
            closed_at, reason = None, StateReason.REOPENED
        names = tuple(dict.fromkeys(self.ensure_label(repo, name).name for name in labels))
        issue = replace(
            issue,
            title=title,
            body=body,
            state=state,
            state_reason=reason,
            closed_at=closed_at,
            labels=names,
            updated_at=now,
        )
        self.issues[(repo.id, number)] = issue
        return issue

    def create_comment(self, repo: Repo, issue_number: int, body: str, *, user: User) -> Comment:
        """Comment through the API: refuses locked issues and bodies over 65,536 characters."""
        issue = self._issue_or_raise(repo, issue_number)
        if issue.locked:
            raise ApiError(
                403,
                "Unable to create comment because issue is locked.",
                documentation_url=LOCKED_DOCS,
            )
        self._check_comment_body(body)
        return self._store_comment(repo, issue_number, body, user, via_app=user == self.app.bot)

    def update_comment(self, repo: Repo, comment_id: int, body: str, *, editor: User) -> Comment:
        """Edit a comment through the API (GitHub lets a write-permitted App edit any comment)."""
        comment = self.comment(comment_id, repo=repo)
        self._check_comment_body(body)
        now = self.now()
        edit = CommentEdit(editor.login, now, comment.body)
        updated = replace(comment, body=body, updated_at=now, edits=(*comment.edits, edit))
        self.comments[comment_id] = updated
        self._touch_issue(repo, comment.issue_number)
        return updated

    def delete_comment(self, repo: Repo, comment_id: int) -> None:
        """Delete a comment (later reads answer 404, like GitHub)."""
        comment = self.comment(comment_id, repo=repo)
        self.comments[comment_id] = replace(comment, deleted=True, updated_at=self.now())

    def react(
        self, repo: Repo, comment_id: int, content: ReactionContent, *, user: User
    ) -> ReactionResult:
        """Add a reaction; the same user reacting the same way again gets the existing one."""
        self.comment(comment_id, repo=repo)
        for reaction in self.reactions_on(comment_id):
            if reaction.user == user and reaction.content is content:
                return ReactionResult(reaction, created=False)
        reaction = Reaction(self.next_id(), comment_id, content, user, self.now())
        self.reactions[reaction.id] = reaction
        return ReactionResult(reaction, created=True)

    def react_to_issue(
        self, repo: Repo, issue_number: int, content: ReactionContent, *, user: User
    ) -> ReactionResult:
        """React to an issue or pull request; the same reaction again gets the existing one."""
        issue = self._issue_or_raise(repo, issue_number)
        for reaction in self.reactions_on_issue(issue):
            if reaction.user == user and reaction.content is content:
                return ReactionResult(reaction, created=False)
        reaction = Reaction(self.next_id(), None, content, user, self.now(), issue_id=issue.id)
        self.reactions[reaction.id] = reaction
        return ReactionResult(reaction, created=True)

    def create_label(
        self, repo: Repo, name: str, *, color: str | None, description: str | None
    ) -> Label:
        """Create a label through the API (422 ``already_exists`` for a taken name)."""
        if (repo.id, name.lower()) in self.labels:
            raise validation_failed(
                "Label",
                "name",
                "already_exists",
                documentation_url="https://docs.github.com/rest/issues/labels#create-a-label",
            )
        colour = (color or "ededed").removeprefix("#")
        if len(colour) != 6 or any(c not in string.hexdigits for c in colour):
            raise invalid_field("Label", "color")
        return self.add_label(repo, name, color=colour.lower(), description=description)

    def create_check_run(
        self,
        repo: Repo,
        *,
        name: str,
        head_sha: str,
        status: CheckStatus | None = None,
        conclusion: CheckConclusion | None = None,
        started_at: float | None = None,
        completed_at: float | None = None,
        output: CheckOutput | None = None,
        external_id: str | None = None,
        details_url: str | None = None,
        actions: tuple[CheckAction, ...] = (),
    ) -> CheckRun:
        """Create a check run for the App on an existing commit of ``repo``."""
        if head_sha not in self.objects[repo.id].commits:
            raise ApiError(
                422, f"No commit found for SHA: {head_sha}", documentation_url=CHECK_DOCS
            )
        self._check_output(output)
        status, completed_at = self._settle(status, conclusion, completed_at)
        suite_key = (repo.id, head_sha)
        suite = self.check_suites.setdefault(suite_key, self.next_id())
        now = self.now()
        run = CheckRun(
            id=self.next_id(),
            repo_id=repo.id,
            name=name,
            head_sha=head_sha,
            status=status,
            conclusion=conclusion,
            output=output or CheckOutput(),
            started_at=started_at if started_at is not None else now,
            completed_at=completed_at,
            external_id=external_id,
            details_url=details_url,
            check_suite_id=suite,
            app_id=self.app.id,
            actions=actions,
        )
        self.check_runs[run.id] = run
        return run

    def update_check_run(
        self,
        repo: Repo,
        check_run_id: int,
        *,
        name: str | None = None,
        status: CheckStatus | None = None,
        conclusion: CheckConclusion | None = None,
        started_at: float | None = None,
        completed_at: float | None = None,
        output: CheckOutput | None = None,
        external_id: str | None = None,
        details_url: str | None = None,
        actions: tuple[CheckAction, ...] | None = None,
    ) -> CheckRun:
        """Update a check run; a conclusion completes it (``completed_at`` defaults to now)."""
        run = self.check_run(check_run_id, repo=repo)
        self._check_output(output)
        if conclusion is not None or status is not None:
            status, completed_at = self._settle(
                status or (None if conclusion else run.status), conclusion, completed_at
            )
        run = replace(
            run,
            name=name if name is not None else run.name,
            status=status or run.status,
            conclusion=conclusion if conclusion is not None else run.conclusion,
            started_at=started_at if started_at is not None else run.started_at,
            completed_at=completed_at if completed_at is not None else run.completed_at,
            output=output if output is not None else run.output,
            external_id=external_id if external_id is not None else run.external_id,
            details_url=details_url if details_url is not None else run.details_url,
            actions=actions if actions is not None else run.actions,
        )
        self.check_runs[run.id] = run
        return run

    def issue_token(
        self,
        installation_id: int,
        *,
        repository_ids: Iterable[int] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> InstallationToken:
        """Mint a ``ghs_`` token for an installation, optionally narrowed to repos/permissions."""
        installation = self.installations.get(installation_id)
        if installation is None:
            raise not_found(
                "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"
            )
        wanted = tuple(repository_ids) if repository_ids is not None else None
        if wanted is not None and not set(wanted) <= set(installation.repository_ids):
            raise ApiError(
                422,
                "There is at least one repository that does not exist or is not accessible "
                "to the parent installation.",
            )
        granted = dict(installation.permissions)
        if permissions is not None:
            for name, level in permissions.items():
                if level not in _LEVELS or not permission_allows(granted, name, level):
                    raise ApiError(
                        422, "The permissions requested are not granted to this installation."
                    )
            granted = dict(permissions)
        token = InstallationToken(
            token="ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36)),
            installation_id=installation_id,
            expires_at=self.now() + self.token_ttl,
            permissions=MappingProxyType(granted),
            repository_ids=wanted,
        )
        self.tokens[token.token] = token
        return token

    def rate_bucket(self, key: str, *, limit: int | None = None) -> RateBucket:
        """The current primary rate-limit window for ``key`` (a new window once reset passed)."""
        now = self.now()
        bucket = self.rate_buckets.get(key)
        if bucket is None or bucket.reset <= now:
            bucket = RateBucket("core", limit or self.rate_limit, 0, int(now) + 3600)
            self.rate_buckets[key] = bucket
        return bucket

    def spend_rate(self, key: str, *, limit: int | None = None) -> RateBucket:
        """Count one request against ``key``'s window and return the window after it."""
        bucket = self.rate_bucket(key, limit=limit)
        bucket = replace(bucket, used=bucket.used + 1)
        self.rate_buckets[key] = bucket
        return bucket

    def record_delivery(self, delivery: Delivery) -> Delivery:
        """Remember a webhook delivery."""
        self.deliveries[delivery.id] = delivery
        return delivery

    def add_manifest_code(self, code: str) -> None:
        """Make ``code`` redeemable at ``POST /app-manifests/{code}/conversions``."""
        self.manifest_codes.add(code)

    # ---- internals ------------------------------------------------------------------------

    def _issue_or_raise(self, repo: Repo, number: int) -> Issue:
        issue = self.issues.get((repo.id, number))
        if issue is None:
            raise not_found("https://docs.github.com/rest/issues/issues#get-an-issue")
        if issue.deleted:
            raise ApiError(
                410,
                "This issue was deleted",
                documentation_url="https://docs.github.com/rest/issues/issues#get-an-issue",
            )
        return issue

    def _store_comment(
        self, repo: Repo, issue_number: int, body: str, user: User, *, via_app: bool
    ) -> Comment:
        now = self.now()
        comment = Comment(self.next_id(), repo.id, issue_number, body, user, now, now, via_app)
        self.comments[comment.id] = comment
        self._touch_issue(repo, issue_number)
        return comment

    def _touch_issue(self, repo: Repo, number: int) -> None:
        issue = self.issues[(repo.id, number)]
        self.issues[(repo.id, number)] = replace(issue, updated_at=self.now())

    @staticmethod
    def _check_comment_body(body: str) -> None:
        # https://github.com/orgs/community/discussions/27190: the limit counts characters
        if len(body) > MAX_COMMENT_CHARS:
            raise ApiError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "IssueComment",
                        "code": "unprocessable",
                        "field": "data",
                        "message": f"Body is too long (maximum is {MAX_COMMENT_CHARS} characters)",
                    }
                ],
                documentation_url=COMMENT_DOCS,
            )

    @staticmethod
    def _check_output(output: CheckOutput | None) -> None:
        # GitHub measures these in bytes: github/docs#35252
        if output is None:
            return
        for name in ("summary", "text"):
            value = getattr(output, name)
            if value is not None and len(value.encode()) > MAX_CHECK_OUTPUT_BYTES:
                raise validation_failed(
                    "CheckRun",
                    name,
                    "custom",
                    f"{name} exceeds a maximum bytesize of {MAX_CHECK_OUTPUT_BYTES}",
                    documentation_url=CHECK_DOCS,
                )

    def _settle(
        self,
        status: CheckStatus | None,
        conclusion: CheckConclusion | None,
        completed_at: float | None,
    ) -> tuple[CheckStatus, float | None]:
        # A conclusion (or completed_at) implies "completed"; "completed" needs a conclusion.
        if conclusion is not None:
            return CheckStatus.COMPLETED, completed_at if completed_at is not None else self.now()
        if status is CheckStatus.COMPLETED or completed_at is not None:
            raise ApiError(
                422,
                "Invalid request.\n\nNo conclusion provided for a completed check run.",
                documentation_url=CHECK_DOCS,
            )
        return status or CheckStatus.QUEUED, None

    def iter_repo_comments(self, repo: Repo) -> Iterator[Comment]:
        """Every live comment of ``repo`` (any issue), oldest first."""
        for comment in sorted(self.comments.values(), key=lambda c: c.id):
            if comment.repo_id == repo.id and not comment.deleted:
                yield comment
