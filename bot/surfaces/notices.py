"""One-off comments (alerts): posted at most once per marker, however often a job runs.

A sticky comment is edited in place, and GitHub notifies nobody of an edit. A notice is a
new comment, which does notify: it is posted once per ``<!-- model-guard:notice:<key> -->``
marker, found again among the bot's own comments before posting, so a re-run job, a
replica or a lost answer never posts it twice.
"""

import hashlib
from dataclasses import dataclass

from gidgethub.abc import GitHubAPI

from bot.github.repos import repo_vars
from bot.github.writes import create_once
from bot.surfaces.sticky import is_own_comment

_COMMENTS = "/repos/{owner}/{repo}/issues/{number}/comments"


@dataclass(frozen=True)
class Notice:
    """A posted (or found) notice comment."""

    comment_id: int
    html_url: str | None
    created: bool


def notice_marker(key: str) -> str:
    """The hidden marker of the notice keyed ``key`` (any text: it is hashed)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return f"<!-- model-guard:notice:{digest} -->"


async def post_notice_once(
    gh: GitHubAPI,
    *,
    repo: str,
    issue_number: int,
    key: str,
    body: str,
    bot_login: str,
    app_id: int | None = None,
) -> Notice:
    """Post ``body`` on the issue unless the bot already posted the notice keyed ``key``."""
    marker = notice_marker(key)
    url_vars = {**repo_vars(repo), "number": str(issue_number)}

    async def find() -> Notice | None:
        async for data in gh.getiter(_COMMENTS + "?per_page=100", url_vars):
            own = is_own_comment(data, bot_login=bot_login, app_id=app_id)
            if own and marker in str(data.get("body") or ""):
                return Notice(int(data["id"]), data.get("html_url"), created=False)
        return None

    async def create() -> Notice:
        data = await gh.post(_COMMENTS, url_vars, data={"body": f"{marker}\n{body}"})
        return Notice(int(data["id"]), data.get("html_url"), created=True)

    found = await find()
    if found is not None:
        return found
    return await create_once(create, find, what=f"notice on {repo}#{issue_number}")
