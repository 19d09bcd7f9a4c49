"""The pull-request scenarios of ``model-guard demo``: what a maintainer sees on registry changes.

The repository is this project's own registry (``model/``: five single models and the
ensemble ``fr-ens-v1`` with its real LOSO evidence and PROMOTE verdict) and the golden
cache, with the ensemble's rows still ``smoke: true`` on the base branch. Each scenario
opens one pull request against it, the way a maintainer would:

- a change that regresses (a new model that fails the gate): the check fails;
- the ensemble's honest promotion, with its verdict and reports: the check passes;
- the same flip without the evidence: the check fails, naming every row;
- the flip with the evidence, where the repository's policy asks more than the verdict
  recorded: the check fails, naming the rule.

The tests (tests/bot/handlers/test_registry.py) build their repositories from the same files.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model"
FEATURES = ROOT / "testdata" / "videos" / "real" / "features.parquet"
# A model of the bundled regression timeline that fails plcc >= 0.9.
FAILING_MODEL = ROOT / "testdata" / "videos" / "timelines" / "regression" / "fr-mlp-v06.onnx"
CONFIG_PATH = ".github/model-guard.yml"
CONFIG = b"""\
# model-guard's configuration for this repository (docs/configuration.md)
version: 1
registry: model/registry.json
features: testdata/videos/real/features.parquet
gate:
  min_plcc: 0.9
"""
STRICT_CONFIG = CONFIG + b"promotion:\n  min_mean_plcc: 0.98\n"
ENSEMBLE = tuple(f"fr-ens-v1-m{k}" for k in range(5))
EVIDENCE = "model/evidence/fr-ens-v1"


def registry_text(*, promoted: bool, extra: list[dict[str, Any]] | None = None) -> bytes:
    """The project's registry with the ensemble promoted (as shipped) or still smoke."""
    document = json.loads((MODEL / "registry.json").read_text(encoding="utf-8"))
    for row in document["models"]:
        if row["id"] in ENSEMBLE:
            row["smoke"] = not promoted
    document["models"].extend(extra or [])
    return (json.dumps(document, indent=2) + "\n").encode()


def base_files(*, config: bytes = CONFIG) -> dict[str, bytes]:
    """The base branch: config, cache, every model and the manifest, the ensemble still smoke."""
    files = {
        CONFIG_PATH: config,
        "testdata/videos/real/features.parquet": FEATURES.read_bytes(),
        "README.md": b"# video-quality models\n",
        "model/fr-ens-v1.json": (MODEL / "fr-ens-v1.json").read_bytes(),
        "model/registry.json": registry_text(promoted=False),
    }
    for path in sorted(MODEL.glob("*.onnx")):
        files[f"model/{path.name}"] = path.read_bytes()
    return files


def evidence_files() -> dict[str, bytes]:
    """The ensemble's LOSO reports and PROMOTE verdict, at their paths in the project."""
    folder = ROOT / EVIDENCE
    return {f"{EVIDENCE}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}


def regressing_change() -> dict[str, bytes]:
    """A new smoke model at the end of the timeline that fails the gate."""
    bad = FAILING_MODEL.read_bytes()
    row = {
        "id": "fr-mlp-2026.06",
        "kind": "fr",
        "onnx": "fr-mlp-2026.06.onnx",
        "sha256": hashlib.sha256(bad).hexdigest(),
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "notes": "retrained on a new split",
        "timeline": 10,
    }
    return {
        "model/registry.json": registry_text(promoted=False, extra=[row]),
        "model/fr-mlp-2026.06.onnx": bad,
    }


@dataclass(frozen=True)
class PullScenario:
    """One pull request of the demo: its branch, title, base config and changed files."""

    branch: str
    title: str
    expect: str  # the check's conclusion a maintainer should see
    change: Mapping[str, bytes | None]
    config: bytes = CONFIG


def pull_scenarios() -> tuple[PullScenario, ...]:
    """The demo's pull requests, each against its own copy of the base repository."""
    promote = {"model/registry.json": registry_text(promoted=True)}
    return (
        PullScenario("add-v06", "Add fr-mlp-2026.06", "failure", regressing_change()),
        PullScenario("promote-ens", "Promote fr-ens-v1", "success", promote | evidence_files()),
        PullScenario("promote-bare", "Promote fr-ens-v1 (no evidence)", "failure", promote),
        PullScenario(
            "promote-lax",
            "Promote fr-ens-v1 under a stricter policy",
            "failure",
            promote | evidence_files(),
            config=STRICT_CONFIG,
        ),
    )
