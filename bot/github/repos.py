"""Repository names as GitHub spells them (``owner/name``), and the URL variables REST paths take."""

import re

from bot.errors import BotError

# An account (user or organisation) is letters, digits and '-'; a repository name may also
# hold '_' and '.'. Anything else cannot be a repository and never reaches a URL.
# https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
_FULL_NAME = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9_.-]+")


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
