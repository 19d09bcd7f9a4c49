"""The configuration itself: ``RepoConfig`` with every key filled in, and how it is built."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.github.permissions import Permission
from bot.repoconfig.schema import load_schema, section_properties
from engine.policy import PromotionPolicy
from engine.threshold import Thresholds

if TYPE_CHECKING:  # engine.evaluation pulls in numpy and onnxruntime; import it only when asked
    from engine.evaluation import MetricSettings

CONFIG_PATH = ".github/model-guard.yml"


@dataclass(frozen=True)
class RepoConfig:
    """One repository's settings, every key filled in (the schema's defaults where not given)."""

    version: int = 1
    registry: str = "model/registry.json"
    features: str = "testdata/videos/real/features.parquet"
    families: tuple[str, ...] = ()  # empty: every family of the registry
    min_plcc: float | None = 0.9
    min_srocc: float | None = None
    max_rmse: float | None = None
    statistical: bool = False
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    group_by: str | None = None
    logistic: bool = False
    tracking_label: str = "model-guard"
    nightly_enabled: bool = True
    schedule: str = "37 4 * * *"
    commands_enabled: bool = True
    min_permission: Permission = Permission.WRITE
    # The engine's own defaults, so the two cannot drift; a test holds the schema to them.
    # The file names its seeds: the engine's default seed set, spelled out.
    promotion: PromotionPolicy = field(
        default_factory=lambda: PromotionPolicy(seeds=(0, 1, 2, 3, 4))
    )
    mention: tuple[str, ...] = ()

    def thresholds(self) -> Thresholds:
        """Return the quality gate as the engine takes it."""
        return Thresholds(min_plcc=self.min_plcc, min_srocc=self.min_srocc, max_rmse=self.max_rmse)

    def metric_settings(self) -> "MetricSettings":
        """Return how metrics are computed and judged, as the engine takes it."""
        from engine.evaluation import MetricSettings

        # Like `model-guard bisect`: no resampling unless judging by intervals.
        return MetricSettings(
            statistical=self.statistical,
            bootstrap=self.bootstrap if self.statistical else 0,
            confidence=self.confidence,
            seed=self.seed,
            logistic=self.logistic,
            group_by=self.group_by,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration in the file's own shape (a valid file when dumped as YAML)."""
        return {
            "version": self.version,
            "registry": self.registry,
            "features": self.features,
            "families": list(self.families),
            "gate": {
                "min_plcc": self.min_plcc,
                "min_srocc": self.min_srocc,
                "max_rmse": self.max_rmse,
            },
            "statistical": {
                "enabled": self.statistical,
                "bootstrap": self.bootstrap,
                "confidence": self.confidence,
                "seed": self.seed,
                "group_by": self.group_by,
            },
            "report": {"logistic": self.logistic},
            "tracking_issue": {"label": self.tracking_label},
            "nightly": {"enabled": self.nightly_enabled, "schedule": self.schedule},
            "commands": {
                "enabled": self.commands_enabled,
                "min_permission": self.min_permission.value,
            },
            "promotion": {
                "min_mean_plcc": self.promotion.min_mean_plcc,
                "max_spread": self.promotion.max_spread,
                "min_seed_plcc": self.promotion.min_seed_plcc,
                "min_fold_plcc": self.promotion.min_fold_plcc,
                "seeds": list(self.promotion.seeds or ()),
                "min_sources": self.promotion.min_sources,
            },
            "alerts": {"mention": list(self.mention)},
        }


def default_config() -> RepoConfig:
    """Return the configuration of a repository without .github/model-guard.yml."""
    return build_config({})


def build_config(data: Mapping[str, Any]) -> RepoConfig:
    """Build the configuration from validated data, taking the schema's defaults for the rest."""
    top = load_schema()["properties"]

    def value(name: str) -> Any:
        return data.get(name, top[name]["default"])

    def section(name: str) -> dict[str, Any]:
        given = data.get(name)
        # A section that is given replaces the default section: keys left out take their
        # own defaults (a gate of only max_rmse has no PLCC threshold).
        base = given if isinstance(given, dict) else top[name]["default"]
        return {
            key: base.get(key, spec.get("default"))
            for key, spec in section_properties(name).items()
        }

    gate, statistical, report = section("gate"), section("statistical"), section("report")
    nightly, commands, promotion = section("nightly"), section("commands"), section("promotion")
    return RepoConfig(
        version=int(value("version")),
        registry=str(value("registry")),
        features=str(value("features")),
        families=tuple(str(name) for name in value("families")),
        min_plcc=_optional_float(gate["min_plcc"]),
        min_srocc=_optional_float(gate["min_srocc"]),
        max_rmse=_optional_float(gate["max_rmse"]),
        statistical=bool(statistical["enabled"]),
        bootstrap=int(statistical["bootstrap"]),
        confidence=float(statistical["confidence"]),
        seed=int(statistical["seed"]),
        group_by=None if statistical["group_by"] is None else str(statistical["group_by"]),
        logistic=bool(report["logistic"]),
        tracking_label=str(section("tracking_issue")["label"]),
        nightly_enabled=bool(nightly["enabled"]),
        schedule=" ".join(str(nightly["schedule"]).split()),
        commands_enabled=bool(commands["enabled"]),
        min_permission=Permission(commands["min_permission"]),
        promotion=PromotionPolicy(
            min_mean_plcc=float(promotion["min_mean_plcc"]),
            max_spread=float(promotion["max_spread"]),
            min_seed_plcc=float(promotion["min_seed_plcc"]),
            min_fold_plcc=_optional_float(promotion["min_fold_plcc"]),
            seeds=tuple(int(seed) for seed in promotion["seeds"]),
            min_sources=int(promotion["min_sources"]),
        ),
        mention=tuple(str(handle) for handle in section("alerts")["mention"]),
    )


def _optional_float(value: Any) -> float | None:
    """Return a threshold as a float, keeping null as None."""
    return None if value is None else float(value)
