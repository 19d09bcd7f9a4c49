"""The bisect report: one versioned JSON document, rendered as terminal text or GitHub markdown."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from enum import Enum
from typing import Any

from engine.bisection import BisectResult, Outcome, evaluation_bound
from engine.evaluation import MetricSettings, ModelRef, StepRecord, plan_resampling
from engine.features import FeatureTable
from engine.quantisation import render_twins
from engine.threshold import Thresholds

SCHEMA = "model-guard/bisect-report"
SCHEMA_VERSION = 2
# What ``build_report`` writes for one timeline on its own; ``combine_reports`` makes it a 2.
TIMELINE_SCHEMA_VERSION = 1
# Version 1 reports (one timeline, no ``families``) are still read: see ``family_reports``.
READABLE_VERSIONS = (1, 2)
# GitHub refuses issue comments and check-run summaries over 65,536 characters; keep a margin.
MARKDOWN_LIMIT = 65_000
CHART_POINTS = 120


class TableFormat(Enum):
    """The two renderings of a report."""

    TEXT = "text"
    MARKDOWN = "markdown"


def build_report(
    result: BisectResult[StepRecord],
    *,
    models: Sequence[ModelRef],
    features: FeatureTable,
    thresholds: Thresholds,
    settings: MetricSettings,
    scored: int,
    from_store: int,
    wall_time_s: float,
    registry: str | None = None,
) -> dict[str, Any]:
    """Assemble the JSON report of one bisect run (provenance is added by the writer)."""

    def name(index: int | None) -> str | None:
        return None if index is None else models[index].name

    criterion = thresholds.primary()
    plan = plan_resampling(features, replace(settings, statistical=False))
    return {
        "schema": SCHEMA,
        "schema_version": TIMELINE_SCHEMA_VERSION,
        "outcome": result.outcome.value,
        "mode": "full" if result.full else "bisect",
        "gate": {**thresholds.to_dict(), "description": thresholds.describe()},
        "chart_metric": {"metric": criterion.metric, "threshold": criterion.value},
        "settings": settings.to_dict(),
        "features": {
            "path": str(features.path) if features.path is not None else None,
            "rows": features.n_rows,
            "content_hash": features.content_hash,
            "grouped_by_source": features.groups() is not None,
            "resampling": plan.to_dict(),
            "warnings": list(plan.warnings),
        },
        "timeline": {
            "n_models": result.n_models,
            "registry": registry,
            "models": [ref.name for ref in models],
        },
        "first_bad_index": result.first_bad_index,
        "first_bad_model": name(result.first_bad_index),
        "last_good_index": result.last_good_index,
        "last_good_model": name(result.last_good_index),
        "uncertain_index": result.uncertain_index,
        "uncertain_model": name(result.uncertain_index),
        "first_bad_range": None
        if result.first_bad_range is None
        else {"low": result.first_bad_range[0], "high": result.first_bad_range[1]},
        "non_monotonic": [{"index": i, "name": models[i].name} for i in result.non_monotonic],
        "after_uncertain": [{"index": i, "name": models[i].name} for i in result.after_uncertain],
        "evaluations": {
            "visited": result.evaluations,
            "scored": scored,
            "from_store": from_store,
            "bound": result.n_models if result.full else evaluation_bound(result.n_models),
        },
        "steps": [{"index": visit.index, **visit.result.to_dict()} for visit in result.visits],
        "wall_time_s": round(wall_time_s, 4),
    }


SEVERITY = {"no_regression": 0, "inconclusive": 1, "regression": 2, "already_bad": 3}


def combine_reports(
    reports: Sequence[Mapping[str, Any]],
    *,
    families: Sequence[str],
    not_judged: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """One report for several families' bisects: the worst family's fields on top, each family listed.

    The top-level fields are those of the worst family (already bad, then regression, then
    inconclusive; the first such family in registry order), so a reader of one timeline
    (version 1) still reads the verdict that matters; ``families`` holds every family's own
    report and ``not_judged`` the rows no family bisects (docs/reports.md).
    """
    if not reports or len(reports) != len(families):
        raise ValueError("combine_reports needs one family name per report, and at least one")
    entries = [
        {"family": name, **{k: v for k, v in report.items() if k not in _TOP_ONLY}}
        for name, report in zip(families, reports, strict=True)
    ]
    worst = max(range(len(reports)), key=lambda i: (SEVERITY[reports[i]["outcome"]], -i))
    combined = dict(reports[worst])
    combined["schema_version"] = SCHEMA_VERSION
    combined["family"] = families[worst]
    combined["families"] = entries
    combined["not_judged"] = [dict(item) for item in not_judged]
    return combined


_TOP_ONLY = frozenset({"schema", "schema_version", "run_provenance"})


def family_reports(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every family's report (a version 1 report is one unnamed family)."""
    return list(report.get("families") or [report])


def _is_sectioned(report: Mapping[str, Any]) -> bool:
    """True when a report needs a section per family (more than one, or rows not judged)."""
    return len(family_reports(report)) > 1 or bool(report.get("not_judged"))


def summarise(report: Mapping[str, Any]) -> str:
    """Return the one-line verdict of a report: the worst family's, and how the others fared."""
    if not _is_sectioned(report):
        return summarise_family(report)
    others = [f for f in family_reports(report) if f.get("family") != report.get("family")]
    fine = sum(1 for f in others if f["outcome"] == "no_regression")
    tail = []
    if others:
        tail.append(
            f"the other family {'passes' if fine else 'does not pass'}"
            if len(others) == 1
            else f"{fine} of {len(others)} other families pass"
        )
    if report.get("not_judged"):
        tail.append(f"{len(report['not_judged'])} row(s) not judged")
    extra = f" ({'; '.join(tail)}.)" if tail else ""
    return f"Family {report.get('family')}: {summarise_family(report)}{extra}"


def summarise_family(report: Mapping[str, Any]) -> str:
    """Return the one-line verdict of one timeline; a broken model is called broken, not failing.

    Quantised twins that fail their PLCC budget are named after the timeline's verdict.
    """
    failed = [t["twin"] for t in report.get("quantised_twins") or [] if not t["passed"]]
    if not failed:
        return _summarise_timeline(report)
    return (
        f"{_summarise_timeline(report)} But {len(failed)} quantised twin(s) fail their "
        f"PLCC budget: {', '.join(failed)}."
    )


def _summarise_timeline(report: Mapping[str, Any]) -> str:
    """Return the one-line verdict of the timeline's bisect."""
    outcome = Outcome(report["outcome"])
    gate = report["gate"]["description"]
    n = report["timeline"]["n_models"]
    if outcome is Outcome.NO_REGRESSION:
        newest = report["timeline"]["models"][-1]
        return (
            f"No regression: the newest model {newest} passes {gate} ({n} models in the timeline)."
        )
    if outcome is Outcome.INCONCLUSIVE:
        newest = report["timeline"]["models"][-1]
        return (
            f"Inconclusive: the confidence interval of the newest model {newest} (index {n - 1}) "
            f"straddles {gate} and no model certainly fails; no alarm raised."
        )
    first_bad = report["first_bad_model"]
    broken = broken_reason(report, report["first_bad_index"])
    verdict = f"is broken ({broken})" if broken else f"fails {gate}"
    if outcome is Outcome.ALREADY_BAD:
        return f"Already bad: the oldest model {first_bad} {verdict}; every model since is suspect."
    span = report.get("first_bad_range") or {}
    low, high = span.get("low", report["first_bad_index"]), report["first_bad_index"]
    if low != high:
        after = (
            "no model before it certainly passes"
            if report["last_good_model"] is None
            else f"the last model that certainly passes is {report['last_good_model']} "
            f"(index {report['last_good_index']})"
        )
        return (
            f"Regression: {first_bad} (index {high}) {verdict}; the first bad model lies in "
            f"indices {low} to {high}: {after}, and models in between are uncertain, not failed."
        )
    last_good = f"last good is {report['last_good_model']} (index {report['last_good_index']})."
    if broken:
        return (
            f"Regression: {first_bad} (index {high}) is broken ({broken}): the first model "
            f"that does not pass {gate}; {last_good}"
        )
    return (
        f"Regression: {first_bad} (index {high}) is the first model that fails {gate}; {last_good}"
    )


def broken_reason(report: Mapping[str, Any], index: int | None) -> str | None:
    """Return why the visited model at ``index`` could not be scored, or None when it was scored."""
    step = next((s for s in report["steps"] if s["index"] == index), None)
    return None if step is None else step.get("broken")


def _metric(step: Mapping[str, Any], key: str, *, digits: int = 4) -> str:
    """Format one metric of a step, with its interval when there is one."""
    metrics = step.get("metrics")
    if metrics is None:
        return "-"
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    shown = f"{value:.{digits}f}"
    interval = (metrics.get("ci") or {}).get(key)
    if interval:
        shown += f" [{interval['low']:.{digits - 1}f}, {interval['high']:.{digits - 1}f}]"
    return shown


def _rows_in_timeline_order(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return sorted(report["steps"], key=lambda step: step["index"])


def _note(step: Mapping[str, Any]) -> str:
    """Return the short note of a step: why it failed, or that it came from the store."""
    parts = list(step.get("reasons") or ())
    if step.get("cached"):
        parts.append("from store")
    return "; ".join(parts)


STATUS_TEXT = {"pass": "pass", "fail": "FAIL", "uncertain": "uncertain"}
STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "uncertain": "❔ uncertain"}
OUTCOME_MARK = {
    "no_regression": "✅",
    "regression": "❌",
    "already_bad": "🚨",
    "inconclusive": "❔",
}


def render_table(report: Mapping[str, Any], *, fmt: TableFormat = TableFormat.TEXT) -> str:
    """Render a report as plain terminal text or as GitHub markdown (under 65,000 characters).

    A report of one family and no rows left out renders as one timeline; otherwise there is
    a section per family under the overall verdict, and the rows not judged at the end.
    """
    if not _is_sectioned(report):
        if fmt is TableFormat.MARKDOWN:
            return _render_markdown(report)
        return _render_text(report)
    if fmt is TableFormat.MARKDOWN:
        return _render_families_markdown(report)
    return _render_families_text(report)


def _not_judged_lines(report: Mapping[str, Any], *, code: bool) -> list[str]:
    """One line per row not judged: ``name (onnx): not judged (kind nr: needs frames)``."""
    quote = "`" if code else ""
    return [
        f"{'- ' if code else '  '}{quote}{item['name']}{quote} ({item['family']}): "
        f"not judged ({item['reason']})"
        for item in report.get("not_judged") or ()
    ]


def _render_families_text(report: Mapping[str, Any]) -> str:
    """Terminal text: the overall verdict, then each family's table, then the rows not judged."""
    lines = [summarise(report), ""]
    for family in family_reports(report):
        lines.append(f"== family {family['family']} ({family['timeline']['n_models']} models) ==")
        lines.append(_render_text(family))
    if report.get("not_judged"):
        lines.append(f"Not judged ({len(report['not_judged'])} rows; no alarm):")
        lines.extend(_not_judged_lines(report, code=False))
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_families_markdown(report: Mapping[str, Any]) -> str:
    """GitHub markdown: the overall verdict, an overview table, a section per family, rows not judged."""
    families = family_reports(report)
    head = [
        f"### {OUTCOME_MARK[report['outcome']]} {summarise(report)}",
        "",
        "| family | models | verdict | first bad |",
        "|---|---:|---|---|",
    ]
    for family in families:
        head.append(
            f"| `{family['family']}` | {family['timeline']['n_models']} | "
            f"{OUTCOME_MARK[family['outcome']]} {family['outcome'].replace('_', ' ')} | "
            f"{'`' + family['first_bad_model'] + '`' if family.get('first_bad_model') else '-'} |"
        )
    tail: list[str] = []
    if report.get("not_judged"):
        tail = [
            "",
            f"#### Not judged ({len(report['not_judged'])} rows; never an alarm)",
            "",
            *_not_judged_lines(report, code=True),
        ]
        if sum(len(line) + 1 for line in tail) > MARKDOWN_LIMIT // 8:
            tail = [
                *tail[:3],
                *tail[3:][:40],
                f"- … the JSON report lists all {len(report['not_judged'])}",
            ]
    share = (MARKDOWN_LIMIT - sum(len(line) + 1 for line in [*head, *tail])) // len(families)
    sections = []
    for family in families:
        text = _render_markdown(family, limit=max(share - 200, 2000))
        title = f"#### Family `{family['family']}`: "
        sections += ["", text.replace("### ", title, 1).rstrip("\n")]
    return "\n".join([*head, *sections, *tail]) + "\n"


def _render_text(report: Mapping[str, Any]) -> str:
    """Plain text for terminals: verdict, an aligned table of visited models, counts."""
    header = ["#", "model", "status", "PLCC", "SROCC", "RMSE", "note"]
    rows = [
        [
            str(step["index"]),
            step["name"],
            STATUS_TEXT[step["status"]],
            _metric(step, "plcc"),
            _metric(step, "srocc"),
            _metric(step, "rmse", digits=3),
            _note(step),
        ]
        for step in _rows_in_timeline_order(report)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [summarise_family(report), ""]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("")
    lines.append(_counts(report))
    if report["non_monotonic"]:
        lines.append(f"Non-monotonic timeline: {_later_passes(report, code=False)}")
    if report.get("after_uncertain"):
        lines.append(_passes_after_uncertain(report, code=False))
    lines.extend(_statistics_notes(report))
    if report.get("quantised_twins"):
        lines.append("")
        lines.extend(render_twins(report["quantised_twins"]))
    return "\n".join(lines) + "\n"


def _later_passes(report: Mapping[str, Any], *, code: bool, most: int = 20) -> str:
    """Name the models that pass after an earlier failure (at most ``most`` by name)."""
    later = report["non_monotonic"]
    quote = "`" if code else ""
    names = ", ".join(f"{quote}{m['name']}{quote} (#{m['index']})" for m in later[:most])
    more = f" and {len(later) - most} more" if len(later) > most else ""
    return f"{len(later)} model(s) pass after an earlier failure: {names}{more}"


def _passes_after_uncertain(report: Mapping[str, Any], *, code: bool, most: int = 20) -> str:
    """Name the models that pass after an earlier uncertain (not failed) model."""
    later = report.get("after_uncertain") or []
    quote = "`" if code else ""
    names = ", ".join(f"{quote}{m['name']}{quote} (#{m['index']})" for m in later[:most])
    more = f" and {len(later) - most} more" if len(later) > most else ""
    return f"{len(later)} model(s) pass after an earlier uncertain model (not a failure): {names}{more}"


def _statistics_notes(report: Mapping[str, Any]) -> list[str]:
    """Warnings about the bootstrap that the reader must see (e.g. frames treated as independent)."""
    return [f"Warning: {w}" for w in report["features"].get("warnings") or ()]


def _counts(report: Mapping[str, Any]) -> str:
    """Return the line about how much work the run did."""
    ev = report["evaluations"]
    features = report["features"]
    return (
        f"{ev['visited']} of {report['timeline']['n_models']} models visited (bound {ev['bound']}), "
        f"{ev['scored']} scored, {ev['from_store']} from the evaluation store; "
        f"{features['rows']} feature rows (content {features['content_hash'][:12]}); "
        f"{report['wall_time_s']:.2f} s."
    )


def _markdown_row(step: Mapping[str, Any]) -> str:
    note = _note(step).replace("|", "\\|").replace("\n", " ")
    return (
        f"| {step['index']} | `{step['name']}` | {STATUS_MARK[step['status']]} | "
        f"{_metric(step, 'plcc')} | {_metric(step, 'srocc')} | {_metric(step, 'rmse', digits=3)} | "
        f"{(step.get('metrics') or {}).get('n', '-')} | {note} |"
    )


def _key_indices(report: Mapping[str, Any]) -> set[int]:
    """Indices a shortened table must keep: boundaries, non-monotonic and non-passing rows."""
    keep = {report.get(k) for k in ("first_bad_index", "last_good_index", "uncertain_index")}
    keep |= {m["index"] for m in [*report["non_monotonic"], *report.get("after_uncertain", ())]}
    keep |= {s["index"] for s in report["steps"] if s["status"] != "pass"}
    return {i for i in keep if i is not None}


_CORRELATIONS = frozenset({"plcc", "srocc", "krocc", "plcc_logistic"})


def _chart(report: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """A Mermaid xychart of the gate metric over the visited models, with the threshold line."""
    metric = report["chart_metric"]["metric"]
    threshold = report["chart_metric"]["threshold"]
    points = [
        (s, s["metrics"][metric])
        for s in steps
        if s.get("metrics") and isinstance(s["metrics"].get(metric), float | int)
    ]
    if len(points) < 2:
        return []
    omitted = 0
    if len(points) > CHART_POINTS:
        stride = math.ceil(len(points) / CHART_POINTS)
        keep = _key_indices(report)
        kept = [p for i, p in enumerate(points) if i % stride == 0 or p[0]["index"] in keep]
        omitted = len(points) - len(kept)
        points = kept
    values = [float(v) for _, v in points]
    low = min([*values, threshold])
    high = max([*values, threshold])
    pad = (high - low) * 0.1 or 0.05
    low, high = low - pad, high + pad
    if metric in _CORRELATIONS:  # correlations live in [-1, 1]
        low, high = max(low, -1.0), min(high, 1.0)
    else:  # errors (RMSE, MAE) and interval widths are never negative
        low = max(low, 0.0)
    labels = ", ".join(f'"#{s["index"]}"' for s, _ in points)
    lines = [
        "```mermaid",
        "xychart-beta",
        f'    title "{metric} across the visited timeline (flat line: threshold {threshold:g})"',
        f"    x-axis [{labels}]",
        f'    y-axis "{metric}" {low:.3f} --> {high:.3f}',
        f"    line [{', '.join(f'{v:.4f}' for v in values)}]",
        f"    line [{', '.join(f'{threshold:.4f}' for _ in values)}]",
        "```",
    ]
    broken = len(steps) - len(points) - omitted
    if broken > 0:
        lines.append(
            f"_{broken} visited model(s) without a {metric} value are left out of the chart._"
        )
    if omitted:
        lines.append(
            f"_{omitted} points thinned out of the chart; the table and the JSON report have them._"
        )
    return lines


def _render_markdown(report: Mapping[str, Any], *, limit: int = MARKDOWN_LIMIT) -> str:
    """GitHub markdown: verdict, table, chart, collapsed details; rows dropped to fit the limit."""
    steps = _rows_in_timeline_order(report)
    head = [f"### {OUTCOME_MARK[report['outcome']]} {summarise_family(report)}", ""]
    if report["non_monotonic"]:
        head += [f"**Non-monotonic timeline:** {_later_passes(report, code=True)}", ""]
    if report.get("after_uncertain"):
        head += [_passes_after_uncertain(report, code=True), ""]
    for warning in _statistics_notes(report):
        head += [f"**{warning}**", ""]
    twins = render_twins(report.get("quantised_twins") or [])
    if twins:  # a handful of lines: one per int8 twin, with both PLCCs, the drop and the budget
        head += [f"**{twins[0]}**", "", *(f"- `{line.strip()}`" for line in twins[1:]), ""]
    table_head = [
        "| # | model | status | PLCC | SROCC | RMSE | n | note |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    details = [
        "",
        "<details><summary>Details</summary>",
        "",
        f"- Gate: `{report['gate']['description']}`"
        + (
            " (statistical: decided only when the whole interval is on one side)"
            if report["settings"]["statistical"]
            else ""
        ),
        f"- Mode: {report['mode']}; {_counts(report)}",
        f"- Features: `{report['features']['path']}`, content sha256 `{report['features']['content_hash']}`",
        "- Settings: " + ", ".join(f"{k} {v}" for k, v in report["settings"].items()),
        "",
        "</details>",
    ]
    chart = _chart(report, steps)
    rows = [_markdown_row(step) for step in steps]
    budget = limit - sum(len(line) + 1 for line in [*head, *table_head, *details, *chart]) - 400
    if sum(len(r) + 1 for r in rows) > budget:
        rows = _fit_rows(report, steps, budget)
    body = [*head, *table_head, *rows, "", *chart, *details]
    text = "\n".join(body) + "\n"
    if len(text) > limit:  # a pathological chart: drop it rather than cut the table
        text = (
            "\n".join(
                [
                    *head,
                    *table_head,
                    *rows,
                    "",
                    "_Chart left out to stay under GitHub's size limit._",
                    *details,
                ]
            )
            + "\n"
        )
    return text


def _fit_rows(
    report: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], budget: int
) -> list[str]:
    """Keep rows by priority until the budget is spent, mark every gap; never cut a row.

    Priority: the boundary rows (first bad, last good, uncertain), then models that pass
    after a failure, then other non-passing rows, then passing rows spread evenly.
    """
    boundary = {report.get(k) for k in ("first_bad_index", "last_good_index", "uncertain_index")}
    later_passes = {
        m["index"] for m in [*report["non_monotonic"], *report.get("after_uncertain", ())]
    }
    tiers: list[list[Mapping[str, Any]]] = [
        [s for s in steps if s["index"] in boundary],
        [s for s in steps if s["index"] in later_passes and s["index"] not in boundary],
        [s for s in steps if s["status"] != "pass" and s["index"] not in boundary | later_passes],
    ]
    placed = {s["index"] for tier in tiers for s in tier}
    rest = [s for s in steps if s["index"] not in placed]
    if rest:  # spread the passing rows evenly rather than keep only the oldest ones
        stride = max(1, len(rest) // 50)
        tiers.append(rest[::stride] + [s for i, s in enumerate(rest) if i % stride])
    chosen: set[int] = set()
    used = 0
    gap_cost = len(_gap_row(len(steps))) + 1  # every kept row may open a gap after it
    for tier in tiers:
        for step in tier:
            cost = len(_markdown_row(step)) + 1 + gap_cost
            if used + cost > budget - 200:
                break
            chosen.add(step["index"])
            used += cost
    rows: list[str] = []
    dropped = 0
    for step in steps:
        if step["index"] in chosen:
            if dropped:
                rows.append(_gap_row(dropped))
                dropped = 0
            rows.append(_markdown_row(step))
        else:
            dropped += 1
    if dropped:
        rows.append(_gap_row(dropped))
    return rows


def _gap_row(dropped: int) -> str:
    """A table row that says how many rows were left out here."""
    return f"| … | _{dropped} rows dropped to fit GitHub's size limit; the JSON report has them all_ | | | | | | |"
