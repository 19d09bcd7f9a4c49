"""Foreign evidence: another tool's ensemble manifest and PROMOTE are read for what matters first.

The fixture is laid out as a real tiny-model registry keeps it (``model/tiny/``): a
``kind: fr_ensemble`` manifest whose every member hash is stale, codec-aware members
built with ``onnx.helper``, and a ``*_PROMOTE.json`` bound to no data (``corpus present:
false``) whose ``loso_dir`` holds no per-seed report.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.evidence import is_foreign
from engine.manifest import ManifestError, check_manifest, load_manifest, validate_manifest
from engine.verdict import verify_verdict

ROOT = Path(__file__).resolve().parents[2]
ENSEMBLE = "fr_regressor_v2_ensemble_v1"
SEEDS = (0, 1, 2, 3, 4)
VERDICT = f"{ENSEMBLE}_seed_flip_PROMOTE.json"
CODEC_WIDTH = 14


@dataclass(frozen=True)
class Foreign:
    """A foreign registry checkout: its root, the manifest, the verdict and each member's real hash."""

    repo: Path
    manifest: Path
    verdict: Path
    actual: dict[int, str]
    recorded: dict[int, str]


def member_model(seed: int) -> bytes:
    """A codec-aware member as the field ships them: features [N,6] + codec_onehot [N,14]."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(
        rng.normal(size=(6 + CODEC_WIDTH, 1)).astype(np.float32), name="w"
    )
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["features", "codec_onehot"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["score"]),
        ],
        f"{ENSEMBLE}_seed{seed}",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("codec_onehot", TensorProto.FLOAT, ["N", CODEC_WIDTH]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_json(path: Path, document: object) -> Path:
    """Write a document as the field does (sorted keys, two-space indent)."""
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def foreign(tmp_path: Path) -> Foreign:
    """A checkout with model/tiny/: stale manifest, members, and a PROMOTE bound to no data."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    tiny = repo / "model" / "tiny"
    tiny.mkdir(parents=True)
    actual, recorded, members = {}, {}, []
    for seed in SEEDS:
        raw = member_model(seed)
        (tiny / f"{ENSEMBLE}_seed{seed}.onnx").write_bytes(raw)
        actual[seed] = hashlib.sha256(raw).hexdigest()
        # The hash of the file as first trained: every member was retrained since.
        recorded[seed] = hashlib.sha256(raw + b"as first trained").hexdigest()
        members.append(
            {
                "id": f"{ENSEMBLE}_seed{seed}",
                "onnx": f"{ENSEMBLE}_seed{seed}.onnx",
                "seed": seed,
                "sha256": recorded[seed],
            }
        )
    manifest = write_json(
        tiny / f"{ENSEMBLE}.json",
        {
            "codec_vocab": ["x264", "x265", "libsvtav1", "libvvenc", "libvpx-vp9", "unknown"],
            "codec_vocab_version": 1,
            "confidence": {
                "conformal_q_residual": None,
                "gaussian_z": 1.959963984540054,
                "method": "ensemble",
                "nominal_coverage": 0.95,
            },
            "ensemble_size": 5,
            "eval": {"in_sample_plcc": -0.19, "in_sample_rmse": 78.8, "mean_sigma_train": 0.04},
            "feature_mean": [0.70, 0.57, 0.60, 0.69, 0.74, 14.97],
            "feature_order": [
                "adm2",
                "vif_scale0",
                "vif_scale1",
                "vif_scale2",
                "vif_scale3",
                "motion2",
            ],
            "feature_std": [0.18, 0.23, 0.19, 0.16, 0.14, 8.38],
            "id": ENSEMBLE,
            "kind": "fr_ensemble",
            "members": members,
            "smoke": True,
        },
    )
    verdict = write_json(
        tiny / VERDICT,
        {
            "adr": "ADR-0309",
            "corpus": {
                "corpus_root": ".corpus/netflix",
                "dis_count": 0,
                "present": False,
                "ref_count": 0,
                "sha256": None,
            },
            "gate": {
                "failing_seeds": [],
                "mean_plcc": 0.9972,
                "mean_plcc_pass": True,
                "mean_plcc_threshold": 0.95,
                "passed": True,
                "per_seed_min": 0.95,
                "per_seed_pass": True,
                "per_seed_plccs": {str(seed): 0.997 for seed in SEEDS},
                "plcc_spread": 0.00095,
                "plcc_spread_max": 0.005,
                "plcc_spread_pass": True,
            },
            "generated_at_utc": "2026-05-06T11:10:09+00:00",
            "loso_dir": "runs/ensemble_v2_real",
            "parent_adr": "ADR-0303",
            "recommendation": "flip seeds smoke->false in model/tiny/registry.json",
            "schema_version": 1,
            "seeds": list(SEEDS),
            "verdict": "PROMOTE",
        },
    )
    return Foreign(repo, manifest, verdict, actual, recorded)


def stale_lines(foreign: Foreign) -> list[str]:
    """The one line per stale member that must open every report, in manifest order."""
    return [
        f"member {ENSEMBLE}_seed{seed} ({ENSEMBLE}_seed{seed}.onnx): stale hash: the manifest "
        f"records sha256 {foreign.recorded[seed][:12]}… but the file hashes to "
        f"{foreign.actual[seed][:12]}…"
        for seed in SEEDS
    ]


def verdict_lines(foreign: Foreign) -> list[str]:
    """The foreign verdict's substantive lines: no data, no bound LOSO report, none found."""
    tiny = foreign.verdict.parent.resolve()
    return [
        f"verdict {VERDICT} is bound to no data (corpus present: false, sha256: null, "
        "corpus_root: .corpus/netflix): its gate figures are not tied to any corpus or feature "
        "table",
        f"verdict {VERDICT} has no LOSO evidence bound by sha256: it names loso_dir "
        "runs/ensemble_v2_real and seeds 0,1,2,3,4, no report hashes",
        *(
            f"LOSO seed {seed}: runs/ensemble_v2_real/loso_seed{seed}.json not found (looked "
            f"from {tiny} up to {foreign.repo.resolve()})"
            for seed in SEEDS
        ),
    ]


def unjudged_lines() -> list[str]:
    """One line per member: the verdict names its seed but no model file or sha256."""
    return [
        f"member {ENSEMBLE}_seed{seed} ({ENSEMBLE}_seed{seed}.onnx): not shown to be a model "
        f"the verdict judged: {VERDICT} names seed {seed} but no model file or sha256"
        for seed in SEEDS
    ]


def summary(name: str, kind: str, count: int) -> str:
    """The one schema line that comes last."""
    return (
        f"{name}: not model-guard's {kind} format: {count} schema differences (fields it does "
        "not know or lacks), so it is never accepted as one; --verbose lists them"
    )


def test_foreign_manifest_reports_every_stale_member_first_and_schema_noise_last(
    foreign: Foreign,
) -> None:
    problems = validate_manifest(foreign.manifest)
    assert problems[:5] == stale_lines(foreign)
    assert problems[5:] == [summary(f"{ENSEMBLE}.json", "ensemble manifest", 23)]
    check = check_manifest(foreign.manifest)
    assert check.foreign and check.differences is not None
    assert len(check.differences.problems) == 23  # the dump that used to come first
    with pytest.raises(ManifestError, match=r"seed0\.onnx\): stale hash.*\(and 5 more\)"):
        load_manifest(foreign.manifest)


def test_foreign_manifest_with_a_missing_member_says_file_not_found(foreign: Foreign) -> None:
    (foreign.manifest.parent / f"{ENSEMBLE}_seed3.onnx").unlink()
    problems = validate_manifest(foreign.manifest)
    assert problems[3] == f"member {ENSEMBLE}_seed3 ({ENSEMBLE}_seed3.onnx): file not found"
    assert problems[:3] + problems[4:5] == [stale_lines(foreign)[i] for i in (0, 1, 2, 4)]


def test_a_foreign_manifest_whose_hashes_all_match_is_still_not_accepted(
    foreign: Foreign,
) -> None:
    document = json.loads(foreign.manifest.read_text())
    for member in document["members"]:
        member["sha256"] = foreign.actual[member["seed"]]
    write_json(foreign.manifest, document)
    [problem] = validate_manifest(foreign.manifest)
    assert "not model-guard's ensemble manifest format" in problem


def test_foreign_promote_reports_no_data_then_missing_loso_then_unjudged_models(
    foreign: Foreign,
) -> None:
    result = verify_verdict(foreign.verdict)
    assert not result.ok and result.exit_code == 1 and result.foreign and result.verdict is None
    assert list(result.problems[:-2]) == verdict_lines(foreign)
    assert result.problems[-2] == (
        f"verdict {VERDICT} names no model file or sha256 (only seeds 0,1,2,3,4), so no model "
        "can be shown to be one it judged"
    )
    assert result.problems[-1] == summary(f"verdict {VERDICT}", "verdict", 29)
    verbose = result.render_text(verbose=True).splitlines()
    assert verbose[-29:] == list(result.differences)
    assert f"  {VERDICT}#/: 'schema' is a required property" in result.differences


def test_foreign_loso_reports_that_exist_are_named_as_unbound(foreign: Foreign) -> None:
    runs = foreign.repo / "runs" / "ensemble_v2_real"
    runs.mkdir(parents=True)
    write_json(runs / "loso_seed2.json", {"seed": 2, "mean_plcc": 0.997})
    problems = verify_verdict(foreign.verdict).problems
    assert problems[4] == (
        f"LOSO seed 2: {runs / 'loso_seed2.json'} exists, but the verdict records no sha256 "
        "for it, so it cannot be shown to be the report that was judged"
    )
    assert "loso_seed1.json not found" in problems[3]


def test_a_foreign_loso_dir_never_leaves_the_checkout(foreign: Foreign) -> None:
    document = json.loads(foreign.verdict.read_text())
    document["loso_dir"] = "../../../../etc"
    write_json(foreign.verdict, document)
    problems = verify_verdict(foreign.verdict).problems
    assert problems[2] == (
        "LOSO reports: loso_dir ../../../../etc is not a relative path without '..'; not opened"
    )


def test_ensemble_validate_with_the_foreign_verdict_orders_every_fault(
    foreign: Foreign, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "ensemble",
            "validate",
            "--manifest",
            str(foreign.manifest),
            "--verdict",
            str(foreign.verdict),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[:-2] == [*stale_lines(foreign), *verdict_lines(foreign), *unjudged_lines()]
    assert lines[-2:] == [
        summary(f"{ENSEMBLE}.json", "ensemble manifest", 23),
        summary(f"verdict {VERDICT}", "verdict", 29),
    ]


def test_verdict_verify_with_the_foreign_manifest_lists_the_same_faults_in_the_same_order(
    foreign: Foreign, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verdict", "verify", str(foreign.verdict), "--manifest", str(foreign.manifest)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert all(line.startswith("problem: ") for line in out)
    lines = [line.removeprefix("problem: ") for line in out]
    assert lines[:-2] == [*stale_lines(foreign), *verdict_lines(foreign), *unjudged_lines()]
    code = main(
        [
            "verdict",
            "verify",
            str(foreign.verdict),
            "--manifest",
            str(foreign.manifest),
            "--verbose",
        ]
    )
    verbose = capsys.readouterr().out.splitlines()
    assert code == 1 and verbose[: len(out)] == out
    assert len(verbose) > len(out) and all(line.startswith("  ") for line in verbose[len(out) :])


def test_a_member_whose_seed_the_foreign_verdict_never_judged_is_named(foreign: Foreign) -> None:
    document = json.loads(foreign.verdict.read_text())
    document["seeds"] = [0, 1, 2, 3]
    write_json(foreign.verdict, document)
    members = check_manifest(foreign.manifest).members
    problems = verify_verdict(foreign.verdict, members=members).problems
    assert problems[-2] == (
        f"member {ENSEMBLE}_seed4 ({ENSEMBLE}_seed4.onnx): not a model the verdict judged: "
        f"{VERDICT} judged seeds 0,1,2,3, not 4"
    )


def test_hostile_foreign_fields_stay_one_line_each(foreign: Foreign) -> None:
    document = json.loads(foreign.manifest.read_text())
    document["members"] = [
        {"id": "evil\nid", "onnx": "/etc/passwd", "seed": True, "sha256": 7},
        "not an object",
        {"id": "fifo", "onnx": "link.onnx", "seed": 0, "sha256": "0" * 64},
    ]
    (foreign.manifest.parent / "link.onnx").symlink_to("/etc/hostname")
    write_json(foreign.manifest, document)
    problems = validate_manifest(foreign.manifest)
    assert problems[:3] == [
        "member evil\\nid (/etc/passwd): path must be relative to the manifest's folder",
        "member #1: names no 'onnx' file, so it cannot be checked",
        "member fifo (link.onnx): path resolves outside the manifest's folder",
    ]
    assert all("\n" not in problem for problem in problems)


def test_our_committed_ensemble_and_promote_still_validate_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ROOT / "model"
    manifest, verdict = model / "fr-ens-v1.json", model / "evidence" / "fr-ens-v1" / "PROMOTE.json"
    assert (
        main(["ensemble", "validate", "--manifest", str(manifest), "--verdict", str(verdict)]) == 0
    )
    assert main(["verdict", "verify", str(verdict), "--manifest", str(manifest)]) == 0
    assert main(["verdict", "verify", str(verdict)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("verified")


def test_a_member_of_ours_that_the_verdict_did_not_judge_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(ROOT / "model", folder)
    shutil.copyfile(folder / "fr-mlp-2026.05.onnx", folder / "fr-ens-v1-m2.onnx")
    digest = hashlib.sha256((folder / "fr-ens-v1-m2.onnx").read_bytes()).hexdigest()
    check = check_manifest(folder / "fr-ens-v1.json")
    result = verify_verdict(
        folder / "evidence" / "fr-ens-v1" / "PROMOTE.json", members=check.members
    )
    assert result.problems[-1] == (
        f"member fr-ens-v1-m2 (fr-ens-v1-m2.onnx): not a model the verdict judged "
        f"(sha256 {digest[:12]}… is none of its 5 models)"
    )


def test_a_broken_document_of_ours_is_still_checked_strictly(tmp_path: Path) -> None:
    document = json.loads((ROOT / "model" / "fr-ens-v1.json").read_text())
    del document["schema"]
    write_json(tmp_path / "m.json", document)
    assert validate_manifest(tmp_path / "m.json") == ["m.json#/: 'schema' is a required property"]
    verdict = json.loads((ROOT / "model" / "evidence" / "fr-ens-v1" / "PROMOTE.json").read_text())
    del verdict["schema"]
    write_json(tmp_path / "PROMOTE.json", verdict)
    result = verify_verdict(tmp_path / "PROMOTE.json")
    assert not result.foreign
    assert result.problems == ("verdict PROMOTE.json /: 'schema' is a required property",)


def test_hostile_foreign_sizes_give_a_bounded_report_not_a_traceback(foreign: Foreign) -> None:
    verdict = json.loads(foreign.verdict.read_text())
    verdict["loso_dir"] = "a" * 5000
    verdict["seeds"] = list(range(100_000))
    write_json(foreign.verdict, verdict)
    manifest = json.loads(foreign.manifest.read_text())
    manifest["members"][0]["onnx"] = "b" * 5000
    manifest["members"] *= 300  # 1500 members: only the first 256 are hashed
    write_json(foreign.manifest, manifest)
    problems = verify_verdict(foreign.verdict).problems
    assert len(problems) == 2 + 32 + 1 + 2
    assert problems[-3] == "LOSO reports: 99968 more seeds not looked up"
    assert all(len(problem) < 400 for problem in problems)
    lines = validate_manifest(foreign.manifest)
    assert lines[0].endswith("...): cannot be looked up (File name too long)")
    assert lines[-2] == f"{ENSEMBLE}.json lists 1500 members; only the first 256 were checked"


@pytest.mark.parametrize(
    ("document", "foreign"),
    [
        ({"schema": "model-guard/verdict", "adr": "x"}, False),  # ours, broken: strict
        ({"schema": "model-guard/loso-report"}, False),  # ours, the wrong kind: strict
        ({"bound_to": {}, "corpus": {}}, False),  # our own key, no schema: strict
        ({"schema_version": 1, "verdict": "PROMOTE", "corpus": {}}, True),
        ({"schema": "vmafx/promote", "verdict": "PROMOTE"}, True),
        ([{"verdict": "PROMOTE"}], False),  # not an object: a schema error, as before
    ],
)
def test_foreignness_is_decided_by_our_schema_name_and_our_own_keys(
    document: object, foreign: bool
) -> None:
    assert is_foreign(document, own_keys=("bound_to",)) is foreign
