"""Promotion verdicts: PROMOTE.json or HOLD.json, bound by hash to the data, LOSO reports and models.

A verdict is not a signature. It names exactly what was judged (the feature table by
decoded-content hash, every LOSO report and model file by sha256) and what the gate said;
``verify_verdict`` re-derives all of it from those files, so a verdict edited by hand, or
evidence changed after the fact, fails verification. The format is a contract with the
GitHub App; see docs/promotion.md.
"""

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import onnx
from google.protobuf.message import DecodeError

from engine.errors import EngineError, EvidenceError, UsageError
from engine.evidence import is_foreign, read_json, schema_differences, schema_problems, shown
from engine.features import FeatureTable, load_features
from engine.gate import GateReport, GateThresholds, evaluate_gate
from engine.hashing import sha256_bytes, sha256_file
from engine.loso_report import LosoReport, load_loso_report, load_loso_reports
from engine.policy import PromotionPolicy, check_policy
from engine.safeio import ONNX_GRAPH, read_input

if TYPE_CHECKING:  # engine.registry is imported where it is used, to keep this import light
    from engine.provenance import Input
    from engine.registry import ModelEntry

SCHEMA = "model-guard/verdict"
SCHEMA_VERSION = 3
"""Version 2 traces every bound model to the LOSO seed whose report binds it (``seed``);
version 3 records the fewest held-out sources the gate asked for (``thresholds.min_sources``)
and how many the evidence has (``gate.n_sources``)."""
VERDICT_SCHEMA_FILE = "verdict.schema.json"
# Exit codes: `model-guard verdict` 0 PROMOTE / 1 HOLD, `verdict verify` 0 verified / 1 not;
# bad input (an EngineError) is 2 for both.
EXIT_PROMOTE = 0
EXIT_HOLD = 1
EXIT_VERIFIED = 0
EXIT_NOT_VERIFIED = 1
EXIT_BAD_INPUT = 2
# Older verdicts, read only to say why they cannot back a promotion.
_OLD_VERSIONS: dict[object, str] = {
    1: "schema_version 1: it traces no model to a LOSO seed, so it cannot back a promotion; "
    "re-run 'model-guard loso' and 'model-guard verdict'",
    2: "schema_version 2: it records no minimum number of held-out sources, so it cannot show "
    "how much evidence it was judged on; re-run 'model-guard verdict'",
}
# protobuf cannot parse a message over 2 GiB; an ONNX graph file is never larger.
_MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024


class Verdict(Enum):
    """The two verdicts; each is written to a file of its own name."""

    PROMOTE = "PROMOTE"
    HOLD = "HOLD"

    @property
    def file_name(self) -> str:
        """Return the verdict's file name, ``PROMOTE.json`` or ``HOLD.json``."""
        return f"{self.value}.json"


@dataclass(frozen=True)
class BoundFile:
    """A file a verdict is bound to: its path relative to the verdict's folder and its sha256."""

    path: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """Return the binding as a JSON-ready dict."""
        return {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class BoundModel:
    """A model a verdict covers: the ONNX graph file and every external-data file it names."""

    path: str
    sha256: str
    external_data: tuple[BoundFile, ...]
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the binding as a JSON-ready dict."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "seed": self.seed,
            "external_data": [item.to_dict() for item in self.external_data],
        }


@dataclass(frozen=True)
class VerdictOutcome:
    """What ``decide`` wrote: the verdict, its file, why (for HOLD), the gate, and any stale file removed."""

    verdict: Verdict
    path: Path
    reasons: tuple[str, ...]
    gate: GateReport
    removed: Path | None

    @property
    def exit_code(self) -> int:
        """Return the CLI exit code: 0 PROMOTE, 1 HOLD."""
        return EXIT_PROMOTE if self.verdict is Verdict.PROMOTE else EXIT_HOLD

    def render_text(self) -> str:
        """Return the gate table followed by the verdict, its reasons and the file written."""
        lines = [
            self.gate.render_text().rstrip("\n"),
            f"verdict: {self.verdict.value} -> {self.path}",
        ]
        gate_reasons = set(self.gate.reasons)
        lines.extend(f"  - {reason}" for reason in self.reasons if reason not in gate_reasons)
        if self.removed is not None:
            lines.append(f"removed stale {self.removed}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of ``verify_verdict``: ok only when there is no problem; one line per problem.

    For a foreign verdict (another tool's format) ``foreign`` is set, ``verdict`` is None, the
    substantive faults come first and the last problem summarises ``differences``, the
    schema differences from our format (listed by ``render_text(verbose=True)``).
    """

    ok: bool
    problems: tuple[str, ...]
    verdict: Verdict | None
    foreign: bool = False
    differences: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """Return the CLI exit code: 0 verified, 1 not."""
        return EXIT_VERIFIED if self.ok else EXIT_NOT_VERIFIED

    @property
    def faults(self) -> tuple[str, ...]:
        """Return the problems without a foreign verdict's schema summary."""
        return self.problems[:-1] if self.foreign else self.problems

    def render_text(self, *, verbose: bool = False) -> str:
        """Return ``verified`` or one line per problem (and, verbose, each schema difference)."""
        if self.ok:
            return "verified: the verdict holds for the files it names\n"
        listed = self.differences if verbose else ()
        return "".join(f"problem: {problem}\n" for problem in self.problems) + "".join(
            f"{line}\n" for line in listed
        )


@dataclass(frozen=True)
class OfferedModel:
    """A model offered as one a verdict judged (an ensemble member): its label, seed and sha256.

    ``sha256`` is the file's own hash (None when the file cannot be read); ``seed`` is the
    seed it claims (None when it names none).
    """

    label: str
    seed: int | None
    sha256: str | None


def decide(
    directory: Path,
    *,
    features: Path,
    models: Sequence[Path] | None = None,
    out: Path,
    thresholds: GateThresholds | None = None,
    argv: Sequence[str] = (),
) -> VerdictOutcome:
    """Judge the LOSO reports in ``directory`` and write exactly one of PROMOTE.json / HOLD.json to ``out``.

    PROMOTE needs the gate to pass, the reports' corpus to be ``features`` (same decoded
    content hash, every source held out) and ``models`` to be exactly the final models the
    reports bind, one per seed (``models`` defaults to those files). Bad input raises an EngineError and writes nothing.
    The file of the other kind is removed first, so a crash can leave no verdict, never two.
    """
    from engine.evidence import write_json
    from engine.provenance import InputRole, build_provenance, inputs_of, utc_now

    started = utc_now()
    thresholds = GateThresholds() if thresholds is None else thresholds
    reports = load_loso_reports(directory)
    if models is None:
        models = _final_model_files(reports)
    if not models:
        raise UsageError("no models given: a verdict must name the models it judges (--models)")
    table = load_features(features)
    out = Path(out)
    _make_folder(out)
    base = out.resolve()
    bound_models = _trace_models(_bind_models(models, base=base), reports)
    gate = evaluate_gate(reports, thresholds)
    reasons = (
        *gate.reasons,
        *_binding_reasons(reports, table, label=Path(features).name),
        *model_binding_problems(reports, [model.to_dict() for model in bound_models]),
    )
    verdict = Verdict.HOLD if reasons else Verdict.PROMOTE
    target = out / verdict.file_name
    stale = out / (Verdict.HOLD if verdict is Verdict.PROMOTE else Verdict.PROMOTE).file_name
    inputs = [
        *inputs_of([features], InputRole.FEATURES),
        *inputs_of((r.path for r in reports), InputRole.LOSO_REPORT),
        *_model_files(models, bound_models, base),
    ]
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "verdict": verdict.value,
        "reasons": list(reasons),
        "gate": gate.to_dict(),
        "bound_to": {
            "features": {"path": _relative(features, base), "content_hash": table.content_hash},
            "loso_reports": [
                BoundFile(_relative(r.path, base), r.sha256).to_dict() for r in reports
            ],
            "models": [model.to_dict() for model in bound_models],
        },
        "run_provenance": build_provenance(
            schema=SCHEMA,
            schema_version=SCHEMA_VERSION,
            entrypoint="model-guard verdict",
            argv=list(argv),
            inputs=inputs,
            outputs=[target],
            started=started,
            finished=utc_now(),
        ),
    }
    problems = schema_problems(document, VERDICT_SCHEMA_FILE)
    if problems:  # a bug here, not bad input: never write a verdict the contract rejects
        raise RuntimeError(f"verdict does not match its own schema: {problems[0]}")
    removed = _remove(stale)
    write_json(target, document)
    return VerdictOutcome(
        verdict=verdict, path=target, reasons=tuple(reasons), gate=gate, removed=removed
    )


def verify_verdict(
    verdict_path: Path,
    *,
    registry: Path | None = None,
    model_ids: Collection[str] | None = None,
    policy: PromotionPolicy | None = None,
    root: Path | None = None,
    members: Sequence[OfferedModel] | None = None,
) -> VerificationResult:
    """Re-check a verdict against the files it names; every problem is one line naming its item.

    Checks: schema; PROMOTE (a HOLD never backs a promotion, but its hashes are checked
    too); the feature table's decoded content hash; every LOSO report, model and
    external-data file by sha256; each model's external-data list, re-read from the ONNX
    file; the gate re-run on the reports under the recorded thresholds; the reports' corpus
    against the table. With ``policy``, the recorded thresholds and evidence must also meet
    the repository's policy (``engine.policy.check_policy``, each violation one problem).
    With ``registry``, every model with ``smoke: false`` (only those in ``model_ids`` when
    given) must be covered by a verdict model with the same sha256 and external data.
    With ``root``, every named file must resolve inside it. With ``members`` (an ensemble's
    members), each must be a model the verdict judged (same sha256 and seed). A foreign verdict
    (another tool's format, ``engine.evidence.is_foreign``) is read for what matters, never
    verified: see ``_verify_foreign``. A verdict that cannot be read as JSON, or a registry
    that cannot be loaded, raises an EngineError (bad input).
    """
    path = Path(verdict_path)
    document = read_json(path).value
    if is_foreign(document, own_keys=_OWN_KEYS):
        return _verify_foreign(
            path, document, root=root, members=members, registry=registry, model_ids=model_ids
        )
    version = document.get("schema_version") if isinstance(document, dict) else None
    old = _OLD_VERSIONS.get(version) if isinstance(version, int) else None
    if old is not None:
        return _result([f"verdict {path.name} is {old}"], None)
    schema = schema_problems(document, VERDICT_SCHEMA_FILE)
    if schema:
        return _result([f"verdict {path.name} {problem}" for problem in schema], None)
    verdict = Verdict(document["verdict"])
    problems = list(_verdict_file_problems(path, verdict))
    locator = _Locator(path.parent.resolve(), None if root is None else Path(root).resolve())
    bound = document["bound_to"]
    table = _check_features(bound["features"], locator, problems)
    reports = _check_reports(bound["loso_reports"], locator, problems)
    for model in bound["models"]:
        _check_model(model, locator, problems)
    if reports is not None:
        problems.extend(model_binding_problems(reports, bound["models"]))
        _check_gate(document["gate"], reports, verdict, problems=problems)
        if table is not None and verdict is Verdict.PROMOTE:
            label = str(bound["features"]["path"])
            problems.extend(f"binding: {r}" for r in _binding_reasons(reports, table, label=label))
    if policy is not None:
        problems.extend(f"policy: {violation}" for violation in check_policy(document, policy))
    if registry is not None:
        problems.extend(_coverage_problems(bound["models"], registry, model_ids=model_ids))
    if members is not None:
        problems.extend(_unjudged_members(members, bound["models"]))
    return _result(problems, verdict)


def _result(problems: Sequence[str], verdict: Verdict | None) -> VerificationResult:
    """Wrap problems into a result."""
    return VerificationResult(ok=not problems, problems=tuple(problems), verdict=verdict)


# Keys only our verdict writes: a document with one of them is ours (and checked strictly).
_OWN_KEYS = ("bound_to",)
# Hostile foreign verdicts: at most this many seeds get a line of their own.
_MAX_LISTED_SEEDS = 32
_HEX = frozenset("0123456789abcdef")


def _verify_foreign(
    path: Path,
    document: Mapping[str, Any],
    *,
    root: Path | None,
    members: Sequence[OfferedModel] | None,
    registry: Path | None,
    model_ids: Collection[str] | None,
) -> VerificationResult:
    """Read another tool's verdict (e.g. a ``*_PROMOTE.json`` with ``corpus``, ``loso_dir``, ``seeds``).

    It is never verified. The substantive faults come first, in this order: bound to no
    data, missing LOSO evidence, not a PROMOTE, models it cannot be shown to have judged
    (``members``, or the registry's production rows); then one line summarising the schema
    differences from our format.
    """
    name = path.name
    seeds = _foreign_seeds(document)
    problems = [
        *_foreign_data_problems(document, name),
        *_foreign_loso_problems(document, path, seeds=seeds, root=root),
        *_foreign_outcome_problems(document, name),
    ]
    listed = _seeds(seeds[:_MAX_LISTED_SEEDS]) + (",..." if len(seeds) > _MAX_LISTED_SEEDS else "")
    if members is None:
        problems.append(
            f"verdict {name} names no model file or sha256 (only seeds {listed or 'none'}), "
            "so no model can be shown to be one it judged"
        )
    else:
        for member in members:
            if member.seed is not None and member.seed in seeds:
                problems.append(
                    f"{member.label}: not shown to be a model the verdict judged: {name} names "
                    f"seed {member.seed} but no model file or sha256"
                )
            else:
                problems.append(
                    f"{member.label}: not a model the verdict judged: {name} judged seeds "
                    f"{listed or 'none'}, not {'no seed' if member.seed is None else member.seed}"
                )
    if registry is not None:
        problems.extend(_coverage_problems((), registry, model_ids=model_ids))
    differences = schema_differences(document, VERDICT_SCHEMA_FILE, format_name="verdict")
    problems.append(f"verdict {name}: {differences.summary()}")
    return VerificationResult(
        ok=False,
        problems=tuple(problems),
        verdict=None,
        foreign=True,
        differences=differences.lines(name),
    )


def _foreign_seeds(document: Mapping[str, Any]) -> list[int]:
    """Return the seeds a foreign verdict judged: ``seeds``, else its gate's per-seed keys."""
    raw: Any = document.get("seeds")
    if not isinstance(raw, list):
        gate = document.get("gate")
        per_seed = gate.get("per_seed_plccs") if isinstance(gate, dict) else None
        raw = list(per_seed) if isinstance(per_seed, dict) else []
    seeds: list[int] = []
    for item in raw:
        if isinstance(item, str) and item.isascii() and item.isdigit() and len(item) < 10:
            item = int(item)
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            seeds.append(item)
    return sorted(set(seeds))


def _foreign_data_problems(document: Mapping[str, Any], name: str) -> list[str]:
    """Say when a foreign verdict is bound to no data: no corpus hash, or ``present: false``."""
    corpus = document.get("corpus")
    if not isinstance(corpus, dict):
        return [f"verdict {name} is bound to no data: it names no corpus or feature-table hash"]
    digest = corpus.get("sha256", corpus.get("content_hash"))
    hashed = isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX
    if hashed and corpus.get("present", True) is not False:
        return []
    details = [f"corpus present: {shown(corpus.get('present', 'not recorded'))}"]
    details.append(f"sha256: {shown(digest)}")
    where = corpus.get("corpus_root", corpus.get("path"))
    if isinstance(where, str):
        details.append(f"corpus_root: {shown(where)}")
    return [
        f"verdict {name} is bound to no data ({', '.join(details)}): its gate figures are not "
        "tied to any corpus or feature table"
    ]


def _foreign_loso_problems(
    document: Mapping[str, Any], path: Path, *, seeds: Sequence[int], root: Path | None
) -> list[str]:
    """Say what LOSO evidence a foreign verdict lacks: no report bound by hash, reports not found."""
    name = path.name
    loso_dir = document.get("loso_dir")
    if not isinstance(loso_dir, str) or not seeds:
        return [
            f"verdict {name} has no LOSO evidence: it binds no per-seed LOSO report "
            f"(loso_dir {shown(loso_dir)}, {len(seeds)} seeds)"
        ]
    problems = [
        f"verdict {name} has no LOSO evidence bound by sha256: it names loso_dir "
        f"{shown(loso_dir)} and seeds {_seeds(seeds[:_MAX_LISTED_SEEDS])}"
        f"{',...' if len(seeds) > _MAX_LISTED_SEEDS else ''}, no report hashes"
    ]
    unsafe = _unsafe_relative(loso_dir)
    if unsafe:
        return [*problems, f"LOSO reports: loso_dir {shown(loso_dir)} {unsafe}; not opened"]
    bases = _search_bases(path.parent.resolve(), None if root is None else Path(root).resolve())
    for seed in seeds[:_MAX_LISTED_SEEDS]:
        relative = f"{loso_dir.rstrip('/')}/loso_seed{seed}.json"
        found = _find_within(relative, bases)
        if found is None:
            looked = f"{bases[0]}" if len(bases) == 1 else f"{bases[0]} up to {bases[-1]}"
            problems.append(f"LOSO seed {seed}: {shown(relative)} not found (looked from {looked})")
        else:
            problems.append(
                f"LOSO seed {seed}: {found} exists, but the verdict records no sha256 for it, "
                "so it cannot be shown to be the report that was judged"
            )
    if len(seeds) > _MAX_LISTED_SEEDS:
        problems.append(f"LOSO reports: {len(seeds) - _MAX_LISTED_SEEDS} more seeds not looked up")
    return problems


def _foreign_outcome_problems(document: Mapping[str, Any], name: str) -> list[str]:
    """Say when a foreign verdict does not even claim a passed PROMOTE."""
    problems = []
    said = document.get("verdict")
    if said != Verdict.PROMOTE.value:
        problems.append(f"verdict {name} says {shown(said)}, not PROMOTE")
    gate = document.get("gate")
    if isinstance(gate, dict) and gate.get("passed") is False:
        problems.append(f"verdict {name} records a gate that did not pass")
    return problems


def _unjudged_members(
    members: Sequence[OfferedModel], models: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Return a line per offered model that is not one of the verdict's models (sha256 and seed)."""
    seeds_by_hash = {str(model["sha256"]): model.get("seed") for model in models}
    problems = []
    for member in members:
        if member.sha256 is None:
            problems.append(
                f"{member.label}: its file cannot be read, so it cannot be shown to be a model "
                "the verdict judged"
            )
        elif member.sha256 not in seeds_by_hash:
            problems.append(
                f"{member.label}: not a model the verdict judged (sha256 {_short(member.sha256)} "
                f"is none of its {len(models)} models)"
            )
        elif member.seed is not None and seeds_by_hash[member.sha256] != member.seed:
            problems.append(
                f"{member.label}: the verdict judged this file as seed "
                f"{seeds_by_hash[member.sha256]}, not seed {member.seed}"
            )
    return problems


def _unsafe_relative(relative: str) -> str | None:
    """Return why a foreign relative folder may not be opened, or None."""
    posix = PurePosixPath(relative)
    if "\\" in relative or "\x00" in relative:
        return "must use '/' separators and no NUL"
    if posix.is_absolute() or relative.startswith("~") or ".." in posix.parts:
        return "is not a relative path without '..'"
    return None


def _search_bases(folder: Path, root: Path | None) -> list[Path]:
    """Return where a foreign verdict's repository-relative paths may start.

    The verdict's folder and each parent up to ``root`` (or, without one, up to the
    nearest parent holding ``.git``, the checkout; only the folder itself when there is none).
    """
    chain = [folder, *folder.parents]
    if root is not None:
        if not folder.is_relative_to(root):
            return [folder]
        return [base for base in chain if base.is_relative_to(root)]
    for index, base in enumerate(chain):
        if (base / ".git").exists():
            return chain[: index + 1]
    return [folder]


def _find_within(relative: str, bases: Sequence[Path]) -> Path | None:
    """Return the first regular file ``relative`` names under one of ``bases`` (never outside it)."""
    for base in bases:
        candidate = base / relative
        try:  # a name too long for the file system, or a symlink loop, is simply not found
            if candidate.resolve().is_relative_to(bases[-1]) and candidate.is_file():
                return candidate
        except (OSError, RuntimeError):
            continue
    return None


def _verdict_file_problems(path: Path, verdict: Verdict) -> Iterator[str]:
    """Yield problems of the verdict itself: HOLD, a misleading file name, a contradicting sibling."""
    if verdict is Verdict.HOLD:
        yield (
            f"verdict {path.name} is HOLD: a HOLD verdict can never back a promotion "
            "(its hashes are still checked)"
        )
    if path.name != verdict.file_name:
        yield f"verdict file is named {path.name} but holds a {verdict.value} verdict"
    other = Verdict.HOLD if verdict is Verdict.PROMOTE else Verdict.PROMOTE
    if (path.parent / other.file_name).exists():
        yield (
            f"both PROMOTE.json and HOLD.json are in {path.parent}: contradictory evidence; "
            "re-run 'model-guard verdict' to replace them with one"
        )


@dataclass(frozen=True)
class _Locator:
    """Turns a verdict's relative paths into files, refusing any that leave ``root``."""

    base: Path
    root: Path | None

    def find(self, relative: str, *, label: str, problems: list[str]) -> Path | None:
        """Return the file for a recorded path, or None after adding a problem naming ``label``."""
        candidate = Path(os.path.normpath(self.base / relative))
        if self.root is not None and not candidate.resolve().is_relative_to(self.root):
            problems.append(f"{label} {relative}: resolves outside {self.root}; not opened")
            return None
        if not candidate.is_file():
            problems.append(f"{label} {relative}: not found (looked for {candidate})")
            return None
        return candidate


def _check_features(
    entry: Mapping[str, Any], locator: _Locator, problems: list[str]
) -> FeatureTable | None:
    """Re-hash the feature table by decoded content; return it when it still matches."""
    relative, recorded = str(entry["path"]), str(entry["content_hash"])
    file = locator.find(relative, label="feature table", problems=problems)
    if file is None:
        return None
    try:
        table = load_features(file)
    except EngineError as error:
        problems.append(f"feature table {relative}: cannot be loaded: {error}")
        return None
    if table.content_hash != recorded:
        problems.append(
            f"feature table {relative}: content changed (content hash {_short(recorded)} "
            f"recorded, {_short(table.content_hash)} now)"
        )
        return None
    return table


def _check_reports(
    entries: Sequence[Mapping[str, Any]], locator: _Locator, problems: list[str]
) -> tuple[LosoReport, ...] | None:
    """Re-hash and re-read every bound LOSO report; return them all, or None if any fails."""
    reports: list[LosoReport] = []
    for entry in entries:
        relative, recorded = str(entry["path"]), str(entry["sha256"])
        file = locator.find(relative, label="LOSO report", problems=problems)
        if file is None:
            continue
        try:
            report = load_loso_report(file)
        except EvidenceError as error:
            actual = sha256_file(file)
            if actual != recorded:
                problems.append(_changed("LOSO report", relative, recorded, actual))
            else:
                problems.append(f"LOSO report {relative}: {error}")
            continue
        if report.sha256 != recorded:
            problems.append(_changed("LOSO report", relative, recorded, report.sha256))
            continue
        reports.append(report)
    seeds = [report.seed for report in reports]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        problems.append(
            f"LOSO reports: seed(s) {', '.join(map(str, repeated))} bound more than once"
        )
        return None
    return tuple(reports) if len(reports) == len(entries) else None


def _check_model(entry: Mapping[str, Any], locator: _Locator, problems: list[str]) -> None:
    """Re-hash one model and its external data, and re-read which external files its ONNX names."""
    relative, recorded = str(entry["path"]), str(entry["sha256"])
    file = locator.find(relative, label="model", problems=problems)
    if file is None:
        return
    try:
        raw = _read_model(file)
    except EvidenceError as error:
        problems.append(f"model {relative}: {error}")
        return
    actual = sha256_bytes(raw)
    if actual != recorded:
        problems.append(_changed("model", relative, recorded, actual))
        return
    listed = {Path(str(item["path"])).name: item for item in entry["external_data"]}
    try:
        names = set(_external_locations(raw, file))
    except EvidenceError as error:
        problems.append(f"model {relative}: {error}")
        return
    for name in sorted(names - set(listed)):
        problems.append(f"model {relative}: external data file {name} is not bound by the verdict")
    for name in sorted(set(listed) - names):
        problems.append(
            f"model {relative}: the verdict binds external data {name}, which the model does not name"
        )
    for name in sorted(names & set(listed)):
        item = listed[name]
        ext_relative, ext_recorded = str(item["path"]), str(item["sha256"])
        ext_file = locator.find(
            ext_relative, label=f"model {relative} external data", problems=problems
        )
        if ext_file is None:
            continue
        if ext_file.resolve() != (file.parent / name).resolve():
            problems.append(
                f"model {relative}: external data {ext_relative} is not the file {name} beside the model"
            )
            continue
        ext_actual = sha256_file(ext_file)
        if ext_actual != ext_recorded:
            problems.append(
                _changed(f"model {relative} external data", ext_relative, ext_recorded, ext_actual)
            )


def _check_gate(
    recorded: Mapping[str, Any],
    reports: Sequence[LosoReport],
    verdict: Verdict,
    *,
    problems: list[str],
) -> None:
    """Re-run the gate on the bound reports: it must still pass (PROMOTE) and match the record."""
    try:
        thresholds = GateThresholds.from_dict(recorded["thresholds"])
    except UsageError as error:
        problems.append(f"gate thresholds: {error}")
        return
    gate = evaluate_gate(reports, thresholds)
    if verdict is Verdict.PROMOTE and not gate.passed:
        problems.extend(f"recorded gate no longer holds: {reason}" for reason in gate.reasons)
    rerun = gate.to_dict()
    differing = sorted(key for key in rerun if rerun[key] != recorded.get(key))
    if differing:
        problems.append(
            f"gate: the recorded {', '.join(differing)} differ(s) from a re-run on the bound "
            "LOSO reports (was the verdict edited?)"
        )


def _coverage_problems(
    models: Sequence[Mapping[str, Any]], registry: Path, *, model_ids: Collection[str] | None
) -> list[str]:
    """Return a problem per production (``smoke: false``) registry model the verdict does not cover."""
    from engine.registry import load_registry

    loaded = load_registry(registry)
    problems: list[str] = []
    known = {entry.id for entry in loaded.models}
    for wanted in sorted(set(model_ids or ()) - known):
        problems.append(f"registry {registry} has no model {wanted}")
    for entry in loaded.models:
        if entry.smoke or (model_ids is not None and entry.id not in model_ids):
            continue
        if (problem := coverage_problem(models, entry)) is not None:
            problems.append(problem)
    return problems


def coverage_problem(models: Sequence[Mapping[str, Any]], entry: "ModelEntry") -> str | None:
    """Return why a verdict's bound models (``bound_to.models``) do not cover a registry row, or None.

    Covered means one bound model has the row's sha256 and exactly its external data
    (by file name and sha256); paths may differ, the bytes may not.
    """
    covered = {
        (
            str(m["sha256"]),
            frozenset((Path(str(e["path"])).name, str(e["sha256"])) for e in m["external_data"]),
        )
        for m in models
    }
    external = frozenset((Path(name).name, sha) for name, sha in entry.external_map().items())
    if (entry.sha256, external) in covered:
        return None
    if entry.sha256 in {sha for sha, _ in covered}:
        return (
            f"registry would promote {entry.id} (sha256 {_short(entry.sha256)}) whose external "
            "data differs from what the verdict covers"
        )
    return (
        f"registry would promote {entry.id} (sha256 {_short(entry.sha256)}) "
        "which the verdict does not cover"
    )


def model_binding_problems(
    reports: Sequence[LosoReport], models: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Return why the verdict's models are not exactly the LOSO reports' final models, one per seed.

    Refused, one line each naming the model or seed: a report that binds no final model
    (schema_version 1), one file bound by two seeds, a model no report binds (no seed, or
    a seed with no report), a model or seed listed twice, a model whose sha256 differs from
    its seed's final model, and a seed whose final model is missing from the verdict.
    """
    problems: list[str] = []
    by_seed = {report.seed: report for report in reports}
    finals: dict[str, list[int]] = {}
    for report in reports:
        if report.final_model is None:
            problems.append(
                f"LOSO seed {report.seed} ({report.path.name}) is a schema_version "
                f"{report.schema_version} report that binds no final model, so it cannot back a "
                "promotion; re-run 'model-guard loso'"
            )
        else:
            finals.setdefault(report.final_model.sha256, []).append(report.seed)
    for digest, seeds in finals.items():
        if len(seeds) > 1:
            problems.append(
                f"LOSO seeds {_seeds(seeds)} bind the same final model (sha256 {_short(digest)}): "
                "one model file cannot be the final model of two seeds"
            )
    traced: dict[int, str] = {}
    listed: dict[str, str] = {}
    for model in models:
        relative, digest, seed = str(model["path"]), str(model["sha256"]), model.get("seed")
        if digest in listed:
            problems.append(f"model {relative}: bound twice (same sha256 as {listed[digest]})")
            continue
        listed[digest] = relative
        if seed is None or seed not in by_seed:
            why = "it names no seed" if seed is None else f"seed {seed} has no LOSO report here"
            problems.append(
                f"model {relative} (sha256 {_short(digest)}): no LOSO report of the verdict binds "
                f"it ({why}); only the seeds' final models can be promoted"
            )
            continue
        if seed in traced:
            problems.append(
                f"model {relative}: seed {seed} is already traced to model {traced[seed]}"
            )
            continue
        traced[seed] = relative
        final = by_seed[seed].final_model
        if final is not None and final.sha256 != digest:
            problems.append(
                f"model {relative} (seed {seed}): sha256 {_short(digest)}, but "
                f"{by_seed[seed].path.name} binds final model {final.path} with sha256 "
                f"{_short(final.sha256)}"
            )
    for report in reports:
        if report.final_model is not None and report.seed not in traced:
            problems.append(
                f"LOSO seed {report.seed}: its final model {report.final_model.path} "
                f"({report.path.name}) is missing from the verdict's models"
            )
    return problems


def _trace_models(models: Sequence[BoundModel], reports: Sequence[LosoReport]) -> list[BoundModel]:
    """Give every bound model the seed whose report binds its sha256 (None when no report does)."""
    seeds: dict[str, int] = {}
    for report in reports:
        if report.final_model is not None:
            seeds.setdefault(report.final_model.sha256, report.seed)
    return [replace(model, seed=seeds.get(model.sha256)) for model in models]


def _final_model_files(reports: Sequence[LosoReport]) -> list[Path]:
    """Return the final model files the reports bind (each once), resolved against each report's folder."""
    files = [
        Path(os.path.normpath(report.path.parent / report.final_model.path))
        for report in reports
        if report.final_model is not None
    ]
    # One file bound by two seeds is bound once here and refused as a binding reason (HOLD).
    return list({file.resolve(): file for file in files}.values())


def _binding_reasons(
    reports: Sequence[LosoReport], table: FeatureTable, *, label: str
) -> list[str]:
    """Return why the LOSO reports are not evidence about ``table``: other data, or sources not held out."""
    reasons: list[str] = []
    by_hash: dict[str, list[int]] = {}
    for report in reports:
        by_hash.setdefault(report.corpus.content_hash, []).append(report.seed)
    for digest, seeds in by_hash.items():
        if digest != table.content_hash:
            reasons.append(
                f"LOSO seed(s) {_seeds(seeds)} were trained on corpus {_short(digest)}, not on the "
                f"feature table {label} ({_short(table.content_hash)})"
            )
    matching = [report for report in reports if report.corpus.content_hash == table.content_hash]
    if not matching:
        return reasons
    groups = table.groups()
    if groups is None:
        reasons.append(
            f"feature table {label} has no 'source' column, so no LOSO fold can match it"
        )
        return reasons
    sources = {str(source) for source in groups}
    gaps: dict[tuple[frozenset[str], frozenset[str]], list[int]] = {}
    for report in matching:
        held = {fold.held_out for fold in report.folds}
        key = (frozenset(sources - held), frozenset(held - sources))
        if key != (frozenset(), frozenset()):
            gaps.setdefault(key, []).append(report.seed)
    for (missing, extra), seeds in gaps.items():
        if missing:
            reasons.append(
                f"LOSO seed(s) {_seeds(seeds)} never hold out source(s) {', '.join(sorted(missing))} "
                f"of the feature table {label}"
            )
        if extra:
            reasons.append(
                f"LOSO seed(s) {_seeds(seeds)} hold out source(s) {', '.join(sorted(extra))}, "
                f"which the feature table {label} does not have"
            )
    return reasons


def _bind_models(models: Sequence[Path], *, base: Path) -> list[BoundModel]:
    """Hash every model and the external-data files its ONNX graph names, paths relative to ``base``."""
    seen: set[Path] = set()
    bound: list[BoundModel] = []
    for model in models:
        path = Path(model)
        if not path.is_file():
            raise EvidenceError(f"{path}: model not found")
        if path.resolve() in seen:
            raise UsageError(f"{path}: model given twice")
        seen.add(path.resolve())
        raw = _read_model(path)
        external: list[BoundFile] = []
        for name in _external_locations(raw, path):
            data = path.parent / name
            if not data.is_file():
                raise EvidenceError(f"{path}: external data file {name} not found beside the model")
            external.append(BoundFile(_relative(data, base), sha256_file(data)))
        bound.append(BoundModel(_relative(path, base), sha256_bytes(raw), tuple(external)))
    return bound


def _model_files(models: Sequence[Path], bound: Sequence[BoundModel], base: Path) -> list["Input"]:
    """Return every model and external-data file, for the provenance inputs."""
    from engine.provenance import Input, InputRole

    files: list[Input] = []
    for model, binding in zip(models, bound, strict=True):
        files.append(Input(Path(model), InputRole.MODEL))
        files.extend(
            Input(base / item.path, InputRole.EXTERNAL_DATA) for item in binding.external_data
        )
    return files


def _read_model(path: Path) -> bytes:
    """Read an ONNX graph file's bytes (hashed and parsed from the same read)."""
    return read_input(path, kind=ONNX_GRAPH, max_bytes=_MAX_MODEL_BYTES, error=EvidenceError)


def _external_locations(raw: bytes, path: Path) -> tuple[str, ...]:
    """Return the sorted external-data file names an ONNX model's tensors point at."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except DecodeError:
        raise EvidenceError(f"{path}: not an ONNX model (the protobuf does not parse)") from None
    if not model.HasField("graph"):
        raise EvidenceError(f"{path}: not an ONNX model (no graph)")
    names: set[str] = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not _is_plain_name(location):
            raise EvidenceError(
                f"{path}: tensor {tensor.name!r} keeps its data at {location!r}, "
                "not a plain file name in the model's folder"
            )
        names.add(location)
    return tuple(sorted(names))


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Yield every tensor that can hold data, in this graph and all its subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            sparse_tensors = [*attribute.sparse_tensors]
            if attribute.HasField("sparse_tensor"):
                sparse_tensors.append(attribute.sparse_tensor)
            for sparse in sparse_tensors:
                yield from (sparse.values, sparse.indices)
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _is_plain_name(location: str) -> bool:
    """Return whether a location is a bare file name (the only kind engine.scoring will load)."""
    if location in ("", ".", ".."):
        return False
    return not any(char in location for char in "/\\:\x00")


def _relative(path: Path, base: Path) -> str:
    """Return ``path`` relative to the (resolved) verdict folder, '/'-separated."""
    try:
        relative = os.path.relpath(Path(path).resolve(), base)
    except ValueError:  # Windows: another drive has no relative path
        raise EvidenceError(
            f"{path}: cannot be named relative to the verdict folder {base} (another drive?); "
            "keep the evidence, the models and the verdict on one file system"
        ) from None
    return Path(relative).as_posix()


def _make_folder(folder: Path) -> None:
    """Create the verdict folder, turning OS errors into a one-line error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {folder}: {error.strerror or error}") from None


def _remove(path: Path) -> Path | None:
    """Remove a stale verdict file; return its path when there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UsageError(f"cannot remove stale {path}: {error.strerror or error}") from None
    return path


def _changed(label: str, relative: str, recorded: str, actual: str) -> str:
    """Describe a file whose sha256 no longer matches the verdict."""
    return f"{label} {relative}: sha256 changed ({_short(recorded)} recorded, {_short(actual)} now)"


def _seeds(seeds: Sequence[int]) -> str:
    """Render seeds as ``0,1,2``."""
    return ",".join(str(seed) for seed in sorted(seeds))


def _short(digest: str) -> str:
    """Abbreviate a sha256 for messages."""
    return digest[:12] + "…"
