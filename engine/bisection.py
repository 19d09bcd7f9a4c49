"""Find the first model in a timeline that fails the quality gate.

The search is pure: it is given the timeline length and an ``evaluate(index)`` callable
and never touches ONNX, files or the clock, so it is tested on plain tables of values.
Index 0 is the oldest model, ``n - 1`` the newest.

Default (bisect) mode assumes a monotone timeline (once a model fails, later ones fail
too) and spends at most ``ceil(log2 n) + 2`` evaluations: the newest model first (one
evaluation on a healthy nightly), then the oldest, then a binary search between a
known-good and a known-bad index. Full mode evaluates every model and names the models
that pass after an earlier failure, which a bisect cannot see.

Statistical mode adds a third status, ``uncertain`` (the interval straddles the gate).
A newest model that certainly fails always raises the alarm (``regression`` or
``already_bad``), whatever earlier models say: when uncertain models hide the exact
boundary, the result states the range ``first_bad_low .. first_bad_index`` in which the
first bad model lies (after the last certainly-passing model, at or before the first
certainly-failing one). ``inconclusive`` is kept for a newest model that is itself
uncertain (docs/reports.md).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar

from engine.errors import UsageError
from engine.threshold import StepStatus


class Outcome(Enum):
    """The result of a search over a timeline."""

    NO_REGRESSION = "no_regression"
    REGRESSION = "regression"
    ALREADY_BAD = "already_bad"
    INCONCLUSIVE = "inconclusive"


class Judged(Protocol):
    """Anything an evaluation returns: it must carry the gate's status."""

    @property
    def status(self) -> StepStatus:
        """The gate's word on the model."""
        ...


J = TypeVar("J", bound=Judged)


@dataclass(frozen=True)
class Visit(Generic[J]):
    """One evaluated model: its timeline index and what the evaluation returned."""

    index: int
    result: J


@dataclass(frozen=True)
class BisectResult(Generic[J]):
    """What the search found, with every visit in the order it was made."""

    outcome: Outcome
    n_models: int
    full: bool
    visits: tuple[Visit[J], ...]
    first_bad_index: int | None = None
    last_good_index: int | None = None
    uncertain_index: int | None = None
    non_monotonic: tuple[int, ...] = ()
    first_bad_low: int | None = None
    after_uncertain: tuple[int, ...] = ()

    @property
    def first_bad_range(self) -> tuple[int, int] | None:
        """The lowest and highest index the first bad model can have, or None without an alarm.

        Both ends are equal when every model between the last pass and the first failure
        was decided; uncertain models in between widen the range.
        """
        if self.first_bad_index is None:
            return None
        low = self.first_bad_index if self.first_bad_low is None else self.first_bad_low
        return (low, self.first_bad_index)

    @property
    def evaluations(self) -> int:
        """How many models were evaluated."""
        return len(self.visits)


def evaluation_bound(n_models: int) -> int:
    """Return the most evaluations a bisect of ``n_models`` may spend: ceil(log2 n) + 2."""
    return math.ceil(math.log2(n_models)) + 2 if n_models > 1 else 1


def find_first_regression(
    n_models: int,
    evaluate: Callable[[int], J],
    *,
    full: bool = False,
) -> BisectResult[J]:
    """Search a timeline of ``n_models`` for the first model whose evaluation fails.

    ``evaluate(index)`` must return an object with a ``status``; a model that cannot be
    loaded should come back as failing. An uncertain newest model makes the run
    ``inconclusive``; uncertain earlier models only widen the stated range of the first
    bad model when the newest certainly fails.
    """
    if n_models < 1:
        raise UsageError("the timeline is empty: nothing to bisect")
    if full:
        return _scan_all(n_models, evaluate)
    return _bisect(n_models, evaluate)


def _bisect(n_models: int, evaluate: Callable[[int], J]) -> BisectResult[J]:
    """Newest first, then oldest, then binary search between good and bad."""
    visits: list[Visit[J]] = []

    def visit(index: int) -> StepStatus:
        result = evaluate(index)
        visits.append(Visit(index, result))
        return result.status

    def done(
        outcome: Outcome,
        *,
        first_bad_index: int | None = None,
        last_good_index: int | None = None,
        uncertain_index: int | None = None,
        first_bad_low: int | None = None,
    ) -> BisectResult[J]:
        return BisectResult(
            outcome,
            n_models,
            False,
            tuple(visits),
            first_bad_index=first_bad_index,
            last_good_index=last_good_index,
            uncertain_index=uncertain_index,
            first_bad_low=first_bad_low,
        )

    newest = n_models - 1
    status = visit(newest)
    if status is StepStatus.PASS:
        return done(Outcome.NO_REGRESSION)
    if status is StepStatus.UNCERTAIN:
        return done(Outcome.INCONCLUSIVE, uncertain_index=newest)
    if newest == 0:
        return done(Outcome.ALREADY_BAD, first_bad_index=0)
    status = visit(0)
    if status is StepStatus.FAIL:
        return done(Outcome.ALREADY_BAD, first_bad_index=0)
    if status is StepStatus.UNCERTAIN:
        # The oldest model may or may not be bad; the newest certainly is: alarm with a range.
        return done(Outcome.REGRESSION, first_bad_index=newest, first_bad_low=0, uncertain_index=0)
    good, bad = 0, newest
    while bad - good > 1:
        middle = (good + bad) // 2
        status = visit(middle)
        if status is StepStatus.UNCERTAIN:
            return done(
                Outcome.REGRESSION,
                first_bad_index=bad,
                first_bad_low=good + 1,
                last_good_index=good,
                uncertain_index=middle,
            )
        if status is StepStatus.PASS:
            good = middle
        else:
            bad = middle
    return done(Outcome.REGRESSION, first_bad_index=bad, last_good_index=good)


def _scan_all(n_models: int, evaluate: Callable[[int], J]) -> BisectResult[J]:
    """Evaluate every model; the first certain failure raises the alarm.

    The first bad model lies between the first non-passing model and the first certainly
    failing one. Without any certain failure, an uncertain newest model makes the run
    inconclusive; a passing newest model means no regression.
    """
    visits = tuple(Visit(index, evaluate(index)) for index in range(n_models))
    statuses = [visit.result.status for visit in visits]
    first = next((i for i, status in enumerate(statuses) if status is not StepStatus.PASS), None)
    if first is None:
        return BisectResult(Outcome.NO_REGRESSION, n_models, True, visits)
    failed = next((i for i, status in enumerate(statuses) if status is StepStatus.FAIL), None)
    after_failure = failed if failed is not None else n_models
    later_passes = tuple(
        i for i in range(after_failure + 1, n_models) if statuses[i] is StepStatus.PASS
    )
    after_uncertain = tuple(
        i for i in range(first + 1, after_failure) if statuses[i] is StepStatus.PASS
    )
    uncertain_index = first if statuses[first] is StepStatus.UNCERTAIN else None
    last_good = first - 1 if first > 0 else None
    if failed is None:
        outcome = (
            Outcome.INCONCLUSIVE if statuses[-1] is StepStatus.UNCERTAIN else Outcome.NO_REGRESSION
        )
        return BisectResult(
            outcome,
            n_models,
            True,
            visits,
            uncertain_index=uncertain_index,
            last_good_index=last_good,
            after_uncertain=after_uncertain,
        )
    return BisectResult(
        Outcome.ALREADY_BAD if failed == 0 else Outcome.REGRESSION,
        n_models,
        True,
        visits,
        first_bad_index=failed,
        first_bad_low=first if first != failed else None,
        last_good_index=last_good,
        uncertain_index=uncertain_index,
        non_monotonic=later_passes,
        after_uncertain=after_uncertain,
    )
