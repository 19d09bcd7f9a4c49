"""Fuzz feature caches: random parquet schemas and contents load, or refuse in one line."""

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import FeatureCacheError
from engine.features import REQUIRED, load_features
from tests.fuzz.refusals import ODD_TEXT, assert_one_line

NAMES = st.one_of(
    st.sampled_from([*REQUIRED, "source", "encoder", "param", "extra", "__index_level_0__"]),
    ODD_TEXT.filter(lambda name: "\ud800" not in name),
)
TYPES = st.sampled_from(
    [
        pa.float32(),
        pa.float64(),
        pa.float16(),
        pa.int64(),
        pa.int8(),
        pa.bool_(),
        pa.string(),
        pa.large_string(),
        pa.binary(),
        pa.null(),
        pa.dictionary(pa.int32(), pa.string()),
        pa.list_(pa.float32()),
        pa.timestamp("s"),
        pa.decimal128(10, 3),
    ]
)
FLOATS = st.one_of(st.none(), st.floats(width=32))


def column(kind: pa.DataType, n_rows: int) -> st.SearchStrategy[pa.Array]:
    """Random values of one arrow type (nulls included) as an array of ``n_rows``."""
    if pa.types.is_floating(kind) and not pa.types.is_float16(kind):
        values = st.lists(FLOATS, min_size=n_rows, max_size=n_rows)
    elif pa.types.is_integer(kind):
        values = st.lists(
            st.one_of(st.none(), st.integers(-100, 100)), min_size=n_rows, max_size=n_rows
        )
    elif pa.types.is_boolean(kind):
        values = st.lists(st.one_of(st.none(), st.booleans()), min_size=n_rows, max_size=n_rows)
    elif pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = st.one_of(st.none(), ODD_TEXT.filter(lambda t: "\ud800" not in t))
        values = st.lists(text, min_size=n_rows, max_size=n_rows)
    elif pa.types.is_list(kind):
        values = st.lists(
            st.one_of(st.none(), st.lists(FLOATS, max_size=2)), min_size=n_rows, max_size=n_rows
        )
    else:
        values = st.just([None] * n_rows)
    return values.map(
        lambda items: pa.array(items, type=kind if not pa.types.is_float16(kind) else pa.null())
    )


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """A table with a random set of (possibly repeated) columns of random types and rows."""
    n_rows = draw(st.integers(min_value=0, max_value=6))
    names = draw(st.lists(NAMES, max_size=10))
    if draw(st.booleans()):  # mostly the right columns, to get past the first checks
        names = [*REQUIRED, *names]
    arrays = []
    for _ in names:
        kind = draw(TYPES) if draw(st.integers(0, 3)) == 0 else pa.float32()
        arrays.append(draw(column(kind, n_rows)))
    return pa.Table.from_arrays(arrays, names=names)


@given(tables(), st.sampled_from(["whole", "truncated", "flipped"]), st.integers(0, 10_000))
def test_feature_cache_loads_or_refuses_in_one_line(table: pa.Table, damage: str, at: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "features.parquet"
        pq.write_table(table, path)
        raw = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(raw[: at % len(raw)])
        elif damage == "flipped":
            spot = at % len(raw)
            path.write_bytes(raw[:spot] + bytes([raw[spot] ^ 0xFF]) + raw[spot + 1 :])
        try:
            loaded = load_features(path)
        except FeatureCacheError as error:
            assert_one_line(str(error))
        else:
            assert loaded.n_rows > 0
            assert loaded.matrix().shape == (loaded.n_rows, 6)
