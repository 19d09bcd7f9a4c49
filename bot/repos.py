"""Repository names as GitHub spells them (``owner/name``), and the URL variables REST paths take."""

import re

from bot.errors import BotError

# https://docs.github.com/rest/repos/repos#get-a-repository: owner and name are letters,
# digits, '-', '_' and '.'; anything else cannot be a repository and never reaches a URL.
_FULL_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class RepoNameError(BotError):
    """A repository name that is not ``owner/name``."""


def is_full_name(text: str) -> bool:
    """True for ``owner/name`` in the characters GitHub allows."""
    return _FULL_NAME.fullmatch(text) is not None


def repo_vars(full_name: str) -> dict[str, str]:
    """``{"owner": ..., "repo": ...}`` for gidgethub's ``url_vars``; refuses anything else."""
    if not is_full_name(full_name):
        raise RepoNameError(f"repository must be 'owner/name', got {full_name!r}")
    owner, name = full_name.split("/")
    return {"owner": owner, "repo": name}
