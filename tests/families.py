"""A registry mixing two families of six-feature regressors with frame models, as a repository's files.

Family ``fr/features6`` (the default family, no ``family`` field) is the bundled regression
timeline (first bad ``fr-mlp-v06``); family ``fr/good`` (declared) is the bundled all-good
timeline. Three rows cannot be judged on a feature table: a no-reference model and a
pre-filter on NCHW frames, and a full-reference model taking two frames.
"""

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
BISECT = ROOT / "testdata" / "bisect"
REGISTRY = "models/registry.json"
FEATURES = "golden/features.parquet"
FRAME_ROWS = {"nr-frames-v1": "nr", "filter-denoise-v1": "filter", "fr-pair-v1": "fr"}


def frame_model(kind: str) -> bytes:
    """A tiny model on frames built with onnx.helper (IR 9, opset 17): NR score, filter or FR pair."""
    frame = ["N", 3, 8, 8]
    images = [helper.make_tensor_value_info("frame", TensorProto.FLOAT, frame)]
    if kind == "filter":
        nodes = [helper.make_node("Identity", ["frame"], ["out"])]
        output = helper.make_tensor_value_info("out", TensorProto.FLOAT, frame)
    else:
        if kind == "pair":
            images = [
                helper.make_tensor_value_info(name, TensorProto.FLOAT, frame)
                for name in ("reference", "distorted")
            ]
            nodes = [helper.make_node("Sub", ["reference", "distorted"], ["frame"])]
        else:
            nodes = []
        nodes.append(helper.make_node("ReduceMean", ["frame"], ["out"], axes=[1, 2, 3]))
        output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1, 1, 1])
    graph = helper.make_graph(nodes, f"{kind}-frames", images, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _rows(timeline: str, folder: str, *, start: int, family: str | None) -> list[dict[str, object]]:
    """The bundled timeline's rows, moved into ``folder`` and renumbered from ``start``."""
    document = json.loads((BISECT / timeline / "registry.json").read_text())
    rows = []
    for offset, row in enumerate(document["models"]):
        moved = {**row, "onnx": f"{folder}/{row['onnx']}", "timeline": start + offset}
        if family is not None:
            moved["family"] = family
        rows.append(moved)
    return rows


def mixed_files() -> dict[str, bytes]:
    """Repository files: the mixed registry under models/, its models, and the golden cache."""
    files = {FEATURES: (BISECT / "features.parquet").read_bytes()}
    for timeline, folder in (("regression", "a"), ("allgood", "b")):
        for path in sorted((BISECT / timeline).glob("*.onnx")):
            files[f"models/{folder}/{path.name}"] = path.read_bytes()
    rows = [
        *_rows("regression", "a", start=0, family=None),
        *_rows("allgood", "b", start=100, family="fr/good"),
    ]
    for offset, (name, kind) in enumerate(FRAME_ROWS.items()):
        data = frame_model("pair" if kind == "fr" else kind)
        onnx.checker.check_model(onnx.load_from_string(data))
        files[f"models/frames/{name}.onnx"] = data
        rows.append(
            {
                "id": name,
                "kind": kind,
                "onnx": f"frames/{name}.onnx",
                "sha256": hashlib.sha256(data).hexdigest(),
                "smoke": True,
                "opset": 17,
                "license": "MIT",
                "timeline": 200 + offset,
            }
        )
    registry = {"schema_version": 1, "models": rows}
    files[REGISTRY] = (json.dumps(registry, indent=2) + "\n").encode()
    return files


def write_files(files: dict[str, bytes], root: Path) -> Path:
    """Write repository files under ``root`` and return ``root``."""
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root
