"""Fuzz the ONNX safety checks and scoring with graphs of allowlisted ops and random attributes.

Property: a model is scored, or refused by an EngineError in one line; never anything else.
"""

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from engine.errors import EngineError
from engine.scoring import ALLOWED_OPS, inspect_model, score_model
from tests.fuzz.refusals import assert_one_line

ELEM_TYPES = st.sampled_from(
    [TensorProto.FLOAT] * 6
    + [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.UINT8, TensorProto.INT8]
)
DIMS = st.one_of(st.integers(min_value=0, max_value=7), st.sampled_from(["N", "M", ""]))
SHAPES = st.one_of(st.none(), st.lists(DIMS, max_size=3), st.just(["N", 6]), st.just(["N", 1]))
# Attributes an op of the allowlist may carry, with plausible and implausible values.
ATTRIBUTES: dict[str, list[str]] = {
    "Gemm": ["alpha", "beta", "transA", "transB"],
    "LeakyRelu": ["alpha"],
    "Gelu": ["approximate"],
    "Clip": ["min", "max"],
    "Concat": ["axis"],
    "Squeeze": ["axes"],
    "Unsqueeze": ["axes"],
    "Flatten": ["axis"],
    "Transpose": ["perm"],
    "Cast": ["to", "saturate"],
    "Constant": ["value_float", "value_ints", "value"],
    "QuantizeLinear": ["axis", "saturate"],
    "DequantizeLinear": ["axis"],
    "Reshape": ["allowzero"],
}
ATTRIBUTE_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=12),
    st.floats(min_value=-4, max_value=4),
    st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=3),
    st.sampled_from(["none", "tanh", "bogus"]),
)
MATRICES = st.integers(min_value=1, max_value=5).flatmap(
    lambda n: st.lists(
        st.floats(min_value=-10, max_value=10, width=32), min_size=n * 6, max_size=n * 6
    ).map(lambda values: np.ascontiguousarray(np.array(values, dtype=np.float32).reshape(n, 6)))
)


def value_info(name: str, elem: int, shape: list[Any] | None) -> Any:
    """A graph input or output declaration."""
    return helper.make_tensor_value_info(name, elem, shape)


@st.composite
def interface(draw: st.DrawFn, valid: list[Any]) -> tuple[int, list[Any] | None]:
    """An element type and shape: mostly the interface the engine requires, else random."""
    if draw(st.sampled_from([True, True, True, True, False])):
        return TensorProto.FLOAT, valid
    return draw(ELEM_TYPES), draw(SHAPES)


@st.composite
def constants(draw: st.DrawFn, name: str) -> Any:
    """An initializer of a random small shape and type."""
    shape = draw(
        st.one_of(
            st.sampled_from([[6, 1], [6], [1], [], [6, 6]]),
            st.lists(st.integers(min_value=0, max_value=6), max_size=3),
        )
    )
    dtype = draw(st.sampled_from([np.float32] * 6 + [np.int64, np.uint8, np.int8, np.float64]))
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 7 - 1
    return numpy_helper.from_array(values.astype(dtype), name=name)


@st.composite
def models(draw: st.DrawFn) -> bytes:
    """A serialised model: an input, a chain of allowlisted ops, an output, random versions."""
    nodes, initializers = [], []
    current = "x"
    ops = [*sorted(ALLOWED_OPS), "Loop", "Softmax"]
    for step in range(draw(st.integers(min_value=0, max_value=4))):
        op = draw(st.sampled_from(ops))
        inputs = [current] if op != "Constant" else []
        for extra in range(draw(st.integers(min_value=0, max_value=2))):
            name = f"c{step}_{extra}"
            initializers.append(draw(constants(name)))
            inputs.append(name)
        attributes: dict[str, Any] = {}
        for attribute in draw(st.lists(st.sampled_from(ATTRIBUTES.get(op, ["alpha"])), max_size=2)):
            value = draw(ATTRIBUTE_VALUES)
            if attribute == "value":
                value = draw(constants(f"v{step}"))
            attributes[attribute] = value
        outputs = [f"h{step}"] + (["scale", "zero"] if op == "DynamicQuantizeLinear" else [])
        domain = draw(st.sampled_from([""] * 12 + ["ai.onnx", "com.microsoft"]))
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attributes))
        current = outputs[0]
    if draw(st.booleans()):  # end with a plausible head: a matrix product to one column
        head = draw(constants("head"))
        initializers.append(head)
        nodes.append(helper.make_node("MatMul", [current, "head"], ["head_out"]))
        current = "head_out"
    if draw(st.booleans()) and nodes:
        nodes[-1].output[0] = "y"
    elif current != "y":
        nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [value_info("x", *draw(interface(["N", 6])))],
        [value_info("y", *draw(interface(draw(st.sampled_from([["N"], ["N", 1]])))))],
        initializer=initializers,
    )
    opset = draw(st.one_of(st.integers(min_value=13, max_value=21), st.integers(1, 21)))
    model = helper.make_model(
        graph,
        ir_version=draw(st.one_of(st.just(10), st.integers(min_value=3, max_value=10))),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    return bytes(model.SerializeToString())


@given(models(), MATRICES)
def test_model_is_scored_or_refused_in_one_line(raw: bytes, matrix: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(raw)
        try:
            checked = inspect_model(path)
            predictions = score_model(checked, matrix)
        except EngineError as error:
            event(f"refused: {str(error).split(':')[0][:40]}")
            assert_one_line(str(error))
        else:
            event("scored")
            assert predictions.shape == (matrix.shape[0],)
            assert np.isfinite(predictions).all()
