"""The ``/bisect`` comment command: a pull-request comment body parsed into a frozen value.

A comment is a command when its first non-blank line (lines of only spaces and tabs are
blank; lines end at LF, CRLF or CR, as in CommonMark) starts with exactly ``/bisect``
followed by a space, a tab or the end of the line. The rest of the comment is free text.
So a quote (``> /bisect``), a fence, an indented code block, inline code, ``/Bisect`` and
``/bisecting`` are not commands, and neither is a line that merely mentions ``/bisect``.

Once a line is a command it is answered, never ignored: anything wrong with it (a line over
``MAX_LINE_CHARS``, a character that is not printable ASCII such as a zero-width space, a
non-breaking space, a fullwidth or en dash or a non-ASCII digit, an unbalanced quote, an
unknown option, a missing, non-finite or out-of-range value, an option given twice) becomes
a ``CommandError`` whose reason names it. Arguments are split like a POSIX shell
(``shlex``), so quoting works; ``--min-plcc=0.9`` and ``--min-plcc 0.9`` are the same.
"""

import difflib
import math
import re
import shlex
import unicodedata
from dataclasses import dataclass
from enum import Enum

from bot.repoconfig.wording import code_span, escape_markdown
from engine.threshold import Thresholds

COMMAND_WORD = "/bisect"
# Long enough for any real command (the longest is under 100 characters), short enough that
# nothing after it (shlex, float parsing) can be made slow by a pasted wall of text.
MAX_LINE_CHARS = 1000
HELP_WORDS = frozenset({"help", "--help", "-h"})
_LINE_END = re.compile(r"\r\n|\r|\n")
# ASCII digits only: Python's float() also takes "1_000", "nan", "inf" and other scripts' digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = frozenset({"nan", "inf", "infinity"})
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")


class Option(Enum):
    """An option of ``/bisect``; the value is how it is written."""

    MIN_PLCC = "--min-plcc"
    MIN_SROCC = "--min-srocc"
    MAX_RMSE = "--max-rmse"
    FULL = "--full"
    STATISTICAL = "--statistical"

    @property
    def takes_value(self) -> bool:
        """Return whether the option is followed by a number."""
        return self in _THRESHOLDS


_THRESHOLDS = (Option.MIN_PLCC, Option.MIN_SROCC, Option.MAX_RMSE)


@dataclass(frozen=True)
class BisectCommand:
    """A parsed ``/bisect``: thresholds given (None where not) and the two switches."""

    min_plcc: float | None = None
    min_srocc: float | None = None
    max_rmse: float | None = None
    full: bool = False
    statistical: bool = False

    def has_thresholds(self) -> bool:
        """Return whether the command gives any threshold of its own."""
        return (self.min_plcc, self.min_srocc, self.max_rmse) != (None, None, None)

    def gate(self, repository: Thresholds) -> Thresholds:
        """Return the gate to judge by: the command's thresholds replace the repository's whole gate."""
        # Like a `gate:` written in .github/model-guard.yml: what is given replaces, never merges.
        if not self.has_thresholds():
            return repository
        return Thresholds(min_plcc=self.min_plcc, min_srocc=self.min_srocc, max_rmse=self.max_rmse)

    def command_line(self) -> str:
        """Return the command as it would be written, options in a fixed order."""
        words = [COMMAND_WORD]
        for option, value in zip(
            _THRESHOLDS, (self.min_plcc, self.min_srocc, self.max_rmse), strict=True
        ):
            if value is not None:
                words.append(f"{option.value} {value!r}")
        words += [Option.FULL.value] if self.full else []
        words += [Option.STATISTICAL.value] if self.statistical else []
        return " ".join(words)


@dataclass(frozen=True)
class HelpRequest:
    """``/bisect help``: the user asks how the command is used."""


@dataclass(frozen=True)
class CommandError:
    """A ``/bisect`` line that cannot be run: a value to answer with, not an exception."""

    reason: str

    @property
    def usage(self) -> str:
        """Return how the command is written."""
        return usage()


ParsedCommand = BisectCommand | HelpRequest | CommandError


def usage() -> str:
    """Return the usage text of ``/bisect`` (plain text, for a code block)."""
    return (
        "/bisect [--min-plcc X] [--min-srocc X] [--max-rmse X] [--full] [--statistical]\n"
        "/bisect help\n"
        "\n"
        "  --min-plcc X    PLCC must be at least X (-1 to 1)\n"
        "  --min-srocc X   SROCC must be at least X (-1 to 1)\n"
        "  --max-rmse X    RMSE must be at most X (greater than 0)\n"
        "  --full          evaluate every model, not only those the bisection visits\n"
        "  --statistical   judge by bootstrap confidence intervals\n"
        "\n"
        "Write the command alone at the start of the comment's first line.\n"
        "Thresholds given replace the repository's whole gate; with none, its gate applies.\n"
        "--min-plcc=0.9 and --min-plcc 0.9 are the same.\n"
    )


def parse_command(body: str | None) -> ParsedCommand | None:
    """Return the command a comment body holds, or None when the comment is not a command."""
    if body is None:
        return None
    line = _first_line(body)
    if not line.startswith(COMMAND_WORD):
        return None
    after = line[len(COMMAND_WORD) : len(COMMAND_WORD) + 1]
    if after not in ("", " ", "\t"):
        return None  # /bisecting, /bisect-all, /bisect. are words of their own
    if len(line) > MAX_LINE_CHARS:
        return CommandError(
            f"the command line is {len(line)} characters long; at most {MAX_LINE_CHARS} are read"
        )
    rest = line[len(COMMAND_WORD) :]
    problem = _character_problem(rest)
    if problem is not None:
        return CommandError(problem)
    try:
        words = shlex.split(rest, comments=False, posix=True)
    except ValueError:  # shlex says "No closing quotation" or "No escaped character"
        return CommandError("a quote is not closed, or the line ends in a backslash")
    return _parse_words(words)


def render_error_reply(error: CommandError) -> str:
    """Return the markdown reply to a refused command: the reason, then the usage."""
    reason = escape_markdown(error.reason)
    stop = "" if reason.endswith(("?", ".")) else "."
    return (
        f"**model-guard cannot run this `/bisect`:** {reason}{stop}\n\n```text\n{error.usage}```\n"
    )


def render_help_reply() -> str:
    """Return the markdown reply to ``/bisect help``."""
    return f"**How to write `/bisect`:**\n\n```text\n{usage()}```\n"


def _first_line(body: str) -> str:
    """Return the first line that is not blank, without its line end ("" when there is none)."""
    start = 0
    while start <= len(body):
        end_match = _LINE_END.search(body, start)
        end = end_match.start() if end_match else len(body)
        line = body[start:end]
        if line.strip(" \t"):
            return line.rstrip(" \t")
        if end_match is None:
            return ""
        start = end_match.end()
    return ""


def _character_problem(text: str) -> str | None:
    """Return why the arguments hold a character other than printable ASCII, or None."""
    for column, char in enumerate(text, start=len(COMMAND_WORD) + 1):
        if char == "\t" or " " <= char <= "~":
            continue
        fallback = "a control character" if unicodedata.category(char) == "Cc" else "no name"
        name = unicodedata.name(char, fallback)
        hint = "; write options with two ASCII hyphens, `--`" if char in _DASHES else ""
        return (
            f"column {column} holds U+{ord(char):04X} ({name}); the command takes only "
            f"plain ASCII text{hint}"
        )
    return None


def _parse_words(words: list[str]) -> ParsedCommand:
    """Return the command its words make (the words after ``/bisect``)."""
    if words and words[0] in HELP_WORDS:
        if len(words) > 1:
            return CommandError(f"{code_span(words[0])} takes nothing after it")
        return HelpRequest()
    values: dict[Option, float] = {}
    switches: set[Option] = set()
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        name, has_inline, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        option = _option_named(name)
        if option is None:
            return CommandError(_unknown(word if not word.startswith("--") else name))
        if option in values or option in switches:
            return CommandError(f"{code_span(option.value)} is given twice")
        if not option.takes_value:
            if has_inline:
                return CommandError(f"{code_span(option.value)} takes no value")
            switches.add(option)
            continue
        if has_inline:
            text = inline
        elif index < len(words) and not words[index].startswith("--"):
            text, index = words[index], index + 1
        else:
            return CommandError(f"{code_span(option.value)} needs a number after it")
        value = _read_value(option, text)
        if isinstance(value, CommandError):
            return value
        values[option] = value
    return BisectCommand(
        min_plcc=values.get(Option.MIN_PLCC),
        min_srocc=values.get(Option.MIN_SROCC),
        max_rmse=values.get(Option.MAX_RMSE),
        full=Option.FULL in switches,
        statistical=Option.STATISTICAL in switches,
    )


def _option_named(name: str) -> Option | None:
    """Return the option written ``name``, or None."""
    return next((option for option in Option if option.value == name), None)


def _unknown(word: str) -> str:
    """Explain an unknown word, suggesting the option it most likely means."""
    known = [option.value for option in Option]
    what = "option" if word.startswith("-") else "argument"
    message = f"unknown {what} {code_span(word, limit=40)}"
    close = difflib.get_close_matches(word.replace("_", "-"), known, n=1, cutoff=0.6)
    return message + (f"; did you mean {code_span(close[0])}?" if close else "")


def _read_value(option: Option, text: str) -> float | CommandError:
    """Return an option's number, or why ``text`` cannot be it."""
    shown = code_span(text, limit=40)
    if text.lower().lstrip("+-") in _NON_FINITE:
        return CommandError(f"{code_span(option.value)} must be a finite number, not {shown}")
    if not _DECIMAL.fullmatch(text):
        return CommandError(f"{code_span(option.value)} needs a number, not {shown}")
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to infinity
        return CommandError(f"{code_span(option.value)} must be a finite number, not {shown}")
    if option is Option.MAX_RMSE:
        if value <= 0:
            return CommandError(f"{code_span(option.value)} must be greater than 0, not {shown}")
    elif not -1.0 <= value <= 1.0:
        return CommandError(f"{code_span(option.value)} must be between -1 and 1, not {shown}")
    return value
