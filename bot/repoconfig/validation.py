"""The file's values checked: schema violations, non-finite numbers and the schedule, explained."""

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from jsonschema.exceptions import ValidationError

from bot.repoconfig.pointers import escape_segment, join_pointer
from bot.repoconfig.problems import ConfigProblem
from bot.repoconfig.schema import BOUNDS, load_schema, schema_validator, section_properties
from bot.repoconfig.wording import code_span, format_number, name_kind, name_types, show_value
from engine.errors import one_line

# A schedule must fire within a year of this fixed moment. A leap year from 1 January holds
# every calendar date and every weekday of every month, so a cron without a fire time in it
# never fires (30 February, 31 April); fixed, so a file valid today stays valid tomorrow.
FIRES_WITHIN_FROM = datetime(2024, 1, 1, tzinfo=UTC)
FIRES_WITHIN_DAYS = 366


def find_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Return every problem: schema violations, non-finite numbers and a bad schedule."""
    problems = list(_non_finite(data, ""))
    infinite = {problem.pointer for problem in problems}
    for error in schema_validator().iter_errors(data):
        if join_pointer(error.absolute_path) not in infinite:
            problems.extend(_schema_problems(error))
    nightly = data.get("nightly")
    schedule = nightly.get("schedule") if isinstance(nightly, dict) else None
    if isinstance(schedule, str) and not any(p.pointer == "/nightly/schedule" for p in problems):
        message = _schedule_problem(schedule)
        if message is not None:
            problems.append(ConfigProblem("/nightly/schedule", message))
    return problems


def _non_finite(value: Any, pointer: str) -> Iterator[ConfigProblem]:
    """Yield every NaN or infinite number (JSON Schema's bounds do not catch NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield ConfigProblem(pointer, f"must be a finite number, not {code_span(show_value(value))}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{pointer}/{escape_segment(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{pointer}/{index}")


def _schedule_problem(expression: str) -> str | None:
    """Return why a cron expression cannot be the nightly schedule, or None when it can."""
    try:
        minutes = croniter(expression).expanded[0]
    except Exception as error:  # croniter raises several types on untrusted text; all mean "bad"
        return (
            f"{code_span(expression)} is not a valid cron expression: {code_span(one_line(error))}"
        )
    if len(minutes) != 1 or minutes[0] == "*":
        return (
            f"{code_span(expression)} fires more than once an hour; the nightly run may fire at "
            f"most hourly, so give one minute, e.g. {code_span('37 4 * * *')}"
        )
    if not _fires_within_a_year(expression):
        return f"{code_span(expression)} never fires: no date in the next {FIRES_WITHIN_DAYS} days"
    return None


def _fires_within_a_year(expression: str) -> bool:
    """Whether ``expression`` fires in the year after ``FIRES_WITHIN_FROM``, as the scheduler reads it.

    The scheduler (``bot.jobs.scheduler``) asks croniter too; croniter gives up on a date that
    never comes with ``CroniterBadDateError``, a ValueError.
    """
    start = FIRES_WITHIN_FROM - timedelta(microseconds=1)  # the reference moment itself counts
    try:
        fire = croniter(expression, start).get_next(datetime)
    except ValueError:
        return False
    end = FIRES_WITHIN_FROM + timedelta(days=FIRES_WITHIN_DAYS)
    return isinstance(fire, datetime) and fire < end


def _schema_problems(error: ValidationError) -> list[ConfigProblem]:
    """Turn one schema violation into problems a user can act on (one per unknown key)."""
    pointer = join_pointer(error.absolute_path)
    schema, value, keyword = error.schema, error.instance, error.validator
    if keyword == "additionalProperties" and isinstance(value, dict):
        known = sorted(schema.get("properties", {}))
        return [
            ConfigProblem(f"{pointer}/{escape_segment(str(key))}", _unknown_key(key, known))
            for key in sorted(set(value) - set(known), key=str)
        ]
    return [ConfigProblem(pointer, _schema_message(error))]


def _schema_message(error: ValidationError) -> str:
    """Return the message for one schema violation other than an unknown key."""
    schema, value, keyword, limit = (
        error.schema,
        error.instance,
        error.validator,
        error.validator_value,
    )
    if isinstance(schema, Mapping) and "errorMessage" in schema and keyword != "type":
        return str(schema["errorMessage"])
    shown = code_span(show_value(value))
    if keyword == "type":
        return _type_message([limit] if isinstance(limit, str) else list(limit), value)
    if keyword == "enum":
        return _enum_message([str(item) for item in limit], value)
    if keyword == "const":
        return f"must be {code_span(show_value(limit))}, not {shown}"
    if keyword in BOUNDS:
        return f"must be {BOUNDS[keyword]} {format_number(limit)}, not {shown}"
    if keyword == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters long"
    if keyword == "maxLength":
        return f"must be at most {limit} characters long, not {len(value)}"
    if keyword == "minItems":
        return "must not be an empty list" if limit == 1 else f"must list at least {limit} items"
    if keyword == "maxItems":
        return f"must list at most {limit} items, not {len(value)}"
    if keyword == "uniqueItems":
        return f"lists {code_span(show_value(_first_repeat(value)))} more than once"
    return f"is not valid: {code_span(one_line(error.message))}"


def _first_repeat(items: Sequence[Any]) -> Any:
    """Return the first item of a list that an earlier item equals."""
    for index, item in enumerate(items):
        if item in items[:index]:
            return item
    return None


def _type_message(types: Sequence[str], value: Any) -> str:
    """Explain a value of the wrong type, with how to write the right one where it helps."""
    message = f"must be {name_types(types)}, not {name_kind(value)}"
    if not isinstance(value, dict | list | None):
        message += f" ({code_span(show_value(value))})"
    if "string" in types and not isinstance(value, dict | list | str | None):
        message += "; quote it to keep it text"
    if "object" in types and value is None:
        message += "; write its keys indented below it, or leave it out"
    return message


def _enum_message(allowed: Sequence[str], value: Any) -> str:
    """Explain a value outside a closed set, suggesting the allowed one it most likely means."""
    message = f"must be one of {', '.join(allowed)}, not {code_span(show_value(value))}"
    close = difflib.get_close_matches(str(value), allowed, n=1)
    return message + (f" (did you mean {code_span(close[0])}?)" if close else "")


def _unknown_key(key: Any, known: Sequence[str]) -> str:
    """Explain an unknown key, suggesting the known one it most likely means."""
    message = "is not a known key"
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {code_span(close[0])}?"
    elsewhere = [
        section
        for section in load_schema()["properties"]
        if str(key) in section_properties(section)
    ]
    if elsewhere:
        return f"{message} here; it belongs under {code_span(elsewhere[0] + ':')}"
    return f"{message}; the keys here are {', '.join(known)}"
