"""Declared preprocessing, codec vocabularies as data and quantised twins, end to end on the golden cache.

Every model is built here with onnx.helper (IR 9, opset 17) from fixed weights, scored by
the real scorer and judged by the real bisect; expected numbers come from numpy.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.codec import X264_PRESETS, VocabularyInvalid, codec_vocabulary, parse_vocabulary
from engine.evaluation import EvaluationStore, Evaluator, refs_from_registry
from engine.evidence import schema_problems
from engine.features import FEATURES, load_features
from engine.hashing import sha256_file
from engine.metrics import plcc
from engine.registry import load_registry, validate_registry
from engine.threshold import Thresholds
from tests.engine.onnx_factory import int8_model, linear_model, make_model

GOLDEN = Path(__file__).resolve().parents[2] / "testdata" / "bisect" / "features.parquet"
# The graph's own feature order, as a sidecar of the field declares it.
ORDER = ["motion2", "vif_scale3", "adm2", "vif_scale2", "vif_scale0", "vif_scale1"]
# Encoder vocabularies in the shape of the field's 14- and 18-wide codec blocks.
VOCAB_12 = [
    "libx264", "libx265", "libsvtav1", "libvvenc", "libvpx-vp9", "h264_nvenc",
    "hevc_nvenc", "av1_nvenc", "h264_qsv", "hevc_qsv", "av1_qsv", "unknown",
]  # fmt: skip
VOCAB_16 = [
    "libx264", "libaom-av1", "libx265", "h264_nvenc", "hevc_nvenc", "av1_nvenc",
    "h264_amf", "hevc_amf", "av1_amf", "h264_qsv", "hevc_qsv", "av1_qsv",
    "libvvenc", "libsvtav1", "h264_videotoolbox", "hevc_videotoolbox",
]  # fmt: skip


@pytest.fixture(scope="module")
def golden() -> Any:
    return load_features(GOLDEN)


# --- models -----------------------------------------------------------------------------


def standardised_mlp(table: Any) -> tuple[bytes, list[float], list[float]]:
    """A ReLU MLP fitted on standardised features in ``ORDER``; returns bytes, mean, std.

    Random hidden weights (seed 1), output layer by least squares: on standardised input
    it tracks the MOS, on raw input its hidden units sit in the wrong place.
    """
    x = table.matrix().astype(np.float64)[:, [FEATURES.index(name) for name in ORDER]]
    mean, std = x.mean(axis=0), x.std(axis=0)
    rng = np.random.default_rng(1)
    hidden, offset = rng.normal(size=(6, 16)), rng.normal(size=16)
    h = np.maximum((x - mean) / std @ hidden + offset, 0)
    solution, *_ = np.linalg.lstsq(np.c_[h, np.ones(len(h))], table.target(), rcond=None)
    f32 = np.float32
    model = make_model(
        [
            helper.make_node("MatMul", ["features", "w1"], ["a"]),
            helper.make_node("Add", ["a", "b1"], ["z"]),
            helper.make_node("Relu", ["z"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["o"]),
            helper.make_node("Add", ["o", "b2"], ["score"]),
        ],
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializers=[
            numpy_helper.from_array(hidden.astype(f32), "w1"),
            numpy_helper.from_array(offset.astype(f32), "b1"),
            numpy_helper.from_array(solution[:-1].reshape(16, 1).astype(f32), "w2"),
            numpy_helper.from_array(np.array([solution[-1]], dtype=f32), "b2"),
        ],
    )
    return model.SerializeToString(), mean.tolist(), std.tolist()


def codec_linear(width: int, codec_name: str, weights: np.ndarray) -> bytes:
    """``score = concat(features, <codec_name>) @ weights`` over a [N, width] codec input."""
    model = make_model(
        [
            helper.make_node("Concat", ["features", codec_name], ["joined"], axis=1),
            helper.make_node("MatMul", ["joined", "w"], ["score"]),
        ],
        inputs=[
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info(codec_name, TensorProto.FLOAT, ["N", width]),
        ],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializers=[numpy_helper.from_array(weights.reshape(-1, 1).astype(np.float32), "w")],
    )
    return model.SerializeToString()


def expected_block(table: Any, slots: list[str], unknown: str | None) -> np.ndarray:
    """The codec block written out by hand: one-hot over ``slots``, preset rank / 9, crf / 63."""
    rows = []
    for encoder, param in zip(table.frame["encoder"], table.frame["param"], strict=True):
        pairs = dict(item.split("=") for item in param.split(","))
        one_hot = [0.0] * len(slots)
        slot = encoder if encoder in slots else unknown
        if slot is not None:
            one_hot[slots.index(slot)] = 1.0
        level = pairs["preset"]  # x264 names, or SVT-AV1 numbers 0 (slowest) .. 13
        preset = (13 - int(level)) / 13 if level.isdigit() else X264_PRESETS.index(level) / 9
        rows.append([*one_hot, preset, float(pairs["crf"]) / 63])
    return np.array(rows, dtype=np.float64)


# --- registry helpers ---------------------------------------------------------------------


def write_registry(folder: Path, rows: list[dict[str, Any]], **top: Any) -> Path:
    """Write the ONNX bytes each row carries under ``_bytes`` and a registry naming them."""
    models = []
    for timeline, row in enumerate(rows):
        row = dict(row)
        data = row.pop("_bytes")
        (folder / row["onnx"]).write_bytes(data)
        models.append(
            {
                "kind": "fr",
                "sha256": sha256_file(folder / row["onnx"]),
                "smoke": True,
                "opset": 17,
                "license": "MIT",
                "timeline": timeline,
                **row,
            }
        )
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, **top, "models": models}, indent=1))
    return path


def bisect(
    registry: Path, tmp: Path, *, features: Path = GOLDEN, min_plcc: float = 0.5
) -> tuple[int, dict[str, Any]]:
    """Run ``model-guard bisect --full`` and return the exit code and the JSON report."""
    out = tmp / "report.json"
    code = main(
        [
            "bisect", "--registry", str(registry), "--features", str(features),
            "--min-plcc", str(min_plcc), "--no-cache", "--full", "--json", str(out),
        ]
    )  # fmt: skip
    return code, json.loads(out.read_text()) if out.exists() else {}


def step_plcc(report: dict[str, Any], name: str) -> float:
    step = next(step for step in report["steps"] if step["name"] == name)
    assert step["broken"] is None, step["broken"]
    return float(step["metrics"]["plcc"])


def sidecar(path: Path, **keys: Any) -> str:
    path.write_text(json.dumps(keys))
    return path.name


# --- 3. declared preprocessing ------------------------------------------------------------


def test_standardised_model_scores_as_its_sidecar_says_and_would_fail_raw(
    tmp_path: Path, golden: Any
) -> None:
    data, mean, std = standardised_mlp(golden)
    declared = sidecar(
        tmp_path / "std.json",
        feature_order=ORDER,
        feature_mean=mean,
        feature_std=std,
        input_names=["features"],
        output_names=["score"],
        training={"ignored": True},
    )
    registry = write_registry(
        tmp_path,
        [
            {"id": "raw", "onnx": "raw.onnx", "_bytes": data},
            {"id": "std", "onnx": "std.onnx", "sidecar": declared, "_bytes": data},
        ],
    )
    assert validate_registry(registry) == []
    _code, report = bisect(registry, tmp_path)
    standardised, raw = step_plcc(report, "std"), step_plcc(report, "raw")
    assert standardised > 0.97  # 0.9726 on the golden cache
    assert raw < 0.1  # 0.0545: the same bytes fed raw
    statuses = {step["name"]: step["status"] for step in report["steps"]}
    assert statuses == {"raw": "fail", "std": "pass"}
    # The model's bytes are as shipped: same file hash for both rows.
    rows = json.loads(registry.read_text())["models"]
    assert rows[0]["sha256"] == rows[1]["sha256"]


def test_inline_preprocess_matches_the_sidecar_and_wins_over_it(
    tmp_path: Path, golden: Any
) -> None:
    data, mean, std = standardised_mlp(golden)
    wrong = sidecar(tmp_path / "wrong.json", feature_mean=[0] * 6, feature_std=[1] * 6)
    preprocess = {"feature_order": ORDER, "mean": mean, "std": std}
    registry = write_registry(
        tmp_path,
        [{"id": "m", "onnx": "m.onnx", "sidecar": wrong, "preprocess": preprocess, "_bytes": data}],
    )
    _code, report = bisect(registry, tmp_path)
    assert step_plcc(report, "m") > 0.97


def test_a_changed_sidecar_is_scored_again(tmp_path: Path, golden: Any) -> None:
    data, mean, std = standardised_mlp(golden)
    side = tmp_path / "m.json"
    sidecar(side, feature_order=ORDER, feature_mean=mean, feature_std=std)
    registry = write_registry(
        tmp_path, [{"id": "m", "onnx": "m.onnx", "sidecar": "m.json", "_bytes": data}]
    )
    store = EvaluationStore(tmp_path / "store")

    def evaluate() -> tuple[float, int]:
        refs = refs_from_registry(load_registry(registry))
        evaluator = Evaluator(refs, golden, Thresholds(min_plcc=0.5), store=store)
        record = evaluator(0)
        assert record.metrics is not None
        return record.metrics.plcc, evaluator.from_store

    first, _ = evaluate()
    again, from_store = evaluate()
    assert (again, from_store) == (first, 1)
    sidecar(side, feature_order=ORDER, feature_mean=[0.0] * 6, feature_std=[1.0] * 6)
    changed, from_store = evaluate()
    assert from_store == 0 and changed < 0.5 and changed != first


def test_bad_standardisation_is_one_line_per_problem_and_never_scored_raw(
    tmp_path: Path, golden: Any
) -> None:
    data, mean, std = standardised_mlp(golden)
    bad_order = [*ORDER[:5], "psnr"]
    bad_mean = [*mean[:5], "inf"]
    bad_std = [std[0], 0, -1.0, *std[3:]]
    declared = sidecar(
        tmp_path / "m.json", feature_order=bad_order, feature_mean=bad_mean, feature_std=bad_std
    )
    registry = write_registry(
        tmp_path, [{"id": "m", "onnx": "m.onnx", "sidecar": declared, "_bytes": data}]
    )
    problems = [str(problem) for problem in validate_registry(registry)]
    assert all(
        "\n" not in line and line.startswith("registry.json#/models/0/sidecar: ")
        for line in problems
    )
    assert len(problems) == 4
    assert any(
        "sidecar/feature_order: must list exactly the six canonical features" in p for p in problems
    )
    assert any('sidecar/feature_mean/5: must be a finite number, not "inf"' in p for p in problems)
    assert any(
        "sidecar/feature_std/1: must be a positive finite number, not 0" in p for p in problems
    )
    assert any(
        "sidecar/feature_std/2: must be a positive finite number, not -1.0" in p for p in problems
    )
    code, report = bisect(registry, tmp_path)
    step = report["steps"][0]
    assert step["metrics"] is None and "feature_order" in step["broken"]
    assert code == 2


def test_a_missing_sidecar_or_unknown_graph_names_are_reported(tmp_path: Path, golden: Any) -> None:
    data, _mean, _std = standardised_mlp(golden)
    names = sidecar(tmp_path / "names.json", input_names=["feats"], output_names=["vmaf"])
    registry = write_registry(
        tmp_path,
        [
            {"id": "gone", "onnx": "gone.onnx", "sidecar": "gone.json", "_bytes": data},
            {"id": "names", "onnx": "names.onnx", "sidecar": names, "_bytes": data},
            {"id": "inline", "onnx": "inline.onnx", "inputs": {"features": "x"}, "_bytes": data},
        ],
    )
    problems = [str(problem) for problem in validate_registry(registry)]
    assert problems[0].startswith("registry.json#/models/0/sidecar: sidecar gone.json: not found")
    assert problems[1] == (
        "registry.json#/models/1/sidecar: declared features input 'feats' is not "
        "an input of the graph (it has 'features')"
    )
    assert problems[2].startswith("registry.json#/models/2/inputs: declared features input 'x'")
    assert len(problems) == 3


# --- 4. codec vocabularies as data ----------------------------------------------------------


@pytest.mark.parametrize(
    ("slots", "unknown", "name", "where"),
    [
        (VOCAB_12, "unknown", "codec", "sidecar"),
        (VOCAB_16, None, "codec_block", "sidecar"),
        (VOCAB_16, None, "codec_onehot", "registry"),
    ],
)
def test_codec_aware_models_score_with_their_declared_vocabulary(
    tmp_path: Path, golden: Any, slots: list[str], unknown: str | None, name: str, where: str
) -> None:
    width = len(slots) + 2
    weights = np.concatenate([[80.0, 5.0, 5.0, 5.0, 5.0, -0.5], np.linspace(-3, 3, width)]).astype(
        np.float32
    )
    layout = [f"encoder_onehot[{slot}]" for slot in slots] + ["preset_norm", "crf_norm"]
    row: dict[str, Any] = {
        "id": "c",
        "onnx": "c.onnx",
        "_bytes": codec_linear(width, name, weights),
    }
    top: dict[str, Any] = {}
    if where == "sidecar":
        row["sidecar"] = sidecar(
            tmp_path / "c.json",
            encoder_vocab=slots,
            encoder_vocab_version=3,
            codec_block_layout=layout,
            input_names=["features", name],
        )
    else:
        top["codec_vocabularies"] = {
            "hw16": {
                "version": "v3",
                "encoders": slots,
                "unknown": unknown,
                "extra_columns": [
                    {"name": "preset_norm", "from": "param", "key": "preset",
                     "names": list(X264_PRESETS), "min": 0, "max": 13, "reverse": True},
                    {"name": "crf_norm", "from": "param", "key": "crf", "min": 0, "max": 63},
                ],
                "layout": layout,
            }
        }  # fmt: skip
        row.update(codec_vocabulary="hw16", inputs={"features": "features", "codec": name})
    registry = write_registry(tmp_path, [row], **top)
    assert validate_registry(registry) == []
    block = expected_block(golden, slots, unknown)
    assert block.shape[1] == width
    expected = plcc(
        (np.c_[golden.matrix().astype(np.float64), block] @ weights).astype(np.float32),
        golden.target(),
    )
    _, report = bisect(registry, tmp_path)
    assert step_plcc(report, "c") == pytest.approx(expected, abs=1e-4)


def test_the_project_vocabulary_v1_is_a_declaration_like_any_other() -> None:
    v1 = codec_vocabulary(1)
    assert parse_vocabulary(v1.declaration()) == v1
    assert v1.to_dict() == {
        "version": 1,
        "width": 6,
        "columns": list(v1.columns),
        "encoders": ["libx264", "libx265", "libsvtav1"],
        "presets": list(X264_PRESETS),
        "numeric_preset_max": 13,
        "crf_max": 63.0,
    }


def test_bad_vocabulary_declarations_are_one_line_each() -> None:
    with pytest.raises(VocabularyInvalid) as caught:
        parse_vocabulary(
            {
                "version": 2,
                "encoders": ["libx264", "LIBX264", "libx265"],
                "unknown": "other",
                "extra_columns": [
                    {"name": "crf_norm", "from": "param", "key": "crf", "min": 63, "max": 0}
                ],
                "layout": ["encoder=libx264", "crf_norm", "bogus"],
                "colour": "blue",
            }
        )
    problems = caught.value.problems
    assert all("\n" not in line for line in problems)
    assert problems == (
        "codec_vocabulary/colour: unknown key",
        "codec_vocabulary/encoders/1: 'LIBX264' is listed twice",
        "codec_vocabulary/unknown: 'other' is not one of the encoders (or null)",
        "codec_vocabulary/extra_columns/0: min and max must be finite numbers with min < max",
        "codec_vocabulary/layout/2: 'bogus' is neither an encoder slot nor an extra column",
    )


def test_a_codec_width_contradicting_the_vocabulary_is_a_validation_problem(
    tmp_path: Path,
) -> None:
    weights = np.ones(6 + 18, dtype=np.float32)
    declared = sidecar(
        tmp_path / "c.json",
        encoder_vocab=VOCAB_12,
        codec_block_layout=[f"encoder_onehot[{slot}]" for slot in VOCAB_12]
        + ["preset_norm", "crf_norm"],
        input_names=["features", "codec_block"],
    )
    registry = write_registry(
        tmp_path,
        [
            {
                "id": "c",
                "onnx": "c.onnx",
                "sidecar": declared,
                "_bytes": codec_linear(18, "codec_block", weights),
            }
        ],
    )
    problems = [str(problem) for problem in validate_registry(registry)]
    assert problems == [
        "registry.json#/models/0/sidecar: input 'codec_block' has 18 codec columns, expected 14"
    ]
    legacy = write_registry(
        tmp_path,
        [{"id": "l", "onnx": "l.onnx", "codec": {"vocabulary_version": 1, "width": 7},
          "_bytes": codec_linear(6, "codec", np.ones(12, dtype=np.float32))}],
    )  # fmt: skip
    assert [str(p) for p in validate_registry(legacy)] == [
        "registry.json#/models/0/codec/width: registry says the codec block is 7 wide, vocabulary v1 is 6"
    ]


def test_a_cache_without_the_vocabulary_columns_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(GOLDEN).drop_columns(["param"]), tmp_path / "plain.parquet")
    declared = sidecar(
        tmp_path / "c.json",
        encoder_vocab=VOCAB_16,
        encoder_vocab_version=3,
        codec_block_layout=[f"encoder_onehot[{slot}]" for slot in VOCAB_16]
        + ["preset_norm", "crf_norm"],
        input_names=["features", "codec_block"],
    )
    registry = write_registry(
        tmp_path,
        [{"id": "c", "onnx": "c.onnx", "sidecar": declared,
          "_bytes": codec_linear(18, "codec_block", np.ones(24, dtype=np.float32))}],
    )  # fmt: skip
    code, _ = bisect(registry, tmp_path, features=tmp_path / "plain.parquet")
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert (
        "needs the columns 'encoder' and 'param' (codec vocabulary 3), and 'param' is missing"
        in err
    )


# --- 5. quantised twins -------------------------------------------------------------------


def fitted_weight(table: Any) -> np.ndarray:
    """Least-squares linear weights over the raw six features (float32 [6, 1])."""
    x = table.matrix().astype(np.float64)
    solution, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], table.target(), rcond=None)
    return solution[:6].reshape(6, 1).astype(np.float32)


def test_int8_twins_within_and_over_budget(
    tmp_path: Path, golden: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    weight = fitted_weight(golden)
    skewed = weight.copy()
    skewed[5] *= -20  # motion2 turned against the MOS: a much worse twin
    registry = write_registry(
        tmp_path,
        [
            {"id": "fp32", "onnx": "fp32.onnx", "quant_accuracy_budget_plcc": 0.02,
             "_bytes": linear_model(weight, bias=0.0).SerializeToString()},
            {"id": "fp32.int8", "onnx": "fp32.int8.onnx", "quantised_from": "fp32",
             "_bytes": int8_model(weight).SerializeToString()},
            {"id": "bad.int8", "onnx": "bad.int8.onnx", "quantised_from": "fp32",
             "_bytes": int8_model(skewed).SerializeToString()},
        ],
    )  # fmt: skip
    assert validate_registry(registry) == []
    assert [entry.id for entry in load_registry(registry).timeline_models] == ["fp32"]
    code, report = bisect(registry, tmp_path)
    out = capsys.readouterr().out
    assert report["timeline"]["models"] == ["fp32"]
    parent = step_plcc(report, "fp32")
    good, bad = report["quantised_twins"]
    assert (good["twin"], good["parent"], good["budget"], good["passed"]) == (
        "fp32.int8",
        "fp32",
        0.02,
        True,
    )
    assert good["parent_plcc"] == pytest.approx(parent, abs=1e-9)
    assert 0 <= good["drop"] <= 0.02 and good["drop"] == pytest.approx(parent - good["twin_plcc"])
    assert bad["passed"] is False and bad["drop"] > 0.02
    assert "over the budget 0.02" in bad["reason"]
    assert "fp32.int8 vs fp32: pass" in out and "bad.int8 vs fp32: FAIL" in out
    assert out.splitlines()[0].endswith("But 1 quantised twin(s) fail their PLCC budget: bad.int8.")
    assert f"drop {bad['drop']:.4f}, budget 0.02" in out
    assert report["outcome"] == "no_regression"  # the parent itself passes
    assert code == 2  # but the run fails for the twin over budget
    assert list(schema_problems(report, "bisect-report.schema.json")) == []


def test_twin_budget_defaults_to_one_hundredth_and_a_dangling_parent_is_a_problem(
    tmp_path: Path, golden: Any
) -> None:
    weight = fitted_weight(golden)
    registry = write_registry(
        tmp_path,
        [
            {"id": "p", "onnx": "p.onnx", "_bytes": linear_model(weight, bias=0.0).SerializeToString()},
            {"id": "t", "onnx": "t.onnx", "quantised_from": "p", "_bytes": int8_model(weight).SerializeToString()},
            {"id": "u", "onnx": "u.onnx", "quantised_from": "nobody", "_bytes": int8_model(weight).SerializeToString()},
        ],
    )  # fmt: skip
    assert [str(p) for p in validate_registry(registry)] == [
        "registry.json#/models/2/quantised_from: parent 'nobody' is not a row of this registry"
    ]
    rows = json.loads(registry.read_text())
    rows["models"].pop()
    registry.write_text(json.dumps(rows))
    assert {entry.id: entry.quant_budget_plcc for entry in load_registry(registry).twins} == {
        "t": 0.01
    }
    code, report = bisect(registry, tmp_path)
    (check,) = report["quantised_twins"]
    # This int8 twin loses 0.0113 PLCC (0.9705 -> 0.9592): within 0.02, over the default 0.01.
    assert check["drop"] == pytest.approx(0.0113, abs=0.002)
    assert (check["budget"], check["passed"], code) == (0.01, False, 2)
    assert report["outcome"] == "no_regression"


def test_pull_request_check_binds_a_sidecar_declared_codec_model_and_fetches_its_sidecar(
    tmp_path: Path,
) -> None:
    from engine.policy import PromotionPolicy
    from engine.registry_review import changed_model_files, review_registry_change

    folder = tmp_path / "model"
    folder.mkdir()
    layout = [f"encoder_onehot[{slot}]" for slot in VOCAB_16] + ["preset_norm", "crf_norm"]
    declared = sidecar(
        folder / "c.json",
        encoder_vocab=VOCAB_16,
        codec_block_layout=layout,
        input_names=["features", "codec_block"],
    )
    weights = np.ones(24, dtype=np.float32)
    write_registry(
        folder,
        [
            {
                "id": "c",
                "onnx": "c.onnx",
                "sidecar": declared,
                "_bytes": codec_linear(18, "codec_block", weights),
            }
        ],
    )
    assert changed_model_files(None, tmp_path, "model/registry.json") == (
        "model/c.onnx",
        "model/c.json",
    )
    review = review_registry_change(None, tmp_path, "model/registry.json", policy=PromotionPolicy())
    assert review.annotations == ()
