"""Leave-one-source-out: batched == sequential, NaN folds kept, reports the gate accepts."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the whole tests/engine/train folder needs torch

from engine.errors import FeatureCacheError, UsageError
from engine.evidence import schema_problems
from engine.features import features_from_frame
from engine.gate import GateThresholds, evaluate_gate
from engine.hashing import sha256_file
from engine.loso_report import FinalModel, load_loso_reports
from engine.train.loso import DRY_RUN_EPOCHS, evaluate_loso, run_loso
from engine.train.network import TrainConfig
from engine.verdict import decide
from tests.engine.tables import small_frame, small_table
from tests.engine.test_verdict import write_parquet

pytestmark = pytest.mark.slow  # every test here trains
SMALL = TrainConfig(epochs=20)


def _plccs(results: tuple) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([[fold.plcc for fold in seed.folds] for seed in results])


@pytest.mark.parametrize("codec", [False, True])
def test_batched_equals_sequential_within_1e4_per_fold(codec: bool) -> None:
    table = small_table()
    config = TrainConfig(epochs=20, codec=codec)
    batched = evaluate_loso(table, seeds=[0, 1], config=config, batched=True)
    sequential = evaluate_loso(table, seeds=[0, 1], config=config, batched=False)
    assert [r.seed for r in batched] == [0, 1]
    assert [f.held_out for f in batched[0].folds] == ["src01", "src02", "src03"]
    assert np.isfinite(_plccs(batched)).all()
    np.testing.assert_allclose(_plccs(batched), _plccs(sequential), rtol=0, atol=1e-4)
    for a, b in zip(batched, sequential, strict=True):
        for fa, fb in zip(a.folds, b.folds, strict=True):
            assert (fa.n_train, fa.n_val) == (fb.n_train, fb.n_val)
            assert fa.rmse == pytest.approx(fb.rmse, rel=1e-4)


def test_batched_training_in_several_chunks_gives_the_same_folds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = small_table()
    whole = evaluate_loso(table, seeds=[0, 1], config=SMALL)
    monkeypatch.setattr("engine.train.loso.MAX_STACK_ELEMENTS", 1)  # one network per chunk
    chunked = evaluate_loso(table, seeds=[0, 1], config=SMALL)
    np.testing.assert_allclose(_plccs(whole), _plccs(chunked), rtol=0, atol=1e-6)


def test_run_loso_writes_one_report_per_seed_that_the_gate_reads(tmp_path: Path) -> None:
    table = small_table()
    paths = run_loso(table, seeds=[0, 2], out_dir=tmp_path, epochs=20, argv=["loso"])
    assert paths == [tmp_path / "loso_seed0.json", tmp_path / "loso_seed2.json"]
    document = json.loads(paths[1].read_text())
    assert schema_problems(document, "loso-report.schema.json") == []
    assert document["seed"] == 2
    assert document["dry_run"] is False
    assert document["corpus"] == {
        "path": "(in memory)",
        "content_hash": table.content_hash,
        "rows": table.n_rows,
    }
    assert document["hyperparameters"]["epochs"] == 20
    assert [fold["held_out"] for fold in document["folds"]] == ["src01", "src02", "src03"]
    plccs = [fold["plcc"] for fold in document["folds"]]
    assert document["summary"]["mean_plcc"] == pytest.approx(sum(plccs) / 3)
    assert document["summary"]["nan_folds"] == []
    reports = load_loso_reports(tmp_path)
    # Three sources: the gate reads the reports, and holds them for too few held-out sources
    # unless the minimum is lowered to what the table has.
    lax = GateThresholds(mean_plcc=0.0, per_seed_min=0.0, max_spread=1.0, seeds=(0, 2))
    assert not evaluate_gate(reports, lax).passed
    assert evaluate_gate(reports, replace(lax, min_sources=3)).passed


def test_constant_target_source_is_a_null_fold_listed_in_nan_folds(tmp_path: Path) -> None:
    frame = small_frame()
    frame.loc[frame["source"] == "src02", "mos"] = 50.0
    table = features_from_frame(frame)
    (path,) = run_loso(table, seeds=[0], out_dir=tmp_path, epochs=10)
    document = json.loads(path.read_text())
    folds = {fold["held_out"]: fold for fold in document["folds"]}
    assert len(folds) == 3  # never dropped
    assert folds["src02"]["plcc"] is None
    assert folds["src02"]["srocc"] is None
    assert folds["src02"]["rmse"] is not None
    assert folds["src01"]["plcc"] is not None
    summary = document["summary"]
    assert summary["nan_folds"] == ["src02"]
    assert summary["mean_plcc"] is None
    assert summary["std_plcc"] is None
    assert summary["n_folds"] == 3
    assert summary["min_plcc"] == min(folds[s]["plcc"] for s in ("src01", "src03"))
    (report,) = load_loso_reports(tmp_path)
    assert report.nan_folds == ("src02",)
    assert math.isnan(report.mean_plcc)


def test_dry_run_is_short_and_flagged(tmp_path: Path) -> None:
    table = small_table()
    (path,) = run_loso(table, seeds=[1], out_dir=tmp_path, epochs=500, dry_run=True)
    document = json.loads(path.read_text())
    assert document["dry_run"] is True
    assert document["hyperparameters"]["epochs"] == DRY_RUN_EPOCHS


def test_loso_needs_a_source_column_and_two_sources() -> None:
    with pytest.raises(FeatureCacheError, match="needs a 'source' column"):
        evaluate_loso(features_from_frame(small_frame().drop(columns=["source"])), seeds=[0])
    with pytest.raises(FeatureCacheError, match="at least 2 sources, found 1"):
        evaluate_loso(features_from_frame(small_frame(sources=1)), seeds=[0])


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1]])
def test_loso_refuses_bad_seed_lists(seeds: list[int]) -> None:
    with pytest.raises(UsageError):
        evaluate_loso(small_table(), seeds=seeds)


def test_run_loso_trains_each_seeds_final_model_on_every_source_and_binds_it(
    tmp_path: Path,
) -> None:
    table = small_table()
    models = tmp_path / "models"
    paths = run_loso(table, seeds=[0, 1], out_dir=tmp_path / "a", epochs=5, models_out=models)
    again = run_loso(table, seeds=[0, 1], out_dir=tmp_path / "b", epochs=5)
    for seed, path in enumerate(paths):
        final = json.loads(path.read_text())["final_model"]
        model = models / f"final_seed{seed}.onnx"
        assert final == {"path": f"../models/final_seed{seed}.onnx", "sha256": sha256_file(model)}
        # onnx.helper export: the same settings and seed give the same bytes
        assert (tmp_path / "b" / f"final_seed{seed}.onnx").read_bytes() == model.read_bytes()
    assert [r.final_model for r in load_loso_reports(tmp_path / "b")] == [
        FinalModel(f"final_seed{seed}.onnx", sha256_file(models / f"final_seed{seed}.onnx"))
        for seed in (0, 1)
    ]
    assert again[0].name == "loso_seed0.json"
    outcome = decide(
        tmp_path / "a",
        features=write_parquet(small_frame(), tmp_path / "features.parquet"),
        out=tmp_path / "verdict",
        thresholds=GateThresholds(mean_plcc=-1.0, per_seed_min=-1.0, max_spread=2.0, seeds=(0, 1)),
    )
    bound = json.loads(outcome.path.read_text())["bound_to"]["models"]
    assert [(m["path"], m["seed"]) for m in bound] == [
        ("../models/final_seed0.onnx", 0),
        ("../models/final_seed1.onnx", 1),
    ]


def test_run_loso_binds_named_final_models_without_training_them(tmp_path: Path) -> None:
    table = small_table()
    member = tmp_path / "member.onnx"
    member.write_bytes(b"any bytes: the report binds the file by hash")
    (path,) = run_loso(table, seeds=[3], out_dir=tmp_path / "r", epochs=2, final_models={3: member})
    assert json.loads(path.read_text())["final_model"] == {
        "path": "../member.onnx",
        "sha256": sha256_file(member),
    }
    assert not list((tmp_path / "r").glob("*.onnx"))
    with pytest.raises(UsageError, match=r"missing seed\(s\) \[4\]"):
        run_loso(table, seeds=[3, 4], out_dir=tmp_path, final_models={3: member})
    with pytest.raises(UsageError, match="final model of two seeds"):
        run_loso(table, seeds=[3, 4], out_dir=tmp_path, final_models={3: member, 4: member})
