"""Errors the GitHub client raises on purpose (gidgethub's own HTTP errors pass through)."""

from bot.errors import BotError


class GitHubClientError(BotError):
    """The client was misconfigured or misused, or GitHub answered something unusable."""


class GitHubUnavailable(GitHubClientError):
    """GitHub could not be reached (connection errors or timeouts) after every attempt."""


class GitHubRateLimited(GitHubClientError):
    """GitHub asked us to wait longer than the policy allows; the request was not retried."""

    def __init__(self, message: str, *, wait: float) -> None:
        """Remember how long GitHub asked us to wait, in seconds."""
        super().__init__(message)
        self.wait = wait
