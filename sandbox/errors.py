"""The sandbox's error hierarchy; ApiError carries a GitHub-shaped error response."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DOCS_URL = "https://docs.github.com/rest"


class SandboxError(Exception):
    """Base class of every error the sandbox raises."""


class ApiError(SandboxError):
    """An error GitHub would answer with: status, ``message``, ``documentation_url``, ``errors``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        documentation_url: str = DOCS_URL,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Remember the parts of the response."""
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = tuple(errors)
        self.documentation_url = documentation_url
        self.headers: Mapping[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body GitHub sends for this error."""
        body: dict[str, Any] = {"message": self.message}
        if self.errors:
            body["errors"] = [dict(error) for error in self.errors]
        body["documentation_url"] = self.documentation_url
        body["status"] = str(self.status)
        return body


def not_found(documentation_url: str = DOCS_URL) -> ApiError:
    """GitHub's 404, also used for resources a token may not see."""
    return ApiError(404, "Not Found", documentation_url=documentation_url)


def bad_credentials() -> ApiError:
    """GitHub's 401 for an unknown, revoked or expired token."""
    return ApiError(401, "Bad credentials")


def requires_authentication() -> ApiError:
    """GitHub's 401 when no credentials were sent."""
    return ApiError(401, "Requires authentication")


def not_accessible() -> ApiError:
    """GitHub's 403 when the installation lacks the permission an endpoint needs."""
    return ApiError(403, "Resource not accessible by integration")


def validation_failed(
    resource: str,
    field: str,
    code: str,
    message: str | None = None,
    *,
    documentation_url: str = DOCS_URL,
) -> ApiError:
    """GitHub's 422 ``Validation Failed`` with one entry in ``errors``."""
    error: dict[str, Any] = {"resource": resource, "code": code, "field": field}
    if message is not None:
        error["message"] = message
    return ApiError(422, "Validation Failed", errors=[error], documentation_url=documentation_url)


def missing_field(resource: str, field: str, *, documentation_url: str = DOCS_URL) -> ApiError:
    """GitHub's 422 for a required field that was not sent."""
    return validation_failed(resource, field, "missing_field", documentation_url=documentation_url)


def invalid_field(
    resource: str, field: str, message: str | None = None, *, documentation_url: str = DOCS_URL
) -> ApiError:
    """GitHub's 422 for a field with a value of the wrong kind."""
    return validation_failed(
        resource, field, "invalid", message, documentation_url=documentation_url
    )
