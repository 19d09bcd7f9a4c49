"""``python -m bot.repoconfig``: --docs prints the docs, --check exits 0, 1 or 2."""

from pathlib import Path

import pytest

from bot.repoconfig import (
    render_configuration_docs,
)
from bot.repoconfig.cli import main
from tests.bot.repoconfig.confighelpers import EXAMPLE


def test_main_docs_prints_the_generated_docs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--docs"]) == 0
    assert capsys.readouterr().out == render_configuration_docs()


def test_main_check_reports_each_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model-guard.yml"
    path.write_text("gate:\n  min_plcc: 3\nbogus: 1\n", encoding="utf-8")
    assert main(["--check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:3: bogus: is not a known key; the keys here are "
        "alerts, commands, families, features, gate, nightly, promotion, registry, report, "
        "statistical, "
        "tracking_issue, version",
        f"{path}:2: gate.min_plcc: must be at most 1, not `3`",
    ]


def test_main_check_accepts_the_example_and_refuses_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", str(EXAMPLE)]) == 0
    assert "valid; gate plcc >= 0.9" in capsys.readouterr().out
    assert main(["--check", str(tmp_path / "absent.yml")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_main_policy_prints_the_block_verdict_verify_reads_back_equal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pull-request check and ``verdict verify --policy`` judge by the same policy."""
    from bot.repoconfig import parse_repo_config
    from engine.policy import load_policy

    path = tmp_path / "model-guard.yml"
    path.write_text("version: 1\npromotion:\n  min_mean_plcc: 0.98\n  min_sources: 4\n")
    assert main(["--policy", str(path)]) == 0
    printed = tmp_path / "policy.json"
    printed.write_text(capsys.readouterr().out)
    assert load_policy(printed) == parse_repo_config(path.read_bytes()).promotion
    path.write_text("promotion:\n  min_mean_plcc: 7\n")
    assert main(["--policy", str(path)]) == 1
    assert "min_mean_plcc" in capsys.readouterr().err


def test_main_check_reports_a_lone_surrogate_escape_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model-guard.yml"
    path.write_bytes(b'registry: a.json\ntracking_issue:\n  label: "\\uD800"\n')
    assert main(["--check", str(path)]) == 1
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith(f"{path}:3: tracking_issue.label: contains `\\uD800`, a lone UTF-16")
