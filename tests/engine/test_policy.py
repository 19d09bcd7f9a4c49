"""Promotion policy: a verdict written laxer than the repository's policy fails verification."""

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.errors import EvidenceError, PolicyError
from engine.features import load_features
from engine.gate import GateThresholds
from engine.policy import (
    PolicyRule,
    PromotionPolicy,
    check_policy,
    load_policy,
    policy_from_mapping,
)
from engine.verdict import verify_verdict
from tests.engine.test_verdict import Evidence, build_evidence, run_decide, write_loso

MODEL = Path(__file__).resolve().parents[2] / "model"


@pytest.fixture
def evidence(tmp_path: Path) -> Evidence:
    """A passing set of evidence: five held-out sources, seeds 0-4."""
    return build_evidence(tmp_path)


def document(verdict: Path) -> Any:
    """Return a verdict file's JSON."""
    return json.loads(verdict.read_text(encoding="utf-8"))


def rules(verdict: Path, policy: PromotionPolicy) -> list[PolicyRule]:
    """Return the rules a verdict breaks under a policy, in order."""
    return [violation.rule for violation in check_policy(document(verdict), policy)]


def test_policy_defaults_are_the_gate_defaults() -> None:
    policy, gate = PromotionPolicy(), GateThresholds()
    assert (policy.min_mean_plcc, policy.max_spread) == (gate.mean_plcc, gate.max_spread)
    assert (policy.min_seed_plcc, policy.min_fold_plcc) == (gate.per_seed_min, gate.per_fold_min)
    assert policy.required_seeds == gate.seeds and policy.seed_count == len(gate.seeds)


def test_lax_verdict_passes_its_own_verify_but_fails_the_default_policy_naming_the_rule(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence, mean_plcc=0.0, per_seed_min=0.0)
    assert verify_verdict(verdict).ok
    result = verify_verdict(verdict, policy=PromotionPolicy())
    assert result.problems == (
        "policy: mean PLCC threshold 0.0 is laxer than the policy's 0.95 (promotion.min_mean_plcc)",
        "policy: per-seed floor 0.0 is laxer than the policy's 0.95 (promotion.min_seed_plcc)",
    )


def test_verdict_at_the_gate_defaults_passes_the_default_policy(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    assert check_policy(document(verdict), PromotionPolicy()) == []
    assert verify_verdict(verdict, policy=PromotionPolicy()).ok


def test_stricter_policy_names_the_laxer_threshold_and_the_evidence_below_it(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence)
    found = [str(v) for v in check_policy(document(verdict), PromotionPolicy(min_mean_plcc=0.97))]
    assert found == [
        "mean PLCC threshold 0.95 is laxer than the policy's 0.97 (promotion.min_mean_plcc)",
        "mean PLCC over seeds 0.9618 is below the policy's 0.97 (promotion.min_mean_plcc)",
    ]


def test_policy_per_fold_floor_against_a_verdict_without_one(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    found = [str(v) for v in check_policy(document(verdict), PromotionPolicy(min_fold_plcc=0.9))]
    assert found == ["per-fold floor off is laxer than the policy's 0.9 (promotion.min_fold_plcc)"]
    strict = check_policy(document(verdict), PromotionPolicy(min_fold_plcc=0.9615))
    assert [v.rule for v in strict].count(PolicyRule.MIN_FOLD_PLCC) == 3  # off + seeds 0 and 4
    assert "seed 0 fold src00: PLCC 0.9610 is below the policy's per-fold floor 0.9615" in str(
        strict[1]
    )


def test_verdict_with_too_few_seeds_fails_the_default_policy(evidence: Evidence) -> None:
    shutil.rmtree(evidence.loso)
    write_loso(evidence.loso, load_features(evidence.features).content_hash, {0: 0.96, 1: 0.96})
    verdict = run_decide(evidence, seeds=(0, 1))
    assert verify_verdict(verdict).ok
    result = verify_verdict(verdict, policy=PromotionPolicy())
    assert result.problems == (
        "policy: the verdict's evidence has seeds 0,1; the policy asks for seeds 0,1,2,3,4 "
        "(missing 2,3,4) (promotion.seeds)",
    )
    assert rules(verdict, PromotionPolicy(min_seeds=3)) == [PolicyRule.MIN_SEEDS]
    assert rules(verdict, PromotionPolicy(min_seeds=2)) == []  # a count alone names no seeds
    assert rules(verdict, PromotionPolicy(seeds=(1,), min_seeds=2)) == []


def test_extra_seeds_beyond_the_policy_are_allowed_and_judged(evidence: Evidence) -> None:
    shutil.rmtree(evidence.loso)
    plccs = {seed: 0.962 for seed in range(6)}
    write_loso(evidence.loso, load_features(evidence.features).content_hash, plccs)
    verdict = run_decide(evidence, seeds=tuple(range(6)))
    assert check_policy(document(verdict), PromotionPolicy()) == []
    assert rules(verdict, PromotionPolicy(min_seed_plcc=0.97)) == [
        PolicyRule.MIN_SEED_PLCC,
        *[PolicyRule.MIN_SEED_PLCC] * 6,
    ]


def test_verdict_with_too_few_sources_fails_naming_the_rule(evidence: Evidence) -> None:
    verdict = run_decide(evidence)
    assert check_policy(document(verdict), PromotionPolicy(min_sources=5)) == []
    found = check_policy(document(verdict), PromotionPolicy(min_sources=6))
    assert [str(v) for v in found] == [
        "the verdict was judged needing at least 5 held-out source(s), laxer than the policy's 6 "
        "(promotion.min_sources)",
        "5 held-out source(s), the policy asks for at least 6 (promotion.min_sources)",
    ]


def test_policy_of_five_sources_refuses_a_verdict_judged_with_a_lower_minimum(
    evidence: Evidence,
) -> None:
    verdict = run_decide(evidence, min_sources=3)
    assert verify_verdict(verdict).ok
    result = verify_verdict(verdict, policy=PromotionPolicy(min_sources=5))
    assert result.problems == (
        "policy: the verdict was judged needing at least 3 held-out source(s), laxer than the "
        "policy's 5 (promotion.min_sources)",
    )
    assert verify_verdict(verdict, policy=PromotionPolicy(min_sources=3)).ok


def test_policy_min_sources_defaults_to_the_gate_minimum() -> None:
    assert PromotionPolicy().min_sources == GateThresholds().min_sources == 5


def test_hold_verdict_reports_nan_evidence_as_below_the_policy(evidence: Evidence) -> None:
    verdict = run_decide(evidence, mean_plcc=0.99)
    assert rules(verdict, PromotionPolicy(min_mean_plcc=0.99, min_seed_plcc=0.9)) == [
        PolicyRule.MIN_MEAN_PLCC
    ]
    forged = document(verdict)
    forged["gate"]["mean_plcc"] = None
    assert [v.rule for v in check_policy(forged, PromotionPolicy())] == [PolicyRule.MIN_MEAN_PLCC]


def test_check_policy_refuses_a_document_that_is_not_a_verdict() -> None:
    with pytest.raises(EvidenceError, match="not a verdict"):
        check_policy({"schema": "model-guard/verdict"}, PromotionPolicy())


def test_committed_verdict_passes_the_default_policy() -> None:
    verdict = MODEL / "evidence" / "fr-ens-v1" / "PROMOTE.json"
    assert check_policy(document(verdict), PromotionPolicy()) == []
    result = verify_verdict(verdict, registry=MODEL / "registry.json", policy=PromotionPolicy())
    assert result.ok, result.problems


def test_policy_block_keys_left_out_keep_their_defaults() -> None:
    policy = policy_from_mapping({"min_mean_plcc": 0.97, "min_sources": 5})
    assert policy == PromotionPolicy(min_mean_plcc=0.97, min_sources=5)
    assert policy_from_mapping({"min_seeds": 3}).required_seeds == ()
    assert policy_from_mapping({"min_fold_plcc": None}).min_fold_plcc is None
    for policy in (PromotionPolicy(), PromotionPolicy(seeds=(), min_fold_plcc=0.9)):
        assert policy_from_mapping(json.loads(json.dumps(policy.to_dict()))) == policy
    assert policy_from_mapping({"seeds": None, "min_seeds": None}) == PromotionPolicy()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([], "a promotion policy must be a mapping, not a list"),
        ("strict", "a promotion policy must be a mapping, not a string"),
        ({"mean_plcc": 0.9}, "unknown key(s) mean_plcc; allowed: min_mean_plcc,"),
        ({"promotion": {}}, "(give the block's keys, not a mapping holding it)"),
        ({"min_mean_plcc": "0.95"}, "promotion.min_mean_plcc must be a finite number, not '0.95'"),
        ({"max_spread": True}, "promotion.max_spread must be a finite number, not True"),
        ({"min_mean_plcc": math.nan}, "promotion.min_mean_plcc must be a finite number, not nan"),
        ({"min_mean_plcc": 1.5}, "promotion.min_mean_plcc must be a number in [-1, 1], not 1.5"),
        ({"max_spread": -0.1}, "promotion.max_spread must be a non-negative number"),
        ({"seeds": "0,1"}, "promotion.seeds must be a list of non-negative integers"),
        ({"seeds": [0, 0]}, "promotion.seeds must not repeat a seed"),
        ({"min_seeds": 0}, "promotion.min_seeds must be a positive integer, not 0"),
        ({"min_sources": None}, "promotion.min_sources must be a positive integer, not None"),
        ({"min_sources": 2.5}, "promotion.min_sources must be a positive integer, not 2.5"),
        ({"min_sources": 1}, "promotion.min_sources must be an integer of at least 2, not 1"),
    ],
)
def test_policy_block_errors_are_one_line_naming_the_key(block: object, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping(block, origin="policy.json")
    text = str(caught.value)
    assert text.startswith("policy.json: ") and message in text and "\n" not in text


def test_load_policy_refuses_a_nan_literal_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"min_mean_plcc": NaN}', encoding="utf-8")
    with pytest.raises(PolicyError, match="NaN is not valid JSON"):
        load_policy(path)
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "absent.json")


def test_load_policy_overrides_replace_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"min_mean_plcc": 0.97, "min_sources": 5}', encoding="utf-8")
    policy = load_policy(path, overrides={"min_sources": 3})
    assert (policy.min_mean_plcc, policy.min_sources) == (0.97, 3)


def test_cli_verify_with_policy_flags_exits_1_with_one_line_per_violation(
    evidence: Evidence, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    verdict = str(run_decide(evidence, mean_plcc=0.0))
    assert main(["verdict", "verify", verdict]) == 0
    capsys.readouterr()
    assert main(["verdict", "verify", verdict, "--mean-plcc", "0.95", "--min-sources", "6"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "problem: policy: mean PLCC threshold 0.0 is laxer than the policy's 0.95 "
        "(promotion.min_mean_plcc)",
        "problem: policy: the verdict was judged needing at least 5 held-out source(s), laxer "
        "than the policy's 6 (promotion.min_sources)",
        "problem: policy: 5 held-out source(s), the policy asks for at least 6 "
        "(promotion.min_sources)",
    ]


def test_cli_verify_with_a_policy_file_and_an_overriding_flag(
    evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    verdict = str(run_decide(evidence))
    policy = tmp_path / "policy.json"
    policy.write_text('{"min_sources": 6, "seeds": [0, 1, 2, 3, 4]}', encoding="utf-8")
    assert main(["verdict", "verify", verdict, "--policy", str(policy)]) == 1
    assert "(promotion.min_sources)" in capsys.readouterr().out
    args = ["verdict", "verify", verdict, "--policy", str(policy), "--min-sources", "5"]
    assert main(args) == 0
    assert main(["verdict", "verify", verdict, "--min-seeds", "5", "--seeds", "0-4"]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[0.95]", "a promotion policy must be a mapping, not a list"),
        ('{"min_plcc": 0.95}', "unknown key(s) min_plcc"),
        ('{"min_sources": "5"}', "promotion.min_sources must be a positive integer"),
        ('{"max_spread": NaN}', "NaN is not valid JSON"),
    ],
)
def test_cli_policy_file_errors_are_one_line_and_exit_2(
    evidence: Evidence,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    from engine.cli import main

    verdict = str(run_decide(evidence))
    policy = tmp_path / "policy.json"
    policy.write_text(text, encoding="utf-8")
    assert main(["verdict", "verify", verdict, "--policy", str(policy)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("model-guard: error: ") and message in line


def test_cli_policy_flag_errors_are_one_line_and_exit_2(
    evidence: Evidence, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    verdict = str(run_decide(evidence))
    assert main(["verdict", "verify", verdict, "--mean-plcc", "nan"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "model-guard: error: argument --mean-plcc: must be a finite number, not 'nan' "
        "(see 'model-guard verdict verify --help')"
    )
