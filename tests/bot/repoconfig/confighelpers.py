"""Shared by the tests of bot.repoconfig: the checkout's files, and parsing what must fail."""

from pathlib import Path

import pytest

from bot.repoconfig import ConfigError, ConfigProblem, parse_repo_config

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "model-guard.example.yml"
DEFAULTS = ROOT / "config" / "defaults.yml"


def problems_of(text: str | bytes) -> tuple[ConfigProblem, ...]:
    """Parse text that must be invalid and return its problems."""
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    return caught.value.problems


def only_problem(text: str | bytes) -> ConfigProblem:
    """Parse text that must have exactly one problem and return it."""
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]
