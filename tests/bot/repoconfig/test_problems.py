"""The error and its explanation: one line for a log, markdown for a comment or check run."""

import pytest

from bot.errors import BotError
from bot.repoconfig import (
    CONFIG_PATH,
    MAX_SHOWN_PROBLEMS,
    ConfigError,
    ConfigProblem,
    parse_repo_config,
)


def test_config_error_is_a_bot_error_carrying_source_and_commit() -> None:
    with pytest.raises(BotError) as caught:
        parse_repo_config("version: 3\n", source="x/model-guard.yml", commit="abc")
    assert isinstance(caught.value, ConfigError)
    assert (caught.value.source, caught.value.commit) == ("x/model-guard.yml", "abc")


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


def test_one_line_shows_a_key_with_control_characters_as_printable_text() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config('"a\\0b\\x1b": 1\n')
    line = caught.value.one_line()
    assert line.startswith(".github/model-guard.yml: line 1, a?b?: is not a known key")
    assert line.isprintable()
