"""Quantised twins: an int8 model is judged by how much PLCC it loses against its fp32 parent.

A registry row with ``quantised_from: <parent id>`` is not a step of the timeline. Both
models are scored on the same golden cache and the twin passes when the PLCC drop
(parent PLCC - twin PLCC) stays within the parent's ``quant_accuracy_budget_plcc``
(default 0.01). A twin over budget, or one that cannot be scored, fails; its parent is
judged on its own as a timeline step and never fails for its twin.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.evaluation import StepRecord


@dataclass(frozen=True)
class TwinCheck:
    """One twin against its parent: both PLCCs, the drop and the budget, and whether it passed."""

    twin: str
    parent: str
    twin_plcc: float | None
    parent_plcc: float | None
    drop: float | None
    budget: float
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a JSON-ready dict (NaN as null)."""
        return {
            "twin": self.twin,
            "parent": self.parent,
            "twin_plcc": _finite(self.twin_plcc),
            "parent_plcc": _finite(self.parent_plcc),
            "drop": _finite(self.drop),
            "budget": self.budget,
            "passed": self.passed,
            "reason": self.reason,
        }


def judge_twin(
    twin: StepRecord, parent: StepRecord, *, budget: float, parent_name: str
) -> TwinCheck:
    """Compare a twin's evaluation with its parent's on the same cache."""

    def check(passed: bool, reason: str, drop: float | None = None) -> TwinCheck:
        return TwinCheck(
            twin=twin.name,
            parent=parent_name,
            twin_plcc=None if twin.metrics is None else twin.metrics.plcc,
            parent_plcc=None if parent.metrics is None else parent.metrics.plcc,
            drop=drop,
            budget=budget,
            passed=passed,
            reason=reason,
        )

    if twin.metrics is None:
        return check(False, f"twin broken: {twin.broken}")
    if parent.metrics is None:
        return check(
            False, f"parent {parent_name} broken ({parent.broken}): nothing to compare with"
        )
    drop = parent.metrics.plcc - twin.metrics.plcc
    if not math.isfinite(drop):
        return check(False, "PLCC not computable", drop)
    if drop > budget:
        return check(False, f"PLCC drop {drop:.4f} is over the budget {budget:g}", drop)
    return check(True, f"PLCC drop {drop:.4f} is within the budget {budget:g}", drop)


def check_twins(
    twins: Sequence[tuple[str, str, float]],
    *,
    parents: Mapping[str, int],
    evaluate: Callable[[int], StepRecord],
    first_twin_index: int,
) -> tuple[TwinCheck, ...]:
    """Judge each (twin, parent, budget): ``evaluate`` scores index ``parents[parent]`` and the twin's.

    Twin ``j`` is evaluated at ``first_twin_index + j`` (see ``engine.timeline.timeline_evaluator``).
    """
    checks: list[TwinCheck] = []
    for offset, (name, parent, budget) in enumerate(twins):
        record = evaluate(first_twin_index + offset)
        if parent not in parents:
            checks.append(
                TwinCheck(
                    name,
                    parent,
                    None,
                    None,
                    None,
                    budget,
                    False,
                    f"parent {parent} is not in the timeline",
                )
            )
            continue
        checks.append(
            judge_twin(record, evaluate(parents[parent]), budget=budget, parent_name=parent)
        )
    return tuple(checks)


def render_twins(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return text lines for the report: one per twin, with both PLCCs, the drop and the budget."""
    if not checks:
        return []
    lines = ["Quantised twins (PLCC against the parent on the same cache):"]
    for check in checks:
        verdict = "pass" if check["passed"] else "FAIL"
        lines.append(
            f"  {check['twin']} vs {check['parent']}: {verdict}  "
            f"PLCC {_show(check['twin_plcc'])} vs {_show(check['parent_plcc'])}, "
            f"drop {_show(check['drop'])}, budget {check['budget']:g}; {check['reason']}"
        )
    return lines


def _finite(value: float | None) -> float | None:
    """Return a finite float, or None for a missing or NaN one."""
    return None if value is None or not math.isfinite(value) else float(value)


def _show(value: float | None) -> str:
    """Render a PLCC or drop to four places, '-' when absent."""
    return "-" if value is None else f"{value:.4f}"
