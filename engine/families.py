"""Model families: which registry rows form one timeline, and which rows the engine cannot judge.

A registry may mix six-feature full-reference regressors (kind ``fr``) with models the
engine cannot score on a feature table (no-reference models, saliency networks, filters on
frames). Each family of regressors is bisected as its own timeline; every other row is
listed as *not judged*, with why, and never counts as broken. A row's family is its
``family`` field, else its kind plus its graph's input signature (``fr/features6``,
``fr/features6+codec6``). The signature is read from the graph header only (the size cap
applies; onnxruntime never sees these files). See docs/registry.md ("Families").
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnx import TensorProto

from engine.errors import EngineError, UsageError
from engine.features import FEATURES
from engine.onnxbuild import CODEC_INPUT_NAME
from engine.registry import ModelEntry
from engine.scoring import GraphInput

JUDGED_KIND = "fr"
_WIDTH = str(len(FEATURES))
# Reads a row's graph inputs; None when its file cannot be read (it is then judged as the
# registry row declares it, and a model that cannot be read is broken when visited).
InputReader = Callable[[ModelEntry], tuple[GraphInput, ...] | None]


@dataclass(frozen=True)
class NotJudged:
    """A row the engine cannot judge on a feature table, and why (``kind nr: needs frames``)."""

    name: str
    kind: str
    onnx: str
    family: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form used in the bisect report's ``not_judged`` list."""
        return {
            "name": self.name,
            "kind": self.kind,
            "onnx": self.onnx,
            "family": self.family,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Family:
    """One family's rows, in timeline order (oldest first)."""

    name: str
    models: tuple[ModelEntry, ...]


@dataclass(frozen=True)
class FamilyPlan:
    """A registry split into families to bisect (in order of first appearance) and rows not judged."""

    families: tuple[Family, ...]
    not_judged: tuple[NotJudged, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the families that can be bisected."""
        return tuple(family.name for family in self.families)


@dataclass(frozen=True)
class _Placed:
    """Where one row goes: a family to bisect, or the reason it is not judged."""

    family: str
    reason: str | None


def plan_families(
    models: Sequence[ModelEntry],
    *,
    read_inputs: InputReader,
    declared_codec_width: Callable[[ModelEntry], int | None] | None = None,
) -> FamilyPlan:
    """Split rows (oldest first) into families of judgeable regressors and rows not judged.

    A row whose graph cannot be read (not fetched yet) is placed as it declares itself:
    its ``codec`` field, else ``declared_codec_width`` (the width its declaration, such as
    a sidecar's encoder vocabulary, gives), else a plain six-feature regressor.
    """
    members: dict[str, list[ModelEntry]] = {}
    skipped: list[NotJudged] = []
    for entry in models:
        inputs = read_inputs(entry)
        width = None
        if inputs is None:
            width = entry.codec.width if entry.codec is not None else None
            if width is None and declared_codec_width is not None:
                width = declared_codec_width(entry)
        placed = _place(entry, inputs, codec_width=width)
        if placed.reason is None:
            members.setdefault(placed.family, []).append(entry)
        else:
            skipped.append(
                NotJudged(entry.id, entry.kind, entry.onnx, placed.family, placed.reason)
            )
    families = tuple(Family(name, tuple(rows)) for name, rows in members.items())
    return FamilyPlan(families, tuple(skipped))


def select_families(plan: FamilyPlan, wanted: Sequence[str] | None) -> FamilyPlan:
    """Keep only the named families (None or empty: all); an unknown name is a one-line error."""
    if not wanted:
        return plan
    known = plan.names
    unknown = [name for name in dict.fromkeys(wanted) if name not in known]
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise UsageError(
            f"unknown family {', '.join(repr(name) for name in unknown)}: "
            f"the registry's families are {listed}"
        )
    keep = set(wanted)
    return FamilyPlan(
        tuple(family for family in plan.families if family.name in keep), plan.not_judged
    )


def require_judged(plan: FamilyPlan) -> None:
    """Refuse a plan with no family to bisect, in one line naming what was left out."""
    if plan.families:
        return
    raise UsageError(
        "nothing to bisect: no row is a six-feature full-reference regressor "
        f"({len(plan.not_judged)} row(s) not judged, e.g. {plan.not_judged[0].name}: "
        f"{plan.not_judged[0].reason})"
        if plan.not_judged
        else "nothing to bisect: the registry has no models"
    )


def signature(inputs: Sequence[GraphInput]) -> str:
    """A short name for a graph's input signature: ``features6``, ``features6+codec6``, ``frames``..."""
    ranks = [len(item.dims) for item in inputs]
    if any(rank >= 3 for rank in ranks):
        frames = sum(1 for rank in ranks if rank >= 3)
        return "frames" if frames == 1 else f"frames{frames}"
    if _features(inputs) is not None:
        codec = _codec(inputs)
        if len(inputs) == 1:
            return f"features{_WIDTH}"
        if codec is not None:
            return f"features{_WIDTH}+codec{codec.dims[1]}"
    shapes = "+".join(f"[{','.join(item.dims)}]" for item in inputs)
    return f"inputs{shapes}" if inputs else "no-inputs"


def is_judged_kind(kind: str) -> bool:
    """True for full-reference regressor kinds: ``fr`` and its variants (``fr-codec``...)."""
    return kind == JUDGED_KIND or kind.startswith(f"{JUDGED_KIND}-")


def judged(kind: str, inputs: Sequence[GraphInput], *, declared_family: str | None) -> bool:
    """True when the bisect judges a row of ``kind`` with this graph on a feature table.

    Kind fr (or ``fr-…``) with a [N, 6] features input (and optionally a codec input); or,
    when the row names its ``family``, any graph of that kind not fed with frames: the row
    claims a place in that timeline, so inputs that do not fit make it broken there. A row
    without ``family`` whose graph does not fit is listed as not judged, never an alarm
    (a probe or a helper graph of kind fr in a field registry).
    """
    if not is_judged_kind(kind):
        return False
    found = signature(inputs)
    if found.startswith("frames"):
        return False
    return declared_family is not None or _why_not(inputs, found) is None


def why_not_judged(inputs: Sequence[GraphInput]) -> str | None:
    """Why a graph with these inputs cannot be fed from a feature table (None when it can)."""
    return _why_not(inputs, signature(inputs))


def _place(
    entry: ModelEntry, inputs: tuple[GraphInput, ...] | None, *, codec_width: int | None = None
) -> _Placed:
    """Decide a row's family and whether the engine can judge it on a feature table."""
    if inputs is None:
        declared = f"features{_WIDTH}" + ("" if codec_width is None else f"+codec{codec_width}")
        family = entry.family or f"{entry.kind}/{declared}"
        if not is_judged_kind(entry.kind):
            return _Placed(family, f"kind {entry.kind}: not a six-feature regressor")
        return _Placed(family, None)
    found = signature(inputs)
    family = entry.family or f"{entry.kind}/{found}"
    why = _why_not(inputs, found)
    if why is not None:
        if judged(entry.kind, inputs, declared_family=entry.family):
            # The row names its family: a regressor of that timeline whose inputs do not fit
            # the feature table is a broken model of it (an alarm), not a row to skip.
            return _Placed(family, None)
        return _Placed(family, f"kind {entry.kind}: {why}")
    if not is_judged_kind(entry.kind):
        return _Placed(family, f"kind {entry.kind}: only kind fr is judged on a feature table")
    return _Placed(family, None)


def _why_not(inputs: Sequence[GraphInput], found: str) -> str | None:
    """Why a graph cannot be fed from a feature table, or None when it can."""
    if found.startswith("frames"):
        return "needs frames" if found == "frames" else "needs two or more frame inputs"
    if found.startswith(f"features{_WIDTH}"):
        return None
    for item in inputs:
        if len(item.dims) == 2 and item.dims[1] == _WIDTH and item.elem_type != TensorProto.FLOAT:
            kind = TensorProto.DataType.Name(item.elem_type) if item.elem_type else "untyped"
            return f"input {item.name!r} is {kind}, not the feature table's FLOAT (float32)"
    return f"input {found.removeprefix('inputs')} is not a [N, {_WIDTH}] feature vector"


def _features(inputs: Sequence[GraphInput]) -> GraphInput | None:
    """The [N, 6] float input, when the graph has one (and at most one other input)."""
    if not 1 <= len(inputs) <= 2:
        return None
    candidates = [
        item
        for item in inputs
        if len(item.dims) == 2 and item.dims[1] == _WIDTH and item.name != CODEC_INPUT_NAME
    ]
    if len(candidates) != 1 or candidates[0].elem_type not in (0, TensorProto.FLOAT):
        return None
    return candidates[0]


def _codec(inputs: Sequence[GraphInput]) -> GraphInput | None:
    """The second, codec input [N, K] of a two-input feature graph."""
    features = _features(inputs)
    rest = [item for item in inputs if item is not features]
    if len(rest) != 1 or len(rest[0].dims) != 2 or not rest[0].dims[1].isdigit():
        return None
    return rest[0]


def safe_reader(read: Callable[[ModelEntry], tuple[GraphInput, ...]]) -> InputReader:
    """Wrap a graph reader so a file it cannot read yields None instead of an error."""

    def reader(entry: ModelEntry) -> tuple[GraphInput, ...] | None:
        try:
            return read(entry)
        except (EngineError, OSError):
            return None

    return reader
