"""The judgement of a pull request that changes the model registry: what to annotate, what must be backed.

The App fetches the registry (and the files it needs) at the base and head commits into
two folders laid out as the repository, and asks one question: is this change safe to
merge? ``review_registry_change`` answers with data, never an exception for what the pull
request got wrong: the head registry's problems as check-run annotations on the lines they
concern, the safety check of every new or changed model, and, for every model the change
puts into production, whether a PROMOTE verdict in the head commit backs it under the
repository's policy. See docs/promotion.md ("What the pull-request check verifies").
"""

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import EngineError, EvidenceError, UsageError, one_line
from engine.evidence import read_json, schema_problems
from engine.policy import PolicyRule, PromotionPolicy
from engine.registry import (
    MAX_REGISTRY_BYTES,
    ModelEntry,
    Problem,
    ProblemKind,
    Registry,
    RegistryInvalid,
    load_registry,
    validate_registry,
)
from engine.registry_diff import RegistryDiff, diff_registries, id_lines
from engine.scoring import ScoringLimits
from engine.verdict import VERDICT_SCHEMA_FILE, coverage_problem, verify_verdict

FAILURE = "failure"
WARNING = "warning"
NOTICE = "notice"
# GitHub caps a check run's summary and text at 65,535 characters each; stay well under.
MAX_MARKDOWN_BYTES = 60_000
NO_VERDICT = "no PROMOTE verdict in the pull request's head commit"
_TITLE_LIMIT = 255  # https://docs.github.com/en/rest/checks/runs (annotations[].title)
_MESSAGE_LIMIT = 2_000  # GitHub allows 64 KiB; a longer line helps nobody
_PROBLEMS_PER_VERDICT = 20
_TABLE_ROWS = 40
_CELL_LIMIT = 160
_ROW_POINTER = re.compile(r"^/models/(0|[1-9][0-9]*)(?:/|$)")
_JSON_LINE = re.compile(r"invalid JSON: .* at line ([0-9]+) column [0-9]+$")
_RULE = re.compile(r"\(promotion\.([a-z_]+)\)")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNBOUND = "does not bind this model: "


@dataclass(frozen=True)
class Annotation:
    """One GitHub check-run annotation: a repo-relative file, a 1-based line, a level and one line of text."""

    path: str
    line: int
    level: str
    title: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return the annotation as a JSON-ready dict."""
        return {
            "path": self.path,
            "line": self.line,
            "level": self.level,
            "title": self.title,
            "message": self.message,
        }


@dataclass(frozen=True)
class PromotionCheck:
    """One model the change puts into production, and the verdict backing it (or why none does)."""

    model_id: str
    line: int | None
    verdict: str | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when a verdict backs the promotion."""
        return self.verdict is not None and not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a JSON-ready dict."""
        return {
            "model_id": self.model_id,
            "line": self.line,
            "verdict": self.verdict,
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class RegistryReview:
    """The judgement of one registry change: its diff, its annotations and its promotions."""

    registry: str
    diff: RegistryDiff | None
    annotations: tuple[Annotation, ...]
    promotions: tuple[PromotionCheck, ...]

    @property
    def ok(self) -> bool:
        """True when no annotation is a failure and every promotion is backed."""
        return all(a.level != FAILURE for a in self.annotations) and all(
            p.ok for p in self.promotions
        )

    def headline(self) -> str:
        """Return one line: what is wrong first, else what was backed."""
        failures = [a for a in self.annotations if a.level == FAILURE]
        parts: list[str] = []
        if self.diff is None:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            first = failures[0].message if failures else "it cannot be read"
            parts.append(f"registry invalid: {first}{more}")
        elif failures:
            parts.append(f"{_count(len(failures), 'problem')} in the change: {failures[0].message}")
        unbacked = [p for p in self.promotions if not p.ok]
        if unbacked:
            parts.append(_unbacked_line(unbacked))
        if parts:
            return one_line("; ".join(parts), limit=_TITLE_LIMIT)
        if self.promotions:
            return f"{_count(len(self.promotions), 'promotion')} backed; registry valid"
        return "no promotions; registry valid"

    def render_markdown(self) -> str:
        """Return the check run's text: headline, changes, problems, promotions (tables truncated)."""
        lines = [f"**{_cell(self.headline(), limit=_TITLE_LIMIT)}**", ""]
        lines += ["#### Changes", ""]
        lines += _diff_table(self.diff)
        if self.annotations:
            lines += ["", "#### Problems", "", "| level | where | problem |", "|---|---|---|"]
            lines += _rows(
                [
                    f"| {a.level} | `{_cell(a.path)}`:{a.line} | {_cell(a.message)} |"
                    for a in self.annotations
                ]
            )
        if self.promotions:
            lines += ["", "#### Promotions", "", "| model | line | verdict | result |"]
            lines += ["|---|---|---|---|"]
            lines += _rows([_promotion_row(p) for p in self.promotions])
        return _fit("\n".join(lines) + "\n")

    def to_dict(self) -> dict[str, Any]:
        """Return the review as a JSON-ready dict (for logs and records)."""
        return {
            "registry": self.registry,
            "ok": self.ok,
            "headline": self.headline(),
            "diff": None if self.diff is None else self.diff.to_dict(),
            "annotations": [a.to_dict() for a in self.annotations],
            "promotions": [p.to_dict() for p in self.promotions],
        }


def changed_model_files(base_root: Path | None, head_root: Path, registry: str) -> tuple[str, ...]:
    """Return the repo-relative files (graphs, then their external data) of new or changed head rows.

    These are the files ``review_registry_change`` hashes and safety-checks, so the App
    fetches exactly these into ``head_root``; only the registry itself need be there yet.
    A row is changed when its path, hashes, external data or codec differ from base. An
    unreadable head registry gives (); an unreadable base counts as none (every row is new).
    Raises ``UsageError`` only when ``registry`` is not a safe repo-relative path.
    """
    where = _repo_path(registry, label="registry")
    try:
        head = load_registry(Path(head_root) / where)
    except RegistryInvalid:
        return ()
    base, _ = _load_base(base_root, where)
    folder = where.parent
    files = ((folder / name).as_posix() for entry in _touched(base, head) for name in entry.files())
    return tuple(dict.fromkeys(files))


def review_registry_change(
    base_root: Path | None,
    head_root: Path,
    registry: str,
    *,
    verdicts: Sequence[str] = (),
    policy: PromotionPolicy,
    limits: ScoringLimits | None = None,
) -> RegistryReview:
    """Judge a pull request's registry change; pure up to reading the two folders.

    ``base_root`` None: the registry is new. ``verdicts`` are repo-relative verdict files in
    ``head_root``, fetched with the inputs ``verdict_inputs`` names. Every problem the pull
    request causes is data in the review; only an unsafe ``registry`` path raises ``UsageError``.
    ``limits`` are the safety limits new models are checked under (the memory budget among
    them; default: the engine's).
    """
    where = _repo_path(registry, label="registry")
    name = where.as_posix()
    head_root = Path(head_root)
    head_path = head_root / where
    locator = _Locator.read(head_path)
    try:
        head = load_registry(head_path)
    except RegistryInvalid as error:
        annotations = [_registry_annotation(p, locator, name, head_root) for p in error.problems]
        return RegistryReview(name, None, tuple(annotations), ())
    base, notes = _load_base(base_root, where)
    touched = _touched(base, head)
    # The same per-row check ``registry validate`` and the bisect run, for the changed rows.
    problems = validate_registry(
        head_path, files_of={entry.id for entry in touched}, limits=limits or ScoringLimits()
    )
    annotations = [*notes, *_problem_annotations(problems, head, head_root, where, locator)]
    diff = diff_registries(base, head, lines=locator.first_lines)
    promotions = _promotions(diff, head, locator, verdicts, head_root=head_root, policy=policy)
    return RegistryReview(name, diff, tuple(annotations), promotions)


def verdict_inputs(verdict_file: Path, *, root: Path) -> tuple[str, ...]:
    """Return the files a verdict is bound to, as recorded: paths relative to the verdict's folder.

    The feature table, every LOSO report, every model and its external data, each once, so
    the App can fetch them beside the verdict before ``review_registry_change``. ``root``
    is the local folder laid out as the repository (the head checkout) that holds the
    verdict; a path that would resolve outside it is refused, so joining a returned path to
    the verdict's folder never leaves the checkout. Bad JSON, a document that is not a
    verdict, an absolute or escaping path: one-line ``EvidenceError``.
    """
    verdict_file = Path(verdict_file)
    label = _shown(verdict_file, Path(root))
    try:
        document = read_json(verdict_file).value
    except EvidenceError as error:
        raise EvidenceError(_relative_text(str(error), root)) from None
    problems = schema_problems(document, VERDICT_SCHEMA_FILE)
    if problems:
        raise EvidenceError(f"{label}: not a verdict: {one_line(str(problems[0]))}")
    bound = document["bound_to"]
    paths = [
        str(bound["features"]["path"]),
        *(str(item["path"]) for item in bound["loso_reports"]),
    ]
    for model in bound["models"]:
        paths.append(str(model["path"]))
        paths.extend(str(item["path"]) for item in model["external_data"])
    for path in paths:
        if (why := _input_problem(path, verdict_file, root)) is not None:
            raise EvidenceError(f"{label}: bound file {path!r} {why}")
    return tuple(dict.fromkeys(paths))


@dataclass(frozen=True)
class _Locator:
    """Finds the line of a head registry problem: the row its JSON pointer names."""

    rows: tuple[int, ...]  # the line of each row of ``models`` (1 when it has no string id)
    first_lines: Mapping[str, int]  # model id -> its first row's line (``row_lines``)

    @classmethod
    def read(cls, path: Path) -> "_Locator":
        """Read the head registry once to map row indexes to lines (never raises)."""
        try:
            document = read_json(path, max_bytes=MAX_REGISTRY_BYTES)
        except EvidenceError:
            return cls((), {})
        found = id_lines(document.raw.decode("utf-8"))
        models = document.value.get("models") if isinstance(document.value, dict) else None
        seen: dict[str, int] = {}
        rows: list[int] = []
        # The n-th row with an id is on the n-th line the scan found for it (duplicates).
        for row in models if isinstance(models, list) else ():
            model_id = _row_id(row)
            if model_id is None:
                rows.append(1)
                continue
            nth = seen[model_id] = seen.get(model_id, -1) + 1
            lines = found.get(model_id, ())
            rows.append(lines[nth] if nth < len(lines) else 1)
        return cls(tuple(rows), {model_id: lines[0] for model_id, lines in found.items()})

    def line_of(self, pointer: str) -> int:
        """Return the line of the row a pointer lies in (1 when there is no better line)."""
        match = _ROW_POINTER.match(pointer)
        index = -1 if match is None else int(match.group(1))
        return self.rows[index] if 0 <= index < len(self.rows) else 1


def _row_id(row: Any) -> str | None:
    """Return a registry row's id when it is a string."""
    value = row.get("id") if isinstance(row, dict) else None
    return value if isinstance(value, str) else None


def _registry_annotation(
    problem: Problem,
    locator: _Locator,
    registry: str,
    head_root: Path,
    *,
    title: str = "Invalid registry",
) -> Annotation:
    """Turn a registry problem into a failure annotation on its row's line."""
    message = _relative_text(problem.message, head_root)
    line = locator.line_of(problem.pointer)
    if problem.pointer == "" and (found := _JSON_LINE.search(problem.message)) is not None:
        line = int(found.group(1))
    where = f"{registry}#{problem.pointer}" if problem.pointer else registry
    if message.startswith(f"{registry}: "):
        message = message[len(registry) + 2 :]
    return _annotation(registry, line, FAILURE, title, f"{where}: {message}")


def _load_base(
    base_root: Path | None, where: PurePosixPath
) -> tuple[Registry | None, list[Annotation]]:
    """Load the base registry; an unreadable one counts as none, with a notice saying so."""
    if base_root is None:
        return None, []
    try:
        return load_registry(Path(base_root) / where), []
    except RegistryInvalid as error:
        first = _relative_text(str(error.problems[0].message), Path(base_root))
        message = (
            f"the base commit's {where.as_posix()} cannot be read ({first}); "
            "every head row is treated as new"
        )
        return None, [_annotation(where.as_posix(), 1, NOTICE, "Base registry unreadable", message)]


def _touched(base: Registry | None, head: Registry) -> list[ModelEntry]:
    """Return head rows that are new, or whose files, paths or codec differ from base, in head order."""
    old = {} if base is None else {entry.id: entry for entry in base.models}

    def files(entry: ModelEntry) -> tuple[object, ...]:
        return (entry.onnx, entry.sha256, entry.external_data, entry.codec, entry.declared)

    return [
        entry
        for entry in head.models
        if entry.id not in old or files(old[entry.id]) != files(entry)
    ]


def _problem_annotations(
    problems: Sequence[Problem],
    head: Registry,
    head_root: Path,
    where: PurePosixPath,
    locator: _Locator,
) -> Iterator[Annotation]:
    """Annotate each problem on its registry row; a safety refusal also on the model's file."""
    registry = where.as_posix()
    rows = {entry.pointer: entry for entry in head.models}
    title = "Model fails the safety check"
    for problem in problems:
        entry = rows.get(_row_pointer(problem.pointer))
        if problem.kind is not ProblemKind.SAFETY or entry is None:
            name = (
                "Model file problem"
                if problem.kind not in (ProblemKind.CODEC, ProblemKind.DECLARATION)
                else "Invalid registry"
            )
            yield _registry_annotation(problem, locator, registry, head_root, title=name)
            continue
        model = (where.parent / entry.onnx).as_posix()
        reason = _relative_text(one_line(problem.message, limit=_MESSAGE_LIMIT), head_root)
        yield _annotation(model, 1, FAILURE, title, f"{model}: {reason}")
        line = locator.line_of(entry.pointer)
        yield _annotation(registry, line, FAILURE, title, f"{entry.id}: {model}: {reason}")


def _row_pointer(pointer: str) -> str:
    """Return the ``/models/N`` prefix of a pointer into a row ("" when it names no row)."""
    match = _ROW_POINTER.match(pointer)
    return "" if match is None else f"/models/{match.group(1)}"


@dataclass(frozen=True)
class _Checked:
    """One verdict verified once: whether it holds, its problems, and the models it binds."""

    path: str
    ok: bool
    problems: tuple[str, ...]
    models: tuple[Mapping[str, Any], ...] | None  # None: unreadable, nothing is bound


def _check_verdict(verdict: str, *, head_root: Path, policy: PromotionPolicy) -> _Checked:
    """Verify one verdict under the policy inside the head checkout; problems name it repo-relative."""
    shown = _printable(verdict)
    try:
        file = head_root / _repo_path(verdict, label="verdict")
        result = verify_verdict(file, policy=policy, root=head_root)
        models = None
        if result.verdict is not None:
            models = tuple(read_json(file).value["bound_to"]["models"])
    except EngineError as error:
        reason = _relative_text(str(error), head_root)
        return _Checked(shown, False, (_about(shown, reason),), None)
    problems = [_about(shown, _relative_text(p, head_root)) for p in result.problems]
    if len(problems) > _PROBLEMS_PER_VERDICT:
        more = len(problems) - _PROBLEMS_PER_VERDICT
        problems = [*problems[:_PROBLEMS_PER_VERDICT], f"{shown}: ... and {more} more problems"]
    return _Checked(shown, result.ok, tuple(problems), models)


def _promotions(
    diff: RegistryDiff,
    head: Registry,
    locator: _Locator,
    verdicts: Sequence[str],
    *,
    head_root: Path,
    policy: PromotionPolicy,
) -> tuple[PromotionCheck, ...]:
    """Check every model that needs a verdict against the verdicts, each verified once."""
    if not diff.needs_verdict:
        return ()
    checked = [
        _check_verdict(verdict, head_root=head_root, policy=policy)
        for verdict in dict.fromkeys(verdicts)
    ]
    by_id = {entry.id: entry for entry in head.models}
    return tuple(
        _promotion(by_id[model_id], locator.line_of(by_id[model_id].pointer), checked)
        for model_id in diff.needs_verdict
    )


def _promotion(entry: ModelEntry, line: int, checked: Sequence[_Checked]) -> PromotionCheck:
    """Back one promoted row by a verdict that verifies and binds its bytes, or say why none does."""
    covering: list[_Checked] = []
    elsewhere: list[str] = []
    unreadable: list[str] = []
    for candidate in checked:
        if candidate.models is None:
            unreadable.extend(candidate.problems)
        elif (why := coverage_problem(candidate.models, entry)) is None:
            covering.append(candidate)
        else:
            elsewhere.append(_about(candidate.path, f"{_UNBOUND}{why}"))
    backed = next((candidate for candidate in covering if candidate.ok), None)
    if backed is not None:
        return PromotionCheck(entry.id, line, backed.path, ())
    problems = [p for candidate in covering for p in candidate.problems]
    problems += unreadable + elsewhere
    return PromotionCheck(entry.id, line, None, tuple(problems) or (NO_VERDICT,))


def _about(verdict: str, problem: str) -> str:
    """Return one printable line naming the verdict first (once, if the problem already does)."""
    text = problem if problem.startswith(f"{verdict}: ") else f"{verdict}: {problem}"
    return one_line(_printable(text), limit=_MESSAGE_LIMIT)


def _unbacked_line(unbacked: Sequence[PromotionCheck]) -> str:
    """Say why the first unbacked promotion is not backed, and how many others are not."""
    first = unbacked[0]
    found = {rule for problem in first.problems for rule in _RULE.findall(problem)}
    rules = [rule.value for rule in PolicyRule if rule.value in found]
    if first.problems == (NO_VERDICT,):
        why = "(none in the pull request's head commit)"
    elif rules:
        why = f"that meets the policy ({', '.join(rules)})"
    elif all(f": {_UNBOUND}" in problem for problem in first.problems):
        why = "that binds its model"
    else:
        why = "that verifies"
    more = (
        f" (and {_count(len(unbacked) - 1, 'more unbacked promotion')})"
        if len(unbacked) > 1
        else ""
    )
    return f"{first.model_id} is promoted without a PROMOTE verdict {why}{more}"


def _annotation(path: str, line: int, level: str, title: str, message: str) -> Annotation:
    """Build an annotation within GitHub's limits, on one printable line."""
    return Annotation(
        path=path,
        line=max(1, line),
        level=level,
        title=one_line(_printable(title), limit=_TITLE_LIMIT),
        message=one_line(_printable(message), limit=_MESSAGE_LIMIT),
    )


def _repo_path(text: str, *, label: str) -> PurePosixPath:
    """Return a repo-relative '/' path, refusing absolute, escaping or odd paths (``UsageError``)."""
    if (why := _relative_problem(text)) is not None:
        raise UsageError(f"{label} path {_printable(text)!r} {why}")
    return PurePosixPath(text)


def _relative_problem(text: str) -> str | None:
    """Return why a path is not a plain relative '/' path inside its folder, or None."""
    if not text or "\\" in text or "\x00" in text:
        return "must be a non-empty '/'-separated path without NUL"
    if PurePosixPath(text).is_absolute() or _DRIVE.match(text) or text.startswith("~"):
        return "must be relative to the repository root"
    if ".." in PurePosixPath(text).parts:
        return "must not contain '..'"
    return None


def _input_problem(path: str, verdict_file: Path, root: Path) -> str | None:
    """Return why a verdict's bound path cannot be fetched beside it, or None."""
    if not path or "\\" in path or "\x00" in path:
        return "must be a non-empty '/'-separated path without NUL"
    if PurePosixPath(path).is_absolute() or _DRIVE.match(path) or path.startswith("~"):
        return "is absolute; a verdict names files relative to its own folder"
    top = Path(root).resolve()
    target = Path(os.path.normpath(verdict_file.resolve().parent / path))
    if not target.is_relative_to(top):
        return "resolves outside the repository"
    return None


def _relative_text(text: str, root: Path | None) -> str:
    """Strip a local checkout's folder from a message so files read repo-relative."""
    if root is None:
        return text
    for prefix in sorted({str(Path(root).resolve()), str(Path(root))}, key=len, reverse=True):
        text = text.replace(prefix + os.sep, "").replace(prefix, "the repository root")
    return text


def _shown(path: Path, root: Path) -> str:
    """Name a local file repo-relative when it lies in ``root``."""
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.name


def _printable(text: str) -> str:
    """Escape control characters so text stays on one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _count(n: int, noun: str) -> str:
    """Return ``1 problem`` / ``2 problems``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cell(text: str, *, limit: int = _CELL_LIMIT) -> str:
    """Make text safe in a markdown table cell: one line, no pipes or backticks breaking out, capped."""
    flat = one_line(_printable(text), limit=limit)
    return flat.replace("|", "\\|").replace("`", "'")


def _rows(rows: Sequence[str]) -> list[str]:
    """Keep the first table rows and say how many more there are."""
    if len(rows) <= _TABLE_ROWS:
        return list(rows)
    return [*rows[:_TABLE_ROWS], "", f"... and {len(rows) - _TABLE_ROWS} more"]


def _diff_table(diff: RegistryDiff | None) -> list[str]:
    """Render the diff's changes as a truncated table (or say why there is none)."""
    if diff is None:
        return ["The head registry cannot be read, so no changes can be listed."]
    if not diff.items:
        return ["No model changes in the registry."]
    rows = [
        f"| `{_cell(item.model_id)}` | {item.change.value} | "
        f"{'' if item.line is None else item.line} | {_cell(item.detail)} |"
        for item in diff.items
    ]
    return ["| model | change | line | detail |", "|---|---|---|---|", *_rows(rows)]


def _promotion_row(check: PromotionCheck) -> str:
    """Render one promotion: backed by which verdict, or its first problem."""
    line = "" if check.line is None else str(check.line)
    verdict = "" if check.verdict is None else f"`{_cell(check.verdict)}`"
    if check.ok:
        result = "backed"
    else:
        more = len(check.problems) - 1
        result = "**not backed**: " + _cell(check.problems[0])
        result += f" (and {more} more)" if more else ""
    return f"| `{_cell(check.model_id)}` | {line} | {verdict} | {result} |"


def _fit(text: str) -> str:
    """Cut markdown at a line boundary to stay under ``MAX_MARKDOWN_BYTES`` (a last resort)."""
    if len(text.encode("utf-8")) <= MAX_MARKDOWN_BYTES:
        return text
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        size += len(line.encode("utf-8")) + 1
        if size > MAX_MARKDOWN_BYTES - 100:
            break
        kept.append(line)
    return "\n".join([*kept, "", "... (truncated)"]) + "\n"
