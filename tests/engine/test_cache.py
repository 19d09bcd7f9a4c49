"""The synthetic golden cache: deterministic bytes, a drift check, and the designed PLCC bands."""

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cache import (
    FIRST_BAD_INDEX,
    ModelPlcc,
    build_synthetic_cache,
    check_cache,
    measure_timeline,
)
from engine.errors import FeatureCacheError
from engine.features import FEATURES, describe_difference, load_features

SEED = 20261122
COMMITTED = Path(__file__).parents[2] / "testdata" / "bisect"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the cache once for the module; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("golden")
    build_synthetic_cache(out, seed=SEED)
    return out


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    """Return a private copy of the module's cache."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


def _ort_predict(path: Path, matrix: np.ndarray) -> np.ndarray:
    """Score a model with onnxruntime on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"features": matrix})[0]
    return result


def test_two_builds_are_identical(built: Path, tmp_path: Path) -> None:
    written = build_synthetic_cache(tmp_path, seed=SEED)
    names = sorted(path.relative_to(tmp_path).as_posix() for path in written)
    assert names == sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".parquet"):
            first = pq.read_table(built / name)
            second = pq.read_table(tmp_path / name)
            assert first.schema == second.schema
            assert describe_difference(first.to_pandas(), second.to_pandas()) is None
        else:
            assert (built / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_features_have_the_documented_shape(built: Path) -> None:
    table = load_features(built / "features.parquet")
    frame = table.frame
    assert 5500 <= table.n_rows <= 6500
    assert sorted(set(frame["source"])) == [f"src{i:02d}" for i in range(1, 10)]
    assert sorted(set(frame["encoder"])) == ["libsvtav1", "libx264", "libx265"]
    assert frame["adm2"].between(0.55, 1.0).all()
    vif = frame[[f"vif_scale{k}" for k in range(4)]].to_numpy()
    assert (np.diff(vif, axis=1) >= 0).all()
    assert frame["motion2"].between(0, 25).all()
    assert frame["mos"].between(0, 100).all()
    assert list(frame.columns[: len(FEATURES)]) == list(FEATURES)


def test_fresh_build_has_no_drift(built: Path) -> None:
    assert check_cache(built) == []


def test_committed_testdata_has_no_drift() -> None:
    assert check_cache(COMMITTED) == []


def test_changed_mos_value_is_reported_with_its_row(copy: Path) -> None:
    path = copy / "features.parquet"
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame.loc[17, "mos"] = np.float32(frame.loc[17, "mos"] + 0.5)
    pq.write_table(table.from_pandas(frame, schema=table.schema, preserve_index=False), path)
    drift = check_cache(copy)
    assert [item.file for item in drift] == ["features.parquet"]
    assert "column 'mos' row 17" in drift[0].detail


def test_unchanged_pandas_round_trip_is_no_drift(copy: Path) -> None:
    path = copy / "features.parquet"
    frame = pq.read_table(path).to_pandas()
    round_trip = pa.Table.from_pandas(frame, preserve_index=False)  # pandas 3: large_string
    assert pa.types.is_large_string(round_trip.schema.field("source").type)
    pq.write_table(round_trip, path)
    assert check_cache(copy) == []


@pytest.mark.parametrize(
    "encode",
    [
        lambda column: column.cast(pa.large_string()),
        lambda column: column.cast(pa.large_binary()),
        lambda column: column.cast(pa.binary()),
        lambda column: column.dictionary_encode(),
    ],
    ids=["large_string", "large_binary", "binary", "dictionary"],
)
def test_other_encodings_of_the_same_strings_are_no_drift(copy: Path, encode) -> None:
    path = copy / "features.parquet"
    table = pq.read_table(path)
    for name in ("source", "encoder", "param"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, encode(table.column(name)))
    pq.write_table(table, path)
    assert check_cache(copy) == []


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("mos", lambda values: values.cast(pa.float64())),
        ("source", lambda values: pa.chunked_array([np.arange(len(values))])),
        ("mos", lambda values: pa.chunked_array([np.arange(len(values))])),
    ],
    ids=["float32 to float64", "string to int", "float to int"],
)
def test_a_real_type_change_is_still_drift(copy: Path, column: str, change) -> None:
    path = copy / "features.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    table = table.set_column(index, column, change(table.column(column)))
    pq.write_table(table, path)
    [drift] = check_cache(copy)
    assert drift.file == "features.parquet" and drift.detail.startswith("schema differs")


def test_binary_text_that_is_not_utf8_is_drift(copy: Path) -> None:
    path = copy / "features.parquet"
    table = pq.read_table(path)
    values = [b"\xff\xfe", *table.column("source").cast(pa.binary()).to_pylist()[1:]]
    index = table.schema.get_field_index("source")
    table = table.set_column(index, "source", pa.array(values, pa.binary()))
    pq.write_table(table, path)
    [drift] = check_cache(copy)
    assert "not UTF-8" in drift.detail


def test_flipped_onnx_byte_is_reported(copy: Path) -> None:
    path = copy / "regression" / "fr-mlp-v03.onnx"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))
    drift = check_cache(copy)
    assert [item.file for item in drift] == ["regression/fr-mlp-v03.onnx"]
    assert f"offset {len(data) - 40}" in drift[0].detail


def test_edited_registry_names_the_line(copy: Path) -> None:
    path = copy / "allgood" / "registry.json"
    path.write_text(path.read_text().replace('"license": "MIT"', '"license": "BSD"', 1))
    drift = check_cache(copy)
    assert [item.file for item in drift] == ["allgood/registry.json"]
    assert drift[0].detail.startswith("line 11:")


def test_missing_and_extra_files_are_reported(copy: Path) -> None:
    (copy / "allgood" / "fr-mlp-good-v05.onnx").unlink()
    (copy / "regression" / "notes.txt").write_text("hello\n")
    (copy / "README.md").write_text("# documentation is allowed\n")
    drift = {item.file: item.detail for item in check_cache(copy)}
    assert set(drift) == {"allgood/fr-mlp-good-v05.onnx", "regression/notes.txt"}
    assert "missing" in drift["allgood/fr-mlp-good-v05.onnx"]
    assert "extra" in drift["regression/notes.txt"]


def test_check_without_manifest_is_a_clear_error(copy: Path) -> None:
    (copy / "cache.json").unlink()
    with pytest.raises(FeatureCacheError, match=r"cache\.json: not found"):
        check_cache(copy)
    (copy / "cache.json").write_text("{not json")
    with pytest.raises(FeatureCacheError, match="invalid JSON"):
        check_cache(copy)


def _plcc(directory: Path, timeline: str) -> list[ModelPlcc]:
    table = load_features(directory / "features.parquet")
    return measure_timeline(directory / timeline / "registry.json", table, predict=_ort_predict)


def test_regression_timeline_breaks_at_the_documented_index() -> None:
    results = _plcc(COMMITTED, "regression")
    assert [r.timeline for r in results] == list(range(10))
    good = [r.plcc for r in results[:FIRST_BAD_INDEX]]
    bad = [r.plcc for r in results[FIRST_BAD_INDEX:]]
    assert FIRST_BAD_INDEX == 6
    assert min(good) > 0.92, good
    assert max(bad) < 0.80, bad


def test_allgood_timeline_passes_everywhere() -> None:
    results = _plcc(COMMITTED, "allgood")
    assert len(results) == 8
    assert min(r.plcc for r in results) > 0.92
