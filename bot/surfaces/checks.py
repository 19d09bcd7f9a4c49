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


@dataclass(frozen=True)
class CheckOutput:
    """What a finished check run shows: a title, a summary and (optionally) longer text."""

    title: str
    summary: str
    text: str = ""

    def to_json(self) -> dict[str, str]:
        """The ``output`` object of the REST API, each part cut to GitHub's limit."""
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
    gh: GitHubAPI, repo: str, head_sha: str, *, name: str, external_id: str, title: str
) -> int:
    """Return the id of this job's check run on ``head_sha``, creating it in progress if new.

    A create whose answer was lost is looked for again by ``external_id`` before a second
    POST, so a 502 after GitHub made the run never leaves two runs (one stuck in progress).
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
                "status": "in_progress",
                "started_at": _now(),
                "output": {"title": title, "summary": title},
            },
        )
        return int(created["id"])

    found = await find()
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


async def note_check_run(gh: GitHubAPI, repo: str, check_id: int, *, output: CheckOutput) -> None:
    """Update a running check run's output (e.g. a retry is coming)."""
    await gh.patch(
        "/repos/{owner}/{repo}/check-runs/{check_run_id}",
        url_vars={**repo_vars(repo), "check_run_id": str(check_id)},
        data={"status": "in_progress", "output": output.to_json()},
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
    """Complete a check run with its conclusion, output and buttons (at most three)."""
    if len(actions) > MAX_ACTIONS:
        raise ValueError(f"a check run has at most {MAX_ACTIONS} actions, not {len(actions)}")
    data: dict[str, Any] = {
        "status": "completed",
        "conclusion": conclusion.value,
        "completed_at": _now(),
        "output": output.to_json(),
    }
    if actions:
        data["actions"] = [action.to_json() for action in actions]
    await gh.patch(
        "/repos/{owner}/{repo}/check-runs/{check_run_id}",
        url_vars={**repo_vars(repo), "check_run_id": str(check_id)},
        data=data,
    )
