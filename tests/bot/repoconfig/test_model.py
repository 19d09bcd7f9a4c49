"""The configuration model: the defaults, the example files and what a valid file builds."""

import pytest
import yaml
from jsonschema import Draft202012Validator

from bot.repoconfig import (
    ConfigError,
    Permission,
    RepoConfig,
    config_schema,
    default_config,
    parse_repo_config,
)
from engine.threshold import Thresholds
from tests.bot.repoconfig.confighelpers import DEFAULTS, EXAMPLE


def test_absent_file_gives_the_defaults() -> None:
    config = parse_repo_config(None)
    assert config == default_config()
    assert config.registry == "model/registry.json"
    assert config.features == "testdata/videos/real/features.parquet"
    assert config.thresholds() == Thresholds(min_plcc=0.9)
    assert config.tracking_label == "model-guard"
    assert config.schedule == "37 4 * * *"
    assert config.nightly_enabled is True
    assert config.min_permission is Permission.WRITE
    assert config.statistical is False


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", b"", "---\n"])
def test_empty_file_or_only_comments_gives_the_defaults(text: str | bytes) -> None:
    assert parse_repo_config(text) == default_config()


def test_dataclass_defaults_are_the_schema_defaults() -> None:
    schema = config_schema()
    expected = {name: spec["default"] for name, spec in schema["properties"].items()}
    assert RepoConfig() == default_config()
    assert default_config().to_dict() == expected


def test_example_file_validates_and_parses_to_the_documented_defaults() -> None:
    text = EXAMPLE.read_bytes()
    assert list(Draft202012Validator(config_schema()).iter_errors(yaml.safe_load(text))) == []
    config = parse_repo_config(text, source="config/model-guard.example.yml")
    documented = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))["repository"]
    assert config == default_config()
    assert config.to_dict() == documented


def test_example_file_shows_every_key_of_the_schema() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for name, spec in config_schema()["properties"].items():
        assert name in data, name
        for child in spec.get("properties", {}):
            assert child in data[name], f"{name}.{child}"


def test_schema_example_builds_the_values_it_states() -> None:
    example = config_schema()["examples"][0]
    config = parse_repo_config(yaml.safe_dump(example))
    assert config.registry == "models/registry.json"
    assert config.thresholds() == Thresholds(min_plcc=0.92, max_rmse=8.5)
    assert (config.statistical, config.bootstrap, config.seed) == (True, 2000, 7)
    assert config.tracking_label == "quality-regression"
    assert config.schedule == "15 2 * * 1-5"
    assert config.nightly_enabled is True  # nightly.enabled was left out: its default
    assert config.min_permission is Permission.MAINTAIN


def test_written_gate_replaces_the_default_gate() -> None:
    config = parse_repo_config("gate:\n  max_rmse: 8\n")
    assert config.thresholds() == Thresholds(max_rmse=8.0)
    assert config.thresholds().describe() == "rmse <= 8"


def test_section_keys_left_out_take_their_defaults() -> None:
    config = parse_repo_config("statistical:\n  enabled: true\nnightly:\n  enabled: false\n")
    assert (config.statistical, config.bootstrap, config.confidence, config.seed) == (
        True,
        1000,
        0.95,
        0,
    )
    assert config.nightly_enabled is False
    assert config.schedule == "37 4 * * *"


def test_metric_settings_resample_only_when_statistical() -> None:
    from engine.evaluation import MetricSettings

    statistical = parse_repo_config(
        "statistical: {enabled: true, bootstrap: 2000, confidence: 0.9, seed: 3}\n"
        "report: {logistic: true}\n"
    )
    assert statistical.metric_settings() == MetricSettings(
        statistical=True, bootstrap=2000, confidence=0.9, seed=3, logistic=True
    )
    assert default_config().metric_settings() == MetricSettings(statistical=False, bootstrap=0)


def test_to_dict_dumped_as_yaml_parses_back_to_the_same_config() -> None:
    config = parse_repo_config(yaml.safe_dump(config_schema()["examples"][0]))
    assert parse_repo_config(yaml.safe_dump(config.to_dict())) == config


def test_integral_floats_and_ints_are_read_as_their_types() -> None:
    config = parse_repo_config("gate: {min_plcc: 1}\nstatistical: {bootstrap: 500.0}\n")
    assert config.min_plcc == 1.0 and isinstance(config.min_plcc, float)
    assert config.bootstrap == 500 and isinstance(config.bootstrap, int)


def test_schedule_whitespace_is_normalised() -> None:
    assert parse_repo_config("nightly:\n  schedule: ' 0  3 * * 1 '\n").schedule == "0 3 * * 1"


def test_utf8_byte_order_mark_is_accepted() -> None:
    config = parse_repo_config("\ufefftracking_issue:\n  label: qualité\n".encode())
    assert config.tracking_label == "qualité"


@pytest.mark.parametrize("path", ["model/registry.json", "a.json", "deep/er/x-1_2.json", "..a/b"])
def test_relative_paths_inside_the_repository_are_accepted(path: str) -> None:
    assert parse_repo_config(f"registry: '{path}'\n").registry == path


@pytest.mark.parametrize("schedule", ["0 * * * *", "37 4 * * *", "15 2 * * 1-5", "5 */6 1 * *"])
def test_schedules_at_most_hourly_are_accepted(schedule: str) -> None:
    assert parse_repo_config(f"nightly:\n  schedule: '{schedule}'\n").schedule == schedule


def test_statistical_group_by_reaches_the_engine_and_unknown_columns_are_refused() -> None:
    config = parse_repo_config("statistical: {enabled: true, group_by: encoder}\n")
    assert config.metric_settings().group_by == "encoder"
    assert default_config().metric_settings().group_by is None
    with pytest.raises(ConfigError):
        parse_repo_config("statistical: {enabled: true, group_by: scene}\n")
