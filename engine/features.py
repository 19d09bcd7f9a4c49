"""The canonical libvmaf feature layout, and loading and validating feature caches (parquet)."""

import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.errors import FeatureCacheError, one_line
from engine.safeio import FEATURE_CACHE, open_input

FEATURES: tuple[str, ...] = (
    "adm2",
    "vif_scale0",
    "vif_scale1",
    "vif_scale2",
    "vif_scale3",
    "motion2",
)
TARGET = "mos"
SOURCE = "source"
# Optional columns describing the encode; string-typed when present.
ENCODER = "encoder"
PARAM = "param"

REQUIRED: tuple[str, ...] = (*FEATURES, TARGET)
_STRING_COLUMNS: tuple[str, ...] = (SOURCE, ENCODER, PARAM)
# Every column the engine reads; any other column in a cache is not read (nor hashed).
COLUMNS: tuple[str, ...] = (*REQUIRED, *_STRING_COLUMNS)
# What pyarrow raises on a malformed or crafted file (a bad footer, bad metadata).
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, KeyError, TypeError, IndexError)
# Bump when the encoding fed to content_hash changes (every stored hash changes with it).
_HASH_VERSION = b"model-guard feature content v1\n"
_ROW_HASH_VERSION = b"model-guard feature row v1\n"


# eq=False: a DataFrame has no truth value, so compare tables by ``content_hash`` instead.
@dataclass(frozen=True, eq=False)
class FeatureTable:
    """A validated feature cache: six float32 features, float32 ``mos``, optional ``source``."""

    frame: pd.DataFrame = field(repr=False)
    path: Path | None
    content_hash: str

    @property
    def n_rows(self) -> int:
        """Return the number of rows."""
        return len(self.frame)

    def matrix(self) -> np.ndarray:
        """Return the features as a C-contiguous float32 array [N, 6] in ``FEATURES`` order."""
        values = self.frame[list(FEATURES)].to_numpy(dtype=np.float32)
        return np.ascontiguousarray(values)

    def target(self) -> np.ndarray:
        """Return the subjective scores (``mos``) as a float32 array [N]."""
        return np.ascontiguousarray(self.frame[TARGET].to_numpy(dtype=np.float32))

    def groups(self, column: str = SOURCE) -> np.ndarray | None:
        """Return every row's group id (``source`` by default) as str, or None without that column."""
        if column not in self.frame.columns:
            return None
        groups: np.ndarray = self.frame[column].to_numpy(dtype=str)
        return groups


@dataclass(frozen=True)
class TableLimits:
    """Caps on a feature cache, all checked before its values are decoded (docs/feature-cache.md).

    ``max_bytes`` caps the file, ``max_rows`` the row count the footer declares, and
    ``max_decoded_bytes`` what the columns the engine reads would take once decoded:
    estimated from the footer (each column chunk's uncompressed size, at least its rows
    times the value width) and, for string columns, measured on their dictionaries (a
    one-value dictionary page can stand for gigabytes of repeated strings).
    """

    max_bytes: int = FEATURE_CACHE.max_bytes
    max_rows: int = 5_000_000
    max_decoded_bytes: int = 512 * 1024 * 1024


DEFAULT_TABLE_LIMITS = TableLimits()


def load_features(path: Path, *, limits: TableLimits = DEFAULT_TABLE_LIMITS) -> FeatureTable:
    """Read and validate a parquet feature cache; every problem is a one-line FeatureCacheError.

    Only the columns the engine uses (``COLUMNS``) are read, pandas metadata in the footer
    is ignored, and the caps of ``limits`` are checked before anything is decoded.
    """
    path = Path(path)
    prefix = f"{path}: "
    if not path.exists():
        raise FeatureCacheError(f"{path}: feature cache not found")
    with open_input(
        path, kind=FEATURE_CACHE, max_bytes=limits.max_bytes, error=FeatureCacheError
    ) as handle:
        table = _read_bounded(handle, limits=limits, prefix=prefix)
    try:
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError) as error:
        raise FeatureCacheError(f"{prefix}cannot decode parquet: {one_line(error)}") from None
    return features_from_frame(frame, path=path)


def _read_bounded(handle: BinaryIO, *, limits: TableLimits, prefix: str) -> pa.Table:
    """Read the engine's columns of an open parquet file, refusing what is over ``limits``."""
    try:
        parquet = pq.ParquetFile(handle)
        strings = [name for name in _STRING_COLUMNS if name in parquet.schema_arrow.names]
        if strings:  # read string columns as dictionaries: their decoded size is measured first
            parquet = pq.ParquetFile(handle, read_dictionary=strings)
        schema, metadata = parquet.schema_arrow, parquet.metadata
        # pyarrow decodes column names lazily: a name that is not UTF-8 fails only here.
        names = [str(name) for name in schema.names]
    except _READ_ERRORS as error:
        raise FeatureCacheError(f"{prefix}not a readable parquet file: {one_line(error)}") from None
    wanted = [name for name in names if name in COLUMNS]
    duplicates = sorted({name for name in wanted if wanted.count(name) > 1})
    if duplicates:
        raise FeatureCacheError(f"{prefix}duplicate column names: {', '.join(duplicates)}")
    _check_arrow_schema(schema, names=names, prefix=prefix)
    rows = max(
        metadata.num_rows,
        sum(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)),
    )
    if rows > limits.max_rows:
        raise FeatureCacheError(
            f"{prefix}feature cache declares {rows} rows, over the {limits.max_rows}-row cap; not read"
        )
    estimate = _footer_estimate(metadata, schema, wanted)
    if estimate > limits.max_decoded_bytes:
        raise _over_decoded(prefix, estimate, limits, where="its footer")
    try:
        # Without pandas metadata: a crafted ``pandas`` footer entry is never consulted.
        table = parquet.read(columns=wanted, use_pandas_metadata=False)
    except _READ_ERRORS as error:
        raise FeatureCacheError(f"{prefix}not a readable parquet file: {one_line(error)}") from None
    table = table.replace_schema_metadata(None)
    decoded = _decoded_size(table)
    if decoded > limits.max_decoded_bytes:
        raise _over_decoded(prefix, decoded, limits, where="its string dictionaries")
    return _decode_strings(table)


def _footer_estimate(metadata: pq.FileMetaData, schema: pa.Schema, wanted: list[str]) -> int:
    """Estimate the decoded bytes of the wanted columns from the footer alone."""
    total = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            name = chunk.path_in_schema
            if name not in wanted:
                continue
            kind = schema.field(name).type
            width = kind.bit_width // 8 if pa.types.is_floating(kind) else 4  # string offsets
            total += max(chunk.total_uncompressed_size, row_group.num_rows * width)
    return total


def _decoded_size(table: pa.Table) -> int:
    """Return the bytes the table takes once its dictionary (string) columns are made dense."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if isinstance(chunk, pa.DictionaryArray):
                lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
                total += int(pc.sum(lengths).as_py() or 0) + 4 * len(chunk)
            else:
                total += chunk.nbytes
    return total


def _decode_strings(table: pa.Table) -> pa.Table:
    """Turn dictionary-encoded string columns back into plain strings (their size is checked)."""
    for position, field_ in enumerate(table.schema):
        if pa.types.is_dictionary(field_.type):
            plain = table.column(position).cast(field_.type.value_type)
            table = table.set_column(position, field_.with_type(field_.type.value_type), plain)
    return table


def _over_decoded(prefix: str, size: int, limits: TableLimits, *, where: str) -> FeatureCacheError:
    """Say that a cache would decode to more than the cap (as estimated from ``where``)."""
    return FeatureCacheError(
        f"{prefix}feature cache would decode to {_mib(size)} (from {where}), over the "
        f"{_mib(limits.max_decoded_bytes)} decoded-size cap; not decoded"
    )


def features_from_frame(frame: pd.DataFrame, *, path: Path | None = None) -> FeatureTable:
    """Validate an in-memory feature frame (casting float64 features to float32) into a table."""
    prefix = f"{path}: " if path is not None else ""
    columns = [str(name) for name in frame.columns]
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise FeatureCacheError(f"{prefix}duplicate column names: {', '.join(duplicates)}")
    _check_required(columns, prefix=prefix)
    result = frame.copy()
    result.columns = pd.Index(columns)
    for name in REQUIRED:
        result[name] = _float32_column(result[name], prefix=prefix)
    for name in _STRING_COLUMNS:
        if name in result.columns:
            result[name] = _string_column(result[name], prefix=prefix)
    if len(result) == 0:
        raise FeatureCacheError(f"{prefix}feature cache has no rows")
    result = result.reset_index(drop=True)
    for name in REQUIRED:
        _check_finite(name, result[name].to_numpy(), prefix=prefix)
    if SOURCE in result.columns:
        missing = result[SOURCE].isna().to_numpy()
        if missing.any():
            first = int(np.flatnonzero(missing)[0])
            raise FeatureCacheError(
                f"{prefix}column '{SOURCE}' has {int(missing.sum())} missing value(s), first at row {first}"
            )
    return FeatureTable(frame=result, path=path, content_hash=content_hash(result))


def content_hash(frame: pd.DataFrame) -> str:
    """Return the hex sha256 of a frame's decoded content (names, dtypes, values; row order matters).

    The file's bytes are not hashed: parquet writers stamp their version into the footer
    and compression changes every byte, while the decoded content stays the same. The
    index is ignored. String dtypes of every flavour (object, ``str``, ``string``) count
    as ``string``, so the hash does not depend on how pandas chose to hold the strings.
    """
    digest = hashlib.sha256(_HASH_VERSION)
    digest.update(struct.pack("<Q", len(frame.columns)))
    digest.update(struct.pack("<Q", len(frame)))
    for position in range(len(frame.columns)):
        name = str(frame.columns[position])
        series = frame.iloc[:, position]
        kind = _kind(series)
        _update_text(digest, name)
        _update_text(digest, kind)
        for chunk in _encode(series, kind):
            digest.update(chunk)
    return digest.hexdigest()


def row_hashes(table: FeatureTable) -> list[bytes]:
    """Return one sha256 per row of what identifies it: the features, the target and the
    string columns present (``source``, ``encoder``, ``param``), by decoded value.

    Two rows hash equal exactly when those values are equal, in any file and at any row
    position, so a calibration table cut from a training table is recognised row by row
    (``content_hash`` only recognises the whole table).
    """
    frame = table.frame
    numbers = frame[list(REQUIRED)].to_numpy(dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    raw = np.ascontiguousarray(numbers, dtype="<f4").view(np.uint8).reshape(len(frame), -1)
    strings = [name for name in _STRING_COLUMNS if name in frame.columns]
    texts = [frame[name].to_numpy(dtype=object) for name in strings]
    prefix = hashlib.sha256(_ROW_HASH_VERSION)
    for name in (*REQUIRED, *strings):
        _update_text(prefix, name)
    hashes = []
    for row in range(len(frame)):
        digest = prefix.copy()
        digest.update(raw[row].tobytes())
        for column in texts:
            _update_text(digest, str(column[row]))
        hashes.append(digest.digest())
    return hashes


def describe_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Return the first difference in decoded content between two frames, or None when equal."""
    names_a = [str(name) for name in a.columns]
    names_b = [str(name) for name in b.columns]
    if names_a != names_b:
        return _describe_names(names_a, names_b)
    if len(a) != len(b):
        return f"row count {len(a)} != {len(b)}"
    for position, name in enumerate(names_a):
        kind_a, kind_b = _kind(a.iloc[:, position]), _kind(b.iloc[:, position])
        if kind_a != kind_b:
            return f"column '{name}' dtype {kind_a} != {kind_b}"
    for position, name in enumerate(names_a):
        series_a, series_b = a.iloc[:, position], b.iloc[:, position]
        row = _first_mismatch(series_a, series_b, _kind(series_a))
        if row is not None:
            left, right = _show(series_a.iloc[row]), _show(series_b.iloc[row])
            return f"column '{name}' row {row}: {left} != {right}"
    return None


def _check_arrow_schema(schema: pa.Schema, *, names: list[str], prefix: str) -> None:
    """Reject wrong column types before pandas conversion can blur them (ints with nulls -> float)."""
    _check_required(names, prefix=prefix)
    for name in REQUIRED:
        kind = schema.field(name).type
        if not (pa.types.is_float32(kind) or pa.types.is_float64(kind)):
            raise FeatureCacheError(
                f"{prefix}column '{name}' must be floating point (float32 or float64), found {kind}"
            )
    for name in _STRING_COLUMNS:
        if name not in names:
            continue
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)
        ):
            raise FeatureCacheError(f"{prefix}column '{name}' must be string-typed, found {kind}")


def _check_required(columns: list[str], *, prefix: str) -> None:
    """Raise naming every missing required column and listing the columns that are there."""
    missing = [name for name in REQUIRED if name not in columns]
    if not missing:
        return
    label = "column" if len(missing) == 1 else "columns"
    present = ", ".join(columns) if columns else "(none)"
    raise FeatureCacheError(
        f"{prefix}missing required {label} {', '.join(repr(m) for m in missing)}; columns present: {present}"
    )


def _float32_column(series: pd.Series, *, prefix: str) -> pd.Series:
    """Return a float32 copy of a float32/float64 column; anything else is an error."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype.itemsize in (4, 8):
        return series.astype(np.float32)
    if isinstance(dtype, (pd.Float32Dtype, pd.Float64Dtype)):
        return pd.Series(series.to_numpy(dtype=np.float32, na_value=np.nan), index=series.index)
    raise FeatureCacheError(
        f"{prefix}column '{series.name}' must be floating point (float32 or float64), found {dtype}"
    )


def _string_column(series: pd.Series, *, prefix: str) -> pd.Series:
    """Return a string column as is (categoricals of strings decoded); anything else is an error."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        if len(categories) == 0 or pd.api.types.infer_dtype(categories, skipna=True) == "string":
            return series.astype(object)
    elif _is_string(series):
        return series
    raise FeatureCacheError(f"{prefix}column '{series.name}' must be string-typed, found {dtype}")


def _check_finite(name: str, values: np.ndarray, *, prefix: str) -> None:
    """Raise naming the column, the count and the first row of non-finite values."""
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise FeatureCacheError(
            f"{prefix}column '{name}' has {int(bad.sum())} non-finite value(s) (NaN or inf), "
            f"first at row {first}: {values[first]}"
        )


def _is_string(series: pd.Series) -> bool:
    """Return whether a column holds strings (any pandas string dtype, or objects that are all str)."""
    if isinstance(series.dtype, pd.StringDtype):
        return True
    is_object = isinstance(series.dtype, np.dtype) and series.dtype.kind == "O"
    return is_object and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")


def _kind(series: pd.Series) -> str:
    """Return a canonical dtype name: numpy names for numbers, ``string`` for any string dtype."""
    dtype = series.dtype
    if _is_string(series):
        return "string"
    if isinstance(dtype, np.dtype):
        return dtype.name
    return str(dtype)


def _encode(series: pd.Series, kind: str) -> Iterator[bytes]:
    """Yield the canonical bytes of one column's values (see ``content_hash``)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        values = series.to_numpy()
        if dtype.kind == "f":
            nan = np.isnan(values)
            yield np.packbits(nan).tobytes()
            # One canonical NaN: payload bits are not content.
            values = np.where(nan, 0, values).astype(dtype)
        yield np.ascontiguousarray(values, dtype=dtype.newbyteorder("<")).tobytes()
        return
    if isinstance(dtype, np.dtype) and dtype.kind in "mM":
        yield np.ascontiguousarray(series.to_numpy().view("i8"), dtype="<i8").tobytes()
        return
    # Strings and everything else: length-prefixed UTF-8 of str(value), nulls marked.
    for value in series.to_numpy(dtype=object, na_value=None):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            yield b"\x00"
        else:
            data = str(value).encode("utf-8")
            yield b"\x01" + struct.pack("<Q", len(data)) + data


def _update_text(digest: "hashlib._Hash", text: str) -> None:
    """Feed one length-prefixed UTF-8 string to a digest."""
    data = text.encode("utf-8")
    digest.update(struct.pack("<Q", len(data)))
    digest.update(data)


def _first_mismatch(a: pd.Series, b: pd.Series, kind: str) -> int | None:
    """Return the position of the first differing value (NaN equals NaN), or None."""
    numeric = isinstance(a.dtype, np.dtype) and a.dtype.kind in "fiubmM"
    left = a.to_numpy() if numeric else a.to_numpy(dtype=object, na_value=None)
    right = b.to_numpy() if numeric else b.to_numpy(dtype=object, na_value=None)
    if left.dtype.kind == "f":
        same = (left == right) | (np.isnan(left) & np.isnan(right))
    elif numeric:
        same = left == right
    else:
        same = np.fromiter(
            (_same(x, y) for x, y in zip(left, right, strict=True)), dtype=bool, count=len(left)
        )
    rows = np.flatnonzero(~same)
    return int(rows[0]) if rows.size else None


def _same(x: object, y: object) -> bool:
    """Compare two decoded values, treating all null markers (None, NaN, NA) as equal."""
    x_null, y_null = _is_null(x), _is_null(y)
    if x_null or y_null:
        return x_null and y_null
    return bool(x == y)


def _is_null(value: object) -> bool:
    """Return whether a decoded value is a null marker."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _show(value: object) -> str:
    """Render one value for a difference message (float32 values in their shortest form)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.generic):
        return str(value)
    return repr(value)


def _describe_names(a: list[str], b: list[str]) -> str:
    """Describe the first difference between two column-name lists."""
    for position, (left, right) in enumerate(zip(a, b, strict=False)):
        if left != right:
            return f"column {position} is '{left}' != '{right}'"
    longer, extra = ("first", a[len(b) :]) if len(a) > len(b) else ("second", b[len(a) :])
    return f"columns differ: the {longer} frame has extra column(s) {', '.join(extra)}"


def _mib(size: int) -> str:
    """Render a byte count in MiB."""
    return f"{size / (1024 * 1024):.1f} MiB"
