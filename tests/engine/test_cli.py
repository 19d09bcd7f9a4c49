"""Tests for the model-guard command line: exit codes, one-line errors, the main job."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.bisection import evaluation_bound
from engine.cli import main

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
FEATURES = str(BISECT / "features.parquet")
REAL_FEATURES = str(BISECT.parent / "videos" / "real" / "features.parquet")
MODEL = str(BISECT / "regression" / "fr-mlp-v00.onnx")


def bisect(*extra: str, registry: str = "regression", store: Path) -> int:
    return main(
        [
            "bisect",
            "--registry",
            str(BISECT / registry / "registry.json"),
            "--features",
            FEATURES,
            "--min-plcc",
            "0.9",
            "--cache-dir",
            str(store),
            *extra,
        ]
    )


def test_main_job_finds_injected_regression_at_documented_index_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documented = json.loads((BISECT / "cache.json").read_text())["timelines"]["regression"]
    code = bisect(
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        store=tmp_path / "s",
    )
    assert code == 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["first_bad_index"] == documented["first_bad_index"] == 6
    assert report["evaluations"]["visited"] <= evaluation_bound(documented["models"])
    assert "Regression: fr-mlp-v06 (index 6)" in capsys.readouterr().out
    assert (tmp_path / "r.md").read_text().startswith("### ❌ Regression")
    outputs = report["run_provenance"]["outputs"]
    assert [Path(o["path"]).name for o in outputs] == ["r.md"]


def test_second_run_evaluates_zero_models(tmp_path: Path) -> None:
    bisect(store=tmp_path / "s")
    bisect("--json", str(tmp_path / "again.json"), store=tmp_path / "s")
    evaluations = json.loads((tmp_path / "again.json").read_text())["evaluations"]
    assert evaluations["scored"] == 0 and evaluations["from_store"] == evaluations["visited"] > 0


def test_all_good_timeline_exits_0(tmp_path: Path) -> None:
    assert bisect(registry="allgood", store=tmp_path / "s") == 0


def test_oldest_model_failing_is_an_alert_not_nothing_to_do(tmp_path: Path) -> None:
    bad = sorted((BISECT / "regression").glob("fr-mlp-v0[6-9].onnx"))
    code = main(
        [
            "bisect",
            "--models",
            *map(str, bad),
            "--features",
            FEATURES,
            "--min-plcc",
            "0.9",
            "--no-cache",
        ]
    )
    assert code == 2


def test_statistical_mode_exits_3_when_interval_straddles_the_gate(tmp_path: Path) -> None:
    model = str(BISECT / "regression" / "fr-mlp-v07.onnx")
    code = main(
        [
            "bisect",
            "--models",
            model,
            "--features",
            FEATURES,
            "--min-plcc",
            "0.8",
            "--statistical",
            "--bootstrap",
            "200",
            "--no-cache",
        ]
    )
    assert code == 3


def test_full_mode_visits_every_model(tmp_path: Path) -> None:
    bisect("--full", "--json", str(tmp_path / "r.json"), store=tmp_path / "s")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["evaluations"]["visited"] == 10 and report["non_monotonic"] == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["bisect", "--features", FEATURES, "--min-plcc", "0.9"],
            "one of the arguments --registry --models is required",
        ),
        (["bisect", "--models", MODEL, "--features", FEATURES], "at least one of min_plcc"),
        (
            ["bisect", "--models", "x.onnx", "--features", FEATURES, "--min-plcc", "0.9"],
            "argument --models: x.onnx: not found",
        ),
        (
            ["bisect", "--models", MODEL, "--features", "missing.parquet", "--min-plcc", "0.9"],
            "argument --features: missing.parquet: not found",
        ),
        (
            ["bisect", "--registry", "nope.json", "--features", FEATURES, "--min-plcc", "0.9"],
            "no such file",
        ),
        (
            ["bisect", "--models", MODEL, "--features", FEATURES, "--min-plcc", "abc"],
            "argument --min-plcc: expected a number, not 'abc'",
        ),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_1_with_one_line_and_no_traceback(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_parquet_gives_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_parquet(FEATURES).drop(columns=["vif_scale2"])
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "f.parquet")
    code = main(
        [
            "bisect",
            "--models",
            MODEL,
            "--features",
            str(tmp_path / "f.parquet"),
            "--min-plcc",
            "0.9",
        ]
    )
    assert code == 1
    assert "vif_scale2" in capsys.readouterr().err


def test_registry_validate_prints_pointer_per_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "regression"
    shutil.copytree(BISECT / "regression", copy)
    (copy / "fr-mlp-v03.onnx").write_bytes(b"tampered")
    assert main(["registry", "validate", str(copy / "registry.json")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        line for line in out if line.startswith("registry.json#/models/3/sha256: sha256 mismatch")
    ]
    assert main(["registry", "validate", str(BISECT / "regression" / "registry.json")]) == 0


def test_cache_check_passes_on_bundled_cache_and_reports_drift_after_one_value_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "check", str(BISECT)]) == 0
    copy = tmp_path / "bisect"
    shutil.copytree(BISECT, copy)
    table = pq.read_table(copy / "features.parquet")
    mos = table.column("mos").to_numpy().copy()
    mos[17] += 1.0
    table = table.set_column(table.schema.get_field_index("mos"), "mos", pa.array(mos))
    pq.write_table(table, copy / "features.parquet")
    assert main(["cache", "check", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "DRIFT features.parquet" in out and "17" in out


@pytest.mark.slow
def test_loso_dry_run_writes_reports_that_the_gate_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    assert (
        main(
            ["loso", "--features", FEATURES, "--seeds", "0,1", "--out", str(tmp_path), "--dry-run"]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "final_seed0.onnx",  # each seed's final model, bound by its report
        "final_seed1.onnx",
        "loso_seed0.json",
        "loso_seed1.json",
    ]
    assert main(["gate", str(tmp_path), "--seeds", "0,1"]) == 1
    assert "dry" in capsys.readouterr().out.lower()


def test_ensemble_validate_and_eval_on_the_committed_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = BISECT.parents[1] / "model"
    manifest = str(model / "fr-ens-v1.json")
    assert (
        main(
            [
                "ensemble",
                "validate",
                "--manifest",
                manifest,
                "--registry",
                str(model / "registry.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ensemble",
                "eval",
                "--manifest",
                manifest,
                "--features",
                REAL_FEATURES,  # the ensemble's training corpus, where its coverage test passes
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    assert "conformal" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "e.json").read_text())["run_provenance"]["schema"]
        == "model-guard/ensemble-evaluation"
    )


def test_ensemble_eval_refuses_a_missing_feature_file(capsys: pytest.CaptureFixture[str]) -> None:
    model = BISECT.parents[1] / "model"
    code = main(
        [
            "ensemble",
            "eval",
            "--manifest",
            str(model / "fr-ens-v1.json"),
            "--features",
            "nowhere.parquet",
        ]
    )
    assert code == 2  # 1 means "the coverage test fails" for ensemble eval
    assert "nowhere.parquet" in capsys.readouterr().err


def _regrouped_cache(tmp_path: Path, groups: int | None) -> str:
    """The bundled cache with its sources merged into ``groups`` groups (None: no column)."""
    frame = pd.read_parquet(FEATURES)
    if groups is None:
        frame = frame.drop(columns=["source"])
    else:
        codes = frame["source"].astype("category").cat.codes
        frame["source"] = [f"g{code % groups}" for code in codes]
    path = tmp_path / "regrouped.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return str(path)


def _statistical(features: str, *extra: str) -> int:
    model = str(BISECT / "regression" / "fr-mlp-v07.onnx")
    return main(
        [
            "bisect",
            "--models",
            model,
            "--features",
            features,
            "--min-plcc",
            "0.8",
            "--statistical",
            "--bootstrap",
            "100",
            "--no-cache",
            *extra,
        ]
    )


def test_statistical_over_three_sources_refuses_with_one_line_naming_g_and_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _statistical(_regrouped_cache(tmp_path, 3)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "at least 5 source groups" in err and "has 3 (10 distinct resamples)" in err


def test_statistical_without_source_column_warns_on_stderr_and_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert _statistical(_regrouped_cache(tmp_path, None), "--json", str(out)) in (0, 2, 3)
    captured = capsys.readouterr()
    assert "warning: the feature cache has no source column" in captured.err
    assert "Warning: the feature cache has no source column" in captured.out
    report = json.loads(out.read_text())
    assert report["features"]["resampling"]["method"] == "rows"
    assert "as independent" in report["features"]["warnings"][0]


def test_group_by_groups_by_the_named_column_and_refuses_an_unreadable_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bundled cache has 9 sources (enough) but only 3 encoders (too few at 95 %).
    assert _statistical(FEATURES, "--group-by", "encoder") == 1
    assert "at least 5 encoder groups" in capsys.readouterr().err
    assert _statistical(FEATURES, "--group-by", "scene") == 1
    assert "--group-by must be one of source, encoder, param" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("final_models", "needle"),
    [
        (["0"], "--final-models takes SEED=MODEL pairs, not '0'"),
        (["0=README.md", "0=app.yml"], "--final-models names seed 0 twice"),
        (["0=README.md"], "missing seed(s) [1], unknown seed(s) none"),
    ],
)
def test_loso_refuses_bad_final_models_before_training(
    tmp_path: Path, final_models: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["loso", "--features", FEATURES, "--seeds", "0,1", "--out", str(tmp_path / "r")]
    assert main([*argv, "--final-models", *final_models]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
