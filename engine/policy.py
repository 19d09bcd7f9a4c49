"""A repository's promotion policy, and the check that a verdict is at least as strict as it.

A verdict records the thresholds its author chose; ``model-guard verdict --mean-plcc 0``
writes a PROMOTE that re-verifies under 0. The policy is the repository's own bar: a
verdict passes ``check_policy`` only when every recorded threshold is at least as strict as
the policy's and its evidence (the per-seed rows of its ``gate`` section) clears the policy.
``check_policy`` reads only the document; ``engine.verdict.verify_verdict`` is what makes
that section trustworthy, by re-deriving it from the bound LOSO reports. See
docs/promotion.md ("Promotion policy").
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from engine.errors import EvidenceError, PolicyError
from engine.evidence import decode_float, read_json, schema_problems
from engine.gate import DEFAULT_SEEDS, LEAST_MIN_SOURCES, TOLERANCE, GateThresholds

# The policy block's key prefix in a repository's configuration, used to name each rule.
PREFIX = "promotion"
_VERDICT_SCHEMA_FILE = "verdict.schema.json"
_GATE = GateThresholds()
# Keys whose null means "not set": no per-fold floor, no named seeds, no seed count.
_NULLABLE = frozenset({"min_fold_plcc", "seeds", "min_seeds"})


class PolicyRule(Enum):
    """The policy's rules, named by their key in the policy block."""

    MIN_MEAN_PLCC = "min_mean_plcc"
    MAX_SPREAD = "max_spread"
    MIN_SEED_PLCC = "min_seed_plcc"
    MIN_FOLD_PLCC = "min_fold_plcc"
    SEEDS = "seeds"
    MIN_SEEDS = "min_seeds"
    MIN_SOURCES = "min_sources"

    @property
    def key(self) -> str:
        """Return the rule's dotted name, e.g. ``promotion.min_mean_plcc``."""
        return f"{PREFIX}.{self.value}"


@dataclass(frozen=True)
class PolicyViolation:
    """One way a verdict falls short of the policy, as one line naming the rule."""

    rule: PolicyRule
    message: str

    def __str__(self) -> str:
        """Return ``<message> (promotion.<rule>)``."""
        return f"{self.message} ({self.rule.key})"


@dataclass(frozen=True)
class PromotionPolicy:
    """The bar a PROMOTE verdict must meet; the defaults are the promotion gate's.

    ``seeds`` names seeds that must all be among the verdict's (more are allowed, and are
    judged by the same floors); ``min_seeds`` asks only for a count. With neither, seeds
    0-4 are required. A named set is the stronger rule: a count can be met by keeping the
    best seeds of a longer run.
    """

    min_mean_plcc: float = _GATE.mean_plcc
    max_spread: float = _GATE.max_spread
    min_seed_plcc: float = _GATE.per_seed_min
    min_fold_plcc: float | None = _GATE.per_fold_min
    seeds: tuple[int, ...] | None = None
    min_seeds: int | None = None
    min_sources: int = _GATE.min_sources

    def __post_init__(self) -> None:
        """Refuse out-of-range, non-finite or mistyped values, naming the policy key."""
        for rule in (PolicyRule.MIN_MEAN_PLCC, PolicyRule.MIN_SEED_PLCC, PolicyRule.MIN_FOLD_PLCC):
            value = getattr(self, rule.value)
            if value is not None and not (_is_number(value) and -1.0 <= value <= 1.0):
                raise PolicyError(f"{rule.key} must be a number in [-1, 1], not {value!r}")
        if not (_is_number(self.max_spread) and self.max_spread >= 0.0):
            raise PolicyError(
                f"{PolicyRule.MAX_SPREAD.key} must be a non-negative number, not {self.max_spread!r}"
            )
        if self.seeds is not None:
            if not isinstance(self.seeds, tuple) or not all(_is_count(s) for s in self.seeds):
                raise PolicyError(
                    f"{PolicyRule.SEEDS.key} must be a list of non-negative integers, "
                    f"not {self.seeds!r}"
                )
            if len(set(self.seeds)) != len(self.seeds):
                raise PolicyError(f"{PolicyRule.SEEDS.key} must not repeat a seed: {self.seeds}")
        if self.min_seeds is not None and not (_is_count(self.min_seeds) and self.min_seeds >= 1):
            raise PolicyError(
                f"{PolicyRule.MIN_SEEDS.key} must be a positive integer, not {self.min_seeds!r}"
            )
        if not (_is_count(self.min_sources) and self.min_sources >= LEAST_MIN_SOURCES):
            raise PolicyError(
                f"{PolicyRule.MIN_SOURCES.key} must be an integer of at least "
                f"{LEAST_MIN_SOURCES}, not {self.min_sources!r}"
            )

    @property
    def required_seeds(self) -> tuple[int, ...]:
        """Return the seeds every verdict must cover: ``seeds``, or 0-4 when no count is given."""
        if self.seeds is not None:
            return tuple(sorted(self.seeds))
        return () if self.min_seeds is not None else DEFAULT_SEEDS

    @property
    def seed_count(self) -> int:
        """Return the fewest seeds a verdict may have."""
        return max(self.min_seeds or 0, len(self.required_seeds))

    def to_dict(self) -> dict[str, Any]:
        """Return the policy block as JSON-ready keys; ``policy_from_mapping`` reads it back equal."""
        return {
            "min_mean_plcc": self.min_mean_plcc,
            "max_spread": self.max_spread,
            "min_seed_plcc": self.min_seed_plcc,
            "min_fold_plcc": self.min_fold_plcc,
            "seeds": None if self.seeds is None else list(self.seeds),
            "min_seeds": self.min_seeds,
            "min_sources": self.min_sources,
        }


def policy_from_mapping(block: object, *, origin: str = PREFIX) -> PromotionPolicy:
    """Build a policy from a policy block (a parsed JSON or YAML mapping); keys left out keep their defaults.

    Raises ``PolicyError`` with one line naming ``origin`` and the offending key.
    """
    if not isinstance(block, Mapping):
        raise PolicyError(f"{origin}: a promotion policy must be a mapping, not {_kind(block)}")
    allowed = [field.name for field in fields(PromotionPolicy)]
    unknown = sorted(str(key) for key in block if key not in allowed)
    if unknown:
        hint = " (give the block's keys, not a mapping holding it)" if PREFIX in unknown else ""
        raise PolicyError(
            f"{origin}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}{hint}"
        )
    values: dict[str, Any] = {}
    for key, value in block.items():
        if value is None and key in _NULLABLE:
            values[key] = None
        elif key == PolicyRule.SEEDS.value:
            values[key] = _seed_list(value, origin=origin)
        elif key in (PolicyRule.MIN_SEEDS.value, PolicyRule.MIN_SOURCES.value):
            if not _is_count(value):
                raise PolicyError(
                    f"{origin}: {PREFIX}.{key} must be a positive integer, not {value!r}"
                )
            values[key] = value
        else:
            if not _is_number(value):
                raise PolicyError(
                    f"{origin}: {PREFIX}.{key} must be a finite number, not {value!r}"
                )
            values[key] = float(value)
    try:
        return PromotionPolicy(**values)
    except PolicyError as error:
        raise PolicyError(f"{origin}: {error}") from None


def load_policy(path: Path, *, overrides: Mapping[str, Any] | None = None) -> PromotionPolicy:
    """Read a policy block from a strict JSON file, ``overrides`` (e.g. flags) replacing its keys.

    Any problem (unreadable file, not a mapping, unknown key, wrong type) is one ``PolicyError`` line.
    """
    try:
        block = read_json(Path(path)).value
    except EvidenceError as error:
        raise PolicyError(str(error)) from None
    policy = policy_from_mapping(block, origin=str(path))
    if not overrides:
        return policy
    return policy_from_mapping({**block, **overrides}, origin=f"{path} with the given options")


def check_policy(verdict_document: Any, policy: PromotionPolicy) -> list[PolicyViolation]:
    """Return every way a verdict's recorded thresholds or evidence fall short of the policy.

    Pure: reads only the document (its ``gate`` thresholds and per-seed rows). Raises
    ``EvidenceError`` when the document is not a verdict (fails the verdict schema).
    """
    problems = schema_problems(verdict_document, _VERDICT_SCHEMA_FILE)
    if problems:
        raise EvidenceError(f"not a verdict: {problems[0]}")
    gate = verdict_document["gate"]
    return [
        *_threshold_violations(gate["thresholds"], policy),
        *_evidence_violations(gate, policy),
    ]


def _threshold_violations(
    recorded: Mapping[str, Any], policy: PromotionPolicy
) -> Iterator[PolicyViolation]:
    """Yield a violation per recorded gate threshold laxer than the policy's."""
    checks = (
        (PolicyRule.MIN_MEAN_PLCC, "mean PLCC threshold", recorded["mean_plcc"], False),
        (PolicyRule.MAX_SPREAD, "spread threshold", recorded["max_spread"], True),
        (PolicyRule.MIN_SEED_PLCC, "per-seed floor", recorded["per_seed_min"], False),
    )
    for rule, label, value, upper in checks:
        wanted = getattr(policy, rule.value)
        if (value > wanted) if upper else (value < wanted):
            yield PolicyViolation(
                rule, f"{label} {_num(value)} is laxer than the policy's {_num(wanted)}"
            )
    if recorded["min_sources"] < policy.min_sources:
        yield PolicyViolation(
            PolicyRule.MIN_SOURCES,
            f"the verdict was judged needing at least {recorded['min_sources']} held-out "
            f"source(s), laxer than the policy's {policy.min_sources}",
        )
    floor, wanted_floor = recorded["per_fold_min"], policy.min_fold_plcc
    if wanted_floor is not None and (floor is None or floor < wanted_floor):
        shown = "off" if floor is None else _num(floor)
        yield PolicyViolation(
            PolicyRule.MIN_FOLD_PLCC,
            f"per-fold floor {shown} is laxer than the policy's {_num(wanted_floor)}",
        )


def _evidence_violations(
    gate: Mapping[str, Any], policy: PromotionPolicy
) -> Iterator[PolicyViolation]:
    """Yield a violation per policy rule the verdict's per-seed evidence does not meet."""
    rows: Sequence[Mapping[str, Any]] = gate["per_seed"]
    seeds = sorted(int(row["seed"]) for row in rows)
    missing = [seed for seed in policy.required_seeds if seed not in seeds]
    if missing:
        yield PolicyViolation(
            PolicyRule.SEEDS,
            f"the verdict's evidence has seeds {_seeds(seeds)}; the policy asks for seeds "
            f"{_seeds(policy.required_seeds)} (missing {_seeds(missing)})",
        )
    if policy.min_seeds is not None and len(seeds) < policy.min_seeds:
        yield PolicyViolation(
            PolicyRule.MIN_SEEDS,
            f"{len(seeds)} seed(s), the policy asks for at least {policy.min_seeds}",
        )
    sources = int(gate["n_sources"])
    if sources < policy.min_sources:
        yield PolicyViolation(
            PolicyRule.MIN_SOURCES,
            f"{sources} held-out source(s), the policy asks for at least {policy.min_sources}",
        )
    mean = decode_float(gate["mean_plcc"])
    if math.isnan(mean) or mean < policy.min_mean_plcc - TOLERANCE:
        yield PolicyViolation(
            PolicyRule.MIN_MEAN_PLCC,
            f"mean PLCC over seeds {_fmt(mean)} is below the policy's {policy.min_mean_plcc:g}",
        )
    spread = decode_float(gate["spread"])
    if not math.isnan(spread) and spread > policy.max_spread + TOLERANCE:
        yield PolicyViolation(
            PolicyRule.MAX_SPREAD,
            f"spread of per-seed mean PLCC {_fmt(spread)} exceeds the policy's {policy.max_spread:g}",
        )
    yield from _row_violations(rows, policy)


def _row_violations(
    rows: Sequence[Mapping[str, Any]], policy: PromotionPolicy
) -> Iterator[PolicyViolation]:
    """Yield the per-seed floor and per-fold floor violations, one line per seed."""
    for row in sorted(rows, key=lambda item: int(item["seed"])):
        seed_mean = decode_float(row["mean_plcc"])
        if math.isnan(seed_mean) or seed_mean < policy.min_seed_plcc - TOLERANCE:
            yield PolicyViolation(
                PolicyRule.MIN_SEED_PLCC,
                f"seed {row['seed']} mean PLCC {_fmt(seed_mean)} is below the policy's "
                f"per-seed floor {policy.min_seed_plcc:g}",
            )
        floor = policy.min_fold_plcc
        weakest = decode_float(row["min_plcc"])
        if floor is not None and not math.isnan(weakest) and weakest < floor - TOLERANCE:
            yield PolicyViolation(
                PolicyRule.MIN_FOLD_PLCC,
                f"seed {row['seed']} fold {row['min_fold']}: PLCC {_fmt(weakest)} is below the "
                f"policy's per-fold floor {floor:g}",
            )


def _seed_list(value: object, *, origin: str) -> tuple[int, ...]:
    """Return a policy's ``seeds`` as a tuple, refusing what is not a list of integers."""
    if not isinstance(value, list) or not all(_is_count(item) for item in value):
        raise PolicyError(
            f"{origin}: {PolicyRule.SEEDS.key} must be a list of non-negative integers, "
            f"not {value!r}"
        )
    return tuple(value)


def _is_number(value: object) -> bool:
    """Return whether a value is a finite real number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    """Return whether a value is a non-negative integer (bools excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: object) -> str:
    """Name a JSON value's kind for an error message."""
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _seeds(seeds: Sequence[int]) -> str:
    """Render seeds as ``0,1,2`` (or ``none``)."""
    return ",".join(str(seed) for seed in seeds) or "none"


def _num(value: float) -> str:
    """Render a threshold as written (``0.0``, ``0.95``)."""
    return repr(float(value))


def _fmt(value: float) -> str:
    """Render a PLCC-scale number (NaN as NaN)."""
    return "NaN" if math.isnan(value) else f"{value:.4f}"
