"""Promotion verdicts: exactly one file, bound by hash to its evidence, and verification of each binding."""

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import EvidenceError, UsageError
from engine.features import FEATURES, SOURCE, TARGET, load_features
from engine.gate import GateThresholds
from engine.hashing import sha256_file
from engine.verdict import Verdict, decide, verify_verdict
from tests.engine import onnx_factory
from tests.engine.test_gate import SOURCES, loso_document, write_report

GOOD = {0: 0.961, 1: 0.962, 2: 0.963, 3: 0.962, 4: 0.961}


@dataclass(frozen=True)
class Evidence:
    """A checkout in miniature: feature table, LOSO reports, models, registry, verdict folder."""

    root: Path
    features: Path
    loso: Path
    models: tuple[Path, ...]
    registry: Path
    out: Path


def feature_frame() -> pd.DataFrame:
    """Return a small valid feature table: five sources, five rows each."""
    rng = np.random.default_rng(3)
    rows = 5 * len(SOURCES)
    data: dict[str, Any] = {
        name: rng.uniform(0.2, 1.0, rows).astype(np.float32) for name in FEATURES
    }
    data[TARGET] = np.round(rng.uniform(20, 90, rows), 2).astype(np.float32)
    data[SOURCE] = [SOURCES[i % len(SOURCES)] for i in range(rows)]
    return pd.DataFrame(data)


def write_parquet(frame: pd.DataFrame, path: Path, **options: Any) -> Path:
    """Write a frame with pyarrow, without a pandas index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, **options)
    return path


def write_loso(
    directory: Path,
    corpus_hash: str,
    plccs: dict[int, float] = GOOD,
    *,
    models: Mapping[int, Path] | None = None,
    schema_version: int = 2,
) -> list[Path]:
    """Write one report per seed, all trained on ``corpus_hash``; return the final models bound.

    Seed N binds ``models[N]`` when given, else a small ONNX model of its own written to
    ``directory/final_seed<N>.onnx`` (version 1 reports bind nothing).
    """
    finals: list[Path] = []
    for seed, value in plccs.items():
        model = (models or {}).get(seed)
        if model is None:
            directory.mkdir(parents=True, exist_ok=True)
            model = directory / f"final_seed{seed}.onnx"
            onnx_factory.save(onnx_factory.linear_model(bias=10.0 + seed), model)
        finals.append(model)
        final = {
            "path": Path(os.path.relpath(model.resolve(), directory.resolve())).as_posix(),
            "sha256": sha256_file(model),
        }
        document = loso_document(
            seed,
            plcc=value,
            corpus_hash=corpus_hash,
            rows=20,
            final_model=final,
            schema_version=schema_version,
        )
        write_report(directory, document)
    return finals


def write_registry(path: Path, models: list[tuple[str, Path, bool]]) -> Path:
    """Write a registry.json naming each (id, onnx file, smoke) with its real hashes."""
    entries = []
    for timeline, (model_id, onnx_path, smoke) in enumerate(models):
        entry: dict[str, Any] = {
            "id": model_id,
            "kind": "fr",
            "onnx": onnx_path.relative_to(path.parent).as_posix(),
            "sha256": sha256_file(onnx_path),
            "smoke": smoke,
            "opset": onnx_factory.OPSET,
            "license": "MIT",
            "timeline": timeline,
        }
        data = onnx_path.parent / f"{onnx_path.name}.data"
        if data.exists():
            entry["external_data"] = [
                {"path": data.relative_to(path.parent).as_posix(), "sha256": sha256_file(data)}
            ]
        entries.append(entry)
    path.write_text(
        json.dumps({"schema_version": 1, "models": entries}, indent=2), encoding="utf-8"
    )
    return path


@pytest.fixture
def evidence(tmp_path: Path) -> Evidence:
    """Build a passing set of evidence; the registry promotes both models (smoke: false)."""
    return build_evidence(tmp_path)


def build_evidence(tmp_path: Path) -> Evidence:
    """Build a passing set of evidence under ``tmp_path`` (five sources, seeds 0-4)."""
    features = write_parquet(feature_frame(), tmp_path / "data" / "features.parquet")
    loso = tmp_path / "runs" / "loso"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    inline = onnx_factory.save(onnx_factory.linear_model(), model_dir / "fr-mlp-v03.onnx")
    external = onnx_factory.save_external(
        onnx_factory.linear_model(bias=1.5),
        model_dir / "fr-mlp-v04.onnx",
        location="fr-mlp-v04.onnx.data",
    )
    finals = write_loso(loso, load_features(features).content_hash, models={0: inline, 1: external})
    registry = write_registry(
        model_dir / "registry.json",
        [("fr-mlp-v03", inline, False), ("fr-mlp-v04", external, False)],
    )
    return Evidence(
        root=tmp_path,
        features=features,
        loso=loso,
        models=tuple(finals),
        registry=registry,
        out=tmp_path / "model" / "evidence" / "v03",
    )


def run_decide(evidence: Evidence, **thresholds: Any) -> Path:
    """Decide over the evidence and return the verdict file written."""
    outcome = decide(
        evidence.loso,
        features=evidence.features,
        out=evidence.out,
        thresholds=GateThresholds(**thresholds),
        argv=["verdict", str(evidence.loso)],
    )
    return outcome.path


def final_of(directory: Path, seed: int) -> dict[str, str]:
    """Return the final model a seed's report in ``directory`` binds."""
    document = json.loads((directory / f"loso_seed{seed}.json").read_text(encoding="utf-8"))
    return dict(document["final_model"])


def rewrite_loso(evidence: Evidence, corpus_hash: str) -> None:
    """Replace the LOSO folder with reports on ``corpus_hash`` binding the same final models."""
    shutil.rmtree(evidence.loso)
    write_loso(evidence.loso, corpus_hash, models=dict(enumerate(evidence.models[:2])))


def bind_final_models(directory: Path, models: list[Path]) -> None:
    """Rewrite the folder's LOSO reports so seed k (in seed order) binds ``models[k]``.

    Seeds beyond ``models`` bind a small model of their own (``final_seed<N>.onnx``).
    """
    for index, report in enumerate(sorted(directory.glob("loso_seed*.json"))):
        document = json.loads(report.read_text(encoding="utf-8"))
        seed = document["seed"]
        if index < len(models):
            model = models[index]
        else:
            model = directory / f"final_seed{seed}.onnx"
            onnx_factory.save(onnx_factory.linear_model(bias=10.0 + seed), model)
        relative = os.path.relpath(model.resolve(), directory.resolve())
        document["final_model"] = {
            "path": Path(relative).as_posix(),
            "sha256": sha256_file(model),
        }
        write_report(directory, document)


def decide_without_v04(evidence: Evidence) -> Path:
    """Re-run LOSO so that no seed binds fr-mlp-v04, then decide over the final models."""
    digest = load_features(evidence.features).content_hash
    write_loso(evidence.loso, digest, models={0: evidence.models[0]})
    return decide(evidence.loso, features=evidence.features, out=evidence.out).path


def flip_byte(path: Path, offset: int = -1) -> None:
    """Change one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_decide_writes_only_promote_and_removes_a_stale_hold(evidence: Evidence) -> None:
    evidence.out.mkdir(parents=True)
    (evidence.out / "HOLD.json").write_text("{}", encoding="utf-8")
    outcome = decide(
        evidence.loso, features=evidence.features, models=evidence.models, out=evidence.out
    )
    assert outcome.verdict is Verdict.PROMOTE and outcome.exit_code == 0
    assert outcome.removed == evidence.out / "HOLD.json"
    assert sorted(p.name for p in evidence.out.iterdir()) == ["PROMOTE.json"]
    document = json.loads(outcome.path.read_text(encoding="utf-8"))
    assert document["schema"] == "model-guard/verdict" and document["schema_version"] == 3
    assert document["verdict"] == "PROMOTE" and document["reasons"] == []
    assert document["gate"]["passed"] is True


def test_decide_writes_only_hold_and_removes_a_stale_promote_when_the_gate_fails(
    evidence: Evidence,
) -> None:
    run_decide(evidence)
    write_report(
        evidence.loso,
        loso_document(
            4,
            plcc=0.962,
            dry_run=True,
            rows=20,
            corpus_hash=load_features(evidence.features).content_hash,
            final_model=final_of(evidence.loso, 4),
        ),
    )
    outcome = decide(
        evidence.loso, features=evidence.features, models=evidence.models, out=evidence.out
    )
    assert outcome.verdict is Verdict.HOLD and outcome.exit_code == 1
    assert outcome.removed == evidence.out / "PROMOTE.json"
    assert sorted(p.name for p in evidence.out.iterdir()) == ["HOLD.json"]
    document = json.loads(outcome.path.read_text(encoding="utf-8"))
    assert document["reasons"] == ["seed 4 is a dry run (dry_run: true); a dry run never promotes"]


def test_decide_holds_when_the_loso_corpus_is_not_the_feature_table(evidence: Evidence) -> None:
    rewrite_loso(evidence, "c" * 64)
    outcome = decide(
        evidence.loso, features=evidence.features, models=evidence.models, out=evidence.out
    )
    assert outcome.verdict is Verdict.HOLD
    assert outcome.gate.passed
    assert len(outcome.reasons) == 1
    assert outcome.reasons[0].startswith(
        "LOSO seed(s) 0,1,2,3,4 were trained on corpus cccccccccccc…, not on the feature table "
        "features.parquet"
    )


def test_decide_holds_when_a_source_of_the_table_is_never_held_out(evidence: Evidence) -> None:
    digest = load_features(evidence.features).content_hash
    for seed in GOOD:
        document = loso_document(
            seed,
            plcc=dict.fromkeys(SOURCES[:4], 0.962),
            corpus_hash=digest,
            final_model=final_of(evidence.loso, seed),
        )
        write_report(evidence.loso, document)
    outcome = decide(
        evidence.loso,
        features=evidence.features,
        models=evidence.models,
        out=evidence.out,
        thresholds=GateThresholds(min_sources=4),
    )
    assert outcome.verdict is Verdict.HOLD
    assert outcome.reasons == (
        "LOSO seed(s) 0,1,2,3,4 never hold out source(s) src04 of the feature table features.parquet",
    )


def test_three_source_evidence_is_hold_naming_too_few_sources(tmp_path: Path) -> None:
    frame = feature_frame()
    frame[SOURCE] = [SOURCES[i % 3] for i in range(len(frame))]
    features = write_parquet(frame, tmp_path / "features.parquet")
    digest = load_features(features).content_hash
    loso = tmp_path / "loso"
    for seed in GOOD:
        model = onnx_factory.save(
            onnx_factory.linear_model(bias=10.0 + seed), tmp_path / f"final_seed{seed}.onnx"
        )
        final = {"path": f"../{model.name}", "sha256": sha256_file(model)}
        plcc = dict.fromkeys(SOURCES[:3], 0.99)
        write_report(loso, loso_document(seed, plcc=plcc, corpus_hash=digest, final_model=final))
    outcome = decide(loso, features=features, out=tmp_path / "out")
    assert outcome.verdict is Verdict.HOLD and outcome.exit_code == 1
    assert outcome.reasons == (
        "too few held-out sources: 3 held-out sources, at least 5 needed "
        "(a leave-one-source-out mean over so few sources says little)",
    )
    text = outcome.render_text()
    assert "3 held-out sources, at least 5 needed" in text.splitlines()[0]
    assert "  - too few held-out sources: 3 held-out sources, at least 5 needed" in text
    document = json.loads(outcome.path.read_text(encoding="utf-8"))
    assert (document["gate"]["n_sources"], document["gate"]["thresholds"]["min_sources"]) == (3, 5)
    assert verify_verdict(outcome.path).verdict is Verdict.HOLD
    judged_at_three = decide(
        loso, features=features, out=tmp_path / "out", thresholds=GateThresholds(min_sources=3)
    )
    assert judged_at_three.verdict is Verdict.PROMOTE


def test_a_schema_version_2_verdict_is_refused_as_recording_no_source_minimum(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    document["schema_version"] = 2
    del document["gate"]["n_sources"], document["gate"]["thresholds"]["min_sources"]
    verdict.write_text(json.dumps(document), encoding="utf-8")
    result = verify_verdict(verdict)
    assert not result.ok
    assert result.problems == (
        "verdict PROMOTE.json is schema_version 2: it records no minimum number of held-out "
        "sources, so it cannot show how much evidence it was judged on; re-run 'model-guard verdict'",
    )


def test_decide_binds_paths_relative_to_the_verdict_folder(evidence: Evidence) -> None:
    document = json.loads(run_decide(evidence).read_text(encoding="utf-8"))
    bound = document["bound_to"]
    assert bound["features"] == {
        "path": "../../../data/features.parquet",
        "content_hash": load_features(evidence.features).content_hash,
    }
    assert [r["path"] for r in bound["loso_reports"]] == [
        f"../../../runs/loso/loso_seed{seed}.json" for seed in range(5)
    ]
    inline, external, *_ = bound["models"]
    assert inline == {
        "path": "../../fr-mlp-v03.onnx",
        "sha256": sha256_file(evidence.models[0]),
        "seed": 0,
        "external_data": [],
    }
    data = evidence.models[1].parent / "fr-mlp-v04.onnx.data"
    assert external["external_data"] == [
        {"path": "../../fr-mlp-v04.onnx.data", "sha256": sha256_file(data)}
    ]
    assert "run_provenance" in document


def test_decide_refuses_to_run_without_models(evidence: Evidence) -> None:
    with pytest.raises(UsageError, match="no models given"):
        decide(evidence.loso, features=evidence.features, models=[], out=evidence.out)
    assert not evidence.out.exists()


def test_decide_refuses_a_model_that_is_not_onnx(evidence: Evidence) -> None:
    fake = evidence.root / "fake.onnx"
    fake.write_bytes(b"fake onnx bytes 123")
    with pytest.raises(EvidenceError, match="not an ONNX model"):
        decide(evidence.loso, features=evidence.features, models=[fake], out=evidence.out)
    assert list(evidence.out.iterdir()) == []


def test_decide_refuses_a_model_whose_external_data_is_missing(evidence: Evidence) -> None:
    (evidence.models[1].parent / "fr-mlp-v04.onnx.data").unlink()
    with pytest.raises(EvidenceError, match=r"external data file fr-mlp-v04\.onnx\.data not found"):
        decide(evidence.loso, features=evidence.features, models=evidence.models, out=evidence.out)


def test_verify_passes_on_a_fresh_promote_with_the_registry(evidence: Evidence) -> None:
    result = verify_verdict(run_decide(evidence), registry=evidence.registry, root=evidence.root)
    assert result.problems == ()
    assert result.ok and result.verdict is Verdict.PROMOTE and result.exit_code == 0


def test_verify_passes_after_the_checkout_moves(
    evidence: Evidence, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run_decide(evidence)
    moved = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(evidence.root, moved)
    result = verify_verdict(moved / "model" / "evidence" / "v03" / "PROMOTE.json")
    assert result.ok, result.problems


def test_verify_passes_when_the_table_is_rewritten_with_other_compression(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence)
    frame = pq.read_table(evidence.features).to_pandas()
    write_parquet(frame, evidence.features, compression="gzip")
    assert verify_verdict(verdict).ok


def test_verify_fails_naming_the_model_when_one_byte_changes(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    flip_byte(evidence.models[0])
    result = verify_verdict(verdict)
    assert not result.ok
    assert len(result.problems) == 1
    assert result.problems[0].startswith("model ../../fr-mlp-v03.onnx: sha256 changed")


def test_verify_fails_naming_external_data_when_one_byte_changes(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    flip_byte(evidence.models[1].parent / "fr-mlp-v04.onnx.data", 0)
    result = verify_verdict(verdict)
    assert [p.split(": sha256")[0] for p in result.problems] == [
        "model ../../fr-mlp-v04.onnx external data ../../fr-mlp-v04.onnx.data"
    ]


def test_verify_fails_naming_the_loso_report_when_one_byte_changes(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    report = evidence.loso / "loso_seed2.json"
    report.write_bytes(report.read_bytes().replace(b'"epochs": 3', b'"epochs": 4'))
    result = verify_verdict(verdict)
    assert not result.ok
    assert result.problems[0].startswith(
        "LOSO report ../../../runs/loso/loso_seed2.json: sha256 changed"
    )


def test_verify_fails_naming_the_feature_table_when_one_value_changes(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    frame = pq.read_table(evidence.features).to_pandas()
    frame.loc[7, TARGET] = np.float32(frame.loc[7, TARGET] + 1.0)
    write_parquet(frame, evidence.features)
    result = verify_verdict(verdict)
    assert not result.ok
    assert result.problems[0].startswith(
        "feature table ../../../data/features.parquet: content changed"
    )


def test_verify_fails_when_the_registry_promotes_a_model_the_verdict_does_not_cover(
    evidence: Evidence,
) -> None:
    decide_without_v04(evidence)
    result = verify_verdict(evidence.out / "PROMOTE.json", registry=evidence.registry)
    digest = sha256_file(evidence.models[1])
    assert result.problems == (
        f"registry would promote fr-mlp-v04 (sha256 {digest[:12]}…) which the verdict does not cover",
    )


def test_verify_model_ids_limits_coverage_to_the_models_a_pull_request_flips(
    evidence: Evidence,
) -> None:
    decide_without_v04(evidence)
    verdict = evidence.out / "PROMOTE.json"
    assert verify_verdict(verdict, registry=evidence.registry, model_ids={"fr-mlp-v03"}).ok
    result = verify_verdict(verdict, registry=evidence.registry, model_ids={"fr-mlp-v99"})
    assert result.problems == (f"registry {evidence.registry} has no model fr-mlp-v99",)


def test_verify_ignores_registry_models_still_in_smoke(evidence: Evidence) -> None:
    write_registry(
        evidence.registry,
        [("fr-mlp-v03", evidence.models[0], False), ("fr-mlp-v04", evidence.models[1], True)],
    )
    decide_without_v04(evidence)
    assert verify_verdict(evidence.out / "PROMOTE.json", registry=evidence.registry).ok


def test_verify_says_a_hold_verdict_can_never_back_a_promotion(evidence: Evidence) -> None:
    verdict = run_decide(evidence, mean_plcc=0.99)
    assert verdict.name == "HOLD.json"
    result = verify_verdict(verdict)
    assert result.verdict is Verdict.HOLD
    assert result.problems == (
        "verdict HOLD.json is HOLD: a HOLD verdict can never back a promotion "
        "(its hashes are still checked)",
    )


def test_verify_fails_when_a_hold_is_edited_into_a_promote(evidence: Evidence) -> None:
    hold = run_decide(evidence, mean_plcc=0.99)
    document = json.loads(hold.read_text(encoding="utf-8"))
    document.update(verdict="PROMOTE", reasons=[])
    document["gate"].update(passed=True, reasons=[])
    forged = evidence.out / "PROMOTE.json"
    forged.write_text(json.dumps(document), encoding="utf-8")
    hold.unlink()
    result = verify_verdict(forged)
    assert not result.ok
    assert result.problems[0] == (
        "recorded gate no longer holds: mean PLCC over seeds 0.9618 is below 0.99"
    )
    assert "gate: the recorded passed, reasons differ(s)" in result.problems[1]


def test_verify_fails_when_an_external_data_binding_is_removed_by_hand(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    document["bound_to"]["models"][1]["external_data"] = []
    verdict.write_text(json.dumps(document), encoding="utf-8")
    assert verify_verdict(verdict).problems == (
        "model ../../fr-mlp-v04.onnx: external data file fr-mlp-v04.onnx.data is not bound by the verdict",
    )


def test_verify_with_root_refuses_paths_that_leave_it(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    result = verify_verdict(verdict, root=evidence.out)
    assert not result.ok
    assert all("resolves outside" in problem for problem in result.problems)
    assert result.problems[0].startswith("feature table ../../../data/features.parquet")


def test_verify_reports_schema_problems_with_json_pointers(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    document["bound_to"]["models"][0]["path"] = "/abs/model.onnx"
    verdict.write_text(json.dumps(document), encoding="utf-8")
    result = verify_verdict(verdict)
    assert result.verdict is None
    assert len(result.problems) == 1
    assert result.problems[0].startswith("verdict PROMOTE.json /bound_to/models/0/path: ")


def test_verify_flags_a_renamed_verdict_and_a_contradicting_sibling(evidence: Evidence) -> None:
    hold = run_decide(evidence, mean_plcc=0.99)
    shutil.copy(hold, evidence.out / "PROMOTE.json")
    problems = verify_verdict(evidence.out / "PROMOTE.json").problems
    assert "verdict file is named PROMOTE.json but holds a HOLD verdict" in problems
    assert any(p.startswith("both PROMOTE.json and HOLD.json are in") for p in problems)


def test_verify_raises_when_the_verdict_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="not found"):
        verify_verdict(tmp_path / "PROMOTE.json")


def test_verify_fails_when_a_promote_is_forged_over_reports_of_other_data(
    evidence: Evidence,
) -> None:
    rewrite_loso(evidence, "c" * 64)
    hold = run_decide(evidence)
    document = json.loads(hold.read_text(encoding="utf-8"))
    document.update(verdict="PROMOTE", reasons=[])
    forged = evidence.out / "PROMOTE.json"
    forged.write_text(json.dumps(document), encoding="utf-8")
    hold.unlink()
    problems = verify_verdict(forged).problems
    assert len(problems) == 1
    assert problems[0].startswith(
        "binding: LOSO seed(s) 0,1,2,3,4 were trained on corpus cccccccccccc…, not on the "
        "feature table ../../../data/features.parquet"
    )


def test_cli_promotion_flow_exit_codes(
    evidence: Evidence, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gate`, `verdict` and `verdict verify` through the command line: 0 / 0 / 0, then 1 on tamper."""
    from engine.cli import main

    assert main(["gate", str(evidence.loso)]) == 0
    models = [str(m) for m in evidence.models]
    out = str(evidence.out)
    assert (
        main(
            [
                "verdict",
                str(evidence.loso),
                "--features",
                str(evidence.features),
                "--models",
                *models,
                "--out",
                out,
            ]
        )
        == 0
    )
    promote = evidence.out / "PROMOTE.json"
    assert main(["verdict", "verify", str(promote), "--registry", str(evidence.registry)]) == 0
    flip_byte(evidence.models[0])
    assert main(["verdict", "verify", str(promote)]) == 1
    assert "fr-mlp-v03" in capsys.readouterr().out
    assert main(["gate", str(evidence.loso), "--mean-plcc", "0.99"]) == 1
    assert (
        main(
            [
                "verdict",
                str(evidence.loso),
                "--features",
                str(evidence.features),
                "--models",
                *models,
                "--out",
                out,
                "--mean-plcc",
                "0.99",
            ]
        )
        == 1
    )
    assert (evidence.out / "HOLD.json").exists() and not promote.exists()


def test_cli_promotion_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    assert main(["gate", str(tmp_path)]) == 2
    assert main(["gate", str(tmp_path), "--seeds", "a,b"]) == 2
    assert main(["verdict", "verify", str(tmp_path / "PROMOTE.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err


def append_model(verdict: Path, model: Path, *, seed: int | None) -> None:
    """Append a model to a verdict's bound models with its correct sha256 (the attack)."""
    document = json.loads(verdict.read_text(encoding="utf-8"))
    relative = os.path.relpath(model.resolve(), verdict.parent.resolve())
    document["bound_to"]["models"].append(
        {
            "path": Path(relative).as_posix(),
            "sha256": sha256_file(model),
            "seed": seed,
            "external_data": [],
        }
    )
    verdict.write_text(json.dumps(document, indent=2), encoding="utf-8")


@pytest.mark.parametrize("seed", [None, 7, 2])
def test_verify_refuses_a_model_appended_to_a_promote_that_no_loso_report_binds(
    evidence: Evidence, seed: int | None
) -> None:
    verdict = run_decide(evidence)
    assert verify_verdict(verdict, registry=evidence.registry).ok
    extra = onnx_factory.save(
        onnx_factory.linear_model(bias=42.0), evidence.root / "model" / "x.onnx"
    )
    append_model(verdict, extra, seed=seed)
    write_registry(
        evidence.registry,
        [
            ("fr-mlp-v03", evidence.models[0], False),
            ("fr-mlp-v04", evidence.models[1], False),
            ("fr-mlp-extra", extra, False),
        ],
    )
    result = verify_verdict(verdict, registry=evidence.registry)
    digest = sha256_file(extra)[:12]
    if seed == 2:
        assert result.problems == (
            "model ../../x.onnx: seed 2 is already traced to model "
            "../../../runs/loso/final_seed2.onnx",
        )
    else:
        why = "it names no seed" if seed is None else "seed 7 has no LOSO report here"
        assert result.problems == (
            f"model ../../x.onnx (sha256 {digest}…): no LOSO report of the verdict binds "
            f"it ({why}); only the seeds' final models can be promoted",
        )


def test_verify_refuses_a_promote_missing_a_seeds_final_model(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    document["bound_to"]["models"] = document["bound_to"]["models"][:-1]
    verdict.write_text(json.dumps(document), encoding="utf-8")
    assert verify_verdict(verdict).problems == (
        "LOSO seed 4: its final model final_seed4.onnx (loso_seed4.json) is missing from the "
        "verdict's models",
    )


def test_decide_holds_when_a_seeds_final_model_is_not_given(evidence: Evidence) -> None:
    outcome = decide(
        evidence.loso, features=evidence.features, models=evidence.models[:4], out=evidence.out
    )
    assert outcome.verdict is Verdict.HOLD
    assert outcome.reasons == (
        "LOSO seed 4: its final model final_seed4.onnx (loso_seed4.json) is missing from the "
        "verdict's models",
    )


def test_one_member_bound_by_two_seeds_holds_and_never_verifies(evidence: Evidence) -> None:
    member = evidence.models[0]
    bind_final_models(evidence.loso, [member, member, *evidence.models[2:]])
    outcome = decide(evidence.loso, features=evidence.features, out=evidence.out)
    assert outcome.verdict is Verdict.HOLD
    digest = sha256_file(member)[:12]
    assert outcome.reasons[0] == (
        f"LOSO seeds 0,1 bind the same final model (sha256 {digest}…): one model file cannot "
        "be the final model of two seeds"
    )


def test_verify_refuses_a_model_listed_twice(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    append_model(verdict, evidence.models[0], seed=0)
    assert verify_verdict(verdict).problems == (
        "model ../../fr-mlp-v03.onnx: bound twice (same sha256 as ../../fr-mlp-v03.onnx)",
    )


def test_version_1_loso_reports_are_judged_but_cannot_back_a_promote(evidence: Evidence) -> None:
    digest = load_features(evidence.features).content_hash
    write_loso(evidence.loso, digest, schema_version=1)
    outcome = decide(
        evidence.loso, features=evidence.features, models=evidence.models, out=evidence.out
    )
    assert outcome.verdict is Verdict.HOLD and outcome.gate.passed
    assert outcome.reasons[0] == (
        "LOSO seed 0 (loso_seed0.json) is a schema_version 1 report that binds no final model, "
        "so it cannot back a promotion; re-run 'model-guard loso'"
    )
    document = json.loads(outcome.path.read_text(encoding="utf-8"))
    assert {model["seed"] for model in document["bound_to"]["models"]} == {None}


def test_verify_refuses_a_promote_forged_over_version_1_reports(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    digest = load_features(evidence.features).content_hash
    write_loso(evidence.loso, digest, schema_version=1)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    for entry in document["bound_to"]["loso_reports"]:
        entry["sha256"] = sha256_file(verdict.parent / entry["path"])
    verdict.write_text(json.dumps(document), encoding="utf-8")
    problems = verify_verdict(verdict).problems
    assert problems[0] == (
        "LOSO seed 0 (loso_seed0.json) is a schema_version 1 report that binds no final model, "
        "so it cannot back a promotion; re-run 'model-guard loso'"
    )
    assert len(problems) == 5  # one line per seed; the models' recorded seeds are all known


def test_verify_refuses_a_report_rehashed_to_bind_another_final_model(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence)
    report = evidence.loso / "loso_seed1.json"
    forged = json.loads(report.read_text(encoding="utf-8"))
    forged["final_model"]["sha256"] = "f" * 64
    report.write_text(json.dumps(forged), encoding="utf-8")
    document = json.loads(verdict.read_text(encoding="utf-8"))
    for entry in document["bound_to"]["loso_reports"]:
        entry["sha256"] = sha256_file(verdict.parent / entry["path"])
    verdict.write_text(json.dumps(document), encoding="utf-8")
    model = sha256_file(evidence.models[1])[:12]
    assert verify_verdict(verdict).problems == (
        f"model ../../fr-mlp-v04.onnx (seed 1): sha256 {model}…, but loso_seed1.json binds "
        "final model ../../model/fr-mlp-v04.onnx with sha256 ffffffffffff…",
    )


def test_verify_refuses_a_version_1_verdict_in_one_line(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    document = json.loads(verdict.read_text(encoding="utf-8"))
    document["schema_version"] = 1
    verdict.write_text(json.dumps(document), encoding="utf-8")
    assert verify_verdict(verdict).problems == (
        "verdict PROMOTE.json is schema_version 1: it traces no model to a LOSO seed, so it "
        "cannot back a promotion; re-run 'model-guard loso' and 'model-guard verdict'",
    )


def test_decide_defaults_to_the_final_models_each_traced_to_its_seed(evidence: Evidence) -> None:
    outcome = decide(evidence.loso, features=evidence.features, out=evidence.out)
    assert outcome.verdict is Verdict.PROMOTE
    document = json.loads(outcome.path.read_text(encoding="utf-8"))
    traced = {model["seed"]: model["sha256"] for model in document["bound_to"]["models"]}
    assert traced == {seed: sha256_file(path) for seed, path in enumerate(evidence.models)}
