"""Rebuild this project's own model registry from the real-video golden cache: ``python model/build.py``.

It trains a timeline of FR models (successive versions, one of them a genuinely worse
checkpoint), a 5-member deep ensemble with its manifest, the per-seed LOSO reports (the
report of seed k binds member k, seeded k, as that seed's final model), runs
the promotion gate and writes the verdict the gate produced. Ensemble rows are flipped to
``smoke: false`` only when that verdict is PROMOTE and ``verdict verify`` passes.
Everything goes through the engine's public API; nothing here is hand-edited.
"""

import os
import sys
from dataclasses import replace
from pathlib import Path

# Run from the repository root with relative paths, so no absolute path of this machine
# ends up in the committed reports.
os.chdir(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ".")
ROOT = Path("model")

from engine.evidence import write_bytes, write_json  # noqa: E402
from engine.features import load_features  # noqa: E402
from engine.gate import GateThresholds  # noqa: E402
from engine.hashing import sha256_file  # noqa: E402
from engine.train.ensemble import train_ensemble  # noqa: E402
from engine.train.export import export_network  # noqa: E402
from engine.train.loso import run_loso  # noqa: E402
from engine.train.network import DEFAULT_CONFIG, train_network  # noqa: E402
from engine.verdict import Verdict, decide, verify_verdict  # noqa: E402

FEATURES = Path("testdata") / "videos" / "real" / "features.parquet"
ENSEMBLE = "fr-ens-v1"
# (id, epochs, seed, notes): successive versions; 2026.04 is a genuinely worse checkpoint.
TIMELINE = (
    ("fr-mlp-2026.01", 50, 0, "first release: 50 full-batch epochs"),
    ("fr-mlp-2026.02", 100, 0, "longer training: 100 epochs"),
    ("fr-mlp-2026.03", 200, 0, "200 epochs, the default recipe"),
    (
        "fr-mlp-2026.04",
        4,
        0,
        "checkpoint saved after 4 epochs by an interrupted job: genuinely worse",
    ),
    ("fr-mlp-2026.05", 200, 1, "retrained with the default recipe, seed 1"),
)


def build() -> None:
    """Train, export, evaluate, gate and write the registry."""
    table = load_features(FEATURES)
    rows = []
    for position, (model_id, epochs, seed, notes) in enumerate(TIMELINE):
        network = train_network(
            table.matrix(), table.target(), seed=seed, config=replace(DEFAULT_CONFIG, epochs=epochs)
        )
        path = ROOT / f"{model_id}.onnx"
        write_bytes(path, export_network(network, name=model_id, doc=notes))
        rows.append(_row(model_id, path, position, notes, kind="fr"))
    trained = train_ensemble(table, ensemble_id=ENSEMBLE, out_dir=ROOT, argv=["model/build.py"])
    members = list(trained.member_paths)
    for offset, path in enumerate(members):
        rows.append(
            _row(
                path.stem, path, len(TIMELINE) + offset, f"member {offset} of {ENSEMBLE}", kind="fr"
            )
        )
    registry = ROOT / "registry.json"
    _write_registry(registry, rows)
    evidence = ROOT / "evidence" / ENSEMBLE
    # The members ARE the seeds' final models (member k is seeded k with the LOSO settings):
    # each LOSO report binds its member by sha256, so the verdict can promote only them.
    seeds = tuple(range(len(members)))
    run_loso(
        table,
        seeds=seeds,
        out_dir=evidence,
        argv=["model/build.py"],
        final_models=dict(zip(seeds, members, strict=True)),
    )
    outcome = decide(
        evidence,
        features=FEATURES,
        models=members,
        out=evidence,
        thresholds=GateThresholds(),
        argv=["model/build.py"],
    )
    print(outcome.render_text(), end="")
    if outcome.verdict is Verdict.PROMOTE:
        ids = {path.stem for path in members}
        for row in rows:
            if row["id"] in ids:
                row["smoke"] = False
        _write_registry(registry, rows)
        result = verify_verdict(outcome.path, registry=registry, model_ids=ids)
        print(result.render_text(), end="")
        if not result.ok:
            raise SystemExit("the fresh verdict does not verify; registry left as written")


def _row(model_id: str, path: Path, position: int, notes: str, *, kind: str) -> dict[str, object]:
    """Return one registry row for a model file beside registry.json."""
    return {
        "id": model_id,
        "kind": kind,
        "onnx": path.name,
        "sha256": sha256_file(path),
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "notes": notes,
        "timeline": position,
    }


def _write_registry(path: Path, rows: list[dict[str, object]]) -> None:
    """Write registry.json with stable formatting."""
    document = {
        "schema_version": 1,
        "description": "model-guard's own models, trained on the real-video cache testdata/videos/real by model/build.py",
        "models": rows,
    }
    write_json(path, document)


if __name__ == "__main__":
    build()
