"""The documented promotion flow on the bundled data: loso, gate, verdict, verify (about 15 s)."""

from pathlib import Path

import pytest

pytest.importorskip("torch")

from engine.cli import main

ROOT = Path(__file__).resolve().parents[3]
FEATURES = str(ROOT / "testdata" / "bisect" / "features.parquet")


def test_loso_gate_verdict_and_verify_promote_the_committed_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = sorted(str(p) for p in (ROOT / "model").glob("fr-ens-v1-m*.onnx"))
    assert len(members) == 5
    assert main(["loso", "--features", FEATURES, "--out", str(tmp_path)]) == 0
    assert main(["gate", str(tmp_path)]) == 0
    assert main(["verdict", str(tmp_path), "--features", FEATURES, "--models", *members]) == 0
    assert (tmp_path / "PROMOTE.json").exists() and not (tmp_path / "HOLD.json").exists()
    assert main(["verdict", "verify", str(tmp_path / "PROMOTE.json")]) == 0
    assert "verified" in capsys.readouterr().out
