"""Validation: each schema violation explained at its key, with the fix it most likely needs."""

import pytest

from bot.repoconfig import parse_repo_config
from tests.bot.repoconfig.confighelpers import only_problem, problems_of


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
        ("0 0 30 2 *", "never fires: no date in the next 366 days"),
        ("0 4 31 4,6,9,11 *", "never fires: no date in the next 366 days"),
    ],
)
def test_bad_or_too_frequent_schedules_are_refused(schedule: str, expected: str) -> None:
    problem = only_problem(f"nightly:\n  schedule: '{schedule}'\n")
    assert (problem.pointer, problem.line) == ("/nightly/schedule", 2)
    assert expected in problem.message


def test_never_firing_schedule_gives_the_reason_at_the_schedule_line() -> None:
    problem = only_problem('version: 1\nnightly:\n  enabled: true\n  schedule: "0 0 30 2 *"\n')
    assert (problem.pointer, problem.line) == ("/nightly/schedule", 4)
    assert problem.message == "`0 0 30 2 *` never fires: no date in the next 366 days"


@pytest.mark.parametrize(
    "schedule",
    # 29 February, the last day of February, and 30 February OR every Monday (cron's rule
    # when both day fields are given) all come within a year of the reference.
    ["0 0 29 2 *", "0 0 L 2 *", "0 0 30 2 1", "0 0 31 12 *", "59 23 * * 0"],
)
def test_rare_but_possible_schedules_are_accepted(schedule: str) -> None:
    assert parse_repo_config(f"nightly:\n  schedule: '{schedule}'\n").schedule == schedule


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
