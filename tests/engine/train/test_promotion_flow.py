"""The documented promotion flow on the bundled data: loso, gate, verdict, verify.

Two seeds at 50 epochs rather than the default five at 200: the same commands and code
paths (several seeds, the spread, each report binding its seed's committed ensemble member), at a tenth of
the training (network-epochs). The gate still passes with a margin (mean PLCC about 0.97).
"""

from pathlib import Path

import pytest

pytest.importorskip("torch")

from engine.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
FEATURES = str(ROOT / "testdata" / "bisect" / "features.parquet")
SEEDS = ["--seeds", "0,1"]


def test_loso_gate_verdict_and_verify_promote_the_committed_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = sorted(str(p) for p in (ROOT / "model").glob("fr-ens-v1-m*.onnx"))
    assert len(members) == 5
    finals = [f"{seed}={members[seed]}" for seed in (0, 1)]  # member k is seed k's final model
    loso = ["loso", "--features", FEATURES, "--out", str(tmp_path), *SEEDS, "--epochs", "50"]
    assert main([*loso, "--final-models", *finals]) == 0
    assert main(["gate", str(tmp_path), *SEEDS]) == 0
    # A member no seed binds makes it a HOLD; the bound ones (the default) a PROMOTE.
    verdict = ["verdict", str(tmp_path), "--features", FEATURES, *SEEDS]
    assert main([*verdict, "--models", *members]) == 1
    assert main(verdict) == 0
    assert (tmp_path / "PROMOTE.json").exists() and not (tmp_path / "HOLD.json").exists()
    assert main(["verdict", "verify", str(tmp_path / "PROMOTE.json")]) == 0
    assert "verified" in capsys.readouterr().out
