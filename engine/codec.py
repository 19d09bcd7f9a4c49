"""The codec block: encoder one-hot and normalised encode settings, from a declared vocabulary.

A codec-aware model reads, besides the six libvmaf features, K columns describing the
encode, built from a feature cache's ``encoder`` and ``param`` columns. What those K
columns are is data, a *codec vocabulary* declared in the registry (``codec_vocabularies``
and a row's ``codec_vocabulary``) or in a model's sidecar (``encoder_vocab``,
``encoder_vocab_version``, ``codec_block_layout``); see docs/registry.md. A vocabulary
names:

- ``encoders``: the one-hot slots, in slot order (``libx264``, ``libvvenc``, ...);
- ``unknown``: the slot an encoder outside the list goes to, or null: such an encoder then
  gets no slot (an all-zero one-hot);
- ``extra_columns``: numbers read from ``param`` (``crf=28,preset=medium``): each names
  its ``key`` and bounds ``min``..``max``, normalised to [0, 1]; ``names`` ranks named
  levels (x264 presets, fastest first), and ``reverse`` counts numeric levels down;
- ``layout``: every column in input order (``encoder=<name>`` or the field's
  ``encoder_onehot[<name>]`` for a slot, an extra column's name otherwise).

The project's own vocabulary version 1, K = 6, is one such declaration
(``BUILTIN_DECLARATIONS[1]``):

    0  encoder=libx264    1 when the encoder is libx264, else 0
    1  encoder=libx265    1 when the encoder is libx265, else 0
    2  encoder=libsvtav1  1 when the encoder is libsvtav1, else 0
    3  encoder=other      1 for any other encoder name, else 0
    4  preset_norm        encoder effort in [0, 1]: an x264-style preset's rank / 9
                          (ultrafast 0 ... medium 5/9 ... placebo 1), or, for a numeric
                          SVT-AV1-style preset p in 0..13 (0 slowest), (13 - p) / 13
    5  crf_norm           crf / 63, crf in [0, 63]

A vocabulary is versioned: a model records the version it was trained with, and any
change to the layout is a new version, never an edit of an old one. Pure numpy.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from engine.errors import FeatureCacheError, UsageError
from engine.features import ENCODER, PARAM, FeatureTable

CODEC_VOCABULARY_VERSION = 1
"""The vocabulary new models are trained with."""

X264_PRESETS: tuple[str, ...] = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
"""x264/x265 preset names, fastest first; a preset's rank is its index here."""

OTHER_ENCODER = "other"
PRESET_COLUMN: Mapping[str, Any] = {
    "name": "preset_norm",
    "from": PARAM,
    "key": "preset",
    "names": list(X264_PRESETS),
    "min": 0,
    "max": 13,
    "reverse": True,
}
"""``preset_norm``: a named preset's rank / 9, or (13 - p) / 13 for a numeric preset p."""
CRF_COLUMN: Mapping[str, Any] = {
    "name": "crf_norm",
    "from": PARAM,
    "key": "crf",
    "min": 0,
    "max": 63,
}
"""``crf_norm``: crf / 63, crf in [0, 63]."""
STANDARD_COLUMNS: Mapping[str, Mapping[str, Any]] = {
    "preset_norm": PRESET_COLUMN,
    "crf_norm": CRF_COLUMN,
}
"""Extra columns a sidecar may name in its layout without declaring them (it cannot)."""

BUILTIN_DECLARATIONS: Mapping[int, Mapping[str, Any]] = {
    1: {
        "version": 1,
        "encoders": ["libx264", "libx265", "libsvtav1", OTHER_ENCODER],
        "unknown": OTHER_ENCODER,
        "extra_columns": [PRESET_COLUMN, CRF_COLUMN],
        "layout": [
            "encoder=libx264",
            "encoder=libx265",
            "encoder=libsvtav1",
            "encoder=other",
            "preset_norm",
            "crf_norm",
        ],
    },
}
"""The project's own vocabularies, as declarations like any registry's."""

_INTEGER = re.compile(r"[+-]?[0-9]+")
_ONEHOT = re.compile(r"^(?:encoder=(?P<a>.+)|encoder_onehot\[(?P<b>.+)\])$")
_MAX_SHOWN = 80
_MAX_WIDTH = 64
_DECLARATION_KEYS = frozenset({"version", "encoders", "unknown", "extra_columns", "layout"})
_COLUMN_KEYS = frozenset({"name", "from", "key", "names", "min", "max", "reverse"})


class VocabularyInvalid(UsageError):
    """A codec vocabulary declaration that cannot be used; ``problems`` holds one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        """Keep every problem; the message is the first and how many more there are."""
        self.problems = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")

    def __reduce__(self) -> tuple[type["VocabularyInvalid"], tuple[tuple[str, ...]]]:
        """Pickle by the problems."""
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class ExtraColumn:
    """One number read from ``param``: its key, bounds and (optionally) ranked level names."""

    name: str
    key: str
    low: float
    high: float
    names: tuple[str, ...] = ()
    reverse: bool = False

    def value(self, text: str) -> float:
        """Normalise one ``param`` value to [0, 1]; ValueError (one line) when it cannot be."""
        if self.names:
            if _INTEGER.fullmatch(text):
                number = int(text)
                if not self.low <= number <= self.high:
                    raise ValueError(
                        f"numeric {self.key} {number} is outside {self.low:g}..{self.high:g}"
                    )
                return self._scale(float(number))
            if text.lower() not in self.names:
                raise ValueError(
                    f"{self.key} {_show(text)} is neither a {self.key} name "
                    f"({self.names[0]}..{self.names[-1]}) nor an integer"
                )
            return self.names.index(text.lower()) / max(len(self.names) - 1, 1)
        try:
            number_f = float(text)
        except ValueError:
            raise ValueError(f"{self.key} {_show(text)} is not a number") from None
        if not math.isfinite(number_f):
            raise ValueError(f"{self.key} {_show(text)} is not finite")
        if not self.low <= number_f <= self.high:
            raise ValueError(f"{self.key} {number_f:g} is outside {self.low:g}..{self.high:g}")
        return self._scale(number_f)

    def _scale(self, number: float) -> float:
        """Map ``low..high`` to 0..1 (1..0 when ``reverse``)."""
        span = self.high - self.low
        return (self.high - number) / span if self.reverse else (number - self.low) / span

    def to_dict(self) -> dict[str, Any]:
        """Return the column as it is declared."""
        data: dict[str, Any] = {"name": self.name, "from": PARAM, "key": self.key}
        if self.names:
            data["names"] = list(self.names)
        data.update({"min": _number(self.low), "max": _number(self.high)})
        if self.reverse:
            data["reverse"] = True
        return data


@dataclass(frozen=True)
class CodecVocabulary:
    """One version of a codec block: one-hot slots, the unknown bucket, extra columns, layout."""

    version: int | str
    slots: tuple[str, ...]
    unknown: str | None
    extra_columns: tuple[ExtraColumn, ...]
    layout: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the block's column names in input order (slots as ``encoder=<name>``)."""
        return self.layout

    @property
    def width(self) -> int:
        """Return K, the number of columns of the block."""
        return len(self.layout)

    @property
    def encoders(self) -> tuple[str, ...]:
        """Return the known encoders: every slot but the unknown bucket."""
        return tuple(name for name in self.slots if name != self.unknown)

    @property
    def needs(self) -> tuple[str, ...]:
        """Return the cache columns the block is built from."""
        return (ENCODER, PARAM) if self.extra_columns else (ENCODER,)

    def declaration(self) -> dict[str, Any]:
        """Return the vocabulary as a registry declaration (``codec_vocabularies`` entry)."""
        return {
            "version": self.version,
            "encoders": list(self.slots),
            "unknown": self.unknown,
            "extra_columns": [column.to_dict() for column in self.extra_columns],
            "layout": list(self.layout),
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the vocabulary as recorded in an ensemble manifest (version 1's fields)."""
        preset = next((c for c in self.extra_columns if c.name == "preset_norm"), None)
        crf = next((c for c in self.extra_columns if c.name == "crf_norm"), None)
        return {
            "version": self.version,
            "width": self.width,
            "columns": list(self.columns),
            "encoders": list(self.encoders),
            "presets": [] if preset is None else list(preset.names),
            "numeric_preset_max": None if preset is None else _number(preset.high),
            "crf_max": None if crf is None else crf.high,
        }


@dataclass(frozen=True)
class EncodeSettings:
    """The preset and CRF parsed from one ``param`` string such as ``crf=28,preset=medium``."""

    preset: str
    crf: float


def parse_vocabulary(declaration: object, *, where: str = "codec_vocabulary") -> CodecVocabulary:
    """Build a vocabulary from its declaration; every problem is one line of a VocabularyInvalid."""
    problems: list[str] = []
    if not isinstance(declaration, Mapping):
        raise VocabularyInvalid([f"{where}: must be an object"])
    for key in sorted(set(declaration) - _DECLARATION_KEYS):
        problems.append(f"{where}/{key}: unknown key")
    version = declaration.get("version")
    if isinstance(version, bool) or not isinstance(version, int | str) or version == "":
        problems.append(f"{where}/version: must be an integer or a non-empty string")
    slots = _names(declaration.get("encoders"), f"{where}/encoders", problems, lower=True)
    unknown = declaration.get("unknown")
    if unknown is not None and not (isinstance(unknown, str) and unknown.lower() in slots):
        problems.append(f"{where}/unknown: {unknown!r} is not one of the encoders (or null)")
    extras = _extra_columns(
        declaration.get("extra_columns", []), f"{where}/extra_columns", problems
    )
    default = [f"encoder={name}" for name in slots] + [column.name for column in extras]
    raw_extras = declaration.get("extra_columns", [])
    # Columns declared but refused above are still known to the layout (no second problem).
    declared = {
        item.get("name")
        for item in (raw_extras if isinstance(raw_extras, list) else [])
        if isinstance(item, Mapping)
    }
    layout = _layout(
        declaration.get("layout", default),
        slots,
        extras,
        f"{where}/layout",
        problems,
        declared=declared,
    )
    if problems:
        raise VocabularyInvalid(problems)
    assert isinstance(version, int | str)
    return CodecVocabulary(
        version=version,
        slots=slots,
        unknown=None if unknown is None else str(unknown).lower(),
        extra_columns=extras,
        layout=layout,
    )


def vocabulary_from_sidecar(
    sidecar: Mapping[str, Any], *, where: str = "sidecar"
) -> CodecVocabulary:
    """Build a vocabulary from a sidecar's ``encoder_vocab``/``encoder_vocab_version``/``codec_block_layout``.

    The sidecar cannot declare how ``param`` maps to its extra columns, so only the
    standard ``preset_norm`` and ``crf_norm`` (version 1's definitions) may appear in its
    layout; an encoder named ``unknown`` is the unknown bucket.
    """
    encoders = sidecar.get("encoder_vocab")
    layout = sidecar.get("codec_block_layout")
    if not isinstance(layout, list):
        raise VocabularyInvalid([f"{where}/codec_block_layout: a list of column names is needed"])
    extras: list[Mapping[str, Any]] = []
    problems: list[str] = []
    for position, name in enumerate(layout):
        if isinstance(name, str) and not _ONEHOT.match(name):
            if name in STANDARD_COLUMNS:
                extras.append(STANDARD_COLUMNS[name])
            else:
                problems.append(
                    f"{where}/codec_block_layout/{position}: {name!r} is not a one-hot slot, "
                    "preset_norm or crf_norm (declare it in the registry's codec_vocabularies)"
                )
    if problems:
        raise VocabularyInvalid(problems)
    unknown = "unknown" if isinstance(encoders, list) and "unknown" in encoders else None
    return parse_vocabulary(
        {
            "version": sidecar.get("encoder_vocab_version", "sidecar"),
            "encoders": encoders,
            "unknown": unknown,
            "extra_columns": extras,
            "layout": layout,
        },
        where=where,
    )


def codec_vocabulary(version: int = CODEC_VOCABULARY_VERSION) -> CodecVocabulary:
    """Return the built-in codec vocabulary of a version; an unknown version is a UsageError."""
    try:
        declaration = BUILTIN_DECLARATIONS[version]
    except (KeyError, TypeError):
        known = ", ".join(str(v) for v in sorted(BUILTIN_DECLARATIONS))
        raise UsageError(f"unknown codec vocabulary version {version!r} (known: {known})") from None
    return parse_vocabulary(declaration, where=f"codec vocabulary v{version}")


def parse_pairs(text: str) -> dict[str, str]:
    """Parse ``key=value,key=value`` (keys lower-cased, whitespace stripped); ValueError when malformed."""
    pairs: dict[str, str] = {}
    for token in text.split(","):
        key, sep, value = token.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{_show(token.strip())} is not key=value")
        if key in pairs:
            raise ValueError(f"key {key!r} appears twice")
        pairs[key] = value
    return pairs


def parse_param(text: str) -> EncodeSettings:
    """Parse ``crf=<number>,preset=<name or integer>`` (other keys ignored); ValueError when malformed."""
    pairs = parse_pairs(text)
    missing = [key for key in ("crf", "preset") if key not in pairs]
    if missing:
        raise ValueError(f"no {' and no '.join(missing)}")
    try:
        crf = float(pairs["crf"])
    except ValueError:
        raise ValueError(f"crf {_show(pairs['crf'])} is not a number") from None
    if not math.isfinite(crf):
        raise ValueError(f"crf {_show(pairs['crf'])} is not finite")
    return EncodeSettings(preset=pairs["preset"], crf=crf)


def encode_codec(
    encoders: Sequence[object],
    params: Sequence[object],
    *,
    vocabulary: CodecVocabulary | None = None,
    label: str = "",
) -> npt.NDArray[np.float32]:
    """Return the float32 codec block [N, K] of per-row encoder names and param strings.

    Every problem is a one-line FeatureCacheError naming the first row (from 0) it occurs
    on; ``label`` (e.g. the cache path) prefixes the message.
    """
    vocab = vocabulary or codec_vocabulary()
    prefix = f"{label}: " if label else ""
    if len(encoders) != len(params):
        raise UsageError(f"{len(encoders)} encoder values but {len(params)} param values")
    block = np.zeros((len(encoders), vocab.width), dtype=np.float32)
    # Few distinct encodes, many rows: build each distinct (encoder, param) row once.
    built: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
    for row, (encoder, param) in enumerate(zip(encoders, params, strict=True)):
        if not isinstance(encoder, str) or not isinstance(param, str):
            column = ENCODER if not isinstance(encoder, str) else PARAM
            raise FeatureCacheError(f"{prefix}row {row}: column '{column}' has no value")
        key = (encoder, param)
        if key not in built:
            built[key] = _codec_row(encoder, param, vocabulary=vocab, where=f"{prefix}row {row}")
        block[row] = built[key]
    return block


def codec_block(
    table: FeatureTable, *, vocabulary: CodecVocabulary | None = None
) -> npt.NDArray[np.float32]:
    """Return the float32 codec block [N, K] of a feature table from its ``encoder``/``param`` columns."""
    vocab = vocabulary or codec_vocabulary()
    label = str(table.path) if table.path is not None else "feature table"
    missing = [name for name in (ENCODER, PARAM) if name not in table.frame.columns]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise FeatureCacheError(
            f"{label}: the codec block needs the columns '{ENCODER}' and '{PARAM}' "
            f"(codec vocabulary {vocab.version}), and {names} "
            f"{'is' if len(missing) == 1 else 'are'} missing"
        )
    encoders = _values(table.frame[ENCODER])
    params = _values(table.frame[PARAM])
    return encode_codec(encoders, params, vocabulary=vocab, label=label)


def _codec_row(
    encoder: str, param: str, *, vocabulary: CodecVocabulary, where: str
) -> npt.NDArray[np.float32]:
    """Return one row of the block, or raise a FeatureCacheError naming the row and value."""
    values: dict[str, float] = {}
    name = encoder.strip().lower()
    slot = name if name in vocabulary.slots else vocabulary.unknown
    if slot is not None:
        values[f"encoder={slot}"] = 1.0
    try:
        pairs = parse_pairs(param) if vocabulary.extra_columns else {}
        missing = [c.key for c in vocabulary.extra_columns if c.key not in pairs]
        if missing:
            raise ValueError(f"no {' and no '.join(dict.fromkeys(missing))}")
        for column in vocabulary.extra_columns:
            values[column.name] = column.value(pairs[column.key])
    except ValueError as error:
        raise FeatureCacheError(f"{where}: cannot read param {_show(param)}: {error}") from None
    return np.array([values.get(column, 0.0) for column in vocabulary.layout], dtype=np.float32)


def _names(value: object, where: str, problems: list[str], *, lower: bool) -> tuple[str, ...]:
    """Return a list of unique non-empty strings, or record why it is not one."""
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: must be a non-empty list of names")
        return ()
    names: list[str] = []
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.append(f"{where}/{position}: must be a non-empty string")
            continue
        name = item.strip().lower() if lower else item
        if name in names:
            problems.append(f"{where}/{position}: {item!r} is listed twice")
        names.append(name)
    return tuple(names)


def _extra_columns(value: object, where: str, problems: list[str]) -> tuple[ExtraColumn, ...]:
    """Return the declared extra columns, or record why one cannot be used."""
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list")
        return ()
    columns: list[ExtraColumn] = []
    for position, item in enumerate(value):
        here = f"{where}/{position}"
        if not isinstance(item, Mapping):
            problems.append(f"{here}: must be an object")
            continue
        before = len(problems)
        problems.extend(f"{here}/{key}: unknown key" for key in sorted(set(item) - _COLUMN_KEYS))
        name, key = item.get("name"), item.get("key")
        if not isinstance(name, str) or not name or _ONEHOT.match(name):
            problems.append(f"{here}/name: must be a column name (not an encoder slot)")
        if item.get("from", PARAM) != PARAM:
            problems.append(f"{here}/from: only {PARAM!r} is supported, not {item.get('from')!r}")
        if not isinstance(key, str) or not key:
            problems.append(f"{here}/key: must name a key of {PARAM} (e.g. 'crf')")
        low, high = item.get("min"), item.get("max")
        if not (_finite(low) and _finite(high) and float(high) > float(low)):  # type: ignore[arg-type]
            problems.append(f"{here}: min and max must be finite numbers with min < max")
        names = (
            _names(item["names"], f"{here}/names", problems, lower=True) if "names" in item else ()
        )
        if not isinstance(item.get("reverse", False), bool):
            problems.append(f"{here}/reverse: must be true or false")
        if len(problems) == before:
            columns.append(
                ExtraColumn(
                    name=str(name),
                    key=str(key).lower(),
                    low=float(low),  # type: ignore[arg-type]
                    high=float(high),  # type: ignore[arg-type]
                    names=names,
                    reverse=bool(item.get("reverse", False)),
                )
            )
    return tuple(columns)


def _layout(
    value: object,
    slots: tuple[str, ...],
    extras: tuple[ExtraColumn, ...],
    where: str,
    problems: list[str],
    declared: set[Any],
) -> tuple[str, ...]:
    """Return the layout with slots as ``encoder=<name>``: every column exactly once."""
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list of column names")
        return ()
    wanted = [f"encoder={name}" for name in slots] + [column.name for column in extras]
    layout: list[str] = []
    for position, item in enumerate(value):
        match = _ONEHOT.match(item) if isinstance(item, str) else None
        column = (
            f"encoder={(match.group('a') or match.group('b')).strip().lower()}" if match else item
        )
        if isinstance(column, str) and column in declared and column not in wanted:
            continue  # an extra column whose own declaration was refused
        if not isinstance(column, str) or column not in wanted:
            problems.append(
                f"{where}/{position}: {item!r} is neither an encoder slot nor an extra column"
            )
        elif column in layout:
            problems.append(f"{where}/{position}: {item!r} is listed twice")
        else:
            layout.append(column)
    absent = [column for column in wanted if column not in layout]
    if absent and not problems:
        problems.append(f"{where}: {', '.join(absent)} missing from the layout")
    if len(value) > _MAX_WIDTH:
        problems.append(f"{where}: {len(value)} columns, over the limit of {_MAX_WIDTH}")
    return tuple(layout)


def _finite(value: object) -> bool:
    """True for a finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> int | float:
    """Render a whole float as an int (13.0 -> 13) for JSON."""
    return int(value) if float(value).is_integer() else value


def _values(series: pd.Series) -> list[object]:
    """Return a string column's values as Python objects, nulls as None."""
    return list(series.to_numpy(dtype=object, na_value=None))


def _show(text: str) -> str:
    """Quote a value for a one-line message, shortened and with line breaks escaped."""
    shown = repr(text)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + "...'"
