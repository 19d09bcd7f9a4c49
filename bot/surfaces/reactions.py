"""Reactions on issue comments: how the App acknowledges a command without a new comment.

GitHub answers 201 for a new reaction and 200 when the same account already reacted the
same way, so reacting again (a job run twice) changes nothing:
https://docs.github.com/rest/reactions/reactions#create-reaction-for-an-issue-comment
"""

import logging
from enum import StrEnum

from gidgethub import BadRequest, RateLimitExceeded
from gidgethub.abc import GitHubAPI

from bot.github.repos import repo_vars

log = logging.getLogger("model_guard.reactions")

_REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"


class Reaction(StrEnum):
    """The reactions the App uses (GitHub's ``content`` names)."""

    EYES = "eyes"  # seen and accepted: the work has started
    ROCKET = "rocket"  # done: the answer is written
    CONFUSED = "confused"  # the work failed: the answer says why


async def react_to_comment(
    gh: GitHubAPI, *, repo: str, comment_id: int, reaction: Reaction
) -> bool:
    """React to comment ``comment_id`` of ``repo``; False when the comment is gone (deleted).

    Other GitHub errors propagate: the caller retries them like any write.
    """
    url_vars = {**repo_vars(repo), "comment_id": str(comment_id)}
    try:
        await gh.post(_REACTIONS, url_vars, data={"content": reaction.value})
    except BadRequest as error:
        if isinstance(error, RateLimitExceeded) or int(error.status_code) not in (404, 410):
            raise
        log.warning(
            "comment gone: no reaction added",
            extra={"fields": {"repo": repo, "comment_id": comment_id, "reaction": str(reaction)}},
        )
        return False
    return True
