"""Check runs the App owns: one per (job, commit), found again by its external id after a crash.

A job that is re-run (its worker died, its lease expired) must not open a second check
run: the run is created ``in_progress`` with ``external_id`` set to the job's key, and a
re-run finds it among the commit's check runs of that name and updates it instead.
https://docs.github.com/rest/checks/runs
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.github.repos import repo_vars
from bot.github.writes import create_once

# GitHub documents 65,535 characters for a check-run summary or text, but counts UTF-8 bytes:
# "summary exceeds a maximum bytesize of 65535" (https://github.com/github/docs/issues/35252),
# and the table's emoji badges take four bytes each.
MAX_OUTPUT_BYTES = 65_535
CLIP_NOTE = "\n\n_Cut here: GitHub allows 65,535 bytes._"


class Conclusion(Enum):
    """The check-run conclusions the App uses (each job kind decides which one a run gets)."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    CANCELLED = "cancelled"  # a newer push superseded the run


class CheckStatus(Enum):
    """The state a check run is opened in."""

    QUEUED = "queued"  # the run is known, its work has not started
    IN_PROGRESS = "in_progress"


# https://docs.github.com/rest/guides/using-the-rest-api-to-interact-with-checks#check-runs-and-requested-actions
MAX_ACTIONS = 3
_ACTION_LIMITS = {"label": 20, "description": 40, "identifier": 20}


@dataclass(frozen=True)
class CheckAction:
    """A button on a completed check run; pressing it sends ``check_run.requested_action``."""

    label: str
    description: str
    identifier: str

    def __post_init__(self) -> None:
        """Refuse what GitHub refuses (20, 40 and 20 characters)."""
        for name, limit in _ACTION_LIMITS.items():
            value = getattr(self, name)
            if not value or len(value) > limit:
                raise ValueError(f"check action {name} must be 1-{limit} characters: {value!r}")

    def to_json(self) -> dict[str, str]:
        """The REST API's ``actions`` item."""
        return {"label": self.label, "description": self.description, "identifier": self.identifier}


# https://docs.github.com/rest/checks/runs#update-a-check-run: "The Checks API limits the
# number of annotations to a maximum of 50 per API request"; more are sent in further requests.
MAX_ANNOTATIONS_PER_REQUEST = 50
ANNOTATION_LEVELS = frozenset({"notice", "warning", "failure"})


@dataclass(frozen=True)
class CheckAnnotation:
    """A problem shown on one line of a file in the pull request's diff."""

    path: str
    line: int
    level: str  # notice, warning or failure
    message: str
    title: str = ""

    def __post_init__(self) -> None:
        """Refuse what GitHub refuses: an unknown level or a line before the first."""
        if self.level not in ANNOTATION_LEVELS:
            raise ValueError(f"annotation level must be one of {sorted(ANNOTATION_LEVELS)}")
        if self.line < 1:
            raise ValueError(f"annotation line must be >= 1, not {self.line}")

    def to_json(self) -> dict[str, Any]:
        """The REST API's ``annotations`` item (message and title cut to GitHub's limits)."""
        body: dict[str, Any] = {
            "path": self.path,
            "start_line": self.line,
            "end_line": self.line,
            "annotation_level": self.level,
            "message": _clip(self.message),
        }
        if self.title:
            body["title"] = self.title[:255]
        return body


@dataclass(frozen=True)
class CheckOutput:
    """What a finished check run shows: a title, a summary, longer text and annotations."""

    title: str
    summary: str
    text: str = ""
    annotations: tuple[CheckAnnotation, ...] = ()

    def to_json(self) -> dict[str, str]:
        """The ``output`` object of the REST API, each part cut to GitHub's limit (no annotations)."""
        body = {"title": self.title[:1000], "summary": _clip(self.summary)}
        if self.text:
            body["text"] = _clip(self.text)
        return body


def _clip(text: str) -> str:
    """``text`` within GitHub's byte limit, cut on a character boundary with a note."""
    data = text.encode("utf-8")
    if len(data) <= MAX_OUTPUT_BYTES:
        return text
    room = MAX_OUTPUT_BYTES - len(CLIP_NOTE.encode("utf-8"))
    # errors="ignore" drops a multi-byte character the cut went through.
    return data[:room].decode("utf-8", errors="ignore") + CLIP_NOTE


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def open_check_run(
    gh: GitHubAPI,
    repo: str,
    head_sha: str,
    *,
    name: str,
    external_id: str,
    title: str,
    status: CheckStatus = CheckStatus.IN_PROGRESS,
    fresh: bool = False,
) -> int:
    """Return the id of this job's check run on ``head_sha``, creating it (``status``) if new.

    A create whose answer was lost is looked for again by ``external_id`` before a second
    POST, so a 502 after GitHub made the run never leaves two runs (one stuck in progress).
    ``fresh``: no earlier attempt can have made the run (a job's first attempt), so the
    commit's check runs are not listed before the POST.
    """

    async def find() -> int | None:
        return await find_check_run(gh, repo, head_sha, name=name, external_id=external_id)

    async def create() -> int:
        created: dict[str, Any] = await gh.post(
            "/repos/{owner}/{repo}/check-runs",
            url_vars=repo_vars(repo),
            data={
                "name": name,
                "head_sha": head_sha,
                "external_id": external_id,
                "status": status.value,
                **({"started_at": _now()} if status is CheckStatus.IN_PROGRESS else {}),
                "output": {"title": title, "summary": title},
            },
        )
        return int(created["id"])

    found = None if fresh else await find()
    if found is not None:
        return found
    return await create_once(create, find, what=f"check run {name} ({external_id})")


async def post_completed_check_run(
    gh: GitHubAPI,
    repo: str,
    head_sha: str,
    *,
    name: str,
    external_id: str,
    conclusion: Conclusion,
    output: CheckOutput,
    actions: Sequence[CheckAction] = (),
    fresh: bool = False,
) -> int:
    """Create a check run already completed, in one request (found again after a lost answer).

    Unless ``fresh`` (a job's first attempt), a run with ``external_id`` already on the
    commit is kept and its id returned: an earlier attempt posted it.
    """
    if len(actions) > MAX_ACTIONS:
        raise ValueError(f"a check run has at most {MAX_ACTIONS} actions, not {len(actions)}")

    async def find() -> int | None:
        return await find_check_run(gh, repo, head_sha, name=name, external_id=external_id)

    async def create() -> int:
        now = _now()
        data: dict[str, Any] = {
            "name": name,
            "head_sha": head_sha,
            "external_id": external_id,
            "status": "completed",
            "conclusion": conclusion.value,
            "started_at": now,
            "completed_at": now,
            "output": output.to_json(),
        }
        if actions:
            data["actions"] = [action.to_json() for action in actions]
        created: dict[str, Any] = await gh.post(
            "/repos/{owner}/{repo}/check-runs", url_vars=repo_vars(repo), data=data
        )
        return int(created["id"])

    found = None if fresh else await find()
    if found is not None:
        return found
    return await create_once(create, find, what=f"check run {name} ({external_id})")


async def find_check_run(
    gh: GitHubAPI, repo: str, head_sha: str, *, name: str, external_id: str
) -> int | None:
    """The id of the check run ``name`` on ``head_sha`` with ``external_id``, or None."""
    url_vars = {**repo_vars(repo), "ref": head_sha}
    # Every page: a commit judged every night (and re-run) gathers more than 100 runs.
    async for run in gh.getiter(
        "/repos/{owner}/{repo}/commits/{ref}/check-runs{?check_name,filter,per_page}",
        url_vars={**url_vars, "check_name": name, "filter": "all", "per_page": "100"},
        iterable_key="check_runs",
    ):
        if run.get("external_id") == external_id:
            return int(run["id"])
    return None


async def note_check_run(
    gh: GitHubAPI, repo: str, check_id: int, *, output: CheckOutput, started: bool = False
) -> None:
    """Update a running check run's output (e.g. a retry is coming); ``started``: it leaves the queue now."""
    data: dict[str, Any] = {"status": "in_progress", "output": output.to_json()}
    if started:
        data["started_at"] = _now()
    await gh.patch(
        "/repos/{owner}/{repo}/check-runs/{check_run_id}",
        url_vars={**repo_vars(repo), "check_run_id": str(check_id)},
        data=data,
    )


async def finish_check_run(
    gh: GitHubAPI,
    repo: str,
    check_id: int,
    *,
    conclusion: Conclusion,
    output: CheckOutput,
    actions: Sequence[CheckAction] = (),
) -> None:
    """Complete a check run with its conclusion, output, annotations and buttons (at most three).

    Annotations go 50 to a request: every batch but the last is added to the running check
    (GitHub appends them), the last one travels with the completion.
    """
    if len(actions) > MAX_ACTIONS:
        raise ValueError(f"a check run has at most {MAX_ACTIONS} actions, not {len(actions)}")
    url_vars = {**repo_vars(repo), "check_run_id": str(check_id)}
    path = "/repos/{owner}/{repo}/check-runs/{check_run_id}"
    batches = [
        output.annotations[start : start + MAX_ANNOTATIONS_PER_REQUEST]
        for start in range(0, len(output.annotations), MAX_ANNOTATIONS_PER_REQUEST)
    ]
    for batch in batches[:-1]:
        await gh.patch(
            path,
            url_vars=url_vars,
            data={"output": {**output.to_json(), "annotations": [a.to_json() for a in batch]}},
        )
    data: dict[str, Any] = {
        "status": "completed",
        "conclusion": conclusion.value,
        "completed_at": _now(),
        "output": output.to_json(),
    }
    if batches:
        data["output"]["annotations"] = [a.to_json() for a in batches[-1]]
    if actions:
        data["actions"] = [action.to_json() for action in actions]
    await gh.patch(path, url_vars=url_vars, data=data)
