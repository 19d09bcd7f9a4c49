"""What a registry row declares about a model's inputs: preprocessing, names and codec vocabulary.

A row may declare, inline or through its ``sidecar`` JSON (the field's ``<id>.json``):

- a standardisation (``preprocess`` {feature_order, mean, std}, or the sidecar's
  ``feature_order``/``feature_mean``/``feature_std``) that the scorer applies to the
  six canonical features before the model, so the shipped bytes (and their hash) stay
  as they are;
- the graph's input and output names (``inputs`` {features, codec}, or the sidecar's
  ``input_names``/``output_names``), so inputs are bound by name;
- a codec vocabulary (``codec_vocabulary``, or the sidecar's ``encoder_vocab`` and
  ``codec_block_layout``; see ``engine.codec``).

The row's own declaration wins over its sidecar's. ``resolve_declaration`` reads the
sidecar (through ``engine.safeio``'s caps), checks everything and returns one
``InputDeclaration``, or raises ``DeclarationInvalid`` with one line per problem: a model
whose declaration cannot be used is never scored raw.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.codec import (
    CodecVocabulary,
    VocabularyInvalid,
    codec_vocabulary,
    parse_vocabulary,
    vocabulary_from_sidecar,
)
from engine.errors import EvidenceError, UsageError
from engine.evidence import read_json
from engine.features import FEATURES
from engine.hashing import sha256_bytes
from engine.safeio import SIDECAR_JSON

DEFAULT_CODEC_INPUT = "codec"
_SIDECAR_KEYS = ("feature_order", "feature_mean", "feature_std", "input_names", "output_names")
_SIDECAR_CODEC_KEYS = ("encoder_vocab", "encoder_vocab_version", "codec_block_layout")


class DeclarationInvalid(UsageError):
    """A row's declaration that cannot be used; ``problems`` holds one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        """Keep every problem; the message is the first and how many more there are."""
        self.problems = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")

    def __reduce__(self) -> tuple[type["DeclarationInvalid"], tuple[tuple[str, ...]]]:
        """Pickle by the problems (the App's engine pool sends errors across a pipe)."""
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class RowDeclaration:
    """A row's declarations as written (JSON text, so the value is hashable and picklable).

    ``sidecar`` is relative to the registry folder; ``vocabulary`` is the row's codec
    vocabulary declaration (a named one already looked up), ``missing_vocabulary`` a name
    the registry's ``codec_vocabularies`` lacks; ``legacy_codec`` is the ``codec`` field's
    (vocabulary_version, width).
    """

    sidecar: str | None = None
    preprocess: str | None = None
    inputs: tuple[tuple[str, str], ...] = ()
    vocabulary: str | None = None
    missing_vocabulary: str | None = None
    legacy_codec: tuple[int, int] | None = None

    @property
    def empty(self) -> bool:
        """True when the row declares nothing beyond a plain six-feature model."""
        return self == RowDeclaration()


@dataclass(frozen=True)
class Standardisation:
    """The graph's feature order and, optionally, a per-feature (x - mean) / std."""

    order: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def apply(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return a float32 C-contiguous copy of a canonical [N, 6] matrix, reordered and scaled."""
        columns = [FEATURES.index(name) for name in self.order]
        values = matrix[:, columns].astype(np.float64)
        if self.mean is not None and self.std is not None:
            values = (values - np.asarray(self.mean)) / np.asarray(self.std)
        return np.ascontiguousarray(values, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the standardisation as a JSON-ready dict."""
        return {
            "feature_order": list(self.order),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }


@dataclass(frozen=True)
class InputDeclaration:
    """Everything the scorer needs to feed one model, resolved from its row and sidecar."""

    features_input: str | None = None
    codec_input: str | None = None
    output_name: str | None = None
    standardisation: Standardisation | None = None
    vocabulary: CodecVocabulary | None = None
    sidecar_sha256: str | None = None

    @property
    def codec_width(self) -> int | None:
        """Return K for a codec-aware model, None otherwise."""
        return None if self.vocabulary is None else self.vocabulary.width

    def key(self) -> dict[str, Any] | None:
        """Return what decides scoring results (for evaluation keys); None for a plain model."""
        if self == InputDeclaration():
            return None
        return {
            "features_input": self.features_input,
            "codec_input": self.codec_input,
            "output_name": self.output_name,
            "standardisation": None
            if self.standardisation is None
            else self.standardisation.to_dict(),
            "vocabulary": None if self.vocabulary is None else self.vocabulary.declaration(),
            "sidecar_sha256": self.sidecar_sha256,
        }


def resolve_declaration(declared: RowDeclaration | None, *, root: Path) -> InputDeclaration:
    """Read the sidecar (if any) and combine it with the row; raises ``DeclarationInvalid``."""
    if declared is None or declared.empty:
        return InputDeclaration()
    problems: list[str] = []
    sidecar, digest = _read_sidecar(declared.sidecar, root=root, problems=problems)
    standardisation = _standardisation(declared, sidecar, problems)
    vocabulary = _vocabulary(declared, sidecar, problems)
    names = dict(declared.inputs)
    input_names = _string_list(sidecar, "input_names", problems, most=2)
    output_names = _string_list(sidecar, "output_names", problems, most=1)
    features_input = names.get("features") or (input_names[0] if input_names else None)
    codec_input = names.get("codec") or (input_names[1] if len(input_names) > 1 else None)
    if codec_input is not None and vocabulary is None and not problems:
        problems.append(
            f"declares a codec input {codec_input!r} but no codec vocabulary "
            "(codec_vocabulary, codec, or the sidecar's encoder_vocab)"
        )
    if vocabulary is not None and codec_input is None:
        codec_input = DEFAULT_CODEC_INPUT
    if problems:
        raise DeclarationInvalid(problems)
    return InputDeclaration(
        features_input=features_input,
        codec_input=codec_input,
        output_name=output_names[0] if output_names else None,
        standardisation=standardisation,
        vocabulary=vocabulary,
        sidecar_sha256=digest,
    )


def declaration_problems(declared: RowDeclaration | None, *, root: Path) -> list[str]:
    """Return every problem of a row's declaration, one line each (empty when usable)."""
    try:
        resolve_declaration(declared, root=root)
    except DeclarationInvalid as error:
        return list(error.problems)
    return []


def _read_sidecar(
    relative: str | None, *, root: Path, problems: list[str]
) -> tuple[Mapping[str, Any], str | None]:
    """Return the sidecar's object and the sha256 of its bytes ({} and None without one)."""
    if relative is None:
        return {}, None
    try:
        document = read_json(Path(root) / relative, kind=SIDECAR_JSON, within=Path(root))
    except EvidenceError as error:
        problems.append(f"sidecar {relative}: {_after_path(str(error), Path(root) / relative)}")
        return {}, None
    if not isinstance(document.value, dict):
        problems.append(f"sidecar {relative}: must hold a JSON object")
        return {}, sha256_bytes(document.raw)
    return document.value, sha256_bytes(document.raw)


def _standardisation(
    declared: RowDeclaration, sidecar: Mapping[str, Any], problems: list[str]
) -> Standardisation | None:
    """Return the declared order and standardisation (the row's own wins over the sidecar's)."""
    if declared.preprocess is not None:
        inline = json.loads(declared.preprocess)
        return _checked_standardisation(
            inline.get("feature_order"),
            inline.get("mean"),
            inline.get("std"),
            where="preprocess",
            names=("feature_order", "mean", "std"),
            problems=problems,
        )
    if not any(key in sidecar for key in ("feature_order", "feature_mean", "feature_std")):
        return None
    return _checked_standardisation(
        sidecar.get("feature_order", list(FEATURES)),
        sidecar.get("feature_mean"),
        sidecar.get("feature_std"),
        where="sidecar",
        names=("feature_order", "feature_mean", "feature_std"),
        problems=problems,
    )


def _checked_standardisation(
    order: object,
    mean: object,
    std: object,
    *,
    where: str,
    names: tuple[str, str, str],
    problems: list[str],
) -> Standardisation | None:
    """Check an order (the canonical six, each once), six finite means and six positive stds."""
    before = len(problems)
    canonical = ", ".join(FEATURES)
    if not (
        isinstance(order, list)
        and len(order) == len(FEATURES)
        and all(isinstance(name, str) for name in order)
        and sorted(order) == sorted(FEATURES)
    ):
        shown = json.dumps(order)[:120]
        problems.append(
            f"{where}/{names[0]}: must list exactly the six canonical features "
            f"({canonical}) once each, not {shown}"
        )
    if (mean is None) != (std is None):
        absent = names[1] if mean is None else names[2]
        problems.append(f"{where}/{absent}: missing (a standardisation needs both mean and std)")
    means = _numbers(mean, f"{where}/{names[1]}", problems, positive=False)
    stds = _numbers(std, f"{where}/{names[2]}", problems, positive=True)
    if len(problems) > before:
        return None
    assert isinstance(order, list)
    return Standardisation(order=tuple(order), mean=means, std=stds)


def _numbers(
    value: object, where: str, problems: list[str], *, positive: bool
) -> tuple[float, ...] | None:
    """Check six finite (positive) numbers; record one problem per bad entry."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != len(FEATURES):
        problems.append(f"{where}: must be a list of {len(FEATURES)} numbers")
        return None
    out: list[float] = []
    for position, item in enumerate(value):
        number = item if isinstance(item, int | float) and not isinstance(item, bool) else None
        if number is None or not math.isfinite(number) or (positive and number <= 0):
            need = "a positive finite number" if positive else "a finite number"
            problems.append(f"{where}/{position}: must be {need}, not {json.dumps(item)}")
        else:
            out.append(float(number))
    return tuple(out)


def _vocabulary(
    declared: RowDeclaration, sidecar: Mapping[str, Any], problems: list[str]
) -> CodecVocabulary | None:
    """Return the codec vocabulary: the row's, else the sidecar's, else the built-in version."""
    vocabulary: CodecVocabulary | None = None
    try:
        if declared.missing_vocabulary is not None:
            problems.append(
                f"codec_vocabulary: {declared.missing_vocabulary!r} is not in the registry's "
                "codec_vocabularies"
            )
            return None
        if declared.vocabulary is not None:
            vocabulary = parse_vocabulary(json.loads(declared.vocabulary))
        elif any(key in sidecar for key in _SIDECAR_CODEC_KEYS):
            vocabulary = vocabulary_from_sidecar(sidecar)
        elif declared.legacy_codec is not None:
            vocabulary = codec_vocabulary(declared.legacy_codec[0])
    except VocabularyInvalid as error:
        problems.extend(error.problems)
        return None
    except UsageError as error:
        problems.append(f"codec/vocabulary_version: {error}")
        return None
    if vocabulary is not None and declared.legacy_codec is not None:
        width = declared.legacy_codec[1]
        if width != vocabulary.width:
            problems.append(
                f"codec/width: registry says the codec block is {width} wide, "
                f"vocabulary {vocabulary.version} is {vocabulary.width}"
            )
    return vocabulary


def _string_list(
    sidecar: Mapping[str, Any], key: str, problems: list[str], *, most: int
) -> list[str]:
    """Return a sidecar's list of 1..most non-empty names ([] when absent)."""
    if key not in sidecar:
        return []
    value = sidecar[key]
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= most
        or not all(isinstance(name, str) and name for name in value)
    ):
        problems.append(
            f"sidecar/{key}: must be a list of 1 to {most} names, not {json.dumps(value)[:80]}"
        )
        return []
    return list(value)


def _after_path(message: str, path: Path) -> str:
    """Drop the ``<path>: `` prefix of a safeio message (the caller names the sidecar)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
