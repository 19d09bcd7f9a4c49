"""Timelines fitted to the real-video cache: committed bytes rebuild, the story holds on real features."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engine.cache import FIRST_BAD_INDEX, build_fitted_timelines, check_cache, measure_timeline
from engine.errors import FeatureCacheError
from engine.features import load_features

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "testdata" / "videos" / "timelines"
REAL = ROOT / "testdata" / "videos" / "real" / "features.parquet"


def _ort_predict(path: Path, matrix: np.ndarray) -> np.ndarray:
    """Score a model with onnxruntime on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"features": matrix})[0]
    return result


def _plcc(timeline: str) -> list[float]:
    table = load_features(REAL)
    results = measure_timeline(COMMITTED / timeline / "registry.json", table, predict=_ort_predict)
    return [r.plcc for r in results]


def test_committed_fitted_timelines_have_no_drift() -> None:
    assert check_cache(COMMITTED) == []


def test_fitted_regression_breaks_at_fr_mlp_v06_on_real_features() -> None:
    plcc = _plcc("regression")
    assert len(plcc) == 10
    assert min(plcc[:FIRST_BAD_INDEX]) > 0.92, plcc
    assert max(plcc[FIRST_BAD_INDEX:]) < 0.80, plcc


def test_fitted_allgood_timeline_passes_on_real_features() -> None:
    plcc = _plcc("allgood")
    assert len(plcc) == 8
    assert min(plcc) > 0.92, plcc


def test_manifest_names_the_real_cache_by_content(tmp_path: Path) -> None:
    manifest = json.loads((COMMITTED / "cache.json").read_text(encoding="utf-8"))
    assert manifest["features"]["path"] == "../real/features.parquet"
    assert manifest["features"]["content_hash"] == load_features(REAL).content_hash
    assert manifest["features"]["sources"] == 11
    assert manifest["teacher"]["plcc"] > 0.99


def test_changed_feature_cache_is_drift(tmp_path: Path) -> None:
    real = tmp_path / "videos" / "real"
    real.mkdir(parents=True)
    shutil.copy(REAL, real / "features.parquet")
    out = tmp_path / "videos" / "timelines"
    build_fitted_timelines(real / "features.parquet", out, seed=20261122)
    assert check_cache(out) == []
    frame = load_features(real / "features.parquet").frame.copy()
    frame.loc[frame.index[:10], "mos"] = frame["mos"].iloc[:10] + 1.0
    frame.to_parquet(real / "features.parquet", index=False)
    drift = check_cache(out)
    assert drift and any(d.file == "cache.json" for d in drift)


def test_missing_feature_cache_is_a_one_line_error(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(COMMITTED, tmp_path / "timelines"))
    with pytest.raises(FeatureCacheError, match="is not found"):
        check_cache(copy)
