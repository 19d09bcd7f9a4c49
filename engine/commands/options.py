"""What the commands share: the parser class, argument types, gate flags and exit codes."""

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engine.commands.arguments import MAX_COUNT, MAX_SEED, existing_file, number_in, whole_number_in
from engine.errors import UsageError

if TYPE_CHECKING:  # imported when a command runs: `model-guard --help` stays light
    from engine.gate import GateThresholds
    from engine.policy import PromotionPolicy
    from engine.scoring import ScoringLimits

# Exit codes of `model-guard bisect` (and 1 for bad input or usage everywhere but the
# promotion flow, where 1 means "gate fails / HOLD" and bad input is 2).
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_REGRESSION = 2
EXIT_INCONCLUSIVE = 3


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are UsageErrors (exit 1), not SystemExit(2)."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage and exiting 2 (2 means 'regression' here)."""
        raise UsageError(f"{message} (see '{self.prog} --help')")


def default_cache_dir() -> Path:
    """Return the evaluation store's default folder ($XDG_CACHE_HOME/model-guard/evaluations)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-guard" / "evaluations"


def add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """Add the per-model budget shared by the commands that score models (docs/scoring.md)."""
    from engine.budget import DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_S

    parser.add_argument(
        "--max-memory-mib",
        # The App's bounds (MODEL_GUARD_MODEL_MEMORY_MIB): 16 MiB to 1 TiB.
        type=number_in(16, 2**20),
        default=float(DEFAULT_MEMORY_MIB),
        help="memory one model's loading and scoring may add, in MiB; "
        f"over it the model is broken (default {DEFAULT_MEMORY_MIB})",
    )
    parser.add_argument(
        "--model-timeout",
        type=number_in(0.1, 86400),
        default=DEFAULT_TIMEOUT_S,
        help="seconds one model's loading and scoring may take; "
        f"over it the model is broken (default {DEFAULT_TIMEOUT_S:g})",
    )


def budget_limits(args: argparse.Namespace, **limits: Any) -> "ScoringLimits":
    """Build the scoring limits from the budget flags (plus any other limits given)."""
    from engine.scoring import ScoringLimits

    return ScoringLimits(
        max_memory_bytes=int(args.max_memory_mib * 1024 * 1024),
        timeout_s=args.model_timeout,
        **limits,
    )


def unit_interval(text: str) -> float:
    """Parse a number in (0, 1)."""
    return _OPEN_UNIT(text)


# Gate and bisect thresholds: correlations live in [-1, 1], an RMSE is positive.
CORRELATION = number_in(-1.0, 1.0)
SPREAD = number_in(0.0, 2.0)
RMSE = number_in(0.0, 1e6, low_open=True)
COUNT = whole_number_in(1, MAX_COUNT)
# engine.gate.LEAST_MIN_SOURCES (not imported here: the gate pulls numpy in).
MIN_SOURCES = whole_number_in(2, MAX_COUNT)
_OPEN_UNIT = number_in(0.0, 1.0, low_open=True, high_open=True)


def seed_list(text: str) -> tuple[int, ...]:
    """Parse ``--seeds`` for argparse: the reason of a bad list as an ``ArgumentTypeError``."""
    try:
        return parse_seeds(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--seeds ")) from None


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse a ``--seeds`` value such as ``0,1,2,3,4`` (``0-4`` is accepted as a range)."""
    from engine.gate import GateThresholds

    seeds: list[int] = []
    for part in text.split(","):
        item = part.strip()
        bounds = re.fullmatch(r"([0-9]+)-([0-9]+)", item)
        if bounds is not None and int(bounds.group(1)) <= int(bounds.group(2)):
            seeds.extend(range(int(bounds.group(1)), int(bounds.group(2)) + 1))
        elif item.isdigit():
            seeds.append(int(item))
        else:
            raise UsageError(f"--seeds must be a comma-separated list like 0,1,2,3,4, not {text!r}")
        if len(seeds) > MAX_COUNT or any(seed > MAX_SEED for seed in seeds):
            raise UsageError(f"--seeds must be at most {MAX_COUNT} seeds, each at most {MAX_SEED}")
    GateThresholds(seeds=tuple(seeds))  # one place for the seed rules (unique, non-negative)
    return tuple(seeds)


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """Add the promotion-gate thresholds shared by `gate` and `verdict`."""
    from engine.gate import DEFAULT_MIN_SOURCES, LEAST_MIN_SOURCES

    parser.add_argument(
        "--mean-plcc", type=CORRELATION, default=0.95, help="mean of per-seed PLCCs must reach this"
    )
    parser.add_argument(
        "--max-spread", type=SPREAD, default=0.005, help="max - min of per-seed PLCCs at most this"
    )
    parser.add_argument(
        "--per-seed-min", type=CORRELATION, default=0.95, help="every seed's PLCC at least this"
    )
    parser.add_argument("--per-fold-min", type=CORRELATION, help="every fold's PLCC at least this")
    parser.add_argument(
        "--seeds", type=seed_list, default="0,1,2,3,4", help="expected seeds (default 0,1,2,3,4)"
    )
    parser.add_argument(
        "--min-sources",
        type=whole_number_in(LEAST_MIN_SOURCES, MAX_COUNT),
        default=DEFAULT_MIN_SOURCES,
        help="fewest held-out sources (LOSO folds) every seed must have; fewer is FAIL / HOLD "
        f"(default {DEFAULT_MIN_SOURCES})",
    )


def gate_thresholds(args: argparse.Namespace) -> "GateThresholds":
    """Build the promotion gate from the shared flags."""
    from engine.gate import GateThresholds

    return GateThresholds(
        mean_plcc=args.mean_plcc,
        max_spread=args.max_spread,
        per_seed_min=args.per_seed_min,
        per_fold_min=args.per_fold_min,
        seeds=args.seeds,
        min_sources=args.min_sources,
    )


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--policy FILE`` and the promotion-policy thresholds (the gate's flag names, no defaults)."""
    parser.add_argument(
        "--policy",
        type=existing_file,
        help="JSON file holding a promotion policy block; the flags below override its keys",
    )
    parser.add_argument(
        "--mean-plcc", type=CORRELATION, help="policy: least mean of per-seed PLCCs"
    )
    parser.add_argument("--max-spread", type=SPREAD, help="policy: most max - min of seed PLCCs")
    parser.add_argument(
        "--per-seed-min", type=CORRELATION, help="policy: every seed's PLCC at least"
    )
    parser.add_argument(
        "--per-fold-min", type=CORRELATION, help="policy: every fold's PLCC at least"
    )
    parser.add_argument(
        "--seeds", type=seed_list, help="policy: seeds the evidence must include (e.g. 0,1,2,3,4)"
    )
    parser.add_argument(
        "--min-seeds", type=COUNT, help="policy: fewest seeds (alone: a count only)"
    )
    parser.add_argument("--min-sources", type=MIN_SOURCES, help="policy: fewest held-out sources")


def promotion_policy(args: argparse.Namespace) -> "PromotionPolicy | None":
    """Build the promotion policy from ``--policy`` and the policy flags; None when none is given."""
    from engine.policy import load_policy, policy_from_mapping

    given = {
        "min_mean_plcc": args.mean_plcc,
        "max_spread": args.max_spread,
        "min_seed_plcc": args.per_seed_min,
        "min_fold_plcc": args.per_fold_min,
        "seeds": None if args.seeds is None else list(args.seeds),
        "min_seeds": args.min_seeds,
        "min_sources": args.min_sources,
    }
    flags = {key: value for key, value in given.items() if value is not None}
    if args.policy is None and not flags:
        return None
    policy = policy_from_mapping(flags, origin="command line")  # flags are checked on their own
    return policy if args.policy is None else load_policy(args.policy, overrides=flags)
