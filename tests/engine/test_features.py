"""Loading and validating feature caches: clear one-line errors, decoded-content hashes."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import FeatureCacheError
from engine.features import (
    FEATURES,
    SOURCE,
    TARGET,
    TableLimits,
    content_hash,
    describe_difference,
    features_from_frame,
    load_features,
)


def _frame(rows: int = 12, *, dtype: str = "float32") -> pd.DataFrame:
    """Return a small valid feature frame with a source column."""
    rng = np.random.default_rng(7)
    data: dict[str, object] = {name: rng.uniform(0.1, 1.0, rows).astype(dtype) for name in FEATURES}
    data[TARGET] = np.round(rng.uniform(10, 90, rows), 2).astype(dtype)
    data[SOURCE] = [f"src{i % 3:02d}" for i in range(rows)]
    data["encoder"] = ["libx264"] * rows
    return pd.DataFrame(data)


def _write(frame: pd.DataFrame, path: Path, **options: object) -> Path:
    """Write a frame with pyarrow, without a pandas index."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, **options)
    return path


def _error(path: Path) -> str:
    """Return the FeatureCacheError message raised when loading ``path``."""
    with pytest.raises(FeatureCacheError) as caught:
        load_features(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_valid_cache_loads_as_float32_with_groups(tmp_path: Path) -> None:
    table = load_features(_write(_frame(), tmp_path / "ok.parquet"))
    assert table.n_rows == 12
    matrix = table.matrix()
    assert matrix.dtype == np.float32 and matrix.shape == (12, 6) and matrix.flags.c_contiguous
    assert table.target().dtype == np.float32
    groups = table.groups()
    assert groups is not None and groups[:3].tolist() == ["src00", "src01", "src02"]
    assert list(table.frame.columns)[-1] == "encoder"  # extra columns are kept


def test_groups_is_none_without_source_column() -> None:
    table = features_from_frame(_frame().drop(columns=[SOURCE]))
    assert table.groups() is None


def test_float64_columns_are_accepted_and_cast_to_float32(tmp_path: Path) -> None:
    table = load_features(_write(_frame(dtype="float64"), tmp_path / "f64.parquet"))
    assert all(table.frame[name].dtype == np.float32 for name in (*FEATURES, TARGET))
    assert table.content_hash == features_from_frame(_frame()).content_hash


_BAD: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], tuple[str, ...]]] = {
    "missing_column": (
        lambda f: f.drop(columns=["vif_scale2"]),
        ("missing required column 'vif_scale2'", "columns present: adm2"),
    ),
    "string_feature": (
        lambda f: f.assign(adm2=["0.9"] * len(f)),
        ("column 'adm2'", "floating point", "string"),
    ),
    "int_feature": (
        lambda f: f.assign(motion2=np.arange(len(f), dtype=np.int64)),
        ("column 'motion2'", "floating point", "int64"),
    ),
    "bool_target": (lambda f: f.assign(mos=[True] * len(f)), ("column 'mos'", "bool")),
    "zero_rows": (lambda f: f.iloc[:0], ("no rows",)),
    "nan_value": (
        lambda f: f.assign(vif_scale1=np.where(np.arange(len(f)) == 5, np.nan, f["vif_scale1"])),
        ("column 'vif_scale1'", "1 non-finite", "row 5"),
    ),
    "inf_value": (
        lambda f: f.assign(mos=np.where(np.arange(len(f)) >= 9, np.inf, f["mos"])),
        ("column 'mos'", "3 non-finite", "row 9"),
    ),
    "source_not_string": (
        lambda f: f.assign(source=np.arange(len(f))),
        ("column 'source'", "string-typed", "int64"),
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_parquet_gives_one_line_error_naming_the_problem(tmp_path: Path, case: str) -> None:
    mutate, fragments = _BAD[case]
    path = _write(mutate(_frame()), tmp_path / f"{case}.parquet")
    message = _error(path)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_frame_gives_the_same_kind_of_error(case: str) -> None:
    mutate, fragments = _BAD[case]
    with pytest.raises(FeatureCacheError) as caught:
        features_from_frame(mutate(_frame()))
    assert "\n" not in str(caught.value)
    assert fragments[0] in str(caught.value)


def test_int_column_with_nulls_is_a_dtype_error_not_a_nan_error(tmp_path: Path) -> None:
    frame = _frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ints = pa.array([1, None] + [2] * (len(frame) - 2), type=pa.int64())
    table = table.set_column(table.schema.get_field_index("adm2"), "adm2", ints)
    pq.write_table(table, tmp_path / "nullable.parquet")
    assert "must be floating point" in _error(tmp_path / "nullable.parquet")


def test_garbage_bytes_are_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not a parquet file\n" * 20)
    assert "not a readable parquet file" in _error(path)


def test_missing_file_and_folder_are_reported(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "absent.parquet")
    assert "not a regular file" in _error(tmp_path)


def test_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "big.parquet")
    with pytest.raises(FeatureCacheError, match="over the 100-byte limit for feature cache"):
        load_features(path, limits=TableLimits(max_bytes=100))


def test_content_hash_ignores_compression_and_writer(tmp_path: Path) -> None:
    frame = _frame()
    by_pandas = tmp_path / "pandas.parquet"
    frame.to_parquet(by_pandas, index=False, compression="snappy")
    zstd = _write(frame, tmp_path / "zstd.parquet", compression="zstd")
    plain = _write(frame, tmp_path / "none.parquet", compression="none", use_dictionary=False)
    hashes = {load_features(path).content_hash for path in (by_pandas, zstd, plain)}
    assert len(hashes) == 1
    assert by_pandas.read_bytes() != zstd.read_bytes()


def test_content_hash_ignores_string_storage_but_not_values_or_order() -> None:
    frame = _frame()
    as_object = frame.assign(source=frame[SOURCE].astype(object))
    assert content_hash(frame) == content_hash(as_object)
    changed = frame.copy()
    changed.loc[4, TARGET] = np.float32(changed.loc[4, TARGET] + 0.25)
    assert content_hash(changed) != content_hash(frame)
    assert content_hash(frame.iloc[::-1]) != content_hash(frame)


def test_describe_difference_names_column_and_row() -> None:
    frame = _frame()
    frame.loc[7, TARGET] = np.float32(63.25)
    changed = frame.copy()
    changed.loc[7, TARGET] = np.float32(63.5)
    assert describe_difference(frame, frame.copy()) is None
    assert describe_difference(frame, changed) == "column 'mos' row 7: 63.25 != 63.5"


def test_describe_difference_reports_schema_first() -> None:
    frame = _frame()
    assert describe_difference(frame, frame.iloc[:5]) == "row count 12 != 5"
    assert "dtype float32 != float64" in str(
        describe_difference(frame, frame.astype({"adm2": "float64"}))
    )
    assert "extra column" in str(describe_difference(frame, frame.drop(columns=["encoder"])))
    renamed = frame.rename(columns={"encoder": "codec"})
    assert describe_difference(frame, renamed) == "column 8 is 'encoder' != 'codec'"
    strings = frame.assign(encoder=["libx265"] + ["libx264"] * 11)
    assert describe_difference(frame, strings) == "column 'encoder' row 0: 'libx264' != 'libx265'"


def test_column_name_that_is_not_utf8_is_an_unreadable_parquet_in_one_line(
    tmp_path: Path,
) -> None:
    # Found by tests/fuzz: pyarrow decodes names lazily, so this raised UnicodeDecodeError.
    path = tmp_path / "features.parquet"
    pq.write_table(pa.table({"adm2\u00e9": pa.array([1.0], pa.float32())}), path)
    raw = path.read_bytes()
    path.write_bytes(raw.replace("adm2\u00e9".encode(), b"adm2\xff\xfe"))
    with pytest.raises(FeatureCacheError, match="not a readable parquet file") as caught:
        load_features(path)
    assert "\n" not in str(caught.value)
