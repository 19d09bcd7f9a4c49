"""The App's GitHub client: gidgethub's aiohttp API with tokens, retries, pacing and ETags."""

from bot.github.client import GitHubClient, InstalledRepo
from bot.github.errors import GitHubClientError, GitHubRateLimited, GitHubUnavailable
from bot.github.policy import ClientPolicy, RetryReason

__all__ = [
    "ClientPolicy",
    "GitHubClient",
    "GitHubClientError",
    "GitHubRateLimited",
    "GitHubUnavailable",
    "InstalledRepo",
    "RetryReason",
]
