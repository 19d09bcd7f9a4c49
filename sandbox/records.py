"""The records of the sandbox's GitHub world: users, the App, repositories, issues, checks, tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any


class UserType(Enum):
    """GitHub account types, as the ``type`` field spells them."""

    USER = "User"
    BOT = "Bot"
    ORGANIZATION = "Organization"


class Permission(Enum):
    """A collaborator's role on a repository."""

    ADMIN = "admin"
    MAINTAIN = "maintain"
    WRITE = "write"
    TRIAGE = "triage"
    READ = "read"
    NONE = "none"

    @property
    def legacy(self) -> str:
        """The coarse ``permission`` field GitHub still returns (maintain is write, triage is read)."""
        return {
            Permission.MAINTAIN: "write",
            Permission.TRIAGE: "read",
        }.get(self, self.value)


class IssueState(Enum):
    """Open or closed."""

    OPEN = "open"
    CLOSED = "closed"


class StateReason(Enum):
    """Why an issue was last closed or reopened."""

    COMPLETED = "completed"
    NOT_PLANNED = "not_planned"
    DUPLICATE = "duplicate"
    REOPENED = "reopened"


class CheckStatus(Enum):
    """A check run's status."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    WAITING = "waiting"
    REQUESTED = "requested"
    PENDING = "pending"


class CheckConclusion(Enum):
    """A completed check run's conclusion."""

    ACTION_REQUIRED = "action_required"
    CANCELLED = "cancelled"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    SUCCESS = "success"
    SKIPPED = "skipped"
    STALE = "stale"
    TIMED_OUT = "timed_out"


class ReactionContent(Enum):
    """The eight reactions."""

    PLUS_ONE = "+1"
    MINUS_ONE = "-1"
    LAUGH = "laugh"
    CONFUSED = "confused"
    HEART = "heart"
    HOORAY = "hooray"
    ROCKET = "rocket"
    EYES = "eyes"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


DEFAULT_APP_PERMISSIONS: Mapping[str, str] = _frozen(
    {
        "checks": "write",
        "contents": "read",
        "issues": "write",
        "metadata": "read",
        "pull_requests": "read",
    }
)
DEFAULT_APP_EVENTS: tuple[str, ...] = (
    "check_run",
    "check_suite",
    "issue_comment",
    "issues",
    "pull_request",
    "push",
)


@dataclass(frozen=True)
class User:
    """A GitHub account (person, organisation or bot)."""

    id: int
    login: str
    type: UserType = UserType.USER


@dataclass(frozen=True)
class GitHubApp:
    """The one GitHub App of the sandbox, with its key pair and secrets."""

    id: int
    slug: str
    name: str
    client_id: str
    client_secret: str
    webhook_secret: str
    owner: User
    bot: User
    private_key_pem: str
    public_key_pem: str
    permissions: Mapping[str, str]
    events: tuple[str, ...]
    created_at: float


@dataclass(frozen=True)
class Installation:
    """The App installed on an account, for some of its repositories."""

    id: int
    account: User
    repository_ids: tuple[int, ...]
    permissions: Mapping[str, str]
    events: tuple[str, ...]
    created_at: float
    repository_selection: str = "selected"
    suspended_at: float | None = None


@dataclass(frozen=True)
class Repo:
    """A repository (its git objects live in the state's object stores)."""

    id: int
    owner: User
    name: str
    default_branch: str
    private: bool
    description: str | None
    created_at: float

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner.login}/{self.name}"


class MergeMethod(Enum):
    """How a pull request lands on its base.

    https://docs.github.com/rest/pulls/pulls#merge-a-pull-request
    """

    MERGE = "merge"  # a merge commit whose parents are the base head and the pull's head
    SQUASH = "squash"  # one new commit on the base with the pull's changes


@dataclass(frozen=True)
class PullInfo:
    """What makes an issue a pull request: its branches, and once merged how it landed."""

    head_ref: str
    base_ref: str
    merged: bool = False
    draft: bool = False
    merged_at: float | None = None
    merge_commit_sha: str | None = None
    # The pull's own commits at the time of the merge: GitHub still finds the pull by them.
    merged_commits: tuple[str, ...] = ()


@dataclass(frozen=True)
class Issue:
    """An issue or, when ``pull`` is set, a pull request (they share numbers, as on GitHub)."""

    id: int
    repo_id: int
    number: int
    title: str
    body: str | None
    user: User
    state: IssueState
    locked: bool
    labels: tuple[str, ...]
    created_at: float
    updated_at: float
    closed_at: float | None = None
    deleted: bool = False
    pull: PullInfo | None = None
    state_reason: StateReason | None = None


@dataclass(frozen=True)
class CommentEdit:
    """One edit of a comment: who made it, when, and the body it replaced."""

    editor: str
    at: float
    previous_body: str


@dataclass(frozen=True)
class Comment:
    """An issue (or pull request conversation) comment."""

    id: int
    repo_id: int
    issue_number: int
    body: str
    user: User
    created_at: float
    updated_at: float
    via_app: bool = False
    deleted: bool = False
    edits: tuple[CommentEdit, ...] = ()


@dataclass(frozen=True)
class Label:
    """A repository label."""

    id: int
    repo_id: int
    name: str
    color: str
    description: str | None
    default: bool = False


@dataclass(frozen=True)
class CheckOutput:
    """The output block of a check run."""

    title: str | None = None
    summary: str | None = None
    text: str | None = None
    annotations_count: int = 0
    # Every annotation sent so far, in order (GitHub appends them on each update).
    annotations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class CheckAction:
    """A button on a check run (``requested_action`` names its identifier)."""

    label: str
    description: str
    identifier: str


@dataclass(frozen=True)
class CheckRun:
    """A check run created by the App."""

    id: int
    repo_id: int
    name: str
    head_sha: str
    status: CheckStatus
    conclusion: CheckConclusion | None
    output: CheckOutput
    started_at: float | None
    completed_at: float | None
    external_id: str | None
    details_url: str | None
    check_suite_id: int
    app_id: int
    actions: tuple[CheckAction, ...] = ()


@dataclass(frozen=True)
class Reaction:
    """A reaction on an issue comment (``comment_id``) or on an issue itself (``issue_id``)."""

    id: int
    comment_id: int | None
    content: ReactionContent
    user: User
    created_at: float
    issue_id: int | None = None


@dataclass(frozen=True)
class ReactionResult:
    """A reaction and whether the request created it (201) or found it already there (200)."""

    reaction: Reaction
    created: bool


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token (``ghs_…``) and what it may reach."""

    token: str
    installation_id: int
    expires_at: float
    permissions: Mapping[str, str]
    repository_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RateBucket:
    """One primary rate-limit window."""

    resource: str
    limit: int
    used: int
    reset: int

    @property
    def remaining(self) -> int:
        """Requests left in this window."""
        return max(self.limit - self.used, 0)


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery the sandbox made (see ``Sandbox.deliver_webhook``)."""

    id: int
    guid: str
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    delivered_at: float
    status_code: int
    duration: float
    url: str
    body: bytes = field(repr=False)
    redelivery: bool = False

    @property
    def ok(self) -> bool:
        """True when the App answered 2xx."""
        return 200 <= self.status_code < 300
