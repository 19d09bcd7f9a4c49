"""Small feature tables cut from the golden cache, shared by the codec and training tests."""

from pathlib import Path

import pandas as pd

from engine.features import FeatureTable, features_from_frame

GOLDEN = Path(__file__).resolve().parents[2] / "testdata" / "bisect" / "features.parquet"


def golden_frame() -> pd.DataFrame:
    """Return the golden cache as a DataFrame."""
    return pd.read_parquet(GOLDEN)


def small_frame(*, sources: int = 3, step: int = 8) -> pd.DataFrame:
    """Return every ``step``-th row of the first ``sources`` sources (84 rows each at step 8)."""
    frame = golden_frame()
    keep = sorted(frame["source"].unique())[:sources]
    chosen = frame[frame["source"].isin(keep)].iloc[::step]
    return chosen.reset_index(drop=True)


def small_table(*, sources: int = 3, step: int = 8) -> FeatureTable:
    """Return ``small_frame`` as a validated table."""
    return features_from_frame(small_frame(sources=sources, step=step))
