"""The scheduler's view of the installed repositories: each one with its configured cron."""

import base64
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from gidgethub import BadRequest, GitHubException

from bot.github import GitHubClient, InstalledRepo
from bot.github.repos import repo_vars
from bot.jobs.scheduler import ScheduledRepo
from bot.repoconfig import CONFIG_PATH, ConfigError, default_config, parse_repo_config

log = logging.getLogger("model_guard.installed")


class InstalledSchedules:
    """A ``ScheduleSource``: installed repositories and their crons, re-read every few minutes.

    The config is read from the default branch through the contents API with conditional
    GETs, so an unchanged file costs a 304 that does not count against the rate limit. A
    missing or invalid file schedules the default cron: the scheduled run then explains the
    problem in the tracking comment instead of the repository silently never running.
    """

    def __init__(
        self,
        client: GitHubClient,
        *,
        refresh_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read through ``client``; keep the list for ``refresh_seconds``."""
        self._client = client
        self._refresh = refresh_seconds
        self._clock = clock
        self._cached: list[ScheduledRepo] | None = None
        self._read_at = 0.0

    def forget(self) -> None:
        """Drop the kept list: the App was installed on, or removed from, repositories."""
        self._cached = None

    async def __call__(self) -> Sequence[ScheduledRepo]:
        """Every installed repository with its cron (cached for ``refresh_seconds``)."""
        if self._cached is not None and self._clock() - self._read_at < self._refresh:
            return self._cached
        found = [await self._schedule(repo) for repo in await self._client.installed_repositories()]
        self._cached, self._read_at = found, self._clock()
        return found

    async def _schedule(self, repo: InstalledRepo) -> ScheduledRepo:
        try:
            gh = await self._client.installation_api(repo.installation_id)
            data: Any = await gh.getitem(
                "/repos/{owner}/{repo}/contents/{+path}{?ref}",
                url_vars={
                    **repo_vars(repo.full_name),
                    "path": CONFIG_PATH,
                    "ref": repo.default_branch,
                },
            )
            config = parse_repo_config(_file_bytes(data), source=CONFIG_PATH)
        except ConfigError as error:
            log.warning(
                "%s: invalid config (%s); default schedule", repo.full_name, error.one_line()
            )
            config = default_config()
        except (GitHubException, ValueError) as error:
            # No config file (404) is the ordinary case: the defaults, without a warning.
            if not (isinstance(error, BadRequest) and error.status_code == 404):
                log.warning("%s: config not readable (%s); default schedule", repo.full_name, error)
            config = default_config()
        return ScheduledRepo(
            installation_id=repo.installation_id,
            repo=repo.full_name,
            cron=config.schedule,
            enabled=config.nightly_enabled,
            default_branch=repo.default_branch,
        )


def _file_bytes(data: Any) -> bytes:
    """The bytes of a contents-API answer for one file; ValueError when it holds none.

    https://docs.github.com/rest/repos/contents#get-repository-content: a directory answers
    a list of entries, and a file over 1 MB answers ``encoding: none`` with empty content.
    """
    if not isinstance(data, dict) or data.get("type") != "file":
        raise ValueError(f"{CONFIG_PATH} is not a file")
    if data.get("encoding") != "base64" or not isinstance(data.get("content"), str):
        raise ValueError(f"{CONFIG_PATH} content not returned (over 1 MB?)")
    # binascii.Error, raised for bad base64, is a ValueError.
    return base64.b64decode(data["content"])
