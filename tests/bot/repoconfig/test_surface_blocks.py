"""The pull-request surfaces' blocks: promotion (the engine's gate), commands, alerts."""

import dataclasses

import pytest
import yaml

from bot.repoconfig import Permission, config_schema, default_config, parse_repo_config
from bot.repoconfig.schema import describe_expected
from engine.policy import PromotionPolicy
from tests.bot.repoconfig.confighelpers import only_problem, problems_of

# The file's keys are the engine policy's own field names (min_seeds is not offered: the
# file names its seeds).
FILE_KEYS = (
    "min_mean_plcc",
    "max_spread",
    "min_seed_plcc",
    "min_fold_plcc",
    "seeds",
    "min_sources",
)
ENGINE_DEFAULT = PromotionPolicy(seeds=(0, 1, 2, 3, 4))  # seeds None means 0-4 in the engine


def _engine_defaults() -> dict[str, object]:
    """Return the engine's promotion-policy defaults under the file's key names."""
    values = dataclasses.asdict(ENGINE_DEFAULT)
    return {
        key: list(v) if isinstance(v, tuple) else v for key, v in values.items() if key in FILE_KEYS
    }


# promotion


def test_schema_documents_the_engine_promotion_defaults() -> None:
    promotion = config_schema()["properties"]["promotion"]
    documented = {key: spec["default"] for key, spec in promotion["properties"].items()}
    assert documented == _engine_defaults()
    assert promotion["default"] == documented
    assert set(FILE_KEYS) <= {f.name for f in dataclasses.fields(PromotionPolicy)}


def test_promotion_defaults_are_the_engine_policy() -> None:
    config = default_config()
    assert config.promotion == ENGINE_DEFAULT
    assert parse_repo_config("promotion: {}\n").promotion == ENGINE_DEFAULT


def test_promotion_keys_build_the_engine_policy_and_left_out_keys_keep_its_defaults() -> None:
    config = parse_repo_config(
        "promotion:\n  min_mean_plcc: 0.9\n  min_fold_plcc: 0.8\n  seeds: [3, 1]\n"
        "  min_sources: 4\n"
    )
    assert config.promotion == PromotionPolicy(
        min_mean_plcc=0.9, min_fold_plcc=0.8, seeds=(3, 1), min_sources=4
    )


@pytest.mark.parametrize(
    "text",
    [
        "promotion: {min_mean_plcc: -1, min_seed_plcc: 1, min_fold_plcc: -1, max_spread: 0}\n",
        "promotion: {min_mean_plcc: 1, min_seed_plcc: -1, min_fold_plcc: 1, max_spread: 2}\n",
        "promotion: {seeds: [0], min_sources: 2}\n",
        "promotion: {seeds: [4294967295], min_sources: 10000}\n",
    ],
)
def test_every_bound_the_schema_accepts_the_engine_accepts(text: str) -> None:
    assert isinstance(parse_repo_config(text).promotion, PromotionPolicy)


@pytest.mark.parametrize(
    ("text", "pointer", "expected"),
    [
        ("promotion: {min_mean_plcc: 1.5}\n", "/promotion/min_mean_plcc", "at most 1, not `1.5`"),
        ("promotion: {min_seed_plcc: -2}\n", "/promotion/min_seed_plcc", "at least -1, not `-2`"),
        ("promotion: {min_fold_plcc: high}\n", "/promotion/min_fold_plcc", "a number or null"),
        ("promotion: {max_spread: -0.1}\n", "/promotion/max_spread", "at least 0, not `-0.1`"),
        ("promotion: {max_spread: 3}\n", "/promotion/max_spread", "at most 2, not `3`"),
        ("promotion: {max_spread: .nan}\n", "/promotion/max_spread", "a finite number"),
        ("promotion: {seeds: []}\n", "/promotion/seeds", "must not be an empty list"),
        ("promotion: {seeds: [0, 1, 1]}\n", "/promotion/seeds", "lists `1` more than once"),
        ("promotion: {seeds: [-1]}\n", "/promotion/seeds/0", "at least 0, not `-1`"),
        ("promotion: {seeds: [0.5]}\n", "/promotion/seeds/0", "a whole number, not a number"),
        ("promotion: {seeds: '0,1,2'}\n", "/promotion/seeds", "must be a list, not text"),
        ("promotion: {min_sources: 1}\n", "/promotion/min_sources", "at least 2, not `1`"),
        ("promotion: {min_sources: 2.5}\n", "/promotion/min_sources", "a whole number"),
        ("promotion: {seedz: [0]}\n", "/promotion/seedz", "did you mean `seeds`?"),
        ("promotion: {mean_plcc: 0.9}\n", "/promotion/mean_plcc", "did you mean `min_mean_plcc`?"),
        ("promotion: true\n", "/promotion", "must be a mapping, not a boolean"),
    ],
)
def test_promotion_values_are_checked_like_every_other_key(
    text: str, pointer: str, expected: str
) -> None:
    problem = only_problem(text)
    assert problem.pointer == pointer
    assert expected in problem.message


def test_too_many_seeds_are_refused() -> None:
    seeds = ", ".join(str(seed) for seed in range(101))
    assert (
        "at most 100 items, not 101" in only_problem(f"promotion: {{seeds: [{seeds}]}}\n").message
    )


def test_seeds_are_described_as_a_list_of_whole_numbers() -> None:
    assert describe_expected("/promotion/seeds") == (
        "a list of 1 to 100 items, each a whole number, at least 0, at most 4294967295; "
        "no item twice; default `[0, 1, 2, 3, 4]`"
    )


# commands


def test_commands_are_on_for_writers_by_default() -> None:
    config = default_config()
    assert config.commands_enabled is True
    assert config.min_permission is Permission.WRITE


def test_commands_can_be_switched_off_keeping_the_default_permission() -> None:
    config = parse_repo_config("commands:\n  enabled: false\n")
    assert config.commands_enabled is False
    assert config.min_permission is Permission.WRITE


@pytest.mark.parametrize(
    ("text", "pointer", "expected"),
    [
        ("commands: {enabled: 'no'}\n", "/commands/enabled", "must be true or false, not text"),
        ("commands: {min_permission: none}\n", "/commands/min_permission", "not `none`"),
        ("commands: {min_permission: writer}\n", "/commands/min_permission", "mean `write`?"),
        ("commands: {enable: false}\n", "/commands/enable", "did you mean `enabled`?"),
    ],
)
def test_commands_values_are_checked(text: str, pointer: str, expected: str) -> None:
    problem = only_problem(text)
    assert problem.pointer == pointer
    assert expected in problem.message


def test_every_permission_a_file_may_name_is_a_permission_value() -> None:
    allowed = config_schema()["properties"]["commands"]["properties"]["min_permission"]["enum"]
    assert allowed == [p.value for p in Permission if p is not Permission.NONE]


# alerts


def test_no_one_is_mentioned_by_default() -> None:
    assert default_config().mention == ()


@pytest.mark.parametrize(
    "handle",
    ["@octocat", "@a", "@octo-org/quality", "@Octo-Org/video_quality-2", "@" + "a" * 39],
)
def test_user_and_team_handles_are_accepted(handle: str) -> None:
    assert parse_repo_config(f'alerts:\n  mention: ["{handle}"]\n').mention == (handle,)


def test_handles_keep_their_order() -> None:
    config = parse_repo_config('alerts:\n  mention:\n    - "@b"\n    - "@a/x"\n')
    assert config.mention == ("@b", "@a/x")


@pytest.mark.parametrize(
    "handle",
    [
        "octocat",
        "@",
        "@-octocat",
        "@octocat-",
        "@octo--cat",
        "@octo cat",
        "@octo_cat",
        "@" + "a" * 40,
        "@org/",
        "@org/team/extra",
        "@org/-team",
        "@/team",
        "@octocat\n",
        "@\u043e\u0441tocat",
        "<@octocat>",
        "@octocat, @hubot",
    ],
)
def test_anything_but_a_handle_is_refused_at_its_item(handle: str) -> None:
    text = yaml.safe_dump({"alerts": {"mention": ["@fine", handle]}})
    problem = only_problem(text)
    assert problem.pointer == "/alerts/mention/1"
    assert problem.message.startswith('must be a GitHub handle, "@user" or "@org/team"')


def test_more_than_ten_handles_or_one_twice_are_refused() -> None:
    eleven = [f"@user{index}" for index in range(11)]
    problem = only_problem(yaml.safe_dump({"alerts": {"mention": eleven}}))
    assert problem.message == "must list at most 10 items, not 11"
    twice = only_problem('alerts:\n  mention: ["@a", "@b", "@a"]\n')
    assert (twice.pointer, twice.message) == ("/alerts/mention", "lists `@a` more than once")


def test_unquoted_handle_gets_the_hint_to_quote_it() -> None:
    problem = only_problem("alerts:\n  mention:\n    - @octocat\n")
    assert problem.line == 3
    assert 'quote a value that starts with @, e.g. `- "@octocat"`' in problem.message


def test_mention_of_a_wrong_type_is_refused() -> None:
    assert "must be a list, not text" in only_problem("alerts:\n  mention: '@octocat'\n").message
    problems = problems_of("alerts:\n  mention: [5]\n  notify: []\n")
    assert [p.pointer for p in problems] == ["/alerts/mention/0", "/alerts/notify"]


# the three blocks together


def test_schema_example_builds_the_surface_blocks() -> None:
    config = parse_repo_config(yaml.safe_dump(config_schema()["examples"][0]))
    assert config.promotion == PromotionPolicy(min_fold_plcc=0.9, seeds=(0, 1, 2), min_sources=4)
    assert config.mention == ("@octocat", "@octo-org/quality")
    assert config.commands_enabled is True
    assert parse_repo_config(yaml.safe_dump(config.to_dict())) == config
