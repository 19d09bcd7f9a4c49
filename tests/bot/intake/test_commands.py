"""The /bisect comment command: what is a command, what it says, and every way it is refused."""

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.intake.commands import (
    MAX_LINE_CHARS,
    BisectCommand,
    CommandError,
    HelpRequest,
    parse_command,
    render_error_reply,
    render_help_reply,
    usage,
)
from engine.threshold import Thresholds


def refusal(body: str) -> str:
    """Parse a body that must be a refused command and return the reason."""
    parsed = parse_command(body)
    assert isinstance(parsed, CommandError), parsed
    return parsed.reason


# What is a command at all


@pytest.mark.parametrize(
    "body",
    [
        None,
        "",
        "\n\n",
        "looks good, /bisect later",
        "> /bisect",
        "> /bisect --full\n\nquoted",
        "```\n/bisect\n```",
        "~~~\n/bisect --full\n~~~",
        "`/bisect`",
        "    /bisect",
        "\t/bisect",
        " /bisect",
        "/Bisect",
        "/BISECT --full",
        "/bisecting",
        "/bisect-all",
        "/bisect.",
        "/bisect,--full",
        "\u200b/bisect",
        "\ufeff/bisect",
        "\u00a0/bisect",
        "/bisect\u00a0--full",
        "\uff0fbisect",
        "thanks!\n/bisect",
        "- /bisect",
        "**/bisect**",
        "\ud800/bisect",
    ],
)
def test_comment_whose_first_line_does_not_start_with_the_word_is_not_a_command(
    body: str | None,
) -> None:
    assert parse_command(body) is None


@pytest.mark.parametrize(
    "body",
    [
        "/bisect",
        "/bisect ",
        "/bisect\t",
        "/bisect\n",
        "/bisect\r\n",
        "/bisect\r",
        "\n\n/bisect",
        " \t\n/bisect",
        "\r\n\r\n/bisect\r\nwhy: the last model looked off",
        "/bisect\n> quoted text and ```code``` below do not matter\n--min-plcc 5",
    ],
)
def test_bare_command_after_blank_lines_and_with_any_line_end_asks_for_the_repository_gate(
    body: str,
) -> None:
    assert parse_command(body) == BisectCommand()


def test_every_option_is_read() -> None:
    parsed = parse_command(
        "/bisect --min-plcc 0.9 --min-srocc=0.85 --max-rmse 8 --full --statistical"
    )
    assert parsed == BisectCommand(
        min_plcc=0.9, min_srocc=0.85, max_rmse=8.0, full=True, statistical=True
    )


@pytest.mark.parametrize(
    "body",
    [
        "/bisect --min-plcc 0.9",
        "/bisect --min-plcc=0.9",
        "/bisect --min-plcc '0.9'",
        '/bisect --min-plcc "0.9"',
        "/bisect --min-plcc=.9",
        "/bisect   --min-plcc\t0.90  ",
        "/bisect --min-plcc 9e-1",
        "/bisect --min-plcc +0.9",
        "/bisect --min-plcc 0.9\r\nmore text",
    ],
)
def test_value_may_follow_a_space_or_an_equals_sign_and_may_be_quoted(body: str) -> None:
    assert parse_command(body) == BisectCommand(min_plcc=0.9)


def test_negative_correlation_thresholds_are_values_not_options() -> None:
    assert parse_command("/bisect --min-plcc -0.5 --min-srocc -1") == BisectCommand(
        min_plcc=-0.5, min_srocc=-1.0
    )


@pytest.mark.parametrize(
    "body", ["/bisect help", "/bisect --help", "/bisect -h", "\n/bisect help\r\nplease"]
)
def test_help_is_a_help_request(body: str) -> None:
    assert parse_command(body) == HelpRequest()


# Refusals


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/bisect --fulll", "unknown option `--fulll`; did you mean `--full`?"),
        ("/bisect --min_plcc 0.9", "unknown option `--min_plcc`; did you mean `--min-plcc`?"),
        ("/bisect --min-plc=0.9", "unknown option `--min-plc`; did you mean `--min-plcc`?"),
        ("/bisect --verbose", "unknown option `--verbose`"),
        ("/bisect -f", "unknown option `-f`"),
        ("/bisect now", "unknown argument `now`"),
        ("/bisect 0.9", "unknown argument `0.9`"),
        ("/bisect HELP", "unknown argument `HELP`"),
        ("/bisect --full --full", "`--full` is given twice"),
        ("/bisect --min-plcc 0.9 --min-plcc=0.8", "`--min-plcc` is given twice"),
        ("/bisect --full=yes", "`--full` takes no value"),
        ("/bisect --statistical=", "`--statistical` takes no value"),
        ("/bisect help --full", "`help` takes nothing after it"),
        ("/bisect --min-plcc", "`--min-plcc` needs a number after it"),
        ("/bisect --min-plcc --full", "`--min-plcc` needs a number after it"),
        ("/bisect --max-rmse=", '`--max-rmse` needs a number, not `""`'),
        ("/bisect --min-plcc high", "`--min-plcc` needs a number, not `high`"),
        ("/bisect --min-plcc 0,9", "`--min-plcc` needs a number, not `0,9`"),
        ("/bisect --min-plcc 1_0", "`--min-plcc` needs a number, not `1_0`"),
        ("/bisect --min-plcc 0x1", "`--min-plcc` needs a number, not `0x1`"),
        ("/bisect --min-plcc nan", "`--min-plcc` must be a finite number, not `nan`"),
        ("/bisect --max-rmse inf", "`--max-rmse` must be a finite number, not `inf`"),
        ("/bisect --max-rmse -Infinity", "must be a finite number, not `-Infinity`"),
        ("/bisect --max-rmse 1e999", "`--max-rmse` must be a finite number, not `1e999`"),
        ("/bisect --min-plcc 1.01", "`--min-plcc` must be between -1 and 1, not `1.01`"),
        ("/bisect --min-srocc -1.5", "`--min-srocc` must be between -1 and 1, not `-1.5`"),
        ("/bisect --max-rmse 0", "`--max-rmse` must be greater than 0, not `0`"),
        ("/bisect --max-rmse -3", "`--max-rmse` must be greater than 0, not `-3`"),
        ("/bisect --min-plcc '0.9", "a quote is not closed, or the line ends in a backslash"),
        ('/bisect --full "', "a quote is not closed, or the line ends in a backslash"),
        ("/bisect --full \\", "a quote is not closed, or the line ends in a backslash"),
    ],
)
def test_malformed_command_is_refused_with_its_reason(body: str, expected: str) -> None:
    assert expected in refusal(body)


@pytest.mark.parametrize(
    ("body", "code_point"),
    [
        ("/bisect --full\u200b", "U+200B (ZERO WIDTH SPACE)"),
        ("/bisect\t\u200b--full", "U+200B (ZERO WIDTH SPACE)"),
        ("/bisect --min-plcc\u00a00.9", "U+00A0 (NO-BREAK SPACE)"),
        ("/bisect \uff0d\uff0dfull", "U+FF0D (FULLWIDTH HYPHEN-MINUS)"),
        ("/bisect \u2013full", "U+2013 (EN DASH)"),
        ("/bisect \u2014full", "U+2014 (EM DASH)"),
        ("/bisect --min-plcc \u0660.\u0669", "U+0660 (ARABIC-INDIC DIGIT ZERO)"),
        ("/bisect --min-plcc \uff10.\uff19", "U+FF10 (FULLWIDTH DIGIT ZERO)"),
        ("/bisect --min-plcc \u201c0.9\u201d", "U+201C (LEFT DOUBLE QUOTATION MARK)"),
        ("/bisect --full\x00", "U+0000 (a control character)"),
        ("/bisect --full\x1b[2J", "U+001B (a control character)"),
        ("/bisect --full\u2028", "U+2028 (LINE SEPARATOR)"),
        ("/bisect --full\u0378", "U+0378 (no name)"),
        ("/bisect --full\ud800", "U+D800 (no name)"),
    ],
)
def test_non_ascii_after_the_word_is_refused_naming_the_character(
    body: str, code_point: str
) -> None:
    reason = refusal(body)
    assert code_point in reason
    assert "plain ASCII" in reason


def test_a_dash_lookalike_gets_the_two_hyphen_hint() -> None:
    assert "two ASCII hyphens" in refusal("/bisect \u2013\u2013full")
    assert "two ASCII hyphens" not in refusal("/bisect --full\u200b")


def test_character_problem_names_its_column() -> None:
    assert refusal("/bisect --full\u200b").startswith("column 15 holds U+200B")


def test_line_over_the_cap_is_refused_without_reading_it() -> None:
    line = "/bisect " + "--full " * 400_000
    started = time.perf_counter()
    reason = refusal(line)
    assert time.perf_counter() - started < 2.0
    assert f"at most {MAX_LINE_CHARS} are read" in reason
    assert refusal("/bisect" + " " * (MAX_LINE_CHARS - 7) + "x")  # the cap counts the line
    at_cap = "/bisect" + " " * (MAX_LINE_CHARS - 13) + "--full"
    assert len(at_cap) == MAX_LINE_CHARS
    assert parse_command(at_cap) == BisectCommand(full=True)


def test_huge_comment_that_is_not_a_command_is_skipped_quickly() -> None:
    body = "\n" * 200_000 + "x" * 1_000_000
    started = time.perf_counter()
    assert parse_command(body) is None
    assert time.perf_counter() - started < 2.0


def test_user_text_in_a_reason_stays_in_a_short_code_span() -> None:
    reason = refusal("/bisect --min-plcc `@octocat`")
    assert "`'@octocat'`" in reason  # backticks cannot close the span and ping someone
    long = refusal("/bisect --max-rmse " + "9" * 500 + "x")
    assert len(long) < 120


# Values of a command


def test_gate_given_by_the_command_replaces_the_repository_gate() -> None:
    repository = Thresholds(min_plcc=0.9, max_rmse=8.0)
    assert BisectCommand(full=True).gate(repository) == repository
    assert BisectCommand(min_srocc=0.7).gate(repository) == Thresholds(min_srocc=0.7)


def test_command_line_is_the_canonical_spelling() -> None:
    command = BisectCommand(max_rmse=8.0, min_plcc=0.9, statistical=True, full=True)
    assert command.command_line() == "/bisect --min-plcc 0.9 --max-rmse 8.0 --full --statistical"
    assert BisectCommand().command_line() == "/bisect"


def test_values_are_frozen() -> None:
    with pytest.raises(AttributeError):
        BisectCommand().full = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        CommandError("x").reason = "y"  # type: ignore[misc]


# Replies


def test_usage_names_every_option_and_help() -> None:
    text = usage()
    for word in ("--min-plcc", "--min-srocc", "--max-rmse", "--full", "--statistical", "help"):
        assert word in text
    assert CommandError("x").usage == text


def test_error_reply_is_one_reason_line_and_the_usage_in_a_code_block() -> None:
    error = parse_command("/bisect --min-plcc 2")
    assert isinstance(error, CommandError)
    reply = render_error_reply(error)
    first, blank, fence, *rest = reply.split("\n")
    assert first == (
        "**model-guard cannot run this `/bisect`:** `--min-plcc` must be between -1 and 1, not `2`."
    )
    assert (blank, fence) == ("", "```text")
    assert "\n".join(rest) == usage() + "```\n"


def test_error_reply_does_not_double_the_full_stop_after_a_question() -> None:
    error = parse_command("/bisect --ful")
    assert isinstance(error, CommandError)
    assert "did you mean `--full`?\n" in render_error_reply(error)


def test_error_reply_escapes_markdown_outside_code_spans() -> None:
    reply = render_error_reply(CommandError("a *b* <c>"))
    assert "a \\*b\\* \\<c\\>" in reply


def test_help_reply_holds_the_usage() -> None:
    assert usage() in render_help_reply()


# Properties

_PIECES = st.sampled_from(
    [
        "/bisect",
        "/bisect ",
        "/bisecting",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "> ",
        "```",
        "`",
        "    ",
        "help",
        "--min-plcc",
        "--min-srocc",
        "--max-rmse",
        "--full",
        "--statistical",
        "=",
        "0.9",
        "-1",
        "8",
        "1e999",
        "nan",
        "'",
        '"',
        "\\",
        "\u200b",
        "\uff0d",
        "\u2013",
        "\u0669",
        "\u00a0",
        "x" * 300,
    ]
)
_COMMENTS = st.one_of(st.text(), st.lists(_PIECES, max_size=30).map("".join))


def _first_non_blank_line(body: str) -> str:
    """The test's own reading of "the first line": the first not made of spaces and tabs."""
    lines = re.split(r"\r\n|\r|\n", body)
    return next((line for line in lines if line.strip(" \t")), "")


@given(_COMMENTS)
@settings(max_examples=500)
def test_parser_never_raises_and_answers_with_one_of_its_values(body: str) -> None:
    parsed = parse_command(body)
    assert parsed is None or isinstance(parsed, BisectCommand | HelpRequest | CommandError)
    if isinstance(parsed, CommandError):
        assert parsed.reason and "\n" not in parsed.reason
        render_error_reply(parsed)


@given(_COMMENTS)
@settings(max_examples=500)
def test_no_command_unless_the_first_line_starts_with_the_word(body: str) -> None:
    if not _first_non_blank_line(body).startswith("/bisect"):
        assert parse_command(body) is None


_PLCC = st.floats(min_value=-1.0, max_value=1.0)
_RMSE = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)


@given(
    st.builds(
        BisectCommand,
        min_plcc=st.none() | _PLCC,
        min_srocc=st.none() | _PLCC,
        max_rmse=st.none() | _RMSE,
        full=st.booleans(),
        statistical=st.booleans(),
    ),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_any_valid_command_written_in_any_order_and_form_parses_back(
    command: BisectCommand, rng: random.Random, equals: bool
) -> None:
    words = command.command_line().split(" ")[1:]
    options: list[str] = []
    for word in words:
        if word.startswith("--"):
            options.append(word)
        else:
            options[-1] += ("=" if equals else " ") + word
    rng.shuffle(options)
    assert parse_command(" ".join(["/bisect", *options])) == command
