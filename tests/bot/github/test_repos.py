"""Repository names: only ``owner/name`` in GitHub's characters ever reaches a URL."""

import pytest

from bot.github.repos import RepoNameError, is_full_name, repo_vars


def test_owner_and_name_become_url_vars() -> None:
    assert repo_vars("acme/video-models.v2") == {"owner": "acme", "repo": "video-models.v2"}


@pytest.mark.parametrize(
    "name",
    [
        "acme",
        "acme/models/extra",
        "acme/../x",
        "/models",
        "acme/",
        "ac me/x",
        "a/b?c",
        "ac_me/x",
        "",
    ],
)
def test_anything_but_owner_slash_name_is_refused_in_one_line(name: str) -> None:
    assert not is_full_name(name)
    with pytest.raises(RepoNameError, match="must be 'owner/name'"):
        repo_vars(name)
