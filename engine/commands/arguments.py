"""Argument types for the commands: each parses one value or raises a one-line reason.

argparse turns ``ArgumentTypeError`` into ``argument --flag: <reason>`` and our
``CommandParser`` turns that into a ``UsageError``, so a bad value is refused while
parsing, before any file is read or written, with one line and the bad-input exit code.
"""

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

# Seeds feed numpy and torch; both accept any 32-bit unsigned value.
MAX_SEED = 2**32 - 1
MAX_BOOTSTRAP = 100_000
MAX_EPOCHS = 100_000
MAX_MEMBERS = 100
MAX_COUNT = 10_000
MAX_MODEL_MIB = 4096.0


def _float(text: str) -> float:
    """Parse a finite float; refuse empty text, nan and infinities by name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a number, got an empty value")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _int(text: str) -> int:
    """Parse a decimal integer of at most 20 digits (``int()`` of 5000 digits is slow and noisy)."""
    stripped = text.strip()
    digits = stripped.removeprefix("-").removeprefix("+")
    if not digits.isascii() or not digits.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    if len(digits) > 20:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {len(digits)} digits")
    return int(stripped)


def number_in(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """Return a parser of a finite float in the range [low, high] (ends open when asked)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _float(text)
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {shown}, not {text}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse


def whole_number_in(low: int, high: int) -> Callable[[str], int]:
    """Return a parser of an integer in [low, high]."""

    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number in [{low}, {high}], not {text}"
            )
        return value

    parse.__name__ = f"whole number in [{low}, {high}]"
    return parse


def thread_count(text: str) -> int:
    """Parse a thread count: at least 1, at most the machine's CPU count (``os.cpu_count()``)."""
    cpus = os.cpu_count() or 1
    value = _int(text)
    if not 1 <= value <= cpus:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and {cpus} (this machine's CPU count), not {text}"
        )
    return value


def existing_file(text: str) -> Path:
    """Parse a path that must name an existing file."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: not found (no such file)")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file")
    return path


def existing_folder(text: str) -> Path:
    """Parse a path that must name an existing folder."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: not found (no such folder)")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is not a folder")
    return path


def output_file(text: str) -> Path:
    """Parse where a file will be written: not a folder, and its folder can be created."""
    path = _path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file to write")
    _check_parent(text, path.parent)
    return path


def output_folder(text: str) -> Path:
    """Parse a folder that will be written into: a folder, or creatable as one."""
    path = _path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    _check_parent(text, path)
    return path


def _path(text: str) -> Path:
    """Parse a non-empty path without NUL bytes (which every OS call refuses)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty value")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL byte")
    return Path(text)


def _check_parent(text: str, folder: Path) -> None:
    """Refuse when the nearest existing ancestor of ``folder`` is a file (it cannot be created)."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, not a folder")
