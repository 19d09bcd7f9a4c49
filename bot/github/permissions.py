"""Repository permission levels as GitHub names them, ordered so one can be a minimum."""

from collections.abc import Mapping
from enum import Enum
from typing import Any


class Permission(Enum):
    """A repository role, from least to most access; ``NONE`` is a user without access."""

    # GitHub's base roles in order of access:
    # https://docs.github.com/en/organizations/managing-user-access-to-your-organizations-repositories/managing-repository-roles/repository-roles-for-an-organization
    NONE = "none"
    READ = "read"
    TRIAGE = "triage"
    WRITE = "write"
    MAINTAIN = "maintain"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Return the role's place in the order (NONE is 0, ADMIN is 5)."""
        return list(Permission).index(self)

    def allows(self, held: "Permission") -> bool:
        """Return whether someone holding ``held`` meets this role as a minimum."""
        return held.rank >= self.rank

    @classmethod
    def from_github(cls, name: str) -> "Permission":
        """Return the role GitHub calls ``name``: a role name, or the API's legacy pull/push."""
        key = name.strip().lower()
        # The collaborators API's `permissions` object says pull/push for read/write.
        # https://docs.github.com/en/rest/collaborators/collaborators#list-repository-collaborators
        key = {"pull": "read", "push": "write"}.get(key, key)
        for member in cls:
            if member.value == key:
                return member
        raise ValueError(f"unknown GitHub permission {name!r}")

    @classmethod
    def from_collaborator(cls, data: Mapping[str, Any]) -> "Permission":
        """Return a user's role from the 'Get repository permissions for a user' response."""
        # role_name is exact (triage, maintain) but may name a custom role; permission is the
        # legacy base role (maintain reads as write, triage as read), always a known name.
        # https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
        for field in ("role_name", "permission"):
            value = data.get(field)
            if isinstance(value, str):
                try:
                    return cls.from_github(value)
                except ValueError:
                    continue
        return cls.NONE
