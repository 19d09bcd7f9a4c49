"""The canonical libvmaf feature layout shared by caches, models and reports."""

FEATURES: tuple[str, ...] = (
    "adm2",
    "vif_scale0",
    "vif_scale1",
    "vif_scale2",
    "vif_scale3",
    "motion2",
)
TARGET = "mos"
SOURCE = "source"
