"""Tiny ONNX models, allowed ops only, that cost far more memory or time than their bytes (issue 12).

Each takes the [N, 6] features and returns [N, 1], so it passes every static check but the
memory estimate (which only the sparse bomb trips). Sizes below are for N rows of float32.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.engine.onnx_factory import default_weight, make_model


def _gram_tail(cat: str) -> list[onnx.NodeProto]:
    """Nodes reducing any [M, 6] tensor ``cat`` back to y [N, 1]: x @ (cat^T cat) @ w."""
    return [
        helper.make_node("Transpose", [cat], ["cat_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["cat_t", cat], ["gram"]),
        helper.make_node("MatMul", ["x", "gram"], ["xg"]),
        helper.make_node("MatMul", ["xg", "w"], ["y"]),
    ]


def sparse_bomb_model(rows: int = 225_000_000) -> onnx.ModelProto:
    """A sparse initializer of one stored value whose dense shape is [rows, 6] (5.4 GB by default).

    onnxruntime densifies it when the session is created; it is concatenated under the
    features so it cannot be pruned as unused.
    """
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "bomb"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "bomb_indices"),
        [rows, 6],
    )
    return make_model(
        [helper.make_node("Concat", ["x", "bomb"], ["cat"], axis=0), *_gram_tail("cat")],
        initializers=[numpy_helper.from_array(default_weight(), "w")],
        sparse_initializers=[sparse],
    )


def quadratic_model(copies: int = 10) -> onnx.ModelProto:
    """x @ x^T is [N, N]; ``copies`` of it stacked make [copies * N, N] (1.5 GB at N = 6,048)."""
    w = np.full((6 * copies, 1), 1e-6, dtype=np.float32)
    return make_model(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "xt"], ["square"]),
            helper.make_node("Concat", ["square"] * copies, ["tall"], axis=0),
            helper.make_node("MatMul", ["tall", "x"], ["tall_x"]),
            helper.make_node("Reshape", ["tall_x", "shape"], ["wide"]),
            helper.make_node("MatMul", ["wide", "w"], ["y"]),
        ],
        initializers=[
            numpy_helper.from_array(np.array([-1, 6 * copies], dtype=np.int64), "shape"),
            numpy_helper.from_array(w, "w"),
        ],
    )


def slow_model(products: int = 40) -> onnx.ModelProto:
    """A chain of ``products`` [N, N] x [N, N] MatMuls: minutes at N = 6,048, in 2 KB."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "xt"], ["p0"]),
    ]
    for index in range(products):
        nodes.append(helper.make_node("MatMul", [f"p{index}", "p0"], [f"p{index + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"p{products}", "x"], ["px"]),
        helper.make_node("MatMul", ["px", "w"], ["y"]),
    ]
    return make_model(nodes, initializers=[numpy_helper.from_array(default_weight(), "w")])


def doubling_model(doublings: int = 16) -> onnx.ModelProto:
    """Concat a tensor with itself ``doublings`` times: [2^doublings * N, 6] (9.5 GB at 16, N = 6,048)."""
    nodes = []
    for index in range(doublings):
        source = "x" if index == 0 else f"c{index}"
        nodes.append(helper.make_node("Concat", [source, source], [f"c{index + 1}"], axis=0))
    nodes += _gram_tail(f"c{doublings}")
    return make_model(nodes, initializers=[numpy_helper.from_array(default_weight(), "w")])


def sizes() -> dict[str, int]:
    """Return each attack's serialized size in bytes (for the issue's record)."""
    return {
        "sparse bomb": len(sparse_bomb_model().SerializeToString()),
        "quadratic": len(quadratic_model().SerializeToString()),
        "slow": len(slow_model().SerializeToString()),
        "doubling": len(doubling_model().SerializeToString()),
    }
