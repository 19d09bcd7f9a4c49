"""The project's own committed registry stays valid, and its committed verdict still verifies."""

from pathlib import Path

from engine.manifest import validate_manifest
from engine.registry import load_registry, validate_registry
from engine.verdict import verify_verdict

MODEL = Path(__file__).resolve().parents[1] / "model"


def test_committed_registry_validates() -> None:
    assert validate_registry(MODEL / "registry.json") == []


def test_committed_promote_verdict_verifies_against_the_registry() -> None:
    result = verify_verdict(
        MODEL / "evidence" / "fr-ens-v1" / "PROMOTE.json", registry=MODEL / "registry.json"
    )
    assert result.ok, result.problems


def test_only_rows_backed_by_the_verdict_are_promoted() -> None:
    promoted = {
        entry.id for entry in load_registry(MODEL / "registry.json").models if not entry.smoke
    }
    assert promoted == {f"fr-ens-v1-m{k}" for k in range(5)}


def test_committed_ensemble_manifest_matches_its_members_and_registry() -> None:
    assert validate_manifest(MODEL / "fr-ens-v1.json", registry_path=MODEL / "registry.json") == []
