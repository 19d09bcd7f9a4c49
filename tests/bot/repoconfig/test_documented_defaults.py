"""config/defaults.yml stays in step with Settings and with the schema's defaults."""

import ast
import dataclasses
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import BotError
from bot.repoconfig import (
    default_config,
)
from bot.settings import Settings
from tests.bot.repoconfig.confighelpers import DEFAULTS, ROOT


def _env_names_read_by_settings() -> set[str]:
    """Return every environment variable name bot/settings.py passes to a call."""
    tree = ast.parse((ROOT / "bot" / "settings.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for argument in node.args:
                value = argument.value if isinstance(argument, ast.Constant) else None
                if isinstance(value, str) and value.isupper() and value.isidentifier():
                    names.add(value)
    return names


def _service_defaults() -> dict[str, dict[str, Any]]:
    service: dict[str, dict[str, Any]] = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))[
        "service"
    ]
    return service


def test_defaults_yml_lists_exactly_the_variables_settings_reads() -> None:
    read = _env_names_read_by_settings()
    assert "GITHUB_WEBHOOK_SECRET" in read and "PORT" in read  # the walk finds env.get/_integer
    assert set(_service_defaults()) == read


def test_defaults_yml_sets_every_settings_field() -> None:
    documented = {entry["setting"] for entry in _service_defaults().values()}
    assert documented == {field.name for field in dataclasses.fields(Settings)}


def test_defaults_yml_defaults_are_what_settings_from_env_applies() -> None:
    settings = Settings.from_env({"GITHUB_WEBHOOK_SECRET": "s"})
    for name, entry in _service_defaults().items():
        assert {"setting", "required", "default", "meaning"} <= set(entry), name
        if entry["required"]:
            continue
        actual = getattr(settings, entry["setting"])
        if isinstance(actual, Path):
            actual = str(actual)
        elif isinstance(actual, Enum):
            actual = actual.value
        assert actual == entry["default"], name


def test_defaults_yml_required_variables_are_required() -> None:
    for name, entry in _service_defaults().items():
        if entry["required"]:
            with pytest.raises(BotError, match=name):
                Settings.from_env({})


def test_defaults_yml_repository_defaults_are_the_schema_defaults() -> None:
    documented = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))["repository"]
    assert documented == default_config().to_dict()
