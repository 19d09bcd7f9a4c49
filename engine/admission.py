"""The one check a model passes before it is scored: its files and hashes, its codec, its safety.

``registry validate`` (``engine.registry.validate_registry``), the bisect's evaluator
(``engine.evaluation``) and the App's pull-request review (``engine.registry_review``)
all call ``admit_model``, so a registry that validates is never found broken before
scoring, and a model the bisect calls broken before scoring is a problem ``registry
validate`` reports with the same words. In order, stopping after the first step that
finds a problem:

1. the graph file exists, is a regular file and hashes to the row's ``sha256``;
2. every external-data file the row lists exists beside it and hashes to its ``sha256``;
3. a ``codec`` block names a known codec vocabulary whose width is the row's ``width``;
4. the safety check (``engine.scoring.inspect_model``: size caps, op allowlist, dense-size
   estimate, the input and output interface, external data the graph reads must be listed);
5. every external-data file the row lists is read by the graph (a listed file it does not
   read would be hashed into verdicts and provenance without deciding any prediction).

What is left to scoring (onnxruntime failing, non-finite predictions, the memory and time
budget) needs the model to run and is not checked here.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.codec import codec_vocabulary
from engine.declaration import (
    DeclarationInvalid,
    InputDeclaration,
    RowDeclaration,
    resolve_declaration,
)
from engine.errors import EngineError, ModelRejected, UsageError
from engine.hashing import sha256_file
from engine.registry import (
    CodecSpec,
    ExternalData,
    Problem,
    ProblemKind,
    file_digest,
    hash_problems,
    sha256_mismatch,
)
from engine.scoring import CheckedModel, ScoringLimits, inspect_model, read_graph_inputs


@dataclass(frozen=True)
class Admission:
    """What ``admit_model`` found: every problem (located under the row's pointer), or the checked model.

    ``external_sha256`` maps each external-data file the graph reads to its sha256;
    ``declaration`` is how the scorer feeds the model (its row's resolved declaration).
    """

    problems: tuple[Problem, ...]
    checked: CheckedModel | None = field(default=None, repr=False)
    sha256: str | None = None
    external_sha256: Mapping[str, str] = field(default_factory=dict)
    declaration: InputDeclaration = field(default_factory=InputDeclaration)

    @property
    def reason(self) -> str | None:
        """The first problem's message: why the bisect calls the model broken (None when admitted)."""
        return self.problems[0].message if self.problems else None


def admit_model(
    path: Path,
    *,
    expected_sha256: str | None = None,
    external_data: Sequence[ExternalData] | None = None,
    codec: CodecSpec | None = None,
    limits: ScoringLimits | None = None,
    pointer: str = "",
    root: Path | None = None,
    kind: str | None = None,
    family: str | None = None,
    declared: RowDeclaration | None = None,
) -> Admission:
    """Check one model as the registry row at ``pointer`` describes it; never raises for the model's faults.

    ``expected_sha256`` and ``external_data`` None: a model given without a registry (any
    plain file beside it may be read, nothing is compared). ``limits`` are the safety
    limits (default: the engine's). ``root`` is the folder no file
    may resolve out of (the registry's folder; default: the model's own folder).
    ``kind`` and ``family`` are the row's: a row the bisect does not judge on a feature table
    (``engine.families.judged``: another kind, frame inputs, or inputs that do not fit on a
    row naming no family; docs/registry.md, Families) is never run, so it gets the file
    checks but not those that protect onnxruntime (op allowlist, input and output shapes).
    ``declared`` is what the row (or its sidecar, read under ``root``) declares about the
    model's inputs: standardisation, input and output names, codec vocabulary
    (``engine.declaration``); the resolved declaration comes back in ``Admission.declaration``
    for the scorer, and a declaration that cannot be used is a problem (never scored raw).
    """
    path = Path(path)
    within = path.parent if root is None else Path(root)
    name = path.name
    problems, sha256 = _graph_file(path, expected_sha256, pointer=pointer, root=within)
    for position, item in enumerate(external_data or ()):
        base = f"{pointer}/external_data/{position}"
        problems += hash_problems(
            path.parent / item.path,
            item.sha256,
            path_pointer=f"{base}/path",
            hash_pointer=f"{base}/sha256",
            label=f"external data file {item.path}",
            beside=f" beside {name}",
            root=within,
        )
    if problems:
        return Admission(tuple(problems), sha256=sha256)
    if (why := codec_problem(codec, pointer=pointer)) is not None:
        return Admission((why,), sha256=sha256)
    if declared is None and codec is not None:
        declared = RowDeclaration(legacy_codec=(codec.vocabulary_version, codec.width))
    try:
        declaration = resolve_declaration(declared, root=within)
    except DeclarationInvalid as error:
        field = _declaration_field(declared)
        problems = [
            Problem(f"{pointer}/{field}", message, ProblemKind.DECLARATION)
            for message in error.problems
        ]
        return Admission(tuple(problems), sha256=sha256)
    listed = None if external_data is None else {item.path: item.sha256 for item in external_data}
    try:
        checked = inspect_model(
            path,
            limits=limits or ScoringLimits(),
            external_data=listed,
            codec_width=declaration.codec_width,
            features_input=declaration.features_input,
            codec_input=declaration.codec_input,
            output_name=declaration.output_name,
            scored=kind is None
            or _judged_on_features(kind, family, path, limits or ScoringLimits()),
        )
    except ModelRejected as error:
        text = str(error)
        if declared is not None and (text.startswith("declared ") or "codec" in text):
            # The graph lacks a name the row (or its sidecar) declares: the declaration's fault.
            where = f"{pointer}/{_declaration_field(declared)}"
            return Admission((Problem(where, text, ProblemKind.DECLARATION),), sha256=sha256)
        return Admission(
            (Problem(f"{pointer}/onnx", str(error), ProblemKind.SAFETY),), sha256=sha256
        )
    if checked.sha256 != sha256:
        message = f"model file {name} changed while it was being checked"
        return Admission((Problem(f"{pointer}/onnx", message, ProblemKind.FILES),), sha256=sha256)
    unread = [
        Problem(
            f"{pointer}/external_data/{position}/path",
            f"external data file {item.path} is listed but {name} does not read it",
            ProblemKind.FILES,
        )
        for position, item in enumerate(external_data or ())
        if item.path not in checked.external_files
    ]
    if unread:
        return Admission(tuple(unread), sha256=sha256)
    external = {
        file: listed[file] if listed is not None else sha256_file(path.parent / file)
        for file in checked.external_files
    }
    return Admission(
        (), checked=checked, sha256=sha256, external_sha256=external, declaration=declaration
    )


def _declaration_field(declared: RowDeclaration | None) -> str:
    """The row field a declaration problem is reported on (the first declaring field present)."""
    if declared is not None:
        for field, present in (
            ("preprocess", declared.preprocess is not None),
            ("inputs", bool(declared.inputs)),
            ("codec_vocabulary", declared.vocabulary is not None or declared.missing_vocabulary),
            ("codec", declared.legacy_codec is not None),
        ):
            if present:
                return field
    return "sidecar"


def _judged_on_features(kind: str, family: str | None, path: Path, limits: ScoringLimits) -> bool:
    """True when a row of ``kind`` with this graph is a regressor the bisect scores."""
    from engine.families import is_judged_kind, judged

    if not is_judged_kind(kind):
        return False
    try:
        return judged(kind, read_graph_inputs(path, limits=limits), declared_family=family)
    except EngineError:
        return True  # inspect_model says why the file is refused


def codec_problem(codec: CodecSpec | None, *, pointer: str = "") -> Problem | None:
    """Return why a row's codec block contradicts the codec vocabulary it names, or None."""
    if codec is None:
        return None
    try:
        vocabulary = codec_vocabulary(codec.vocabulary_version)
    except UsageError as error:
        return Problem(f"{pointer}/codec/vocabulary_version", str(error), ProblemKind.CODEC)
    if vocabulary.width != codec.width:
        return Problem(
            f"{pointer}/codec/width",
            f"registry says the codec block is {codec.width} wide, "
            f"vocabulary v{codec.vocabulary_version} is {vocabulary.width}",
            ProblemKind.CODEC,
        )
    return None


def _graph_file(
    path: Path, expected: str | None, *, pointer: str, root: Path
) -> tuple[list[Problem], str | None]:
    """Check the graph file is a readable regular file (matching ``expected``); return its sha256."""
    found = file_digest(
        path, path_pointer=f"{pointer}/onnx", label=f"model file {path.name}", beside="", root=root
    )
    if isinstance(found, Problem):
        return [found], None
    if expected is not None and found != expected:
        return [sha256_mismatch(f"{pointer}/sha256", expected=expected, found=found)], found
    return [], found
