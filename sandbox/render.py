"""Turn sandbox records into JSON shaped like GitHub's REST responses."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sandbox.gitobjects import FileChange, FileMode, GitCommit, diff_trees
from sandbox.records import (
    CheckRun,
    Comment,
    Delivery,
    Installation,
    InstallationToken,
    Issue,
    IssueState,
    Label,
    Permission,
    RateBucket,
    Reaction,
    ReactionContent,
    Repo,
    User,
    UserType,
)
from sandbox.state import SandboxState

JSON = dict[str, Any]


def iso(timestamp: float | None) -> str | None:
    """A Unix time as GitHub writes it (``2011-04-14T16:00:49Z``), or None."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, number: int) -> str:
    """A legacy GraphQL node id (``MDQ6VXNlcjE=`` is user 1)."""
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def wrapped_base64(data: bytes) -> str:
    """Base64 with a newline every 60 characters, as the contents and blob APIs return it."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def _state_reason(issue: Issue) -> str | None:
    # Issues closed before state_reason existed (or seeded closed) read as completed.
    if issue.state_reason is not None:
        return issue.state_reason.value
    return "completed" if issue.state is IssueState.CLOSED else None


@dataclass(frozen=True)
class Renderer:
    """Renders records with absolute URLs under ``api`` (the sandbox) and ``html``."""

    state: SandboxState
    api: str

    @property
    def html(self) -> str:
        """The web base URL."""
        return self.state.html_url

    # ---- people and apps ------------------------------------------------------------------

    def user(self, user: User) -> JSON:
        """A ``simple-user``."""
        login = quote(user.login)
        url = f"{self.api}/users/{login}"
        if user.type is UserType.BOT:
            html_url = f"{self.html}/apps/{user.login.removesuffix('[bot]')}"
        else:
            html_url = f"{self.html}/{login}"
        return {
            "login": user.login,
            "id": user.id,
            "node_id": node_id(user.type.value, user.id),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
            "gravatar_id": "",
            "url": url,
            "html_url": html_url,
            "followers_url": f"{url}/followers",
            "following_url": f"{url}/following{{/other_user}}",
            "gists_url": f"{url}/gists{{/gist_id}}",
            "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{url}/subscriptions",
            "organizations_url": f"{url}/orgs",
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events{{/privacy}}",
            "received_events_url": f"{url}/received_events",
            "type": user.type.value,
            "user_view_type": "public",
            "site_admin": False,
        }

    def app(self) -> JSON:
        """The App as an ``integration``."""
        app = self.state.app
        return {
            "id": app.id,
            "slug": app.slug,
            "node_id": node_id("Integration", app.id),
            "client_id": app.client_id,
            "owner": self.user(app.owner),
            "name": app.name,
            "description": "Bisects a registry of learned video-quality models.",
            "external_url": f"{self.html}/{app.owner.login}/{app.slug}",
            "html_url": f"{self.html}/apps/{app.slug}",
            "created_at": iso(app.created_at),
            "updated_at": iso(app.created_at),
            "permissions": dict(app.permissions),
            "events": list(app.events),
            "installations_count": len(self.state.installations),
        }

    def installation(self, installation: Installation) -> JSON:
        """An ``installation``."""
        app = self.state.app
        account = installation.account
        return {
            "id": installation.id,
            "account": self.user(account),
            "repository_selection": installation.repository_selection,
            "access_tokens_url": f"{self.api}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.html}/settings/installations/{installation.id}",
            "app_id": app.id,
            "app_slug": app.slug,
            "client_id": app.client_id,
            "target_id": account.id,
            "target_type": account.type.value,
            "permissions": dict(installation.permissions),
            "events": list(installation.events),
            "created_at": iso(installation.created_at),
            "updated_at": iso(installation.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": iso(installation.suspended_at),
        }

    def token(self, token: InstallationToken) -> JSON:
        """An ``installation-token``."""
        body: JSON = {
            "token": token.token,
            "expires_at": iso(token.expires_at),
            "permissions": dict(token.permissions),
            "repository_selection": "selected",
        }
        if token.repository_ids is not None:
            body["repositories"] = [self.repo(self.state.repos[r]) for r in token.repository_ids]
        return body

    # ---- repositories ---------------------------------------------------------------------

    def repo(self, repo: Repo, *, full: bool = False) -> JSON:
        """A ``repository`` (or a ``full-repository`` with ``full=True``)."""
        url = f"{self.api}/repos/{repo.full_name}"
        html_url = f"{self.html}/{repo.full_name}"
        store = self.state.objects[repo.id]
        head = self.state.branches[repo.id].get(repo.default_branch)
        pushed = store.commits[head].committer.timestamp if head else repo.created_at
        open_issues = sum(i.state is IssueState.OPEN for i in self.state.list_issues(repo))
        body: JSON = {
            "id": repo.id,
            "node_id": node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.user(repo.owner),
            "html_url": html_url,
            "description": repo.description,
            "fork": False,
            "url": url,
            "archive_url": f"{url}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{url}/assignees{{/user}}",
            "blobs_url": f"{url}/git/blobs{{/sha}}",
            "branches_url": f"{url}/branches{{/branch}}",
            "collaborators_url": f"{url}/collaborators{{/collaborator}}",
            "comments_url": f"{url}/comments{{/number}}",
            "commits_url": f"{url}/commits{{/sha}}",
            "compare_url": f"{url}/compare/{{base}}...{{head}}",
            "contents_url": f"{url}/contents/{{+path}}",
            "contributors_url": f"{url}/contributors",
            "deployments_url": f"{url}/deployments",
            "downloads_url": f"{url}/downloads",
            "events_url": f"{url}/events",
            "forks_url": f"{url}/forks",
            "git_commits_url": f"{url}/git/commits{{/sha}}",
            "git_refs_url": f"{url}/git/refs{{/sha}}",
            "git_tags_url": f"{url}/git/tags{{/sha}}",
            "git_url": f"git://github.com/{repo.full_name}.git",
            "hooks_url": f"{url}/hooks",
            "issue_comment_url": f"{url}/issues/comments{{/number}}",
            "issue_events_url": f"{url}/issues/events{{/number}}",
            "issues_url": f"{url}/issues{{/number}}",
            "keys_url": f"{url}/keys{{/key_id}}",
            "labels_url": f"{url}/labels{{/name}}",
            "languages_url": f"{url}/languages",
            "merges_url": f"{url}/merges",
            "milestones_url": f"{url}/milestones{{/number}}",
            "notifications_url": f"{url}/notifications{{?since,all,participating}}",
            "pulls_url": f"{url}/pulls{{/number}}",
            "releases_url": f"{url}/releases{{/id}}",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "stargazers_url": f"{url}/stargazers",
            "statuses_url": f"{url}/statuses/{{sha}}",
            "subscribers_url": f"{url}/subscribers",
            "subscription_url": f"{url}/subscription",
            "tags_url": f"{url}/tags",
            "teams_url": f"{url}/teams",
            "trees_url": f"{url}/git/trees{{/sha}}",
            "clone_url": f"{html_url}.git",
            "mirror_url": None,
            "svn_url": html_url,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": sum(len(b) for b in store.blobs.values()) // 1024,
            "default_branch": repo.default_branch,
            "open_issues_count": open_issues,
            "open_issues": open_issues,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": iso(pushed),
            "created_at": iso(repo.created_at),
            "updated_at": iso(pushed),
            "license": None,
            "allow_forking": True,
            "web_commit_signoff_required": False,
        }
        if full:
            body["network_count"] = 0
            body["subscribers_count"] = 0
        return body

    def commit(self, repo: Repo, commit: GitCommit, *, with_files: bool = False) -> JSON:
        """A ``commit`` (with ``files`` and ``stats`` for the single-commit endpoint)."""
        url = f"{self.api}/repos/{repo.full_name}"
        html_url = f"{self.html}/{repo.full_name}"
        author = self.state.users.get(commit.author.name.lower())
        committer = self.state.users.get(commit.committer.name.lower())
        body: JSON = {
            "url": f"{url}/commits/{commit.sha}",
            "sha": commit.sha,
            "node_id": node_id("Commit", int(commit.sha[:7], 16)),
            "html_url": f"{html_url}/commit/{commit.sha}",
            "comments_url": f"{url}/commits/{commit.sha}/comments",
            "commit": {
                "url": f"{url}/git/commits/{commit.sha}",
                "author": {
                    "name": commit.author.name,
                    "email": commit.author.email,
                    "date": iso(commit.author.timestamp),
                },
                "committer": {
                    "name": commit.committer.name,
                    "email": commit.committer.email,
                    "date": iso(commit.committer.timestamp),
                },
                "message": commit.message,
                "tree": {"sha": commit.tree, "url": f"{url}/git/trees/{commit.tree}"},
                "comment_count": 0,
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
            "author": self.user(author) if author else {},
            "committer": self.user(committer) if committer else {},
            "parents": [
                {
                    "sha": parent,
                    "url": f"{url}/commits/{parent}",
                    "html_url": f"{html_url}/commit/{parent}",
                }
                for parent in commit.parents
            ],
        }
        if with_files:
            store = self.state.objects[repo.id]
            old_tree = store.commits[commit.parents[0]].tree if commit.parents else None
            changes = diff_trees(store, old_tree, commit.tree)
            files = [self.diff_entry(repo, change, ref=commit.sha) for change in changes]
            additions = sum(c.additions for c in changes)
            deletions = sum(c.deletions for c in changes)
            body["stats"] = {
                "total": additions + deletions,
                "additions": additions,
                "deletions": deletions,
            }
            body["files"] = files
        return body

    def diff_entry(self, repo: Repo, change: FileChange, *, ref: str) -> JSON:
        """A ``diff-entry`` for one changed file."""
        path = quote(change.filename)
        body: JSON = {
            "sha": change.sha,
            "filename": change.filename,
            "status": change.status.value,
            "additions": change.additions,
            "deletions": change.deletions,
            "changes": change.additions + change.deletions,
            "blob_url": f"{self.html}/{repo.full_name}/blob/{ref}/{path}",
            "raw_url": f"{self.html}/{repo.full_name}/raw/{ref}/{path}",
            "contents_url": f"{self.api}/repos/{repo.full_name}/contents/{path}?ref={ref}",
        }
        if change.patch is not None:
            body["patch"] = change.patch
        return body

    def git_commit(self, repo: Repo, commit: GitCommit) -> JSON:
        """A ``git-commit`` (the git data API's view: no GitHub users, no files)."""
        url = f"{self.api}/repos/{repo.full_name}/git/commits/{commit.sha}"
        html = f"{self.html}/{repo.full_name}/commit"
        return {
            "sha": commit.sha,
            "node_id": node_id("Commit", int(commit.sha[:7], 16)),
            "url": url,
            "html_url": f"{html}/{commit.sha}",
            "author": {
                "name": commit.author.name,
                "email": commit.author.email,
                "date": iso(commit.author.timestamp),
            },
            "committer": {
                "name": commit.committer.name,
                "email": commit.committer.email,
                "date": iso(commit.committer.timestamp),
            },
            "tree": {
                "sha": commit.tree,
                "url": f"{self.api}/repos/{repo.full_name}/git/trees/{commit.tree}",
            },
            "message": commit.message,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{self.api}/repos/{repo.full_name}/git/commits/{parent}",
                    "html_url": f"{html}/{parent}",
                }
                for parent in commit.parents
            ],
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        }

    def git_ref(self, repo: Repo, branch: str, sha: str) -> JSON:
        """A ``git-ref`` for branch ``branch`` (``refs/heads/…``)."""
        api = f"{self.api}/repos/{repo.full_name}/git"
        ref = f"refs/heads/{branch}"
        return {
            "ref": ref,
            "node_id": base64.b64encode(f"Ref:{repo.id}:{ref}".encode()).decode(),
            "url": f"{api}/{quote(ref)}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/commits/{sha}"},
        }

    def branch(self, repo: Repo, name: str, sha: str) -> JSON:
        """A ``branch-with-protection`` (branches are never protected in the sandbox)."""
        url = f"{self.api}/repos/{repo.full_name}/branches/{quote(name)}"
        return {
            "name": name,
            "commit": self.commit(repo, self.state.git_commit(repo, sha)),
            "_links": {"self": url, "html": f"{self.html}/{repo.full_name}/tree/{quote(name)}"},
            "protected": False,
            "protection": {"enabled": False},
            "protection_url": f"{url}/protection",
        }

    def tree(self, repo: Repo, tree_sha: str, *, recursive: bool) -> JSON:
        """A ``git-tree``."""
        store = self.state.objects[repo.id]
        url = f"{self.api}/repos/{repo.full_name}/git"
        entries = []
        for walked in store.walk(tree_sha, recursive=recursive):
            entry = walked.entry
            item: JSON = {
                "path": walked.path,
                "mode": entry.mode.value,
                "type": entry.type.value,
                "sha": entry.sha,
            }
            if entry.mode is FileMode.TREE:
                item["url"] = f"{url}/trees/{entry.sha}"
            else:
                item["size"] = len(store.blobs[entry.sha])
                item["url"] = f"{url}/blobs/{entry.sha}"
            entries.append(item)
        return {
            "sha": tree_sha,
            "url": f"{url}/trees/{tree_sha}",
            "tree": entries,
            "truncated": False,
        }

    def blob(self, repo: Repo, sha: str, data: bytes) -> JSON:
        """A ``blob`` (base64, wrapped like GitHub's)."""
        return {
            "sha": sha,
            "node_id": node_id("Blob", int(sha[:7], 16)),
            "size": len(data),
            "url": f"{self.api}/repos/{repo.full_name}/git/blobs/{sha}",
            "content": wrapped_base64(data),
            "encoding": "base64",
        }

    def content_entry(
        self, repo: Repo, path: str, *, sha: str, kind: str, size: int, ref: str
    ) -> JSON:
        """The fields every contents-API object has (``kind`` is ``file`` or ``dir``)."""
        quoted = quote(path)
        url = f"{self.api}/repos/{repo.full_name}/contents/{quoted}?ref={quote(ref)}"
        git_kind = "blobs" if kind == "file" else "trees"
        git_url = f"{self.api}/repos/{repo.full_name}/git/{git_kind}/{sha}"
        html_kind = "blob" if kind == "file" else "tree"
        html_url = f"{self.html}/{repo.full_name}/{html_kind}/{quote(ref)}/{quoted}"
        download_url = (
            f"{self.api}/_sandbox/raw/{repo.full_name}/{quote(ref)}/{quoted}"
            if kind == "file"
            else None
        )
        return {
            "type": kind,
            "size": size,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": url,
            "git_url": git_url,
            "html_url": html_url,
            "download_url": download_url,
            "_links": {"self": url, "git": git_url, "html": html_url},
        }

    # ---- issues ---------------------------------------------------------------------------

    def label(self, repo: Repo, label: Label) -> JSON:
        """A ``label``."""
        return {
            "id": label.id,
            "node_id": node_id("Label", label.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(label.name)}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
        }

    def author_association(self, repo: Repo, user: User) -> str:
        """OWNER, COLLABORATOR or NONE, from the repo's owner and explicit permissions."""
        if user.login.lower() == repo.owner.login.lower():
            return "OWNER"
        if (repo.id, user.login.lower()) in self.state.permissions:
            return "COLLABORATOR"
        return "NONE"

    def reactions(self, url: str, reactions: list[Reaction]) -> JSON:
        """A ``reaction-rollup``."""
        body: JSON = {"url": url, "total_count": len(reactions)}
        for content in ReactionContent:
            body[content.value] = sum(r.content is content for r in reactions)
        return body

    def issue(self, repo: Repo, issue: Issue) -> JSON:
        """An ``issue`` (pull requests carry a ``pull_request`` block)."""
        url = f"{self.api}/repos/{repo.full_name}/issues/{issue.number}"
        kind = "pull" if issue.pull else "issues"
        html_url = f"{self.html}/{repo.full_name}/{kind}/{issue.number}"
        labels = [self.label(repo, self.state.ensure_label(repo, name)) for name in issue.labels]
        body: JSON = {
            "id": issue.id,
            "node_id": node_id("Issue", issue.id),
            "url": url,
            "repository_url": f"{self.api}/repos/{repo.full_name}",
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "timeline_url": f"{url}/timeline",
            "html_url": html_url,
            "number": issue.number,
            "state": issue.state.value,
            "state_reason": _state_reason(issue),
            "title": issue.title,
            "body": issue.body,
            "user": self.user(issue.user),
            "labels": labels,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": issue.locked,
            "active_lock_reason": "resolved" if issue.locked else None,
            "comments": len(self.state.issue_comments(repo, issue.number)),
            "closed_at": iso(issue.closed_at),
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_by": None,
            "author_association": self.author_association(repo, issue.user),
            "performed_via_github_app": None,
            "reactions": self.reactions(f"{url}/reactions", self.state.reactions_on_issue(issue)),
        }
        if issue.pull is not None:
            pull_url = f"{self.api}/repos/{repo.full_name}/pulls/{issue.number}"
            body["draft"] = issue.pull.draft
            body["pull_request"] = {
                "url": pull_url,
                "html_url": html_url,
                "diff_url": f"{html_url}.diff",
                "patch_url": f"{html_url}.patch",
                "merged_at": iso(issue.pull.merged_at),
            }
        return body

    def comment(self, repo: Repo, comment: Comment) -> JSON:
        """An ``issue-comment``."""
        url = f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}"
        issue = self.state.issues[(repo.id, comment.issue_number)]
        kind = "pull" if issue.pull else "issues"
        return {
            "id": comment.id,
            "node_id": node_id("IssueComment", comment.id),
            "url": url,
            "html_url": f"{self.html}/{repo.full_name}/{kind}/{comment.issue_number}"
            f"#issuecomment-{comment.id}",
            "body": comment.body,
            "user": self.user(comment.user),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{comment.issue_number}",
            "author_association": self.author_association(repo, comment.user),
            "performed_via_github_app": self.app() if comment.via_app else None,
            "reactions": self.reactions(f"{url}/reactions", self.state.reactions_on(comment.id)),
        }

    def reaction(self, reaction: Reaction) -> JSON:
        """A ``reaction``."""
        return {
            "id": reaction.id,
            "node_id": node_id("Reaction", reaction.id),
            "user": self.user(reaction.user),
            "content": reaction.content.value,
            "created_at": iso(reaction.created_at),
        }

    # ---- checks and pulls -----------------------------------------------------------------

    def check_run(self, repo: Repo, run: CheckRun) -> JSON:
        """A ``check-run``."""
        url = f"{self.api}/repos/{repo.full_name}/check-runs/{run.id}"
        return {
            "id": run.id,
            "node_id": node_id("CheckRun", run.id),
            "head_sha": run.head_sha,
            "external_id": run.external_id or "",
            "url": url,
            "html_url": f"{self.html}/{repo.full_name}/runs/{run.id}",
            "details_url": run.details_url or f"{self.html}/apps/{self.state.app.slug}",
            "status": run.status.value,
            "conclusion": run.conclusion.value if run.conclusion else None,
            "started_at": iso(run.started_at),
            "completed_at": iso(run.completed_at),
            "output": {
                "title": run.output.title,
                "summary": run.output.summary,
                "text": run.output.text,
                "annotations_count": run.output.annotations_count,
                "annotations_url": f"{url}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.check_suite_id},
            "app": self.app(),
            "pull_requests": [
                self.pull_minimal(repo, pull)
                for pull in self.state.pulls_for_sha(repo, run.head_sha)
            ],
        }

    def pull_minimal(self, repo: Repo, pull: Issue) -> JSON:
        """A ``pull-request-minimal``."""
        assert pull.pull is not None
        heads = self.state.branches[repo.id]
        small_repo = {"id": repo.id, "url": f"{self.api}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}",
            "head": {
                "ref": pull.pull.head_ref,
                "sha": heads[pull.pull.head_ref],
                "repo": small_repo,
            },
            "base": {
                "ref": pull.pull.base_ref,
                "sha": heads[pull.pull.base_ref],
                "repo": small_repo,
            },
        }

    def pull(self, repo: Repo, pull: Issue, changes: list[FileChange], commits: int) -> JSON:
        """A ``pull-request``: the ``pull-request-simple`` fields plus counts and merge state."""
        issue = self.issue(repo, pull)
        assert pull.pull is not None
        return self.pull_simple(repo, pull) | {
            "active_lock_reason": issue["active_lock_reason"],
            "rebaseable": True,
            "merged": pull.pull.merged,
            "mergeable": True,
            "mergeable_state": "clean",
            "merged_by": None,
            "comments": issue["comments"],
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": commits,
            "additions": sum(c.additions for c in changes),
            "deletions": sum(c.deletions for c in changes),
            "changed_files": len(changes),
        }

    def pull_simple(self, repo: Repo, pull: Issue) -> JSON:
        """A ``pull-request-simple``, as the pull-request lists return it."""
        assert pull.pull is not None
        issue = self.issue(repo, pull)
        url = f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}"
        heads = self.state.branches[repo.id]
        owner = self.user(repo.owner)

        def side(ref: str) -> JSON:
            return {
                "label": f"{repo.owner.login}:{ref}",
                "ref": ref,
                "sha": heads[ref],
                "user": owner,
                "repo": self.repo(repo),
            }

        return {
            "url": url,
            "id": pull.id,
            "node_id": node_id("PullRequest", pull.id),
            "html_url": issue["html_url"],
            "diff_url": f"{issue['html_url']}.diff",
            "patch_url": f"{issue['html_url']}.patch",
            "issue_url": issue["url"],
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}",
            "comments_url": issue["comments_url"],
            "statuses_url": f"{self.api}/repos/{repo.full_name}/statuses/{heads[pull.pull.head_ref]}",
            "number": pull.number,
            "state": pull.state.value,
            "locked": pull.locked,
            "title": pull.title,
            "user": self.user(pull.user),
            "body": pull.body,
            "labels": issue["labels"],
            "milestone": None,
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_at": issue["closed_at"],
            "merged_at": iso(pull.pull.merged_at),
            "merge_commit_sha": pull.pull.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(pull.pull.head_ref),
            "base": side(pull.pull.base_ref),
            "_links": {
                name: {"href": href}
                for name, href in {
                    "self": url,
                    "html": issue["html_url"],
                    "issue": issue["url"],
                    "comments": issue["comments_url"],
                    "review_comments": f"{url}/comments",
                    "review_comment": f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}",
                    "commits": f"{url}/commits",
                    "statuses": f"{self.api}/repos/{repo.full_name}/statuses/{heads[pull.pull.head_ref]}",
                }.items()
            },
            "author_association": issue["author_association"],
            "auto_merge": None,
            "draft": pull.pull.draft,
        }

    def collaborator_permission(self, repo: Repo, user: User, permission: Permission) -> JSON:
        """A ``repository-collaborator-permission``."""
        rank = ["read", "triage", "write", "maintain", "admin"]
        held = rank.index(permission.value) if permission is not Permission.NONE else -1
        flags = dict(zip(["pull", "triage", "push", "maintain", "admin"], rank, strict=True))
        collaborator = self.user(user) | {
            "permissions": {flag: held >= rank.index(level) for flag, level in flags.items()},
            "role_name": permission.value,
        }
        return {
            "permission": permission.legacy,
            "role_name": permission.value,
            "user": collaborator,
        }

    def rate_limit(self, bucket: RateBucket) -> JSON:
        """A ``rate-limit-overview`` for the caller's core window."""
        core = {
            "limit": bucket.limit,
            "used": bucket.used,
            "remaining": bucket.remaining,
            "reset": bucket.reset,
        }
        reset_minute = int(self.state.now()) + 60
        search = {"limit": 30, "used": 0, "remaining": 30, "reset": reset_minute}
        graphql = {"limit": 5000, "used": 0, "remaining": 5000, "reset": bucket.reset}
        return {"resources": {"core": core, "search": search, "graphql": graphql}, "rate": core}

    def delivery(self, delivery: Delivery) -> JSON:
        """A ``hook-delivery-item``."""
        return {
            "id": delivery.id,
            "guid": delivery.guid,
            "delivered_at": iso(delivery.delivered_at),
            "redelivery": delivery.redelivery,
            "duration": delivery.duration,
            "status": "OK" if delivery.ok else f"Invalid HTTP Response: {delivery.status_code}",
            "status_code": delivery.status_code,
            "event": delivery.event,
            "action": delivery.action,
            "installation_id": delivery.installation_id,
            "repository_id": delivery.repository_id,
        }

    def manifest_app(self) -> JSON:
        """The App with its credentials, as ``POST /app-manifests/{code}/conversions`` returns it."""
        app = self.state.app
        return self.app() | {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "webhook_secret": app.webhook_secret,
            "pem": app.private_key_pem,
        }
