"""Fuzz ``/bisect`` parsing: any comment body gives a command, None or a one-line error."""

from hypothesis import given
from hypothesis import strategies as st

from bot.intake.commands import CommandError, parse_command, render_error_reply
from tests.fuzz.refusals import ODD_TEXT, assert_one_line

WORDS = st.sampled_from(
    [
        "/bisect",
        "--min-plcc",
        "--min-srocc",
        "--max-rmse",
        "--full",
        "--statistical",
        "help",
        "--min-plcc=0.9",
        "0.9",
        "-1",
        "1e309",
        "nan",
        "inf",
        "0x10",
        "\u0661",  # an Arabic-Indic digit one
        "'",
        '"',
        "\\",
        "```",
        "`",
        "**",
        "<!-- -->",
        "\u00a0",
        "\u3000",
        "\x00",
    ]
)
LINES = st.lists(st.one_of(WORDS, ODD_TEXT), max_size=8).map(" ".join)
BODIES = st.one_of(
    st.none(),
    ODD_TEXT,
    LINES.map(lambda line: "/bisect " + line),
    st.tuples(LINES, ODD_TEXT).map(lambda pair: "/bisect" + pair[0] + "\n" + pair[1]),
    LINES.map(lambda line: "```\n/bisect " + line + "\n```"),
    LINES.map(lambda line: "> /bisect " + line),
    LINES.map(lambda line: "\r\n/bisect" + line),
)


@given(BODIES)
def test_parse_command_never_raises_and_errors_are_one_line(body: str | None) -> None:
    parsed = parse_command(body)
    if isinstance(parsed, CommandError):
        assert_one_line(parsed.reason)
        assert render_error_reply(parsed).startswith("**model-guard cannot run this `/bisect`:**")
