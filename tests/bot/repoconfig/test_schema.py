"""The schema: shipped in the package, a copy of config/, complete for every key."""

import json
import tomllib
from importlib import resources

from jsonschema import Draft202012Validator

from bot.repoconfig import (
    config_schema,
    parse_repo_config,
)
from tests.bot.repoconfig.confighelpers import ROOT


def test_packaged_schema_is_a_byte_identical_copy_of_config() -> None:
    source = (ROOT / "config" / "model-guard.schema.json").read_bytes()
    packaged = (ROOT / "bot" / "schemas" / "model-guard.schema.json").read_bytes()
    assert packaged == source, "copy config/model-guard.schema.json to bot/schemas/"


def test_schema_is_read_from_the_package_data_an_installed_app_ships() -> None:
    packaged = resources.files("bot.schemas").joinpath("model-guard.schema.json")
    assert config_schema() == json.loads(packaged.read_text(encoding="utf-8"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "schemas/*.json" in pyproject["tool"]["setuptools"]["package-data"]["bot"]
    assert parse_repo_config("gate: {max_rmse: 3}\n").max_rmse == 3.0


def test_schema_is_valid_draft_2020_12_and_handed_out_as_a_copy() -> None:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    schema["properties"].clear()
    assert config_schema()["properties"]


def test_every_schema_key_has_a_title_description_and_default() -> None:
    for name, spec in config_schema()["properties"].items():
        for key, child in [(name, spec), *spec.get("properties", {}).items()]:
            assert {"title", "description", "default"} <= set(child), key
