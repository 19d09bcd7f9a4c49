"""The codec block: encoder one-hot, preset and CRF read from a cache's ``encoder``/``param`` columns.

A codec-aware model reads, besides the six libvmaf features, K columns describing the
encode (see ``docs/training.md``). Vocabulary version 1, K = 6, in this column order:

    0  encoder=libx264    1 when the encoder is libx264, else 0
    1  encoder=libx265    1 when the encoder is libx265, else 0
    2  encoder=libsvtav1  1 when the encoder is libsvtav1, else 0
    3  encoder=other      1 for any other encoder name, else 0
    4  preset_norm        encoder effort in [0, 1]: an x264-style preset's rank / 9
                          (ultrafast 0 ... medium 5/9 ... placebo 1), or, for a numeric
                          SVT-AV1-style preset p in 0..13 (0 slowest), (13 - p) / 13
    5  crf_norm           crf / 63, crf in [0, 63]

The vocabulary is versioned: a model records the version it was trained with, and any
change to the layout (a new encoder, another normalisation) is a new version, never an
edit of an old one. Pure numpy: no torch here.
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
_INTEGER = re.compile(r"[+-]?[0-9]+")
_MAX_SHOWN = 80


@dataclass(frozen=True)
class CodecVocabulary:
    """One version of the codec block layout: known encoders, preset scales and the CRF scale."""

    version: int
    encoders: tuple[str, ...]
    presets: tuple[str, ...]
    numeric_preset_max: int
    crf_max: float

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the block's column names in order: one-hot encoders, ``other``, preset, crf."""
        one_hot = (*self.encoders, OTHER_ENCODER)
        return (*(f"encoder={name}" for name in one_hot), "preset_norm", "crf_norm")

    @property
    def width(self) -> int:
        """Return K, the number of columns of the block."""
        return len(self.encoders) + 3

    def to_dict(self) -> dict[str, Any]:
        """Return the vocabulary as a JSON-ready dict (as recorded in an ensemble manifest)."""
        return {
            "version": self.version,
            "width": self.width,
            "columns": list(self.columns),
            "encoders": list(self.encoders),
            "presets": list(self.presets),
            "numeric_preset_max": self.numeric_preset_max,
            "crf_max": self.crf_max,
        }


@dataclass(frozen=True)
class EncodeSettings:
    """The preset and CRF parsed from one ``param`` string such as ``crf=28,preset=medium``."""

    preset: str
    crf: float


_VOCABULARIES: Mapping[int, CodecVocabulary] = {
    1: CodecVocabulary(
        version=1,
        encoders=("libx264", "libx265", "libsvtav1"),
        presets=X264_PRESETS,
        numeric_preset_max=13,
        crf_max=63.0,
    ),
}


def codec_vocabulary(version: int = CODEC_VOCABULARY_VERSION) -> CodecVocabulary:
    """Return the codec vocabulary of a version; an unknown version is a UsageError."""
    try:
        return _VOCABULARIES[version]
    except (KeyError, TypeError):
        known = ", ".join(str(v) for v in sorted(_VOCABULARIES))
        raise UsageError(f"unknown codec vocabulary version {version!r} (known: {known})") from None


def parse_param(text: str) -> EncodeSettings:
    """Parse ``crf=<number>,preset=<name or integer>`` (other keys ignored); ValueError when malformed."""
    pairs: dict[str, str] = {}
    for token in text.split(","):
        key, sep, value = token.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{_show(token.strip())} is not key=value")
        if key in pairs:
            raise ValueError(f"key {key!r} appears twice")
        pairs[key] = value
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


def preset_norm(preset: str, *, vocabulary: CodecVocabulary) -> float:
    """Return a preset's effort in [0, 1] (named: rank / max rank; numeric p: (max - p) / max)."""
    if _INTEGER.fullmatch(preset):
        number, top = int(preset), vocabulary.numeric_preset_max
        if not 0 <= number <= top:
            raise ValueError(f"numeric preset {number} is outside 0..{top}")
        return (top - number) / top
    name = preset.lower()
    if name not in vocabulary.presets:
        raise ValueError(
            f"preset {_show(preset)} is neither a preset name "
            f"({vocabulary.presets[0]}..{vocabulary.presets[-1]}) nor an integer"
        )
    return vocabulary.presets.index(name) / (len(vocabulary.presets) - 1)


def crf_norm(crf: float, *, vocabulary: CodecVocabulary) -> float:
    """Return crf / crf_max; a crf outside [0, crf_max] is a ValueError."""
    if not 0.0 <= crf <= vocabulary.crf_max:
        raise ValueError(f"crf {crf:g} is outside 0..{vocabulary.crf_max:g}")
    return crf / vocabulary.crf_max


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
    label = str(table.path) if table.path is not None else "feature table"
    missing = [name for name in (ENCODER, PARAM) if name not in table.frame.columns]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise FeatureCacheError(
            f"{label}: the codec block needs the columns '{ENCODER}' and '{PARAM}', "
            f"and {names} {'is' if len(missing) == 1 else 'are'} missing"
        )
    encoders = _values(table.frame[ENCODER])
    params = _values(table.frame[PARAM])
    return encode_codec(encoders, params, vocabulary=vocabulary, label=label)


def _codec_row(
    encoder: str, param: str, *, vocabulary: CodecVocabulary, where: str
) -> npt.NDArray[np.float32]:
    """Return one row of the block, or raise a FeatureCacheError naming the row and value."""
    row = np.zeros(vocabulary.width, dtype=np.float32)
    name = encoder.strip().lower()
    slot = vocabulary.encoders.index(name) if name in vocabulary.encoders else None
    row[len(vocabulary.encoders) if slot is None else slot] = 1.0
    try:
        settings = parse_param(param)
        row[-2] = preset_norm(settings.preset, vocabulary=vocabulary)
        row[-1] = crf_norm(settings.crf, vocabulary=vocabulary)
    except ValueError as error:
        raise FeatureCacheError(f"{where}: cannot read param {_show(param)}: {error}") from None
    return row


def _values(series: pd.Series) -> list[object]:
    """Return a string column's values as Python objects, nulls as None."""
    return list(series.to_numpy(dtype=object, na_value=None))


def _show(text: str) -> str:
    """Quote a value for a one-line message, shortened and with line breaks escaped."""
    shown = repr(text)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + "...'"
