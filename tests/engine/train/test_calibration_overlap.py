"""Conformal calibration refuses rows the members were trained on, unless explicitly allowed."""

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")  # the whole tests/engine/train folder needs torch

from engine.cli import main
from engine.errors import UsageError
from engine.features import features_from_frame, row_hashes
from engine.train.ensemble import train_ensemble
from engine.train.network import TrainConfig
from tests.engine.tables import small_frame

TINY = TrainConfig(epochs=3)


def split_by_last_source(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (rows of every source but the last, rows of the last source)."""
    last = frame["source"] == sorted(frame["source"].unique())[-1]
    return frame[~last].reset_index(drop=True), frame[last].reset_index(drop=True)


def test_calibrating_on_a_subset_of_the_training_rows_is_refused_naming_the_overlap(
    tmp_path: Path,
) -> None:
    train = small_frame(sources=4)
    subset = train.iloc[::3].reset_index(drop=True)
    with pytest.raises(UsageError) as refused:
        train_ensemble(
            features_from_frame(train),
            ensemble_id="e",
            out_dir=tmp_path / "out",
            members=2,
            config=TINY,
            calibration=features_from_frame(subset),
        )
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        f"calibration refused: {len(subset)} of {len(subset)} calibration rows are also "
        "training rows"
    )
    assert "--allow-calibration-overlap" in message
    assert not (tmp_path / "out").exists()


def test_shared_rows_are_counted_row_by_row_wherever_they_sit(tmp_path: Path) -> None:
    train, fresh = split_by_last_source(small_frame(sources=4))
    mixed = pd.concat([fresh, train.iloc[10:17]]).sample(frac=1.0, random_state=0)
    with pytest.raises(UsageError, match=rf"^calibration refused: 7 of {len(fresh) + 7} "):
        train_ensemble(
            features_from_frame(train),
            ensemble_id="e",
            out_dir=tmp_path,
            members=2,
            config=TINY,
            calibration=features_from_frame(mixed),
        )


def test_row_hashes_see_target_and_source_not_row_position() -> None:
    frame = small_frame(sources=2).iloc[:4].reset_index(drop=True)
    base = row_hashes(features_from_frame(frame))
    assert row_hashes(features_from_frame(frame.iloc[::-1])) == base[::-1]
    other_target = frame.assign(mos=frame["mos"] + 0.5)
    other_source = frame.assign(source="elsewhere")
    assert not set(row_hashes(features_from_frame(other_target))) & set(base)
    assert not set(row_hashes(features_from_frame(other_source))) & set(base)


def test_overlap_is_allowed_only_with_the_flag_and_the_manifest_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = split_by_last_source(small_frame(sources=4))
    features = tmp_path / "train.parquet"
    calibration = tmp_path / "calibration.parquet"
    train.to_parquet(features, index=False)
    train.iloc[::2].to_parquet(calibration, index=False)
    argv = [
        *("ensemble", "train", "--features", str(features), "--calibration", str(calibration)),
        *("--id", "e", "--out", str(tmp_path / "out"), "--members", "2", "--epochs", "3"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("model-guard: error: calibration refused: ")
    assert not (tmp_path / "out" / "e.json").exists()
    assert main([*argv, "--allow-calibration-overlap"]) == 0
    out = capsys.readouterr().out
    n = len(train.iloc[::2])
    assert f"warning: {n} of {n} calibration rows are also training rows" in out
    manifest = json.loads((tmp_path / "out" / "e.json").read_text(encoding="utf-8"))
    split = manifest["training"]["split"]
    assert split["calibration_overlap"] == {"rows": n, "allowed": True}
    assert split["calibration_corpus"]["rows"] == n


def test_a_calibration_table_of_unseen_sources_is_accepted(tmp_path: Path) -> None:
    train, fresh = split_by_last_source(small_frame(sources=4))
    trained = train_ensemble(
        features_from_frame(train),
        ensemble_id="e",
        out_dir=tmp_path,
        members=2,
        config=TINY,
        calibration=features_from_frame(fresh),
    )
    assert trained.calibration_overlap == 0
    assert trained.calibration.n_calibration == len(fresh)
    manifest = json.loads(trained.manifest_path.read_text(encoding="utf-8"))
    assert manifest["training"]["split"]["calibration_overlap"] == {"rows": 0, "allowed": False}
