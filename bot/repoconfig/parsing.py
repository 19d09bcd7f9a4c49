"""The file's text made a ``RepoConfig``: read strictly, validated, then built."""

from bot.repoconfig.model import CONFIG_PATH, RepoConfig, build_config, default_config
from bot.repoconfig.pointers import find_line
from bot.repoconfig.problems import ConfigError, ConfigProblem
from bot.repoconfig.reader import Unreadable, read_document
from bot.repoconfig.validation import find_problems


def parse_repo_config(
    text: str | bytes | None, *, source: str = CONFIG_PATH, commit: str | None = None
) -> RepoConfig:
    """Parse and validate the file's text (None: the file is absent, so the defaults apply).

    Raises ConfigError carrying every problem found, each with its line and JSON pointer.
    """
    if text is None:
        return default_config()
    try:
        document = read_document(text)
    except Unreadable as unreadable:
        raise ConfigError(unreadable.problems, source=source, commit=commit) from None
    problems = find_problems(document.data)
    if problems:
        located = [
            ConfigProblem(p.pointer, p.message, find_line(p.pointer, document.lines))
            for p in problems
        ]
        raise ConfigError(located, source=source, commit=commit)
    return build_config(document.data)
