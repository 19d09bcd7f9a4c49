"""Export trained networks as byte-stable ONNX (IR 9, opset 17) built with ``onnx.helper``.

A six-feature network goes through ``engine.onnxbuild.build_mlp``: standardisation folded
in as Sub/Div, the target de-standardised as Mul/Add. A codec-aware network has TWO
float32 inputs, ``features`` [N, 6] and ``codec`` [N, K]: the features are standardised,
then concatenated with the codec block (Concat, axis 1) before the first Gemm. No
timestamps, paths or versions go into the file, so the same weights give the same bytes
on every machine and checkout.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.features import FEATURES
from engine.onnxbuild import (
    CODEC_INPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Activation,
    build_mlp,
    serialise_graph,
)
from engine.train.network import TrainedNetwork

__all__ = ["CODEC_INPUT_NAME", "export_network"]


def export_network(network: TrainedNetwork, *, name: str, doc: str = "") -> bytes:
    """Return the ONNX bytes of a trained network ([N, 6] or [N, 6] + [N, K] -> [N, 1])."""
    stats = network.standardisation
    if network.codec_width == 0:
        return build_mlp(
            network.layers,
            activation=network.activation,
            input_mean=stats.feature_mean,
            input_std=stats.feature_std,
            output_scale=stats.target_std,
            output_offset=stats.target_mean,
            name=name,
            doc=doc,
        )
    return _build_codec_mlp(network, name=name, doc=doc)


def _build_codec_mlp(network: TrainedNetwork, *, name: str, doc: str) -> bytes:
    """Build the two-input graph: Sub/Div on the features, Concat with the codec block, the MLP."""
    width, codec_width = len(FEATURES), network.codec_width
    stats = network.standardisation
    inits: list[onnx.TensorProto] = []

    def const(tensor_name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), tensor_name))
        return tensor_name

    nodes = [
        helper.make_node("Sub", [INPUT_NAME, const("in_mean", stats.feature_mean)], ["centred"]),
        helper.make_node("Div", ["centred", const("in_std", stats.feature_std)], ["standard"]),
        helper.make_node("Concat", ["standard", CODEC_INPUT_NAME], ["joined"], axis=1),
    ]
    current = "joined"
    for index, layer in enumerate(network.layers):
        out = f"dense{index}"
        inputs = [current, const(f"w{index}", layer.weight), const(f"b{index}", layer.bias)]
        nodes.append(helper.make_node("Gemm", inputs, [out]))
        current = out
        if index < len(network.layers) - 1:
            nodes.append(helper.make_node(_op(network.activation), [current], [f"act{index}"]))
            current = f"act{index}"
    scale, offset = np.array(stats.target_std), np.array(stats.target_mean)
    nodes.append(helper.make_node("Mul", [current, const("out_scale", scale)], ["scaled"]))
    nodes.append(helper.make_node("Add", ["scaled", const("out_offset", offset)], ["shifted"]))
    nodes.append(helper.make_node("Identity", ["shifted"], [OUTPUT_NAME]))
    graph_inputs = [
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", width]),
        helper.make_tensor_value_info(CODEC_INPUT_NAME, TensorProto.FLOAT, ["N", codec_width]),
    ]
    return serialise_graph(nodes, graph_inputs, inits, name=name, doc=doc)


def _op(activation: Activation) -> str:
    """Return the ONNX op type of an activation."""
    return activation.value
