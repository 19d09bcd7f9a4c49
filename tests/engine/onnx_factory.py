"""Small, odd and hostile ONNX models for tests, built with onnx.helper at IR 9 / opset 17."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# onnx 1.23 defaults to IR 14 / opset 28, which onnxruntime refuses.
IR_VERSION = 9
OPSET = 17
WIDTH = 6


def features(
    name: str = "x", *, elem_type: int = TensorProto.FLOAT, width: int = WIDTH
) -> onnx.ValueInfoProto:
    """Return a graph input declared as [N, width] of ``elem_type``."""
    return helper.make_tensor_value_info(name, elem_type, ["N", width])


def scores(name: str = "y", *, shape: Sequence[int | str] = ("N", 1)) -> onnx.ValueInfoProto:
    """Return a float32 graph output of the given shape."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def make_model(
    nodes: Sequence[onnx.NodeProto],
    *,
    inputs: Sequence[onnx.ValueInfoProto] | None = None,
    outputs: Sequence[onnx.ValueInfoProto] | None = None,
    initializers: Sequence[onnx.TensorProto] = (),
    sparse_initializers: Sequence[onnx.SparseTensorProto] = (),
    opset: int = OPSET,
    extra_opsets: Sequence[tuple[str, int]] = (),
) -> onnx.ModelProto:
    """Wrap nodes in a graph and a model with explicit IR version and opset (no checking)."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        list(inputs) if inputs is not None else [features()],
        list(outputs) if outputs is not None else [scores()],
        list(initializers),
        sparse_initializer=list(sparse_initializers),
    )
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(domain, version) for domain, version in extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def default_weight() -> np.ndarray:
    """Return a fixed [6, 1] float32 weight with distinct entries."""
    return np.array([[0.5], [-0.25], [1.0], [2.0], [-1.5], [0.75]], dtype=np.float32)


def linear_model(weight: np.ndarray | None = None, *, bias: float = 0.5) -> onnx.ModelProto:
    """Return ``y = x @ weight + bias``: [N, 6] -> [N, 1]."""
    w = default_weight() if weight is None else np.asarray(weight, dtype=np.float32)
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        initializers=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "b"),
        ],
    )


def int8_model(weight: np.ndarray, *, bias: float = 0.0) -> onnx.ModelProto:
    """Return a dynamically quantised linear model (uint8 activations, int8 weights).

    DynamicQuantizeLinear computes the activation scale and zero point over the whole
    input batch, so a row's prediction depends on the other rows it is scored with.
    """
    w = np.asarray(weight, dtype=np.float32).reshape(WIDTH, 1)
    w_scale = float(np.abs(w).max()) / 127.0
    w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero"]),
        helper.make_node("MatMulInteger", ["x_q", "w_q", "x_zero", "w_zero"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_scale", "w_scale"], ["scale"]),
        helper.make_node("Mul", ["acc_f", "scale"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    return make_model(
        nodes,
        initializers=[
            numpy_helper.from_array(w_q, "w_q"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero"),
            numpy_helper.from_array(np.array(w_scale, dtype=np.float32), "w_scale"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "b"),
        ],
    )


def nan_on_zero_model() -> onnx.ModelProto:
    """Return a model whose prediction is NaN for every row containing a 0 (0 / 0), else finite."""
    return make_model(
        [
            helper.make_node("Div", ["x", "x"], ["ones"]),
            helper.make_node("MatMul", ["ones", "w"], ["y"]),
        ],
        initializers=[numpy_helper.from_array(default_weight(), "w")],
    )


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a model's bytes as they are (no checker, no external data) and return the path."""
    path.write_bytes(model.SerializeToString())
    return path


def save_external(model: onnx.ModelProto, path: Path, *, location: str = "w.bin") -> Path:
    """Write a model with every tensor moved into one external file beside it."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        copy,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def point_external(
    tensor: onnx.TensorProto, location: str, *, offset: int = 0, length: int | None = None
) -> None:
    """Mark a tensor as external at ``location`` (dropping its inline data), without any checks."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    del tensor.external_data[:]
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key = key
        entry.value = value
    tensor.data_location = TensorProto.EXTERNAL


def relocate_external(path: Path, location: str) -> None:
    """Rewrite a saved model so every external tensor points at ``location``."""
    model = onnx.load_model(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    save(model, path)
