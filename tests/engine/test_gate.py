"""The LOSO promotion gate: reading per-seed reports, and every way the evidence can fail."""

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.commands.gate_command import run_gate_command
from engine.commands.options import parse_seeds
from engine.errors import EvidenceError, UsageError
from engine.gate import GateReport, GateThresholds, evaluate_gate
from engine.loso_report import Corpus, Fold, LosoReport, load_loso_report, load_loso_reports

ROOT = Path(__file__).resolve().parents[2]

CORPUS = "a" * 64
OTHER_CORPUS = "b" * 64
SOURCES = ("src00", "src01", "src02", "src03", "src04")
SCHEMAS = Path(__file__).resolve().parents[2] / "engine" / "schemas"


def loso_document(
    seed: int,
    *,
    plcc: float | Mapping[str, float | None] = 0.96,
    dry_run: bool = False,
    corpus_hash: str = CORPUS,
    rows: int = 40,
    final_model: Mapping[str, str] | None = None,
    schema_version: int = 2,
) -> dict[str, Any]:
    """Return a schema-valid LOSO report whose summary agrees with its folds.

    Version 2 binds ``final_model`` (a placeholder file name and hash unless given);
    version 1 binds none.
    """
    values = plcc if isinstance(plcc, Mapping) else dict.fromkeys(SOURCES, plcc)
    folds = [
        {
            "held_out": name,
            "n_train": rows - rows // len(values),
            "n_val": rows // len(values),
            "plcc": value,
            "srocc": value,
            "rmse": None if value is None else 4.0,
        }
        for name, value in values.items()
    ]
    finite = [value for value in values.values() if value is not None]
    nan = [name for name, value in values.items() if value is None]
    mean = None if nan else math.fsum(finite) / len(finite)
    if final_model is None:
        final_model = {"path": f"final_seed{seed}.onnx", "sha256": f"{seed:064x}"}
    bound = {"final_model": dict(final_model)} if schema_version == 2 else {}
    return {
        "schema": "model-guard/loso-report",
        "schema_version": schema_version,
        "seed": seed,
        "dry_run": dry_run,
        "corpus": {"path": "features.parquet", "content_hash": corpus_hash, "rows": rows},
        "hyperparameters": {"epochs": 3, "hidden": [16, 8]},
        **bound,
        "folds": folds,
        "summary": {
            "mean_plcc": mean,
            "std_plcc": None if nan else 0.0,
            "min_plcc": None if nan else min(finite),
            "max_plcc": None if nan else max(finite),
            "n_folds": len(folds),
            "nan_folds": nan,
        },
        "run_provenance": {"tool": "test"},
    }


def write_report(directory: Path, document: Mapping[str, Any], *, name: str | None = None) -> Path:
    """Write a LOSO report as ``loso_seed<N>.json`` (or ``name``) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"loso_seed{document['seed']}.json")
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def write_reports(directory: Path, plccs: Mapping[int, float], **options: Any) -> Path:
    """Write one uniform report per seed (every fold at the seed's PLCC); return the folder."""
    for seed, value in plccs.items():
        write_report(directory, loso_document(seed, plcc=value, **options))
    return directory


def gate(directory: Path, **thresholds: Any) -> GateReport:
    """Load the folder's reports and judge them."""
    return evaluate_gate(load_loso_reports(directory), GateThresholds(**thresholds))


def only_reason(report: GateReport) -> str:
    """Return the report's single reason, failing the test when there are more or none."""
    assert not report.passed
    assert len(report.reasons) == 1, report.reasons
    return report.reasons[0]


FIVE_GOOD = {0: 0.961, 1: 0.962, 2: 0.963, 3: 0.962, 4: 0.961}


def test_shipped_schemas_are_valid_draft_2020_12() -> None:
    for name in ("loso-report.schema.json", "verdict.schema.json"):
        Draft202012Validator.check_schema(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


def test_gate_passes_when_every_seed_clears_mean_spread_and_floors(tmp_path: Path) -> None:
    report = gate(write_reports(tmp_path, FIVE_GOOD), per_fold_min=0.9)
    assert report.passed and report.reasons == ()
    assert report.mean_plcc == pytest.approx(0.9618)
    assert report.spread == pytest.approx(0.002)
    assert report.corpus_hash == CORPUS
    assert [row.seed for row in report.per_seed] == [0, 1, 2, 3, 4]
    assert report.failing_seeds == () and report.failing_folds == ()


def test_gate_fails_when_mean_plcc_is_below_threshold(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {s: 0.940 + s * 0.001 for s in range(5)})
    reason = only_reason(gate(directory, per_seed_min=0.9))
    assert reason == "mean PLCC over seeds 0.9420 is below 0.95"


def test_gate_fails_when_spread_of_seed_means_exceeds_maximum(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {0: 0.955, 1: 0.958, 2: 0.961, 3: 0.962, 4: 0.970})
    reason = only_reason(gate(directory))
    assert reason.startswith("spread of per-seed mean PLCC 0.0150 (seed 0 0.9550 to seed 4 0.9700)")
    assert reason.endswith("exceeds 0.005")


def test_gate_fails_naming_the_one_seed_below_the_per_seed_floor(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {0: 0.962, 1: 0.963, 2: 0.962, 3: 0.948, 4: 0.962})
    report = gate(directory, max_spread=0.05)
    assert only_reason(report) == "seed 3 mean PLCC 0.9480 is below the per-seed floor 0.95"
    assert report.failing_seeds == (3,)


def test_gate_fails_naming_seed_and_fold_when_a_fold_plcc_is_nan(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 3, 4)})
    nan_fold = {"src00": 0.97, "src01": 0.96, "src02": None, "src03": 0.96, "src04": 0.96}
    write_report(tmp_path, loso_document(2, plcc=nan_fold))
    report = gate(tmp_path)
    assert only_reason(report) == (
        "seed 2 fold src02: PLCC is NaN (null in the report), so the seed mean is NaN"
    )
    assert report.failing_seeds == (2,)
    assert [(f.seed, f.held_out) for f in report.failing_folds] == [(2, "src02")]
    assert math.isnan(report.mean_plcc) and math.isnan(report.spread)
    assert report.per_seed[2].nan_folds == ("src02",)


def test_gate_fails_when_an_expected_seed_is_missing(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {s: 0.962 for s in (0, 1, 2, 4)})
    report = gate(directory)
    assert only_reason(report) == "missing seed 3: no loso_seed3.json (expected seeds 0,1,2,3,4)"
    assert report.missing_seeds == (3,)


def test_gate_fails_when_an_unexpected_seed_is_reported(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {**FIVE_GOOD, 7: 0.962})
    report = gate(directory)
    assert only_reason(report) == "unexpected seed 7 (expected seeds 0,1,2,3,4)"
    assert report.unexpected_seeds == (7,)


def test_gate_accepts_the_seeds_it_is_told_to_expect(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, {10: 0.962, 11: 0.963, 12: 0.961})
    assert gate(directory, seeds=(10, 11, 12)).passed


def test_gate_fails_when_any_report_is_a_dry_run(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 2, 3)})
    write_report(tmp_path, loso_document(4, plcc=0.962, dry_run=True))
    report = gate(tmp_path)
    assert only_reason(report) == "seed 4 is a dry run (dry_run: true); a dry run never promotes"
    assert report.failing_seeds == (4,)


def test_gate_fails_on_mixed_corpora_naming_both_seeds(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 2, 4)})
    write_report(tmp_path, loso_document(3, plcc=0.962, corpus_hash=OTHER_CORPUS))
    report = gate(tmp_path)
    assert only_reason(report).startswith(
        "mixed corpora: seed 0 and 3 were trained on different data"
    )
    assert report.corpus_hash is None
    assert report.failing_seeds == (3,)


def test_gate_fails_when_a_seed_drops_a_fold(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 2, 3)})
    write_report(tmp_path, loso_document(4, plcc=dict.fromkeys(SOURCES[:4], 0.962)))
    assert only_reason(gate(tmp_path, min_sources=4)) == (
        "seed 4 lacks fold(s) src04 compared with seed 0; every seed must hold out the same sources"
    )


def test_gate_fails_naming_the_fold_below_the_per_fold_floor(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 2, 3, 4)})
    weak = {"src00": 0.99, "src01": 0.99, "src02": 0.99, "src03": 0.87, "src04": 0.99}
    write_report(tmp_path, loso_document(1, plcc=weak))
    report = gate(tmp_path, per_fold_min=0.9)
    assert only_reason(report) == "seed 1 fold src03: PLCC 0.8700 is below the per-fold floor 0.9"
    assert [(f.seed, f.held_out) for f in report.failing_folds] == [(1, "src03")]


def test_gate_passes_a_mean_exactly_at_the_threshold(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, dict.fromkeys(range(5), 0.95))
    assert gate(directory).passed


def test_gate_reason_never_prints_a_failing_value_equal_to_its_threshold(tmp_path: Path) -> None:
    directory = write_reports(tmp_path, dict.fromkeys(range(5), 0.94999))
    reasons = gate(directory).reasons
    assert reasons[0] == "mean PLCC over seeds 0.949990 is below 0.95"


def test_gate_report_to_dict_is_strict_json_with_nan_as_null(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 2, 3)})
    write_report(tmp_path, loso_document(4, plcc={"src00": None, "src01": 0.9}))
    data = gate(tmp_path).to_dict()
    json.dumps(data, allow_nan=False)
    assert data["mean_plcc"] is None and data["spread"] is None
    assert data["per_seed"][4]["mean_plcc"] is None
    assert data["per_seed"][4]["nan_folds"] == ["src00"]
    assert data["thresholds"]["seeds"] == [0, 1, 2, 3, 4]


def test_render_text_names_failing_seeds_folds_and_missing_seeds(tmp_path: Path) -> None:
    write_reports(tmp_path, {s: 0.962 for s in (0, 1, 4)})
    write_report(tmp_path, loso_document(2, plcc={**dict.fromkeys(SOURCES, 0.96), "src01": None}))
    text = gate(tmp_path).render_text()
    assert text.startswith("LOSO gate: FAIL")
    lines = text.splitlines()
    assert any(line.split()[0] == "2" and line.rstrip().endswith("FAIL") for line in lines[2:])
    assert any(line.split()[0] == "3" and line.rstrip().endswith("MISSING") for line in lines[2:])
    assert "failing folds: seed 2 src01" in text


def test_gate_command_prints_the_table_writes_json_and_exits_by_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_reports(tmp_path / "loso", FIVE_GOOD)
    out = tmp_path / "gate.json"
    assert run_gate_command(directory, GateThresholds(), json_out=out, argv=["gate"]) == 0
    assert capsys.readouterr().out.startswith("LOSO gate: PASS")
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["schema"] == "model-guard/gate-report" and document["passed"] is True
    assert "run_provenance" in document
    assert run_gate_command(directory, GateThresholds(mean_plcc=0.99)) == 1


def test_three_source_loso_fails_the_gate_naming_too_few_sources(tmp_path: Path) -> None:
    for seed in range(5):
        write_report(tmp_path, loso_document(seed, plcc=dict.fromkeys(SOURCES[:3], 0.99)))
    report = gate(tmp_path)
    assert only_reason(report) == (
        "too few held-out sources: 3 held-out sources, at least 5 needed "
        "(a leave-one-source-out mean over so few sources says little)"
    )
    assert report.n_sources == 3
    assert "3 held-out sources, at least 5 needed" in report.render_text().splitlines()[0]
    data = report.to_dict()
    assert (data["n_sources"], data["thresholds"]["min_sources"]) == (3, 5)
    assert gate(tmp_path, min_sources=3).passed


def test_gate_states_the_source_count_when_it_passes(tmp_path: Path) -> None:
    report = gate(write_reports(tmp_path, FIVE_GOOD))
    assert report.passed
    assert "5 held-out sources, at least 5 needed" in report.render_text()


def test_gate_cli_min_sources_flag_sets_the_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    for seed in range(5):
        write_report(tmp_path, loso_document(seed, plcc=dict.fromkeys(SOURCES[:3], 0.99)))
    assert main(["gate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "LOSO gate: FAIL" in out
    assert "  - too few held-out sources: 3 held-out sources, at least 5 needed" in out
    assert main(["gate", str(tmp_path), "--min-sources", "3"]) == 0
    assert "3 held-out sources, at least 3 needed" in capsys.readouterr().out


def test_thresholds_default_to_a_five_seed_ensemble() -> None:
    assert GateThresholds().seeds == (0, 1, 2, 3, 4)


@pytest.mark.parametrize(
    "options",
    [
        {"mean_plcc": 1.5},
        {"per_seed_min": math.nan},
        {"per_fold_min": -2.0},
        {"max_spread": -0.1},
        {"seeds": ()},
        {"seeds": (0, 0)},
        {"seeds": (-1,)},
        {"min_sources": 0},
        {"min_sources": 1},
        {"min_sources": True},
    ],
)
def test_thresholds_refuse_impossible_values(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        GateThresholds(**options)


def test_thresholds_round_trip_through_their_dict() -> None:
    thresholds = GateThresholds(mean_plcc=0.9, per_fold_min=0.8, seeds=(3, 5))
    assert GateThresholds.from_dict(thresholds.to_dict()) == thresholds


def test_parse_seeds_reads_lists_and_ranges() -> None:
    assert parse_seeds("0,1,2,3,4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0-2,7") == (0, 1, 2, 7)
    with pytest.raises(UsageError):
        parse_seeds("0,x")
    with pytest.raises(UsageError):
        parse_seeds("1,1")


def test_load_returns_reports_sorted_by_seed_with_file_hashes(tmp_path: Path) -> None:
    write_reports(tmp_path, {4: 0.96, 0: 0.96, 2: 0.96})
    reports = load_loso_reports(tmp_path)
    assert [r.seed for r in reports] == [0, 2, 4]
    assert all(isinstance(r, LosoReport) and len(r.sha256) == 64 for r in reports)


def test_load_refuses_a_folder_without_reports(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}", encoding="utf-8")
    with pytest.raises(EvidenceError, match=r"no LOSO reports \(loso_seed<N>\.json\) found"):
        load_loso_reports(tmp_path)


def test_load_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="LOSO report folder not found"):
        load_loso_reports(tmp_path / "nope")


def test_load_refuses_a_seed_that_disagrees_with_the_file_name(tmp_path: Path) -> None:
    path = write_report(tmp_path, loso_document(2), name="loso_seed3.json")
    with pytest.raises(EvidenceError) as caught:
        load_loso_report(path)
    assert str(caught.value) == f"{path}: /seed is 2 but the file name says seed 3"


def test_load_refuses_a_file_name_with_leading_zeros(tmp_path: Path) -> None:
    path = write_report(tmp_path, loso_document(1), name="loso_seed01.json")
    with pytest.raises(EvidenceError, match=r"must be named loso_seed<N>\.json"):
        load_loso_reports(tmp_path)
    assert path.exists()


def test_load_schema_error_names_file_and_json_pointer_on_one_line(tmp_path: Path) -> None:
    document = loso_document(0)
    document["folds"][1]["plcc"] = 1.7
    path = write_report(tmp_path, document)
    with pytest.raises(EvidenceError) as caught:
        load_loso_reports(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: /folds/1/plcc: 1.7 is greater than the maximum of 1")
    assert "\n" not in message


def test_load_refuses_a_nan_literal_instead_of_null(tmp_path: Path) -> None:
    path = tmp_path / "loso_seed0.json"
    text = json.dumps(loso_document(0)).replace('"mean_plcc": 0.96', '"mean_plcc": NaN')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvidenceError, match="NaN is not valid JSON"):
        load_loso_report(path)


def test_load_refuses_a_key_repeated_in_one_object(tmp_path: Path) -> None:
    path = tmp_path / "loso_seed0.json"
    text = json.dumps(loso_document(0)).replace(
        '"dry_run": false', '"dry_run": false, "dry_run": true'
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvidenceError, match="key 'dry_run' appears twice"):
        load_loso_report(path)


def test_load_refuses_a_summary_that_hides_a_nan_fold(tmp_path: Path) -> None:
    document = loso_document(0, plcc={"src00": 0.97, "src01": None})
    document["summary"]["nan_folds"] = []
    path = write_report(tmp_path, document)
    with pytest.raises(EvidenceError) as caught:
        load_loso_report(path)
    assert str(caught.value) == (
        f"{path}: /summary/nan_folds lists none but the folds with null plcc are src01"
    )


def test_load_refuses_a_summary_mean_that_disagrees_with_the_folds(tmp_path: Path) -> None:
    document = loso_document(0, plcc=0.9)
    document["summary"]["mean_plcc"] = 0.97
    with pytest.raises(EvidenceError, match=r"/summary/mean_plcc is 0.97 but the folds give 0.9"):
        load_loso_report(write_report(tmp_path, document))


def test_load_refuses_a_non_null_mean_for_a_seed_with_a_nan_fold(tmp_path: Path) -> None:
    document = loso_document(0, plcc={"src00": 0.97, "src01": None})
    document["summary"]["mean_plcc"] = 0.97
    with pytest.raises(EvidenceError, match="mean_plcc must be null when any fold is NaN"):
        load_loso_report(write_report(tmp_path, document))


def test_load_refuses_the_same_source_held_out_twice(tmp_path: Path) -> None:
    document = loso_document(0)
    document["folds"][1]["held_out"] = "src00"
    with pytest.raises(EvidenceError, match="holds out src00 more than once"):
        load_loso_report(write_report(tmp_path, document))


def in_memory_report(seed: int, plccs: list[float]) -> LosoReport:
    """Return a LOSO report built in memory, one fold per PLCC."""
    folds = tuple(
        Fold(f"src{i:02d}", n_train=30, n_val=10, plcc=p, srocc=p, rmse=4.0)
        for i, p in enumerate(plccs)
    )
    return LosoReport(
        path=Path(f"loso_seed{seed}.json"),
        sha256="0" * 64,
        seed=seed,
        dry_run=False,
        corpus=Corpus("features.parquet", CORPUS, 40),
        folds=folds,
        hyperparameters={},
    )


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda folds: st.lists(
            st.lists(st.floats(0.9, 1.0), min_size=folds, max_size=folds),
            min_size=5,
            max_size=5,
        )
    )
)
def test_gate_passes_exactly_when_mean_spread_floor_and_source_count_hold(
    plccs: list[list[float]],
) -> None:
    reports = [in_memory_report(seed, values) for seed, values in enumerate(plccs)]
    means = [math.fsum(values) / len(values) for values in plccs]
    mean = math.fsum(means) / len(means)
    enough_sources = len(plccs[0]) >= 5
    expected = (
        enough_sources and mean >= 0.95 and max(means) - min(means) <= 0.005 and min(means) >= 0.95
    )
    report = evaluate_gate(reports, GateThresholds())
    tolerance_zone = any(
        abs(value - limit) < 1e-9
        for value, limit in ((mean, 0.95), (max(means) - min(means), 0.005), (min(means), 0.95))
    )
    if not tolerance_zone:
        assert report.passed is expected
    assert report.passed is (not report.reasons)


def test_every_surface_floors_min_sources_where_the_engine_does() -> None:
    """One source held out and none to train on is no LOSO: the gate, the policy, both CLI
    flags and the App's configuration schema all refuse a minimum below two."""
    from engine.commands.options import MIN_SOURCES
    from engine.gate import LEAST_MIN_SOURCES

    assert LEAST_MIN_SOURCES == 2
    assert MIN_SOURCES(str(LEAST_MIN_SOURCES)) == LEAST_MIN_SOURCES
    with pytest.raises(argparse.ArgumentTypeError):
        MIN_SOURCES(str(LEAST_MIN_SOURCES - 1))
    schema = json.loads((ROOT / "config" / "model-guard.schema.json").read_text())
    promotion = schema["properties"]["promotion"]["properties"]["min_sources"]
    assert promotion["minimum"] == LEAST_MIN_SOURCES
