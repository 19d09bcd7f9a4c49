"""The App's GitHub client: App credentials, the token cache and one API per installation."""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import gidgethub
import gidgethub.abc

from bot.github.credentials import (
    AppCredentials,
    Credentials,
    InstallationCredentials,
    InstallationToken,
    load_private_key,
    parse_token,
)
from bot.github.errors import GitHubClientError
from bot.github.etags import EtagBudget
from bot.github.policy import ClientPolicy
from bot.github.repos import is_full_name, repo_vars
from bot.github.transport import ResilientAPI
from bot.telemetry import Telemetry

log = logging.getLogger("model_guard.github")

# https://docs.github.com/rest/using-the-rest-api/using-pagination-in-the-rest-api: 100 is the
# largest page, so listing everything takes the fewest requests.
_PER_PAGE = 100
DEFAULT_POLICY = ClientPolicy()


@dataclass(frozen=True)
class InstalledRepo:
    """A repository the App can reach, and through which installation."""

    installation_id: int
    full_name: str
    default_branch: str


class GitHubClient:
    """One per service: App credentials, token cache, per-installation APIs."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_id: str,
        private_key: str,
        api_url: str,
        telemetry: Telemetry | None = None,
        policy: ClientPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        requester: str = "model-guard",
        rng: random.Random | None = None,
    ) -> None:
        """Check the credentials (a one-line GitHubClientError for a bad key); send nothing yet."""
        # gidgethub and the JWT's "iss" claim take the App id as a string.
        if not isinstance(app_id, str) or not app_id.strip():
            raise GitHubClientError(f"the GitHub App id must be a non-empty string, not {app_id!r}")
        if not isinstance(private_key, str):
            raise GitHubClientError("the GitHub App private key must be PEM text")
        if not api_url.startswith(("http://", "https://")):
            raise GitHubClientError(f"the GitHub API URL must be http(s), not {api_url!r}")
        self._session = session
        self._policy = policy
        self._api_url = api_url.rstrip("/")
        self._telemetry = telemetry
        self._clock = clock
        self._sleep = sleep
        self._requester = requester
        self._rng = rng if rng is not None else random.Random()
        self._app_credentials = AppCredentials(
            app_id.strip(),
            load_private_key(private_key),
            clock=clock,
            margin=policy.token_refresh_margin,
        )
        # One byte budget for every installation's ETag cache: memory stays bounded however
        # many installations the App serves.
        self._etag_budget = EtagBudget(
            policy.etag_cache_bytes, max_entry_bytes=policy.etag_entry_max_bytes
        )
        self._app = self._make_api("app", self._app_credentials)
        self._installations: dict[int, ResilientAPI] = {}
        self._credentials: dict[int, InstallationCredentials] = {}
        self._closed = False

    def app_api(self) -> gidgethub.abc.GitHubAPI:
        """The API authenticated as the App (a fresh JWT as needed), with the same retries."""
        return self._app

    async def installation_api(self, installation_id: int) -> gidgethub.abc.GitHubAPI:
        """The API of one installation (the same object per id); each request carries its token."""
        if isinstance(installation_id, bool) or not isinstance(installation_id, int):
            raise GitHubClientError(f"an installation id is an integer, not {installation_id!r}")
        if self._closed:
            raise GitHubClientError(f"installation {installation_id}: the GitHub client is closed")
        api = self._installations.get(installation_id)
        if api is None:
            credentials = InstallationCredentials(
                installation_id,
                fetch=self._fetch_token,
                clock=self._clock,
                margin=self._policy.token_refresh_margin,
            )
            api = self._make_api(f"installation {installation_id}", credentials)
            self._credentials[installation_id] = credentials
            self._installations[installation_id] = api
        return api

    async def installation_id_for(self, full_name: str) -> int:
        """The installation covering ``owner/repo`` (gidgethub's BadRequest 404 if none)."""
        if not is_full_name(full_name):
            raise GitHubClientError(f"a repository is named 'owner/name', not {full_name!r}")
        data = await self._app.getitem(
            "/repos/{owner}/{repo}/installation", url_vars=repo_vars(full_name)
        )
        return _integer(data, "id", what=f"the installation of {full_name}")

    async def installed_repositories(self) -> list[InstalledRepo]:
        """Every repository of every (not suspended) installation, in installation order."""
        found: list[InstalledRepo] = []
        async for installation in self._app.getiter(
            "/app/installations{?per_page}", url_vars={"per_page": _PER_PAGE}
        ):
            if not isinstance(installation, dict):
                raise GitHubClientError("GitHub listed an installation that is not an object")
            # A suspended installation cannot mint tokens: GitHub answers 403 until unsuspended.
            if installation.get("suspended_at"):
                continue
            installation_id = _integer(installation, "id", what="an installation")
            try:
                found += await self._repositories_of(installation_id)
            except gidgethub.BadRequest as error:
                if not _gone(error):
                    raise
                # Uninstalled or suspended since it was listed: the others still count.
                log.warning(
                    "installation skipped",
                    extra={
                        "fields": {"installation": installation_id, "status": error.status_code}
                    },
                )
        return found

    async def _repositories_of(self, installation_id: int) -> list[InstalledRepo]:
        """Every repository one installation's token reaches."""
        api = await self.installation_api(installation_id)
        return [
            _installed_repo(repo, installation_id=installation_id)
            async for repo in api.getiter(
                "/installation/repositories{?per_page}",
                url_vars={"per_page": _PER_PAGE},
                iterable_key="repositories",
            )
        ]

    async def close(self) -> None:
        """Forget every token, JWT and cached response; later requests raise GitHubClientError.

        The aiohttp session belongs to the caller, who closes it after this.
        """
        self._closed = True
        for credentials in self._credentials.values():
            credentials.forget()
        self._app_credentials.forget()
        for api in (self._app, *self._installations.values()):
            api.close()

    async def _fetch_token(self, installation_id: int) -> InstallationToken:
        """Mint an installation token as the App."""
        # https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app
        data = await self._app.post(
            "/app/installations/{installation_id}/access_tokens",
            url_vars={"installation_id": installation_id},
            data=b"",
        )
        return parse_token(data, installation_id=installation_id)

    def _make_api(self, label: str, credentials: Credentials) -> ResilientAPI:
        return ResilientAPI(
            self._session,
            label=label,
            credentials=credentials,
            policy=self._policy,
            base_url=self._api_url,
            requester=self._requester,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
            telemetry=self._telemetry,
            etag_budget=self._etag_budget,
        )


def _gone(error: gidgethub.BadRequest) -> bool:
    """True for GitHub's answers about an installation removed (404) or suspended (403)."""
    if isinstance(error, gidgethub.RateLimitExceeded):
        return False
    return error.status_code == 404 or (error.status_code == 403 and "suspended" in str(error))


def _integer(data: Any, key: str, *, what: str) -> int:
    """``data[key]`` as an int, or a one-line error naming ``what`` GitHub answered."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise GitHubClientError(f"GitHub's answer for {what} has no integer {key!r}")
    return value


def _installed_repo(repo: Any, *, installation_id: int) -> InstalledRepo:
    """One entry of ``GET /installation/repositories``."""
    name = repo.get("full_name") if isinstance(repo, dict) else None
    branch = repo.get("default_branch") if isinstance(repo, dict) else None
    if not isinstance(name, str) or not isinstance(branch, str):
        raise GitHubClientError(
            f"GitHub listed a repository of installation {installation_id} without "
            "full_name or default_branch"
        )
    return InstalledRepo(installation_id, name, branch)
