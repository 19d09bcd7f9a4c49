"""Tests of .github/model-guard.yml: defaults, the example, every hostile input, the explanation."""

import ast
import dataclasses
import json
import tomllib
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from bot import repoconfig
from bot.errors import BotError
from bot.repoconfig import (
    CONFIG_PATH,
    MAX_CONFIG_BYTES,
    MAX_SHOWN_PROBLEMS,
    REGENERATE_DOCS,
    ConfigError,
    ConfigProblem,
    Permission,
    RepoConfig,
    config_schema,
    default_config,
    parse_repo_config,
    render_configuration_docs,
)
from bot.settings import Settings
from engine.threshold import Thresholds

ROOT = Path(__file__).resolve().parents[2]
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


# -- defaults and valid files ------------------------------------------------------------


def test_absent_file_gives_the_defaults() -> None:
    config = parse_repo_config(None)
    assert config == default_config()
    assert config.registry == "model/registry.json"
    assert config.features == "testdata/bisect/features.parquet"
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


# -- hostile input -----------------------------------------------------------------------


def test_bytes_that_are_not_utf8_are_refused_with_their_line() -> None:
    problem = only_problem(b"registry: a\nfeatures: caf\xe9.parquet\n")
    assert problem.line == 2
    assert "not UTF-8" in problem.message and "0xe9" in problem.message


def test_text_that_cannot_be_utf8_is_refused() -> None:
    assert "not UTF-8" in only_problem("registry: \udcff\n").message


def test_file_over_the_size_limit_is_refused_before_parsing() -> None:
    text = b"# " + b"x" * MAX_CONFIG_BYTES + b"\n"
    problem = only_problem(text)
    assert f"limit is {MAX_CONFIG_BYTES} bytes" in problem.message
    assert str(len(text)) in problem.message


def test_file_at_the_size_limit_is_read() -> None:
    text = b"registry: a.json\n#" + b"x" * (MAX_CONFIG_BYTES - 19) + b"\n"
    assert len(text) == MAX_CONFIG_BYTES
    assert parse_repo_config(text).registry == "a.json"


def test_yaml_syntax_error_reports_its_line_and_column() -> None:
    problem = only_problem("registry: a.json\ngate:\n  min_plcc: [0.9\nfeatures: b\n")
    assert problem.pointer == ""
    assert problem.line == 4
    assert "not valid YAML (column 9)" in problem.message
    assert "flow sequence" in problem.message


def test_unquoted_cron_star_is_explained_as_quoting() -> None:
    problem = only_problem("nightly:\n  schedule: * 4 * * *\n")
    assert problem.line == 2
    assert "quote a value that starts with *" in problem.message


def test_two_documents_are_refused() -> None:
    problem = only_problem("registry: a\n---\nregistry: b\n")
    assert problem.line == 2
    assert "single document" in problem.message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just text\n", "text"), ("42\n", "a whole number")],
)
def test_top_level_that_is_not_a_mapping_is_refused(text: str, kind: str) -> None:
    problem = only_problem(text)
    assert problem.pointer == "" and problem.line == 1
    assert problem.message.endswith(f"not {kind}")


def test_duplicate_keys_are_each_reported_with_both_lines() -> None:
    text = "registry: a\ngate:\n  min_plcc: 0.9\n  min_plcc: 0.8\nregistry: b\n"
    problems = problems_of(text)
    assert [(p.pointer, p.line) for p in problems] == [("/gate/min_plcc", 4), ("/registry", 5)]
    assert "first at line 3" in problems[0].message
    assert "first at line 1" in problems[1].message


def test_quoted_and_plain_spellings_of_a_key_are_duplicates() -> None:
    assert only_problem("registry: a\n'registry': b\n").pointer == "/registry"


def test_billion_laughs_is_refused_at_the_first_alias_without_expanding() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    problem = only_problem("\n".join(lines) + "\n")  # expanded, this is 9**9 strings
    assert problem.line == 2  # refused at the first alias, before anything was expanded
    assert "alias `*a`" in problem.message and "not allowed" in problem.message


def test_merge_keys_are_refused() -> None:
    problem = only_problem("gate:\n  <<: {min_plcc: 0.9}\n")
    assert (problem.pointer, problem.line) == ("/gate", 2)
    assert "merge key" in problem.message


def test_python_object_tag_is_refused_in_one_line() -> None:
    problem = only_problem("registry: !!python/object/apply:os.system ['echo hi']\n")
    assert (problem.pointer, problem.line) == ("/registry", 1)
    assert "\n" not in problem.message
    assert "`!!python/object/apply:os.system`" in problem.message


def test_local_tags_and_binary_are_refused() -> None:
    problems = problems_of("registry: !secret a\nfeatures: !!binary aGk=\n")
    assert [p.pointer for p in problems] == ["/features", "/registry"]


def test_unquoted_date_is_refused_with_a_hint_to_quote() -> None:
    problem = only_problem("tracking_issue:\n  label: 2024-05-01\n")
    assert problem.pointer == "/tracking_issue/label"
    assert "reads as a date" in problem.message and "quote it" in problem.message


def test_keys_that_are_not_names_are_refused() -> None:
    problem = only_problem("1: a\n")
    assert problem.line == 1 and "not a name" in problem.message


def test_control_character_is_refused_with_its_line() -> None:
    problem = only_problem("registry: a\nfeatures: b\x00c\n")
    assert problem.line == 2 and "#x00" in problem.message


def test_deep_nesting_is_refused_without_a_traceback() -> None:
    assert "nested too deeply" in only_problem("[" * 5000 + "]" * 5000).message


def test_integer_with_thousands_of_digits_is_refused() -> None:
    assert "too many digits" in only_problem("statistical:\n  seed: " + "9" * 5000 + "\n").message


def test_unknown_key_names_the_key_and_suggests_the_closest_known_one() -> None:
    problem = only_problem("gate:\n  min_plc: 0.9\n  min_srocc: 0.8\n")
    assert (problem.pointer, problem.line) == ("/gate/min_plc", 2)
    assert problem.message == "is not a known key; did you mean `min_plcc`?"


def test_unknown_top_level_key_suggests_the_section() -> None:
    problem = only_problem("comands:\n  min_permission: admin\n")
    assert problem.pointer == "/comands"
    assert "did you mean `commands`?" in problem.message


def test_key_in_the_wrong_section_names_the_section_it_belongs_to() -> None:
    problem = only_problem("min_permission: admin\n")
    assert problem.message == "is not a known key here; it belongs under `commands:`"


def test_unknown_key_far_from_any_lists_the_known_keys() -> None:
    message = only_problem("nightly:\n  zzz: 1\n").message
    assert message == "is not a known key; the keys here are enabled, schedule"


@pytest.mark.parametrize(
    ("text", "pointer", "expected"),
    [
        ("registry: 5\n", "/registry", "must be text, not a whole number (`5`); quote it"),
        ("tracking_issue:\n  label: no\n", "/tracking_issue/label", "not a boolean (`false`)"),
        ("statistical:\n  enabled: 'yes'\n", "/statistical/enabled", "must be true or false"),
        ("statistical:\n  bootstrap: 1000.5\n", "/statistical/bootstrap", "a whole number"),
        ("gate:\n  min_plcc: high\n", "/gate/min_plcc", "must be a number or null, not text"),
        ("gate: [0.9]\n", "/gate", "must be a mapping, not a list"),
        ("nightly: true\n", "/nightly", "must be a mapping, not a boolean"),
        ("gate:\n", "/gate", "must be a mapping, not null; write its keys indented below it"),
        ("registry:\n", "/registry", "must be text, not null"),
    ],
)
def test_wrong_types_say_what_was_expected_and_what_was_found(
    text: str, pointer: str, expected: str
) -> None:
    problem = only_problem(text)
    assert problem.pointer == pointer
    assert expected in problem.message


@pytest.mark.parametrize(
    ("text", "pointer", "expected"),
    [
        ("gate:\n  min_plcc: 1.5\n", "/gate/min_plcc", "must be at most 1, not `1.5`"),
        ("gate:\n  min_plcc: 0\n", "/gate/min_plcc", "must be greater than 0, not `0`"),
        ("gate:\n  min_srocc: -0.2\n", "/gate/min_srocc", "must be greater than 0, not `-0.2`"),
        ("gate:\n  max_rmse: 0\n", "/gate/max_rmse", "must be greater than 0, not `0`"),
        ("statistical:\n  bootstrap: 99\n", "/statistical/bootstrap", "at least 100"),
        ("statistical:\n  bootstrap: 100001\n", "/statistical/bootstrap", "at most 100000"),
        ("statistical:\n  confidence: 0.5\n", "/statistical/confidence", "greater than 0.5"),
        ("statistical:\n  confidence: 1\n", "/statistical/confidence", "less than 1, not `1`"),
        ("statistical:\n  seed: -1\n", "/statistical/seed", "at least 0"),
        ("version: 2\n", "/version", "must be `1`, not `2`"),
    ],
)
def test_values_out_of_range_name_the_bound(text: str, pointer: str, expected: str) -> None:
    problem = only_problem(text)
    assert problem.pointer == pointer
    assert expected in problem.message


@pytest.mark.parametrize(
    ("text", "pointer"),
    [
        ("gate:\n  min_plcc: .nan\n", "/gate/min_plcc"),
        ("gate:\n  max_rmse: .inf\n", "/gate/max_rmse"),
    ],
)
def test_nan_and_infinity_are_refused_once(text: str, pointer: str) -> None:
    problem = only_problem(text)
    assert problem.pointer == pointer and "must be a finite number" in problem.message


@pytest.mark.parametrize(
    "text", ["gate: {}\n", "gate:\n  min_plcc: null\n  min_srocc: ~\n  max_rmse: null\n"]
)
def test_gate_without_any_threshold_is_refused(text: str) -> None:
    problem = only_problem(text)
    assert (problem.pointer, problem.line) == ("/gate", 1)
    assert "at least one threshold" in problem.message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../models/registry.json", "no '..' segment"),
        ("model/../../etc/passwd", "no '..' segment"),
        ("model/..", "no '..' segment"),
        ("/etc/passwd", "no leading '/'"),
        ("model\\\\registry.json", "not '\\'"),
        ("model//registry.json", "empty or '.' segments"),
        ("./model/registry.json", "empty or '.' segments"),
        ("model/", "empty or '.' segments"),
        ("", "must not be empty"),
    ],
)
def test_paths_that_leave_or_misname_the_repository_are_refused(path: str, expected: str) -> None:
    problem = only_problem(f'features: "{path}"\n')
    assert (problem.pointer, problem.line) == ("/features", 1)
    assert expected in problem.message


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("61 4 * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("a b c d e", "not a valid cron expression"),
        ("0 4 * *", "must be five cron fields"),
        ("0 4 * * * *", "must be five cron fields"),
        ("@daily", "must be five cron fields"),
        ("*/30 * * * *", "fires more than once an hour"),
        ("0,30 4 * * *", "fires more than once an hour"),
        ("* 4 * * *", "fires more than once an hour"),
        ("0-5 4 * * *", "fires more than once an hour"),
    ],
)
def test_bad_or_too_frequent_schedules_are_refused(schedule: str, expected: str) -> None:
    problem = only_problem(f"nightly:\n  schedule: '{schedule}'\n")
    assert (problem.pointer, problem.line) == ("/nightly/schedule", 2)
    assert expected in problem.message


def test_unknown_permission_lists_the_roles_and_suggests_one() -> None:
    problem = only_problem("commands:\n  min_permission: mantain\n")
    assert problem.pointer == "/commands/min_permission"
    assert "one of read, triage, write, maintain, admin" in problem.message
    assert "did you mean `maintain`?" in problem.message


def test_owner_is_not_a_permission() -> None:
    assert "not `owner`" in only_problem("commands:\n  min_permission: owner\n").message


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("a" * 51, "at most 50 characters"),
        ("bug,regression", "must not contain a comma"),
        (" padded", "must not start or end with a space"),
    ],
)
def test_labels_github_cannot_use_are_refused(label: str, expected: str) -> None:
    problem = only_problem(f'tracking_issue:\n  label: "{label}"\n')
    assert expected in problem.message


def test_every_problem_is_collected_and_sorted_by_pointer() -> None:
    text = (
        "registry: ../x.json\n"
        "gate:\n  min_plcc: 2\n  max_rmse: -1\n"
        "nightly:\n  schedule: '*/5 * * * *'\n"
        "commands:\n  min_permission: boss\n"
        "extra: 1\n"
    )
    problems = problems_of(text)
    assert [(p.pointer, p.line) for p in problems] == [
        ("/commands/min_permission", 8),
        ("/extra", 9),
        ("/gate/max_rmse", 4),
        ("/gate/min_plcc", 3),
        ("/nightly/schedule", 6),
        ("/registry", 1),
    ]


def test_config_error_is_a_bot_error_carrying_source_and_commit() -> None:
    with pytest.raises(BotError) as caught:
        parse_repo_config("version: 3\n", source="x/model-guard.yml", commit="abc")
    assert isinstance(caught.value, ConfigError)
    assert (caught.value.source, caught.value.commit) == ("x/model-guard.yml", "abc")


# -- the explanation ---------------------------------------------------------------------


def test_markdown_names_the_file_commit_line_key_and_fix() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("registry: a\ngate:\n  min_plcc: 1.2\n", commit=sha)
    text = caught.value.markdown(docs_url="https://example.test/docs/configuration.md")
    assert f"`{CONFIG_PATH}`" in text
    assert "`0123456789ab`" in text
    assert "it has 1 problem." in text
    assert "- line 3, `gate.min_plcc`: must be at most 1, not `1.2`" in text
    assert "Expected: a number or null, greater than 0, at most 1" in text
    assert "[docs/configuration.md](https://example.test/docs/configuration.md)" in text
    assert "Fix `.github/model-guard.yml` and push" in text


def test_markdown_commit_argument_overrides_and_no_docs_url_names_the_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("version: 3\n")
    text = caught.value.markdown(commit="feedface")
    assert "at commit `feedface`" in text
    assert "`docs/configuration.md` of model-guard" in text


def test_markdown_lists_problems_in_file_order() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("registry: ../a\nfeatures: /b\ncommands: {min_permission: x}\n")
    lines = [line for line in caught.value.markdown().splitlines() if line.startswith("- line")]
    assert [line.split(",")[0] for line in lines] == ["- line 1", "- line 2", "- line 3"]


def test_markdown_keeps_user_text_inside_code_spans() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config('"@octocat <b>`x`</b> [a](b)": 1\n')
    text = caught.value.markdown()
    bullet = next(line for line in text.splitlines() if line.startswith("- line 1"))
    assert bullet.startswith("- line 1, `@octocat <b>'x'</b> [a](b)`: is not a known key")
    assert "<b>" not in bullet.split("`")[2]


def test_markdown_caps_the_problem_list_and_counts_the_rest() -> None:
    count = MAX_SHOWN_PROBLEMS + 5
    text = "".join(f"unknown_{index}: 1\n" for index in range(count))
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    rendered = caught.value.markdown()
    assert f"it has {count} problems." in rendered
    assert sum(line.startswith("- line") for line in rendered.splitlines()) == MAX_SHOWN_PROBLEMS
    assert "- … and 5 more." in rendered


def test_one_line_is_a_single_line_with_the_first_problem_and_a_count() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config("gate:\n  min_plcc: 2\n  max_rmse: -1\n")
    line = caught.value.one_line()
    assert "\n" not in line
    assert line.startswith(".github/model-guard.yml: line 3, gate.max_rmse: must be greater than 0")
    assert line.endswith("(and 1 more problem)")
    assert str(caught.value) == line


def test_problem_describes_whole_file_problems_without_a_key() -> None:
    assert (
        ConfigProblem("", "is not UTF-8 text", 2).describe() == "line 2, the file is not UTF-8 text"
    )
    assert ConfigProblem("/a~1b/c", "x").describe() == "a/b.c: x"


# -- schema, generated docs, documented defaults -----------------------------------------


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


def test_committed_configuration_docs_are_the_generated_ones() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_configuration_docs(), f"regenerate: {REGENERATE_DOCS}"


def test_docs_show_every_key_and_the_sample_explanation() -> None:
    docs = render_configuration_docs()
    for name, spec in config_schema()["properties"].items():
        assert f"### `{name}`" in docs
        for child in spec.get("properties", {}):
            assert f"#### `{name}.{child}`" in docs
    assert "> - line 3, `gate.min_plcc`: must be at most 1, not `1.2`" in docs


def test_main_docs_prints_the_generated_docs(capsys: pytest.CaptureFixture[str]) -> None:
    assert repoconfig.main(["--docs"]) == 0
    assert capsys.readouterr().out == render_configuration_docs()


def test_main_check_reports_each_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model-guard.yml"
    path.write_text("gate:\n  min_plcc: 3\nbogus: 1\n", encoding="utf-8")
    assert repoconfig.main(["--check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:3: bogus: is not a known key; the keys here are "
        "commands, features, gate, nightly, registry, report, statistical, tracking_issue, version",
        f"{path}:2: gate.min_plcc: must be at most 1, not `3`",
    ]


def test_main_check_accepts_the_example_and_refuses_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert repoconfig.main(["--check", str(EXAMPLE)]) == 0
    assert "valid; gate plcc >= 0.9" in capsys.readouterr().out
    assert repoconfig.main(["--check", str(tmp_path / "absent.yml")]) == 2
    assert "No such file" in capsys.readouterr().err


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
