"""A pull request as the REST API describes it, and its changed files (every page)."""

from typing import Any

from gidgethub.abc import GitHubAPI

from bot.github.repos import repo_vars

# GitHub lists at most 3,000 files of a pull request
# (https://docs.github.com/rest/pulls/pulls#list-pull-requests-files).
MAX_LISTED_FILES = 3000


async def get_pull(gh: GitHubAPI, repo: str, number: int) -> dict[str, Any]:
    """``GET /repos/{owner}/{repo}/pulls/{number}``: its head, base, state."""
    pull: dict[str, Any] = await gh.getitem(
        "/repos/{owner}/{repo}/pulls/{pull_number}",
        url_vars={**repo_vars(repo), "pull_number": str(number)},
    )
    return pull


async def changed_paths(gh: GitHubAPI, repo: str, number: int) -> tuple[str, ...]:
    """Every changed path of the pull request, all pages (a rename counts on both sides)."""
    paths: list[str] = []
    async for item in gh.getiter(
        "/repos/{owner}/{repo}/pulls/{pull_number}/files{?per_page}",
        url_vars={**repo_vars(repo), "pull_number": str(number), "per_page": "100"},
    ):
        if isinstance(item, dict):
            for key in ("filename", "previous_filename"):
                if isinstance(item.get(key), str):
                    paths.append(item[key])
        if len(paths) >= MAX_LISTED_FILES * 2:
            break
    return tuple(dict.fromkeys(paths))
