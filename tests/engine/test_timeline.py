"""A timeline read once, judged one model at a time and reported, on a folder laid out like a repository."""

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.bisection import Outcome, find_first_regression
from engine.errors import EngineError, RegistryError
from engine.evaluation import MetricSettings, StepRecord
from engine.registry import CodecSpec, ExternalData
from engine.report import TableFormat, render_table
from engine.threshold import StepStatus, Thresholds
from engine.timeline import (
    Timeline,
    assemble_report,
    judge_model,
    read_timeline,
    repo_path,
    timeline_of_files,
)

TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
REGISTRY = "ml/models/registry.json"
FEATURES = "golden/features.parquet"
GATE = Thresholds(min_plcc=0.9)
SETTINGS = MetricSettings()
SHA = "0" * 64


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A working copy: the regression registry two folders down, the cache in golden/."""
    repo = tmp_path / "checkout"
    shutil.copytree(TESTDATA / "regression", repo / "ml" / "models")
    (repo / "golden").mkdir()
    shutil.copyfile(TESTDATA / "features.parquet", repo / FEATURES)
    return repo


def write_registry(root: Path, models: list[dict[str, Any]]) -> None:
    document = {"schema_version": 1, "models": models}
    (root / REGISTRY).write_text(json.dumps(document), encoding="utf-8")


def entry(index: int, onnx: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"m{index}",
        "kind": "fr",
        "onnx": onnx,
        "sha256": SHA,
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "timeline": index,
        **extra,
    }


def judge(root: Path, index: int, cache: Path) -> StepRecord:
    timeline = read_timeline(root, REGISTRY, FEATURES)
    return judge_model(root, timeline, index, thresholds=GATE, settings=SETTINGS, store_dir=cache)


def test_repo_path_joins_a_registry_relative_name_onto_the_registry_folder() -> None:
    assert repo_path("ml/models/registry.json", "v1.onnx") == "ml/models/v1.onnx"
    assert repo_path("ml/models/registry.json", "old/v0.onnx") == "ml/models/old/v0.onnx"
    assert repo_path("registry.json", "v1.onnx") == "v1.onnx"


def test_read_timeline_lists_models_oldest_first_by_repository_path(root: Path) -> None:
    timeline = read_timeline(root, REGISTRY, FEATURES)
    assert (timeline.registry, timeline.features) == (REGISTRY, FEATURES)
    assert [m.name for m in timeline.models] == [f"fr-mlp-v{i:02d}" for i in range(10)]
    assert [m.onnx for m in timeline.models] == [
        f"ml/models/fr-mlp-v{i:02d}.onnx" for i in range(10)
    ]
    assert all(m.external == () and m.codec is None for m in timeline.models)
    assert timeline.feature_rows == 6048
    assert len(timeline.features_hash) == 64
    # It crosses the engine pool's pipe, so it must survive pickling unchanged.
    assert pickle.loads(pickle.dumps(timeline)) == timeline


def test_read_timeline_names_external_data_and_codec_by_repository_path(root: Path) -> None:
    write_registry(
        root,
        [
            entry(1, "v1/model.onnx", external_data=[{"path": "model.onnx.data", "sha256": SHA}]),
            entry(0, "v0.onnx", codec={"vocabulary_version": 1, "width": 6}),
        ],
    )
    timeline: Timeline = read_timeline(root, REGISTRY, FEATURES)
    old, new = timeline.models
    assert (old.name, old.onnx, old.external) == ("m0", "ml/models/v0.onnx", ())
    assert old.codec == CodecSpec(vocabulary_version=1, width=6)
    assert new.onnx == "ml/models/v1/model.onnx"
    assert new.external == ("ml/models/v1/model.onnx.data",)
    assert new.external_data == (ExternalData(path="model.onnx.data", sha256=SHA),)
    assert new.codec is None


@pytest.mark.parametrize(
    ("onnx", "message"),
    [
        ("../../outside.onnx", "must not contain '..'"),
        ("/abs/model.onnx", "must be relative to the registry folder, not absolute"),
    ],
)
def test_read_timeline_refuses_a_model_path_leaving_the_registry_folder_in_one_line(
    root: Path, onnx: str, message: str
) -> None:
    write_registry(root, [entry(0, onnx)])
    with pytest.raises(RegistryError) as raised:
        read_timeline(root, REGISTRY, FEATURES)
    text = str(raised.value)
    assert "\n" not in text and message in text and repr(onnx) in text
    # The engine pool pickles the error back to the parent: the message must survive that.
    again = pickle.loads(pickle.dumps(raised.value))
    assert type(again) is type(raised.value) and str(again) == text


def test_read_timeline_with_a_missing_feature_cache_is_a_one_line_engine_error(
    root: Path,
) -> None:
    with pytest.raises(EngineError) as raised:
        read_timeline(root, REGISTRY, "golden/absent.parquet")
    assert "\n" not in str(raised.value) and "absent.parquet" in str(raised.value)


def test_evaluate_model_judges_one_model_and_names_its_repository_path(
    root: Path, tmp_path: Path
) -> None:
    bad = judge(root, 6, tmp_path / "store")
    assert bad.name == "fr-mlp-v06" and bad.path == "ml/models/fr-mlp-v06.onnx"
    assert bad.status is StepStatus.FAIL and bad.broken is None
    assert bad.metrics is not None and bad.metrics.plcc < 0.9
    good = judge(root, 5, tmp_path / "store")
    assert good.status is StepStatus.PASS and good.path == "ml/models/fr-mlp-v05.onnx"
    assert str(root) not in json.dumps([bad.to_dict(), good.to_dict()])


def test_evaluate_model_a_second_time_comes_from_the_evaluation_store(
    root: Path, tmp_path: Path
) -> None:
    first = judge(root, 6, tmp_path / "store")
    again = judge(root, 6, tmp_path / "store")
    assert not first.cached and again.cached
    assert again.status is first.status and again.metrics == first.metrics
    assert again.path == "ml/models/fr-mlp-v06.onnx"


def test_evaluate_model_whose_file_differs_from_its_hash_is_a_failing_broken_step(
    root: Path, tmp_path: Path
) -> None:
    (root / "ml/models/fr-mlp-v09.onnx").write_bytes(b"not the model the registry hashed")
    record = judge(root, 9, tmp_path / "store")
    assert record.status is StepStatus.FAIL
    assert record.broken is not None and "\n" not in record.broken
    assert record.path == "ml/models/fr-mlp-v09.onnx"


def test_assemble_report_names_repository_paths_and_renders_the_verdict(
    root: Path, tmp_path: Path
) -> None:
    timeline = read_timeline(root, REGISTRY, FEATURES)
    result = find_first_regression(
        len(timeline.models), lambda index: judge(root, index, tmp_path / "store")
    )
    report = assemble_report(
        root, timeline, result, thresholds=GATE, settings=SETTINGS, wall_time_s=0.0
    )
    markdown = render_table(report, fmt=TableFormat.MARKDOWN)
    assert report["outcome"] == Outcome.REGRESSION.value
    assert report["first_bad_model"] == "fr-mlp-v06"
    assert report["timeline"]["registry"] == REGISTRY
    assert report["features"]["path"] == FEATURES
    assert {s["path"] for s in report["steps"]} <= {m.onnx for m in timeline.models}
    assert report["evaluations"] == {
        "visited": result.evaluations,
        "scored": result.evaluations,
        "from_store": 0,
        "bound": 6,
    }
    assert str(tmp_path) not in json.dumps(report) and str(tmp_path) not in markdown
    assert "fr-mlp-v06" in markdown
    assert pickle.loads(pickle.dumps(report)) == report


def test_a_second_run_counts_every_model_as_from_the_store(root: Path, tmp_path: Path) -> None:
    timeline = read_timeline(root, REGISTRY, FEATURES)
    for _ in range(2):
        result = find_first_regression(
            len(timeline.models), lambda index: judge(root, index, tmp_path / "store")
        )
    report = assemble_report(
        root, timeline, result, thresholds=GATE, settings=SETTINGS, wall_time_s=0.0
    )
    visited = result.evaluations
    assert report["evaluations"]["scored"] == 0
    assert report["evaluations"]["from_store"] == visited


def test_a_timeline_of_plain_files_names_them_as_given_and_expects_no_hash(root: Path) -> None:
    files = ["ml/models/fr-mlp-v00.onnx", "ml/models/fr-mlp-v01.onnx"]
    timeline = timeline_of_files(root, files, FEATURES)
    assert timeline.registry is None
    assert [(m.name, m.onnx, m.sha256) for m in timeline.models] == [
        ("fr-mlp-v00", files[0], None),
        ("fr-mlp-v01", files[1], None),
    ]
    record = judge_model(root, timeline, 1, thresholds=GATE, settings=SETTINGS)
    assert record.status is StepStatus.PASS and record.path == files[1]


def test_judging_a_model_needs_the_timeline_not_the_registry(root: Path, tmp_path: Path) -> None:
    timeline = read_timeline(root, REGISTRY, FEATURES)
    (root / REGISTRY).unlink()  # the App's pool tasks get the parsed timeline, not the file
    record = judge_model(
        root, timeline, 6, thresholds=GATE, settings=SETTINGS, store_dir=tmp_path / "store"
    )
    assert record.status is StepStatus.FAIL and record.path == "ml/models/fr-mlp-v06.onnx"
