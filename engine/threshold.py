"""The bisect quality gate: thresholds on PLCC, SROCC and RMSE, judged point-wise or by interval."""

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError

if TYPE_CHECKING:  # metrics pulls in scipy; the pure search needs only StepStatus
    from engine.metrics import MetricReport


class StepStatus(Enum):
    """What the gate says about one model."""

    PASS = "pass"
    FAIL = "fail"
    UNCERTAIN = "uncertain"


class Direction(Enum):
    """Whether a metric must stay above or below its threshold."""

    AT_LEAST = ">="
    AT_MOST = "<="


@dataclass(frozen=True)
class Criterion:
    """One active threshold: ``metric direction value``."""

    metric: str
    direction: Direction
    value: float

    def describe(self) -> str:
        """Return the criterion as text, e.g. ``plcc >= 0.9``."""
        return f"{self.metric} {self.direction.value} {self.value:g}"


@dataclass(frozen=True)
class Thresholds:
    """The gate: every given threshold must hold. At least one is required."""

    min_plcc: float | None = None
    min_srocc: float | None = None
    max_rmse: float | None = None

    def __post_init__(self) -> None:
        """Refuse an empty gate and non-finite or out-of-range thresholds."""
        if self.min_plcc is None and self.min_srocc is None and self.max_rmse is None:
            raise UsageError("the quality gate needs at least one of min_plcc, min_srocc, max_rmse")
        for name in ("min_plcc", "min_srocc"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise UsageError(f"{name} must be a number in [-1, 1], not {value!r}")
        if self.max_rmse is not None and not (math.isfinite(self.max_rmse) and self.max_rmse > 0):
            raise UsageError(f"max_rmse must be a positive number, not {self.max_rmse!r}")

    def criteria(self) -> tuple[Criterion, ...]:
        """Return the active criteria in a fixed order (plcc, srocc, rmse)."""
        found: list[Criterion] = []
        if self.min_plcc is not None:
            found.append(Criterion("plcc", Direction.AT_LEAST, self.min_plcc))
        if self.min_srocc is not None:
            found.append(Criterion("srocc", Direction.AT_LEAST, self.min_srocc))
        if self.max_rmse is not None:
            found.append(Criterion("rmse", Direction.AT_MOST, self.max_rmse))
        return tuple(found)

    def primary(self) -> Criterion:
        """Return the criterion charted in reports (the first active one)."""
        return self.criteria()[0]

    def describe(self) -> str:
        """Return the whole gate as text, e.g. ``plcc >= 0.9 and rmse <= 8``."""
        return " and ".join(criterion.describe() for criterion in self.criteria())

    def to_dict(self) -> dict[str, Any]:
        """Return the thresholds as a JSON-ready dict (absent ones as null)."""
        return {"min_plcc": self.min_plcc, "min_srocc": self.min_srocc, "max_rmse": self.max_rmse}


@dataclass(frozen=True)
class Judgement:
    """The gate's word on one model, with a reason for every criterion that did not pass."""

    status: StepStatus
    reasons: tuple[str, ...]


def _judge_point(criterion: Criterion, value: float) -> StepStatus:
    """Judge a point estimate against one criterion."""
    if criterion.direction is Direction.AT_LEAST:
        return StepStatus.PASS if value >= criterion.value else StepStatus.FAIL
    return StepStatus.PASS if value <= criterion.value else StepStatus.FAIL


def _judge_interval(criterion: Criterion, low: float, high: float) -> StepStatus:
    """Judge a confidence interval: decided only when it lies wholly on one side."""
    good_low, good_high = _judge_point(criterion, low), _judge_point(criterion, high)
    if good_low is good_high:
        return good_low
    return StepStatus.UNCERTAIN


def judge(
    metrics: "MetricReport", thresholds: Thresholds, *, statistical: bool = False
) -> Judgement:
    """Judge one model's metrics against the gate.

    A NaN metric fails with the metrics' own reason. In statistical mode a criterion
    fails only when its whole confidence interval is on the wrong side of the threshold,
    passes only when the whole interval is on the right side, and is uncertain otherwise.
    Any failing criterion fails the model; otherwise any uncertain one makes it uncertain.
    """
    statuses: list[StepStatus] = []
    reasons: list[str] = []
    for criterion in thresholds.criteria():
        value = float(getattr(metrics, criterion.metric))
        if math.isnan(value):
            why = metrics.reason or "not computable"
            statuses.append(StepStatus.FAIL)
            reasons.append(f"{criterion.metric} is NaN ({why}), gate needs {criterion.describe()}")
            continue
        if statistical:
            interval = metrics.ci.get(criterion.metric)
            if interval is None:
                raise UsageError(
                    f"statistical mode needs a bootstrap interval for {criterion.metric}"
                )
            status = _judge_interval(criterion, interval.low, interval.high)
            shown = f"{criterion.metric} {value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"
        else:
            status = _judge_point(criterion, value)
            shown = f"{criterion.metric} {value:.4f}"
        statuses.append(status)
        if status is StepStatus.FAIL:
            reasons.append(f"{shown} fails {criterion.describe()}")
        elif status is StepStatus.UNCERTAIN:
            reasons.append(f"{shown} straddles {criterion.describe()}")
    if StepStatus.FAIL in statuses:
        return Judgement(StepStatus.FAIL, tuple(reasons))
    if StepStatus.UNCERTAIN in statuses:
        return Judgement(StepStatus.UNCERTAIN, tuple(reasons))
    return Judgement(StepStatus.PASS, ())
