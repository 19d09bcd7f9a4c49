"""The registry check's title names a broken first bad model as broken, not as failing."""

from typing import Any

from bot.handlers.registry_view import TimelineVerdict, _timeline_title
from bot.judging.bisect_run import TimelineRun
from bot.judging.registry_run import SideRun
from bot.surfaces.checks import Conclusion
from engine.bisection import Outcome


def _side(steps: list[dict[str, Any]]) -> SideRun:
    report = {"first_bad_index": 3, "first_bad_model": "fr-x", "steps": steps}
    run = TimelineRun("o/r", "a" * 40, Outcome.REGRESSION, "", "", report, 0)
    return SideRun(run)


def test_title_says_broken_when_the_first_bad_model_could_not_be_scored() -> None:
    side = _side([{"index": 3, "broken": "not ONNX: cannot parse the graph"}])
    title = _timeline_title(TimelineVerdict(Conclusion.FAILURE, "x"), side)
    assert title == "fr-x is broken (not ONNX: cannot parse the graph)"


def test_title_says_fails_the_gate_when_the_first_bad_model_was_scored() -> None:
    side = _side([{"index": 3, "broken": None}])
    title = _timeline_title(TimelineVerdict(Conclusion.FAILURE, "x"), side)
    assert title == "fr-x is the first model that fails the gate"
