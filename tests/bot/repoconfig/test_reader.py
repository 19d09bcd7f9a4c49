"""The strict YAML reader: every hostile input refused with its line, nothing expanded."""

import pytest

from bot.repoconfig import (
    MAX_CONFIG_BYTES,
    ConfigError,
    parse_repo_config,
)
from tests.bot.repoconfig.confighelpers import only_problem, problems_of


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


# ---- invalid unicode: a YAML escape may name what is no character -------------------------


@pytest.mark.parametrize(
    ("text", "pointer", "line"),
    [
        ('tracking_issue:\n  label: "\\uD800"\n', "/tracking_issue/label", 2),
        ('registry: "models/\\udc00.json"\n', "/registry", 1),
        ('alerts:\n  mention:\n    - "@octocat"\n    - "@a\\uDBFF"\n', "/alerts/mention/1", 4),
        ('nightly:\n  schedule: "\\U0000D800 4 * * *"\n', "/nightly/schedule", 2),
        ('"\\uD800": 1\n', "", 1),
        ('gate:\n  min_plcc: 0.9\n  "min_\\uDFFF": 1\n', "/gate", 3),
        ('features: "a\n  b\n  \\uD800c"\n', "/features", 3),
    ],
    ids=["label", "path", "nested-list", "long-escape", "top-key", "nested-key", "third-line"],
)
def test_lone_surrogate_escape_is_refused_at_its_key_and_line(
    text: str, pointer: str, line: int
) -> None:
    problem = only_problem(text)
    assert (problem.pointer, problem.line) == (pointer, line)
    assert "lone UTF-16 surrogate, which is not a Unicode character" in problem.message


def test_surrogate_problem_never_carries_the_surrogate_into_what_github_is_sent() -> None:
    for text in ('"\\uD800": 1\n', 'tracking_issue:\n  "\\uD800": 1\n', 'registry: "\\uD800"\n'):
        with pytest.raises(ConfigError) as caught:
            parse_repo_config(text)
        error = caught.value
        # The check run and the comment are JSON sent as UTF-8: a surrogate would not encode.
        error.markdown().encode("utf-8")
        error.one_line().encode("utf-8")
        for problem in error.problems:
            (problem.pointer + problem.message).encode("utf-8")
        assert "\\uD800" in error.markdown()


def test_surrogate_pair_escape_is_refused_with_the_escape_that_means_it() -> None:
    problem = only_problem('registry: "models/\\uD83D\\uDE00.json"\n')
    assert problem.pointer == "/registry"
    assert "`\\uD83D\\uDE00`, a UTF-16 surrogate pair" in problem.message
    assert "write `\\U0001F600`" in problem.message


def test_escape_beyond_the_last_unicode_character_is_refused_with_its_line() -> None:
    problem = only_problem('registry: a\nfeatures: "\\U00110000"\n')
    assert problem.line == 2 and "beyond U+10FFFF" in problem.message


def test_escapes_of_real_characters_are_read() -> None:
    config = parse_repo_config('tracking_issue:\n  label: "caf\\u00e9 \\U0001F600"\n')
    assert config.tracking_label == "café 😀"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (b"\xffregistry: a\n", 1),
        (b"registry: a\nfeatures: b\n\ntracking_issue:\n  label: \xed\xa0\x80\n", 5),
        (b"registry: a\nfeatures: \xc3\n", 2),
    ],
    ids=["first-byte", "utf8-encoded-surrogate", "truncated-sequence"],
)
def test_bytes_that_are_not_utf8_are_one_problem_at_the_bad_bytes_line(
    text: bytes, line: int
) -> None:
    problem = only_problem(text)
    assert (problem.pointer, problem.line) == ("", line)
    assert "is not UTF-8 text" in problem.message
