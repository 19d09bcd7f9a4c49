"""Build small, byte-stable ONNX regressors from numpy weights with ``onnx.helper``.

torch's exporter stamps absolute paths, line numbers and its own version into every
node, so the same weights export to different bytes on different machines. Building the
graph here from weights, with an explicit IR version and opset, gives identical bytes
everywhere (onnx 1.23 would otherwise default to IR 14 / opset 28, which onnxruntime
cannot load).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.features import FEATURES

IR_VERSION = 9
OPSET = 17
INPUT_NAME = "features"
OUTPUT_NAME = "score"
# A codec-aware model's second input (engine/codec.py builds it from the cache).
CODEC_INPUT_NAME = "codec"


class Activation(Enum):
    """Hidden-layer non-linearity of an MLP."""

    RELU = "Relu"
    TANH = "Tanh"
    SIGMOID = "Sigmoid"


@dataclass(frozen=True)
class Dense:
    """One fully connected layer: ``y = x @ weight + bias`` with weight shaped [in, out]."""

    weight: np.ndarray
    bias: np.ndarray


def build_mlp(
    layers: Sequence[Dense],
    *,
    activation: Activation = Activation.RELU,
    input_mean: np.ndarray | None = None,
    input_std: np.ndarray | None = None,
    output_scale: float = 1.0,
    output_offset: float = 0.0,
    name: str = "mlp",
    doc: str = "",
) -> bytes:
    """Serialise an MLP over the six canonical features to ONNX bytes ([N, 6] -> [N, 1]).

    ``input_mean``/``input_std`` fold standardisation into the graph; the output is
    ``output_offset + output_scale * mlp(x)``. Weights are stored as float32.
    """
    if not layers:
        raise ValueError("an MLP needs at least one layer")
    width = len(FEATURES)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current = INPUT_NAME

    def const(tensor_name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), tensor_name))
        return tensor_name

    if input_mean is not None or input_std is not None:
        mean = np.zeros(width) if input_mean is None else np.asarray(input_mean)
        std = np.ones(width) if input_std is None else np.asarray(input_std)
        if mean.shape != (width,) or std.shape != (width,):
            raise ValueError(f"input_mean and input_std must have shape ({width},)")
        nodes.append(helper.make_node("Sub", [current, const("in_mean", mean)], ["centred"]))
        nodes.append(helper.make_node("Div", ["centred", const("in_std", std)], ["standard"]))
        current = "standard"
    fan_in = width
    for index, layer in enumerate(layers):
        weight = np.asarray(layer.weight)
        bias = np.asarray(layer.bias)
        if weight.ndim != 2 or weight.shape[0] != fan_in or bias.shape != (weight.shape[1],):
            raise ValueError(
                f"layer {index}: weight {weight.shape} / bias {bias.shape} do not chain"
            )
        out = f"dense{index}"
        nodes.append(
            helper.make_node(
                "Gemm",
                [current, const(f"w{index}", weight), const(f"b{index}", bias)],
                [out],
            )
        )
        current = out
        fan_in = weight.shape[1]
        if index < len(layers) - 1:
            act = f"act{index}"
            nodes.append(helper.make_node(activation.value, [current], [act]))
            current = act
    if fan_in != 1:
        raise ValueError(f"the last layer must have one output, not {fan_in}")
    if output_scale != 1.0:
        nodes.append(
            helper.make_node(
                "Mul", [current, const("out_scale", np.array(output_scale))], ["scaled"]
            )
        )
        current = "scaled"
    if output_offset != 0.0:
        nodes.append(
            helper.make_node(
                "Add", [current, const("out_offset", np.array(output_offset))], ["shifted"]
            )
        )
        current = "shifted"
    nodes.append(helper.make_node("Identity", [current], [OUTPUT_NAME]))
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", width])]
    return serialise_graph(nodes, inputs, inits, name=name, doc=doc)


def serialise_graph(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto],
    *,
    name: str,
    doc: str = "",
) -> bytes:
    """Wrap nodes into a checked model with output ``score`` [N, 1] at the pinned IR and opset."""
    graph = helper.make_graph(
        list(nodes),
        name,
        list(inputs),
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        list(initializers),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="model-guard",
        doc_string=doc,
    )
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
