"""Repository permission levels: GitHub's order of roles and the API's spellings of them."""

import pytest

from bot.github.permissions import Permission


def test_permissions_are_ordered_like_githubs_roles() -> None:
    order = [Permission.READ, Permission.TRIAGE, Permission.WRITE, Permission.MAINTAIN]
    order.append(Permission.ADMIN)
    for low_index, low in enumerate(order):
        for high_index, high in enumerate(order):
            assert low.allows(high) is (high_index >= low_index), (low, high)
    assert not Permission.READ.allows(Permission.NONE)


def test_from_github_reads_role_names_and_the_legacy_names() -> None:
    assert Permission.WRITE.allows(Permission.from_github("admin"))
    assert Permission.from_github("Maintain") is Permission.MAINTAIN
    assert Permission.from_github("pull") is Permission.READ
    assert Permission.from_github("push") is Permission.WRITE
    assert Permission.from_github("none") is Permission.NONE
    with pytest.raises(ValueError, match="unknown GitHub permission 'owner'"):
        Permission.from_github("owner")


def test_from_collaborator_prefers_the_role_and_falls_back_for_custom_roles() -> None:
    assert Permission.from_collaborator({"permission": "write", "role_name": "maintain"}) is (
        Permission.MAINTAIN
    )
    custom = {"permission": "read", "role_name": "security-reviewer"}
    assert Permission.from_collaborator(custom) is Permission.READ
    assert Permission.from_collaborator({}) is Permission.NONE
