"""``registry validate`` and the bisect agree (issue 11, item 4): one admission check, one reason.

Every model the test suite's fixtures make the bisect call broken before scoring is
collected in ``BROKEN`` below, each as the head of a two-model registry. For each, the
full bisect (``bisect --full``) must call it broken, and ``registry validate`` must report
a problem on its row with exactly the bisect's reason; and a registry ``registry validate``
calls ok must never have a broken step. Failures that need the model to run (NaN
predictions, onnxruntime failing at run time, the memory and time budget) are left to
scoring by design (``engine/admission.py``) and are not in this list.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.hashing import sha256_file
from tests.engine import attack_models
from tests.engine import onnx_factory as factory
from tests.engine.test_codec_scoring import codec_model
from tests.engine.test_evaluation import HOSTILE

ROOT = Path(__file__).resolve().parents[2]
BISECT = ROOT / "testdata" / "bisect"
GOOD = BISECT / "regression" / "fr-mlp-v05.onnx"
MODEL_MIB = "1"  # the cap the oversized fixture needs, given to both commands
Row = dict[str, Any]


def row(folder: Path, name: str, timeline: int, **changes: Any) -> Row:
    """A registry row for ``folder/name.onnx`` whose sha256 is the file's (or zeros when absent)."""
    path = folder / f"{name}.onnx"
    found = {
        "id": name,
        "kind": "fr",
        "onnx": path.name,
        "sha256": sha256_file(path) if path.is_file() else "0" * 64,
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "timeline": timeline,
    }
    found.update(changes)
    return found


def listed(folder: Path, *names: str) -> list[dict[str, str]]:
    """External-data entries with the files' real hashes."""
    return [{"path": name, "sha256": sha256_file(folder / name)} for name in names]


def _hostile(case: str) -> Callable[[Path], Row]:
    def build(folder: Path) -> Row:
        HOSTILE[case][0](folder / "bad.onnx")
        return row(folder, "bad", 1)

    return build


def _hash_mismatch(folder: Path) -> Row:
    shutil.copy(GOOD, folder / "bad.onnx")
    return row(folder, "bad", 1, sha256="0" * 64)


def _missing_file(folder: Path) -> Row:
    return row(folder, "bad", 1)


def _not_onnx(folder: Path) -> Row:
    (folder / "bad.onnx").write_bytes(b"this is a README, not a model\n")
    return row(folder, "bad", 1)


def _sparse_bomb(folder: Path) -> Row:
    factory.save(attack_models.sparse_bomb_model(), folder / "bad.onnx")
    return row(folder, "bad", 1)


def _external_unlisted(folder: Path) -> Row:
    factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    return row(folder, "bad", 1)


def _external_listed_not_read(folder: Path) -> Row:
    factory.save(factory.linear_model(), folder / "bad.onnx")
    (folder / "w.bin").write_bytes(b"weights of another model")
    return row(folder, "bad", 1, external_data=listed(folder, "w.bin"))


def _external_missing(folder: Path) -> Row:
    factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    entries = listed(folder, "w.bin")
    (folder / "w.bin").unlink()
    return row(folder, "bad", 1, external_data=entries)


def _external_wrong_hash(folder: Path) -> Row:
    factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    return row(folder, "bad", 1, external_data=[{"path": "w.bin", "sha256": "1" * 64}])


def _external_is_a_folder(folder: Path) -> Row:
    factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    (folder / "w.bin").unlink()
    (folder / "w.bin").mkdir()
    return row(folder, "bad", 1, external_data=[{"path": "w.bin", "sha256": "1" * 64}])


def _external_symlink_out(folder: Path) -> Row:
    factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    outside = folder.parent / "outside.bin"
    (folder / "w.bin").rename(outside)
    os.symlink(outside, folder / "w.bin")
    return row(folder, "bad", 1, external_data=[{"path": "w.bin", "sha256": sha256_file(outside)}])


def _external_insane_entry(folder: Path) -> Row:
    path = factory.save_external(factory.linear_model(), folder / "bad.onnx", location="w.bin")
    model = onnx.load_model(str(path), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "basepath", "/etc"
    factory.save(model, path)
    return row(folder, "bad", 1, external_data=listed(folder, "w.bin"))


def _two_inputs_without_codec_row(folder: Path) -> Row:
    codec_model(folder / "bad.onnx")
    return row(folder, "bad", 1, kind="fr-codec")


def _codec_width_against_vocabulary(folder: Path) -> Row:
    codec_model(folder / "bad.onnx", width=7)
    return row(folder, "bad", 1, kind="fr-codec", codec={"vocabulary_version": 1, "width": 7})


def _codec_width_against_model(folder: Path) -> Row:
    codec_model(folder / "bad.onnx", width=5)
    return row(folder, "bad", 1, kind="fr-codec", codec={"vocabulary_version": 1, "width": 6})


def _unknown_codec_vocabulary(folder: Path) -> Row:
    codec_model(folder / "bad.onnx")
    return row(folder, "bad", 1, kind="fr-codec", codec={"vocabulary_version": 9, "width": 6})


def _integer_input(folder: Path) -> Row:
    model = factory.make_model(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["xf", "w"], ["y"]),
        ],
        inputs=[factory.features(elem_type=TensorProto.INT64)],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )
    factory.save(model, folder / "bad.onnx")
    return row(folder, "bad", 1)


def _opset_too_new(folder: Path) -> Row:
    model = factory.linear_model()
    model.opset_import[0].version = 99
    factory.save(model, folder / "bad.onnx")
    return row(folder, "bad", 1)


BROKEN: dict[str, Callable[[Path], Row]] = {
    **{f"hostile: {case}": _hostile(case) for case in sorted(HOSTILE) if case != "NaN output"},
    "sha256 mismatch": _hash_mismatch,
    "missing model file": _missing_file,
    "not ONNX at all": _not_onnx,
    "sparse initializer bomb": _sparse_bomb,
    "external data read but not listed": _external_unlisted,
    "external data listed but not read": _external_listed_not_read,
    "external data listed but missing": _external_missing,
    "external data with the wrong hash": _external_wrong_hash,
    "external data that is a folder": _external_is_a_folder,
    "external data symlinked out of the folder": _external_symlink_out,
    "external data entry with an unknown key": _external_insane_entry,
    "two inputs without a codec row": _two_inputs_without_codec_row,
    "codec width against the vocabulary": _codec_width_against_vocabulary,
    "codec width against the model's input": _codec_width_against_model,
    "unknown codec vocabulary": _unknown_codec_vocabulary,
    "integer input": _integer_input,
    "opset over the maximum": _opset_too_new,
}


def registry_with_head(folder: Path, build: Callable[[Path], Row]) -> Path:
    """A registry of the good fr-mlp-v05 (timeline 0) and the fixture's model (timeline 1)."""
    folder.mkdir()
    shutil.copy(GOOD, folder / "good.onnx")
    # Both rows name their family: a regressor of that timeline whose graph does not fit is
    # broken there (a row naming no family would be listed as not judged instead).
    rows = [{**row(folder, "good", 0), "family": "fr/test"}, {**build(folder), "family": "fr/test"}]
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, "models": rows}, indent=2))
    return path


def bisect_steps(registry: Path, tmp_path: Path) -> dict[str, dict[str, Any]] | None:
    """Run ``bisect --full`` over the registry; return its steps by model id (None: refused)."""
    out = tmp_path / "report.json"
    code = main(
        [
            "bisect",
            "--registry",
            str(registry),
            "--features",
            str(BISECT / "features.parquet"),
            "--min-plcc",
            "0.5",
            "--full",
            "--no-cache",
            "--max-model-mib",
            MODEL_MIB,
            "--json",
            str(out),
        ]
    )
    if code == 1:
        return None
    report = json.loads(out.read_text())
    # Every family's steps (a model may form a family of its own by its input signature).
    return {
        step["name"]: step
        for family in report.get("families") or [report]
        for step in family["steps"]
    }


def validate_lines(registry: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run ``registry validate``; return its exit code and its stdout lines."""
    capsys.readouterr()
    code = main(["registry", "validate", str(registry), "--max-model-mib", MODEL_MIB])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_registry_validate_reports_every_model_the_bisect_calls_broken_with_its_reason(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = registry_with_head(tmp_path / "reg", BROKEN[case])
    steps = bisect_steps(registry, tmp_path)
    if steps is None:  # the bisect refused the registry as a whole: validate says the same
        refusal = capsys.readouterr().err.strip().removeprefix("model-guard: error: ")
        assert validate_lines(registry, capsys) == (1, [refusal])
        return
    assert steps["good"]["broken"] is None
    reason = steps["bad"]["broken"]
    assert reason is not None, f"{case}: the bisect did not call the model broken"
    code, lines = validate_lines(registry, capsys)
    assert code == 1
    on_row = [line for line in lines if line.startswith("registry.json#/models/1")]
    assert on_row, lines
    assert any(line.split(": ", 1)[1] == reason for line in on_row), (reason, on_row)
    assert not any(line.startswith("registry.json#/models/0") for line in lines)


VALID = [
    ROOT / "model" / "registry.json",
    BISECT / "regression" / "registry.json",
    BISECT / "allgood" / "registry.json",
]


@pytest.mark.parametrize("registry", VALID, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_registry_validate_calls_ok_has_no_broken_step_in_the_bisect(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = validate_lines(registry, capsys)
    assert (code, lines) == (0, [f"{registry}: ok"])
    steps = bisect_steps(registry, tmp_path)
    assert steps is not None and all(step["broken"] is None for step in steps.values())


def test_a_codec_aware_registry_validate_calls_ok_is_scored_by_the_bisect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def codec_head(folder: Path) -> Row:
        codec_model(folder / "codec.onnx")
        return row(folder, "codec", 1, kind="fr-codec", codec={"vocabulary_version": 1, "width": 6})

    def external_head(folder: Path) -> Row:
        weight = np.linspace(-1, 1, 6, dtype=np.float32).reshape(6, 1)
        factory.save_external(factory.linear_model(weight), folder / "ext.onnx", location="e.bin")
        return row(folder, "ext", 1, external_data=listed(folder, "e.bin"))

    for name, build in {"codec": codec_head, "ext": external_head}.items():
        registry = registry_with_head(tmp_path / name, build)
        assert validate_lines(registry, capsys)[0] == 0
        steps = bisect_steps(registry, tmp_path)
        assert (
            steps is not None
            and steps[name]["broken"] is None
            and steps[name]["metrics"] is not None
        )
