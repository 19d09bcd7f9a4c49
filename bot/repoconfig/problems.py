"""What is wrong with a configuration file: each problem, and the error that explains them all."""

from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import BotError
from bot.repoconfig.model import CONFIG_PATH
from bot.repoconfig.pointers import split_pointer
from bot.repoconfig.schema import describe_expected, find_subschema
from bot.repoconfig.wording import code_span, escape_markdown
from engine.errors import one_line

DOCS_PATH = "docs/configuration.md"
# A comment body is capped at 65536 characters; a file full of mistakes must still fit in one.
# https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
MAX_SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the file: where it is (JSON pointer, YAML line) and what."""

    pointer: str
    message: str
    line: int | None = None

    @property
    def key(self) -> str:
        """Return the pointer as a dotted key (``gate.min_plcc``); empty for the whole file."""
        return ".".join(split_pointer(self.pointer))

    def describe(self) -> str:
        """Return the problem as one line: ``line 4, gate.min_plcc: must be at most 1``."""
        # A quoted key may hold any character ("a\0b"): shown as code_span shows it.
        key = "".join(ch if ch.isprintable() else "?" for ch in self.key)
        subject = f"{key}: " if key else "the file "
        where = "" if self.line is None else f"line {self.line}, "
        return f"{where}{subject}{self.message}"


class ConfigError(BotError):
    """The repository's configuration file cannot be used; it carries every problem found."""

    def __init__(
        self,
        problems: Sequence[ConfigProblem],
        *,
        source: str = CONFIG_PATH,
        commit: str | None = None,
    ) -> None:
        """Keep the problems in pointer order, with the file (and commit) they were found in."""
        self.problems = tuple(sorted(problems, key=_problem_order)) or (
            ConfigProblem("", "is not a valid configuration"),
        )
        self.source = source
        self.commit = commit
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """Return the first problem and how many more, for a log line or a check-run title."""
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'' if more == 1 else 's'})" if more else ""
        return one_line(f"{self.source}: {self.problems[0].describe()}", limit=200) + tail

    def markdown(self, *, commit: str | None = None, docs_url: str | None = None) -> str:
        """Return the explanation for the tracking comment or check run: each problem and its fix."""
        commit = commit or self.commit
        where = f" at commit {code_span(commit[:12])}" if commit else ""
        count = len(self.problems)
        lines = [
            f"**model-guard cannot use {code_span(self.source)}**{where}: "
            f"it has {count} problem{'' if count == 1 else 's'}.",
            "",
        ]
        in_file_order = sorted(self.problems, key=lambda p: (p.line or 0, _problem_order(p)))
        for problem in in_file_order[:MAX_SHOWN_PROBLEMS]:
            lines += _explain(problem)
        if count > MAX_SHOWN_PROBLEMS:
            lines.append(f"- … and {count - MAX_SHOWN_PROBLEMS} more.")
        reference = (
            f"[{DOCS_PATH}]({docs_url})" if docs_url else f"{code_span(DOCS_PATH)} of model-guard"
        )
        lines += [
            "",
            f"Fix {code_span(self.source)} and push: model-guard reads it at the commit it judges. "
            f"Every key, its type, default and allowed values are in {reference}; "
            f"{code_span('python -m bot.repoconfig --check ' + self.source)} checks a file locally.",
        ]
        return "\n".join(lines) + "\n"


def _explain(problem: ConfigProblem) -> list[str]:
    """Return one problem as a markdown list item, with what its key expects when it is one."""
    place = f"line {problem.line}, " if problem.line is not None else ""
    subject = f"{code_span(problem.key)}: " if problem.key else "the file "
    lines = [f"- {place}{subject}{escape_markdown(problem.message)}"]
    spec = find_subschema(problem.pointer) if problem.pointer else None
    if spec is not None and "properties" not in spec:
        about = str(spec.get("description", "")).split(". ")[0].rstrip(".")
        expected = describe_expected(problem.pointer)
        hint = f"{about}. Expected: {expected}." if about else f"Expected: {expected}."
        lines.append(f"  {escape_markdown(hint)}")
    return lines


def _problem_order(problem: ConfigProblem) -> tuple[list[str], str]:
    """Sort problems by pointer, segment by segment, then by message."""
    return (split_pointer(problem.pointer), problem.message)
