"""The event readers every router shares: malformed events plan nothing."""

import pytest

from bot.handlers.planning import RERUN, event_origin, pressed_button
from sandbox.webhooks import load_example


def test_event_origin_reads_installation_and_repository_or_nothing() -> None:
    payload = load_example("check_run", "rerequested")
    payload["installation"] = {"id": 42}
    assert event_origin(payload) == (42, payload["repository"]["full_name"])
    for broken in (
        {**payload, "installation": None},
        {**payload, "installation": {"id": "42"}},
        {**payload, "repository": {"full_name": "no-slash"}},
        {**payload, "repository": []},
    ):
        assert event_origin(broken) is None


@pytest.mark.parametrize(
    ("action", "identifier", "expected"),
    [
        ("rerequested", None, RERUN),
        ("requested_action", "full-scan", "full-scan"),
        ("requested_action", "rerun", "rerun"),
        ("requested_action", "lgtm|26764", None),
        ("requested_action", 7, None),
    ],
)
def test_pressed_button_is_a_rerun_or_one_of_the_kinds_buttons(
    action: str, identifier: object, expected: str | None
) -> None:
    data = {"action": action, "requested_action": {"identifier": identifier}}
    assert pressed_button(data, ("full-scan", "rerun")) == expected
