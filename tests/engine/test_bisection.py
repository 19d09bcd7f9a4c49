"""Tests for the pure bisect search, on plain tables of pass/fail values."""

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bisection import Outcome, evaluation_bound, find_first_regression
from engine.errors import UsageError
from engine.threshold import StepStatus

P, F, U = StepStatus.PASS, StepStatus.FAIL, StepStatus.UNCERTAIN


@dataclass(frozen=True)
class Row:
    """A fake evaluation: just a status."""

    status: StepStatus


class Table:
    """An evaluate() over a fixed list of statuses that counts its calls."""

    def __init__(self, statuses: list[StepStatus]) -> None:
        self.statuses = statuses
        self.calls: list[int] = []

    def __call__(self, index: int) -> Row:
        self.calls.append(index)
        return Row(self.statuses[index])


def test_bisect_reports_no_regression_after_one_evaluation_when_newest_passes() -> None:
    table = Table([P, F, P, P])
    result = find_first_regression(4, table)
    assert result.outcome is Outcome.NO_REGRESSION
    assert table.calls == [3]
    assert result.evaluations == 1


def test_bisect_reports_already_bad_when_oldest_model_fails() -> None:
    table = Table([F, F, F, F, F])
    result = find_first_regression(5, table)
    assert result.outcome is Outcome.ALREADY_BAD
    assert result.first_bad_index == 0
    assert table.calls == [4, 0]


def test_bisect_single_model_failing_is_already_bad() -> None:
    result = find_first_regression(1, Table([F]))
    assert result.outcome is Outcome.ALREADY_BAD
    assert result.evaluations == 1


def test_bisect_single_model_passing_is_no_regression() -> None:
    assert find_first_regression(1, Table([P])).outcome is Outcome.NO_REGRESSION


def test_bisect_finds_boundary_in_two_model_timeline() -> None:
    result = find_first_regression(2, Table([P, F]))
    assert (result.outcome, result.first_bad_index, result.last_good_index) == (
        Outcome.REGRESSION,
        1,
        0,
    )
    assert result.evaluations == 2


def test_bisect_refuses_empty_timeline() -> None:
    with pytest.raises(UsageError, match="empty"):
        find_first_regression(0, Table([]))


def test_bisect_uncertain_newest_is_inconclusive() -> None:
    result = find_first_regression(3, Table([P, P, U]))
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.uncertain_index == 2


def test_bisect_uncertain_midpoint_still_alarms_with_a_range_when_newest_fails() -> None:
    result = find_first_regression(9, Table([P, P, P, P, U, F, F, F, F]))
    assert result.outcome is Outcome.REGRESSION
    assert result.uncertain_index == 4
    assert result.last_good_index == 0
    assert result.first_bad_range == (1, 8)


def test_bisect_uncertain_oldest_still_alarms_when_newest_fails() -> None:
    result = find_first_regression(5, Table([U, F, F, F, F]))
    assert result.outcome is Outcome.REGRESSION
    assert result.first_bad_range == (0, 4)
    assert result.last_good_index is None


def test_full_scan_names_passing_model_after_failure() -> None:
    result = find_first_regression(6, Table([P, P, F, P, F, P]), full=True)
    assert result.outcome is Outcome.REGRESSION
    assert result.first_bad_index == 2
    assert result.non_monotonic == (3, 5)
    assert result.evaluations == 6


def test_full_scan_uncertain_before_first_failure_alarms_with_a_range() -> None:
    result = find_first_regression(4, Table([P, U, F, F]), full=True)
    assert result.outcome is Outcome.REGRESSION
    assert result.uncertain_index == 1
    assert result.first_bad_range == (1, 2)
    assert result.last_good_index == 0


def test_full_scan_separates_passes_after_uncertain_from_passes_after_failure() -> None:
    result = find_first_regression(5, Table([U, P, F, P, F]), full=True)
    assert result.after_uncertain == (1,)
    assert result.non_monotonic == (3,)


def test_full_scan_without_certain_failure_is_inconclusive_only_when_newest_uncertain() -> None:
    assert find_first_regression(3, Table([P, U, U]), full=True).outcome is Outcome.INCONCLUSIVE
    assert find_first_regression(3, Table([P, U, P]), full=True).outcome is Outcome.NO_REGRESSION


def _patterns(n: int) -> list[list[StepStatus]]:
    """Every pass/fail/uncertain pattern of length ``n``."""
    return [list(p) for p in itertools.product([P, F, U], repeat=n)]


def _possible_first_bad(statuses: list[StepStatus], *, monotone: bool) -> set[int]:
    """First-bad indices over every way of settling the uncertain models.

    ``monotone`` keeps only settlements in which no model passes after a failure (what
    a bisect assumes); otherwise the first bad model is simply the first failing one.
    """
    uncertain = [i for i, s in enumerate(statuses) if s is U]
    found: set[int] = set()
    for settled in itertools.product([P, F], repeat=len(uncertain)):
        filled = list(statuses)
        for i, s in zip(uncertain, settled, strict=True):
            filled[i] = s
        first = next((i for i, s in enumerate(filled) if s is F), None)
        if first is None:
            continue
        if monotone and any(s is P for s in filled[first:]):
            continue
        found.add(first)
    return found


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("n", range(1, 7))
def test_every_pattern_alarms_on_certain_newest_failure_with_a_range_holding_every_first_bad(
    n: int, full: bool
) -> None:
    for statuses in _patterns(n):
        table = Table(statuses)
        result = find_first_regression(n, table, full=full)
        assert result.evaluations <= (n if full else evaluation_bound(n))
        newest = statuses[-1]
        if newest is F:
            assert result.outcome in (Outcome.REGRESSION, Outcome.ALREADY_BAD), statuses
        if result.outcome is Outcome.INCONCLUSIVE:
            assert newest is U, statuses
        if newest is P and not full:
            assert result.outcome is Outcome.NO_REGRESSION
        span = result.first_bad_range
        if result.outcome in (Outcome.REGRESSION, Outcome.ALREADY_BAD):
            assert span is not None
            low, high = span
            assert statuses[high] is F, statuses
            assert result.last_good_index is None or statuses[result.last_good_index] is P
            if result.outcome is Outcome.ALREADY_BAD:
                assert span == (0, 0)
            possible = _possible_first_bad(statuses, monotone=not full)
            assert all(low <= i <= high for i in possible), (statuses, span, possible)
            if full:  # every model was seen: the range is exactly the possible set's span
                assert (low, high) == (min(possible), max(possible))
        else:
            assert span is None


@given(st.integers(min_value=1, max_value=1100), st.data())
def test_bisect_returns_exact_boundary_within_bound_for_every_monotone_pattern(
    n: int, data: st.DataObject
) -> None:
    passes = data.draw(st.integers(min_value=0, max_value=n), label="passing prefix")
    table = Table([P] * passes + [F] * (n - passes))
    result = find_first_regression(n, table)
    assert result.evaluations <= evaluation_bound(n)
    assert len(set(table.calls)) == len(table.calls), "no model is evaluated twice"
    if passes == n:
        assert result.outcome is Outcome.NO_REGRESSION
    elif passes == 0:
        assert result.outcome is Outcome.ALREADY_BAD
        assert result.first_bad_index == 0
    else:
        assert result.outcome is Outcome.REGRESSION
        assert result.first_bad_index == passes
        assert result.last_good_index == passes - 1


@given(st.lists(st.sampled_from([P, F]), min_size=1, max_size=60))
def test_full_scan_reports_every_non_monotone_pattern(statuses: list[StepStatus]) -> None:
    result = find_first_regression(len(statuses), Table(statuses), full=True)
    first_fail = next((i for i, s in enumerate(statuses) if s is F), None)
    later_passes = tuple(
        i for i, s in enumerate(statuses) if first_fail is not None and i > first_fail and s is P
    )
    assert result.non_monotonic == later_passes
    monotone = not later_passes
    assert (result.non_monotonic == ()) is monotone
    if first_fail is None:
        assert result.outcome is Outcome.NO_REGRESSION
    else:
        assert result.first_bad_index == first_fail
        expected = Outcome.ALREADY_BAD if first_fail == 0 else Outcome.REGRESSION
        assert result.outcome is expected
