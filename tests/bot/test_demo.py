"""``model-guard demo``: the whole App against the local sandbox shows a finished nightly run."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.demo import (
    DEFAULT_FEATURES,
    DEFAULT_REGISTRY,
    DemoError,
    demo_files,
    main_demo,
    run_demo,
)
from sandbox.records import CheckConclusion, CheckStatus

TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
MODEL_GUARD = Path(sys.executable).parent / "model-guard"


async def test_demo_of_the_regression_timeline_shows_a_red_check_naming_fr_mlp_v06() -> None:
    out = io.StringIO()
    result = await run_demo(out=out, timeout=120.0, pulls=False)
    assert result.check.status is CheckStatus.COMPLETED
    assert result.check.conclusion is CheckConclusion.FAILURE
    assert "fr-mlp-v06" in result.comment.body
    assert "❌ regression" in result.comment.body
    assert result.issue_title == "model-guard: nightly model-quality bisect"
    printed = out.getvalue()
    assert "signed webhook ping -> HTTP 200" in printed
    assert "conclusion failure" in printed
    assert result.comment.body in printed


async def test_demo_pull_requests_show_each_registry_check_a_maintainer_meets() -> None:
    """The regression fails, the honest promotion passes, a bare or lax flip fails naming why."""
    out = io.StringIO()
    result = await run_demo(out=out, timeout=120.0)
    seen = {pull.scenario.branch: pull for pull in result.pulls}
    assert {branch: pull.check.conclusion for branch, pull in seen.items()} == {
        "add-v06": CheckConclusion.FAILURE,
        "promote-ens": CheckConclusion.SUCCESS,
        "promote-bare": CheckConclusion.FAILURE,
        "promote-lax": CheckConclusion.FAILURE,
    }
    assert all(
        p.scenario.expect == p.check.conclusion.value for p in result.pulls if p.check.conclusion
    )
    assert "fr-mlp-2026.06" in (seen["add-v06"].check.output.title or "")
    assert "no PROMOTE verdict" in seen["promote-bare"].comment.body
    assert "promotion.min_mean_plcc" in seen["promote-lax"].comment.body
    printed = out.getvalue()
    assert printed.count("Check run model-guard/registry") == 4
    # The /bisect command: accepted, answered with the stricter gate in one result comment.
    assert result.command is not None
    assert result.command.reactions == ("eyes", "rocket")
    assert "/bisect --min-plcc 0.95" in result.command.result.body
    assert "plcc >= 0.95" in result.command.result.body
    assert "model-guard reacted 👀 🚀" in printed


async def test_demo_of_the_allgood_timeline_shows_a_green_check() -> None:
    out = io.StringIO()
    result = await run_demo(
        registry=TESTDATA / "allgood" / "registry.json", out=out, timeout=120.0, pulls=False
    )
    assert result.check.conclusion is CheckConclusion.SUCCESS
    assert "✅ no regression" in result.comment.body
    assert "fr-mlp-good-v07" in result.comment.body
    assert "conclusion success" in out.getvalue()


@pytest.mark.slow  # runs the console script
def test_model_guard_demo_command_exits_0_and_prints_the_red_check() -> None:
    done = subprocess.run(
        [str(MODEL_GUARD), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "conclusion failure" in done.stdout
    assert "fr-mlp-v06" in done.stdout
    assert "Traceback" not in done.stderr


def assert_install_the_demo_extra(stderr: str, missing: str) -> None:
    """One line, no traceback, naming the missing module and the extra to install."""
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith("model-guard: error: the demo needs the local GitHub sandbox")
    assert repr(missing) in line and "pip install 'model-guard[demo]'" in line


@pytest.mark.parametrize("missing", ["sandbox", "openapi_schema_validator"])
def test_demo_without_the_sandbox_or_the_demo_extra_says_to_install_it_in_one_line(
    missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Forget the demo and the sandbox (monkeypatch puts them back), then make `missing`
    # unimportable: None in sys.modules makes its import fail, as if it were not installed.
    for name in [
        n for n in sys.modules if n in {"bot.demo", "sandbox"} or n.startswith("sandbox.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["demo"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_install_the_demo_extra(captured.err, missing)


@pytest.mark.slow  # a Python process
def test_demo_in_a_python_without_the_sandbox_says_to_install_the_extra_in_one_line() -> None:
    # As in the service image, whose Python has no sandbox: the same, in a process of its own.
    code = "import sys; sys.modules['sandbox'] = None; from bot.cli import main; sys.exit(main(['demo']))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert_install_the_demo_extra(done.stderr, "sandbox")


def test_demo_with_a_missing_registry_is_a_one_line_error_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "registry.json"
    assert main_demo(registry=missing) == 1
    err = capsys.readouterr().err
    assert err == f"model-guard demo: registry {missing} not found\n"


def test_demo_command_with_a_missing_feature_cache_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "features.parquet"
    assert main(["demo", "--features", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"model-guard demo: feature cache {missing} not found\n"


def test_demo_repository_holds_the_config_registry_cache_and_every_model() -> None:
    files = demo_files(DEFAULT_REGISTRY, DEFAULT_FEATURES)
    models = {f"models/fr-mlp-v{i:02d}.onnx" for i in range(10)}
    assert set(files) == {
        ".github/model-guard.yml",
        "golden/features.parquet",
        "models/registry.json",
        *models,
    }
    assert files["models/registry.json"] == DEFAULT_REGISTRY.read_bytes()


def test_demo_repository_takes_models_in_subfolders_and_their_external_data(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "reg"
    shutil.copytree(TESTDATA / "regression", folder)
    (folder / "new").mkdir()
    (folder / "fr-mlp-v09.onnx").rename(folder / "new" / "fr-mlp-v09.onnx")
    (folder / "new" / "fr-mlp-v09.onnx.data").write_bytes(b"weights")
    (folder / "unrelated.onnx").write_bytes(b"not in the registry")
    document = json.loads((folder / "registry.json").read_text(encoding="utf-8"))
    document["models"][-1]["onnx"] = "new/fr-mlp-v09.onnx"
    document["models"][-1]["external_data"] = [{"path": "fr-mlp-v09.onnx.data", "sha256": "0" * 64}]
    (folder / "timeline.json").write_text(json.dumps(document), encoding="utf-8")
    files = demo_files(folder / "timeline.json", DEFAULT_FEATURES)
    assert files["models/new/fr-mlp-v09.onnx"] == (folder / "new" / "fr-mlp-v09.onnx").read_bytes()
    assert files["models/new/fr-mlp-v09.onnx.data"] == b"weights"
    assert files["models/registry.json"] == (folder / "timeline.json").read_bytes()
    assert "models/unrelated.onnx" not in files and "models/fr-mlp-v09.onnx" not in files


def test_demo_with_an_invalid_registry_is_a_one_line_error(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text('{"schema_version": 1, "models": []}', encoding="utf-8")
    with pytest.raises(DemoError) as raised:
        demo_files(registry, DEFAULT_FEATURES)
    text = str(raised.value)
    assert text.startswith(f"registry {registry}: ") and "\n" not in text
