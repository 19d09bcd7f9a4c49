"""Codec-aware models (a second input ``codec`` [N, K]) through safe scoring and the bisect."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.codec import codec_block, codec_vocabulary
from engine.features import load_features
from engine.hashing import sha256_file
from engine.metrics import plcc
from engine.scoring import inspect_model, score_model

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
K = codec_vocabulary().width
FEATURE_WEIGHTS = np.array([80.0, 5.0, 5.0, 5.0, 5.0, -0.5], dtype=np.float32)


def codec_model(path: Path, *, width: int = K) -> Path:
    """A linear model over the six features and the codec block, built with onnx.helper."""
    weights = np.concatenate(
        [FEATURE_WEIGHTS, np.linspace(-2, 2, width, dtype=np.float32)]
    ).reshape(-1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["features", "codec"], ["joined"], axis=1),
            helper.make_node("MatMul", ["joined", "w"], ["score"]),
        ],
        "codec-linear",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("codec", TensorProto.FLOAT, ["N", width]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path.write_bytes(model.SerializeToString())
    return path


def registry(folder: Path, *, codec: dict[str, int] | None) -> Path:
    path = codec_model(folder / "codec-v1.onnx")
    row = {
        "id": "codec-v1",
        "kind": "fr-codec",
        "onnx": path.name,
        "sha256": sha256_file(path),
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "timeline": 0,
    }
    if codec is not None:
        row["codec"] = codec
    target = folder / "registry.json"
    target.write_text(json.dumps({"schema_version": 1, "models": [row]}))
    return target


def test_codec_model_scores_with_the_block_built_from_the_cache(tmp_path: Path) -> None:
    table = load_features(BISECT / "features.parquet")
    checked = inspect_model(codec_model(tmp_path / "m.onnx"), codec_width=K)
    block = codec_block(table)
    scores = score_model(checked, table.matrix(), codec=block)
    weights = np.concatenate([FEATURE_WEIGHTS, np.linspace(-2, 2, K, dtype=np.float32)])
    expected = np.concatenate([table.matrix(), block], axis=1) @ weights
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_bisect_judges_a_codec_aware_registry_row(tmp_path: Path) -> None:
    table = load_features(BISECT / "features.parquet")
    weights = np.concatenate([FEATURE_WEIGHTS, np.linspace(-2, 2, K, dtype=np.float32)])
    expected = plcc(
        np.concatenate([table.matrix(), codec_block(table)], axis=1) @ weights, table.target()
    )
    reg = registry(tmp_path, codec={"vocabulary_version": 1, "width": K})
    out = tmp_path / "r.json"
    code = main(
        [
            "bisect",
            "--registry",
            str(reg),
            "--features",
            str(BISECT / "features.parquet"),
            "--min-plcc",
            "0.5",
            "--no-cache",
            "--json",
            str(out),
        ]
    )
    step = json.loads(out.read_text())["steps"][0]
    assert step["broken"] is None
    assert step["metrics"]["plcc"] == pytest.approx(expected, abs=1e-4)
    assert code == (0 if expected >= 0.5 else 2)


def test_two_input_model_without_a_codec_row_is_broken_with_a_hint(tmp_path: Path) -> None:
    reg = registry(tmp_path, codec=None)
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "bisect",
                "--registry",
                str(reg),
                "--features",
                str(BISECT / "features.parquet"),
                "--min-plcc",
                "0.5",
                "--no-cache",
                "--json",
                str(out),
            ]
        )
        == 2
    )
    assert (
        "needs a registry row with a codec block"
        in json.loads(out.read_text())["steps"][0]["broken"]
    )


def test_codec_width_that_disagrees_with_the_vocabulary_is_broken(tmp_path: Path) -> None:
    reg = registry(tmp_path, codec={"vocabulary_version": 1, "width": K + 1})
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "bisect",
                "--registry",
                str(reg),
                "--features",
                str(BISECT / "features.parquet"),
                "--min-plcc",
                "0.5",
                "--no-cache",
                "--json",
                str(out),
            ]
        )
        == 2
    )
    assert "codec" in json.loads(out.read_text())["steps"][0]["broken"]


def test_cache_without_codec_columns_cannot_score_a_codec_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(BISECT / "features.parquet").drop_columns(["encoder", "param"])
    pq.write_table(table, tmp_path / "plain.parquet")
    reg = registry(tmp_path, codec={"vocabulary_version": 1, "width": K})
    code = main(
        [
            "bisect",
            "--registry",
            str(reg),
            "--features",
            str(tmp_path / "plain.parquet"),
            "--min-plcc",
            "0.5",
            "--no-cache",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "encoder" in err and err.count("\n") == 1


def test_registry_without_codec_is_unchanged_for_plain_models(tmp_path: Path) -> None:
    copy = tmp_path / "regression"
    shutil.copytree(BISECT / "regression", copy)
    assert main(["registry", "validate", str(copy / "registry.json")]) == 0
