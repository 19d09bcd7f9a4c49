"""Safety checks before onnxruntime sees a model, and scoring with it."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import ModelRejected, UsageError
from engine.hashing import sha256_file
from engine.onnxbuild import Dense, build_mlp
from engine.scoring import ALLOWED_OPS, CheckedModel, ScoringLimits, inspect_model, score_model
from tests.engine import onnx_factory as factory


@pytest.fixture
def no_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything tries to create an onnxruntime session (even if caught)."""
    calls: list[object] = []

    def tripwire(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("onnxruntime was reached")

    monkeypatch.setattr(onnxruntime, "InferenceSession", tripwire)
    yield
    assert calls == [], "onnxruntime was reached"


def rejected(call: Callable[[], object], *fragments: str) -> str:
    """Run ``call``, expect ModelRejected with a one-line message containing every fragment."""
    with pytest.raises(ModelRejected) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert len(message) <= 300
    for fragment in fragments:
        assert fragment in message, message
    return message


def features(n_rows: int = 16, *, seed: int = 0) -> np.ndarray:
    """Return a fixed float32 [n_rows, 6] matrix of plausible feature values in (0.05, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, size=(n_rows, 6)).astype(np.float32)


def saved(tmp_path: Path, model: onnx.ModelProto, name: str = "m.onnx") -> Path:
    """Save a model under tmp_path without checks."""
    return factory.save(model, tmp_path / name)


# --- good models ----------------------------------------------------------------------


def test_good_mlp_scores_like_a_numpy_forward_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    w0, b0 = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w1, b1 = rng.normal(size=(8, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(build_mlp([Dense(w0, b0), Dense(w1, b1)]))
    matrix = features(32)

    predictions = score_model(inspect_model(path), matrix)

    expected = (np.maximum(matrix @ w0 + b0, 0.0) @ w1 + b1).reshape(-1)
    assert predictions.dtype == np.float32 and predictions.shape == (32,)
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)


def test_checked_model_describes_the_file(tmp_path: Path) -> None:
    path = saved(tmp_path, factory.linear_model())

    checked = inspect_model(path)

    assert checked.path == path
    assert checked.sha256 == sha256_file(path)
    assert checked.n_bytes == path.stat().st_size
    assert (checked.ir_version, checked.opset) == (9, 17)
    assert (checked.input_name, checked.output_name) == ("x", "y")
    assert checked.op_types == ("Add", "MatMul")
    assert checked.external_files == ()
    assert "payload" not in repr(checked)


def test_scoring_twice_gives_identical_predictions(tmp_path: Path) -> None:
    checked = inspect_model(saved(tmp_path, factory.linear_model()))
    matrix = features(64)

    first, second = score_model(checked, matrix), score_model(checked, matrix)

    assert first.tobytes() == second.tobytes()
    expected = (matrix @ factory.default_weight() + 0.5).reshape(-1)
    np.testing.assert_allclose(first, expected, rtol=1e-6)


def test_int8_dynamically_quantised_model_is_accepted_and_scores(tmp_path: Path) -> None:
    weight = factory.default_weight()
    checked = inspect_model(saved(tmp_path, factory.int8_model(weight, bias=0.5)))
    matrix = features(64)

    predictions = score_model(checked, matrix)

    assert {"DynamicQuantizeLinear", "MatMulInteger", "Cast"} <= set(checked.op_types)
    np.testing.assert_allclose(predictions, (matrix @ weight + 0.5).reshape(-1), atol=0.05)


def test_int8_prediction_depends_on_the_other_rows_in_the_batch(tmp_path: Path) -> None:
    checked = inspect_model(saved(tmp_path, factory.int8_model(factory.default_weight())))
    row = features(1)
    with_outlier = np.ascontiguousarray(np.vstack([row, np.full((1, 6), 50.0, np.float32)]))

    alone = score_model(checked, row)[0]
    in_batch = score_model(checked, with_outlier)[0]

    # The batch-wide quantisation scale grows with the outlier: row 0 changes.
    assert alone != in_batch


def test_initializer_listed_as_graph_input_is_not_counted_as_an_input(tmp_path: Path) -> None:
    model = factory.linear_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [6, 1]))

    checked = inspect_model(saved(tmp_path, model))

    assert checked.input_name == "x"


# --- external data --------------------------------------------------------------------


def test_external_data_beside_the_model_is_accepted_and_embedded(tmp_path: Path) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    data = tmp_path / "w.bin"

    checked = inspect_model(path)
    data.unlink()  # onnxruntime gets bytes: it must not need the file any more
    predictions = score_model(checked, features(8))

    assert checked.external_files == ("w.bin",)
    assert checked.n_bytes == path.stat().st_size + 28
    embedded = onnx.load_model_from_string(checked.payload)
    assert all(t.data_location == TensorProto.DEFAULT for t in embedded.graph.initializer)
    expected = (features(8) @ factory.default_weight() + 0.5).reshape(-1)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)


def test_external_data_matching_the_registry_hash_is_accepted(tmp_path: Path) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")

    checked = inspect_model(path, external_data={"w.bin": sha256_file(tmp_path / "w.bin")})

    assert checked.external_files == ("w.bin",)


def test_symlink_to_a_file_in_the_same_folder_is_accepted(tmp_path: Path) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx", location="real.bin")
    (tmp_path / "w.bin").symlink_to("real.bin")
    factory.relocate_external(path, "w.bin")

    assert inspect_model(path).external_files == ("w.bin",)


@pytest.mark.parametrize(
    "location",
    ["../../etc/passwd", "sub/w.bin", "ABSOLUTE", "..", ".", "", "sub\\w.bin", "w.bin\x00.txt"],
)
def test_external_location_that_is_not_a_plain_name_is_rejected(
    tmp_path: Path, location: str, no_onnxruntime: None
) -> None:
    folder = tmp_path / "models"
    path = factory.save_external(factory.linear_model(), folder / "m.onnx")
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes((folder / "w.bin").read_bytes())
    if location == "ABSOLUTE":
        location = str(folder / "w.bin")
    factory.relocate_external(path, location)

    rejected(
        lambda: inspect_model(path),
        "is not a plain file name in the model's folder",
        repr(location),
    )


def test_external_symlink_pointing_outside_the_folder_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    folder = tmp_path / "models"
    path = factory.save_external(factory.linear_model(), folder / "m.onnx")
    outside = tmp_path / "secret.bin"
    (folder / "w.bin").rename(outside)
    (folder / "w.bin").symlink_to(outside)

    rejected(lambda: inspect_model(path), "'w.bin'", "resolves outside the model's folder")


def test_missing_external_file_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    (tmp_path / "w.bin").unlink()

    rejected(lambda: inspect_model(path), "'w.bin'", "not found in the model's folder")


def test_external_file_that_is_a_directory_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    (tmp_path / "w.bin").unlink()
    (tmp_path / "w.bin").mkdir()

    rejected(lambda: inspect_model(path), "'w.bin'", "not a regular file")


def test_external_file_not_listed_in_the_registry_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")

    rejected(
        lambda: inspect_model(path, external_data={"other.bin": "0" * 64}),
        "'w.bin'",
        "not listed in the registry",
    )


def test_external_file_with_the_wrong_hash_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")

    rejected(
        lambda: inspect_model(path, external_data={"w.bin": "0" * 64}),
        "'w.bin'",
        "does not match its registry sha256",
    )


def test_constant_value_pointing_outside_the_folder_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    value = numpy_helper.from_array(np.ones((1, 6), np.float32), "shift")
    factory.point_external(value, "../secret.bin")
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 24)
    folder = tmp_path / "models"
    folder.mkdir()
    model = factory.make_model(
        [
            helper.make_node("Constant", [], ["c"], value=value),
            helper.make_node("Add", ["x", "c"], ["shifted"]),
            helper.make_node("MatMul", ["shifted", "w"], ["y"]),
        ],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )

    rejected(
        lambda: inspect_model(saved(folder, model)), "'../secret.bin'", "not a plain file name"
    )


def test_constant_value_in_an_external_file_beside_the_model_is_embedded(tmp_path: Path) -> None:
    shift = np.array([[1, 2, 3, 4, 5, 6]], np.float32)
    (tmp_path / "c.bin").write_bytes(b"pad!" + shift.tobytes())
    value = numpy_helper.from_array(shift, "shift")
    factory.point_external(value, "c.bin", offset=4, length=24)
    model = factory.make_model(
        [
            helper.make_node("Constant", [], ["c"], value=value),
            helper.make_node("Add", ["x", "c"], ["shifted"]),
            helper.make_node("MatMul", ["shifted", "w"], ["y"]),
        ],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )
    checked = inspect_model(saved(tmp_path, model))
    (tmp_path / "c.bin").unlink()

    predictions = score_model(checked, features(4))

    assert checked.external_files == ("c.bin",)
    expected = ((features(4) + shift) @ factory.default_weight()).reshape(-1)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)


def test_model_path_relative_to_the_working_directory_finds_its_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)

    checked = inspect_model(Path("m.onnx"))

    assert checked.external_files == ("w.bin",)
    assert score_model(checked, features(2)).shape == (2,)


def sparse_model(tmp_path: Path, location: str) -> Path:
    """Save a model whose weight is a sparse initializer with external values."""
    values = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "w")
    (tmp_path / "values.bin").write_bytes(values.raw_data)
    factory.point_external(values, location, length=12)
    indices = numpy_helper.from_array(np.array([0, 2, 5], np.int64), "w_indices")
    sparse = helper.make_sparse_tensor(values, indices, [6, 1])
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], sparse_initializers=[sparse]
    )
    return saved(tmp_path, model)


def test_sparse_initializer_with_external_data_is_embedded_and_scores(tmp_path: Path) -> None:
    checked = inspect_model(sparse_model(tmp_path, "values.bin"))
    matrix = features(4)

    predictions = score_model(checked, matrix)

    np.testing.assert_allclose(
        predictions, matrix[:, 0] + 2 * matrix[:, 2] + 3 * matrix[:, 5], rtol=1e-6
    )


def test_sparse_initializer_pointing_outside_the_folder_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    rejected(
        lambda: inspect_model(sparse_model(tmp_path, "/etc/passwd")),
        "'/etc/passwd'",
        "not a plain file name",
    )


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ({"offset": "20", "length": "24"}, "runs past the end"),
        ({"offset": "100"}, "runs past the end"),
        ({"offset": "-1"}, "not a non-negative integer"),
        ({"length": "1e3"}, "not a non-negative integer"),
        ({"basepath": "/etc"}, "unknown external data key 'basepath'"),
    ],
)
def test_insane_external_data_entries_are_rejected(
    tmp_path: Path, entries: dict[str, str], fragment: str, no_onnxruntime: None
) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    model = onnx.load_model(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    kept = [(e.key, e.value) for e in tensor.external_data if e.key not in entries]
    del tensor.external_data[:]
    for key, value in [*kept, *entries.items()]:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value

    rejected(lambda: inspect_model(saved(tmp_path, model)), fragment)


def test_many_tensors_sharing_the_same_external_bytes_cannot_exceed_the_cap(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    (tmp_path / "w.bin").write_bytes(b"\x00" * 4096)
    model = factory.linear_model()
    for index in range(8):
        tensor = numpy_helper.from_array(np.zeros(1024, np.float32), f"copy{index}")
        factory.point_external(tensor, "w.bin")
        model.graph.initializer.append(tensor)
    path = saved(tmp_path, model)
    cap = path.stat().st_size + 4096 + 64

    rejected(
        lambda: inspect_model(path, limits=ScoringLimits(max_bytes=cap)),
        "external data references add up to",
    )


def test_tensor_with_external_entries_but_not_marked_external_is_rejected(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    model = factory.linear_model()
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", "w.bin"

    rejected(lambda: inspect_model(saved(tmp_path, model)), "'w'", "not marked as external")


# --- domains, ops, structure ----------------------------------------------------------


def test_custom_opset_domain_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [helper.make_node("Backdoor", ["x"], ["y"], domain="com.evil")],
        extra_opsets=[("com.evil", 1)],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "'com.evil'", "not allowed")


def test_node_in_a_custom_domain_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model([helper.make_node("Backdoor", ["x"], ["y"], domain="com.evil")])

    rejected(
        lambda: inspect_model(saved(tmp_path, model)), "'Backdoor'", "'com.evil'", "not allowed"
    )


def test_microsoft_contrib_domain_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")],
        extra_opsets=[("com.microsoft", 1)],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "'com.microsoft'")


def test_op_outside_the_allowlist_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    model = factory.make_model(
        [helper.make_node("TopK", ["x", "k"], ["y", "idx"])],
        initializers=[k],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "op 'TopK' is not on the allowlist")


def test_loop_with_a_subgraph_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )
    model = factory.make_model([helper.make_node("Loop", ["", ""], [], body=body)])

    rejected(lambda: inspect_model(saved(tmp_path, model)), "op 'Loop' is not on the allowlist")


def test_subgraph_hidden_in_an_allowed_node_is_still_walked(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    body = helper.make_graph(
        [helper.make_node("Scan", [], [])],
        "hidden",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [])],
    )
    model = factory.linear_model()
    model.graph.node[0].attribute.append(helper.make_attribute("payload", body))

    rejected(lambda: inspect_model(saved(tmp_path, model)), "op 'Scan' is not on the allowlist")


def test_model_local_functions_are_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.linear_model()
    model.functions.append(
        helper.make_function(
            "local", "F", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])], []
        )
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "functions are not allowed")


def test_opset_over_the_maximum_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.linear_model()
    model.opset_import[0].version = 22

    rejected(lambda: inspect_model(saved(tmp_path, model)), "opset 22", "1..21")


def test_allowlist_holds_only_plain_arithmetic_and_quantisation_ops() -> None:
    assert {"Loop", "If", "Scan", "TopK", "Log"}.isdisjoint(ALLOWED_OPS)
    assert {"Gemm", "MatMulInteger", "DynamicQuantizeLinear", "Constant"} <= ALLOWED_OPS


# --- file-level checks ------------------------------------------------------------------


def test_model_over_the_size_cap_is_rejected_before_reading(
    tmp_path: Path, no_onnxruntime: None
) -> None:
    path = saved(tmp_path, factory.linear_model())

    rejected(
        lambda: inspect_model(path, limits=ScoringLimits(max_bytes=100)), "over the 100 bytes cap"
    )


def test_external_data_counts_towards_the_size_cap(tmp_path: Path, no_onnxruntime: None) -> None:
    path = factory.save_external(factory.linear_model(), tmp_path / "m.onnx")
    (tmp_path / "w.bin").write_bytes(b"\x00" * 5000)
    cap = path.stat().st_size + 1000

    rejected(
        lambda: inspect_model(path, limits=ScoringLimits(max_bytes=cap)),
        "with its external data",
        "cap",
    )


def test_size_message_uses_mib_for_large_sizes(tmp_path: Path, no_onnxruntime: None) -> None:
    path = tmp_path / "big.onnx"
    with path.open("wb") as handle:
        handle.truncate(17 * 1024 * 1024 + 200 * 1024)  # sparse: nothing is written

    rejected(lambda: inspect_model(path), "model is 17.2 MiB, over the 16 MiB cap")


def test_truncated_model_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    data = build_mlp(
        [
            Dense(np.ones((6, 4), np.float32), np.zeros(4, np.float32)),
            Dense(np.ones((4, 1)), np.zeros(1)),
        ]
    )
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])

    rejected(lambda: inspect_model(path), "not a valid ONNX file")


@pytest.mark.parametrize("data", [b"\xff" * 64, b"this is not an onnx model\n", b""])
def test_garbage_bytes_are_rejected(tmp_path: Path, data: bytes, no_onnxruntime: None) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(data)

    rejected(lambda: inspect_model(path), "not a valid ONNX file")


def test_missing_model_file_is_rejected(tmp_path: Path) -> None:
    rejected(lambda: inspect_model(tmp_path / "nope.onnx"), "'nope.onnx'", "not found")


def test_directory_instead_of_a_model_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()

    rejected(lambda: inspect_model(tmp_path / "dir.onnx"), "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_instead_of_a_model_file_is_rejected_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.onnx")

    rejected(lambda: inspect_model(tmp_path / "pipe.onnx"), "not a regular file")


def test_checker_failure_is_one_line(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model([helper.make_node("Identity", ["ghost"], ["y"])])

    rejected(lambda: inspect_model(saved(tmp_path, model)), "ONNX checker:", "ghost")


# --- interface --------------------------------------------------------------------------


def test_input_with_five_features_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        inputs=[factory.features(width=5)],
        initializers=[numpy_helper.from_array(np.ones((5, 1), np.float32), "w")],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "input 'x' has 5 features, expected 6")


def test_two_inputs_are_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [
            helper.make_node("Add", ["x", "x2"], ["s"]),
            helper.make_node("MatMul", ["s", "w"], ["y"]),
        ],
        inputs=[factory.features("x"), factory.features("x2")],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )

    rejected(
        lambda: inspect_model(saved(tmp_path, model)), "model has 2 inputs, expected exactly one"
    )


def test_integer_input_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["xf", "w"], ["y"]),
        ],
        inputs=[factory.features(elem_type=TensorProto.INT64)],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "input 'x'", "INT64", "expected FLOAT")


def test_rank_three_input_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6])],
    )

    rejected(lambda: inspect_model(saved(tmp_path, model)), "input 'x' has rank 3")


def test_output_with_two_columns_is_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        outputs=[factory.scores(shape=("N", 2))],
        initializers=[numpy_helper.from_array(np.ones((6, 2), np.float32), "w")],
    )

    rejected(
        lambda: inspect_model(saved(tmp_path, model)),
        "output 'y' has shape ['N', 2]",
        "expected [N] or [N, 1]",
    )


def test_two_outputs_are_rejected(tmp_path: Path, no_onnxruntime: None) -> None:
    model = factory.linear_model()
    model.graph.output.append(factory.scores("xw"))

    rejected(lambda: inspect_model(saved(tmp_path, model)), "model has 2 outputs")


def test_rank_one_output_is_accepted(tmp_path: Path) -> None:
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        outputs=[factory.scores(shape=("N",))],
        initializers=[numpy_helper.from_array(np.ones(6, np.float32), "w")],
    )

    predictions = score_model(inspect_model(saved(tmp_path, model)), features(3))

    np.testing.assert_allclose(predictions, features(3).sum(axis=1), rtol=1e-6)


# --- scoring --------------------------------------------------------------------------


def test_non_finite_predictions_are_rejected_with_count_and_first_row(tmp_path: Path) -> None:
    checked = inspect_model(saved(tmp_path, factory.nan_on_zero_model()))
    matrix = features(10)
    matrix[3, 1] = 0.0
    matrix[7, 4] = 0.0

    rejected(
        lambda: score_model(checked, matrix),
        "model produced 2 non-finite predictions out of 10 (first at row 3)",
    )


def test_onnxruntime_failure_while_scoring_is_one_line(tmp_path: Path) -> None:
    model = factory.linear_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    checked = inspect_model(saved(tmp_path, model))

    rejected(lambda: score_model(checked, features(3)), "onnxruntime failed while scoring")


def test_onnxruntime_failure_while_loading_is_one_line(tmp_path: Path) -> None:
    # Passes onnx's checker (it does not check dtypes without full_check); onnxruntime refuses it.
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        initializers=[numpy_helper.from_array(np.ones((6, 1), np.float64), "w")],
    )
    checked = inspect_model(saved(tmp_path, model))

    rejected(lambda: score_model(checked, features(3)), "onnxruntime cannot load the model")


def test_output_shape_is_checked_at_run_time(tmp_path: Path) -> None:
    # Declares [N, 1] but actually returns [N, 6].
    model = factory.make_model([helper.make_node("Identity", ["x"], ["y"])])
    checked = inspect_model(saved(tmp_path, model))

    rejected(
        lambda: score_model(checked, features(4)),
        "model output has shape",
        "expected [4] or [4, 1]",
    )


def test_model_bytes_that_look_like_the_ort_format_are_still_read_as_onnx(tmp_path: Path) -> None:
    # Bytes 4..8 of this ModelProto spell "ORTM", the ORT flatbuffer format's identifier;
    # without pinning the load format onnxruntime would try to parse it as a flatbuffer.
    model = factory.linear_model()
    model.producer_name = "ORTM-lookalike"
    checked = inspect_model(saved(tmp_path, model))
    assert checked.payload[4:8] == b"ORTM"

    predictions = score_model(checked, features(2))

    np.testing.assert_allclose(
        predictions, (features(2) @ factory.default_weight() + 0.5).reshape(-1), rtol=1e-6
    )


@pytest.mark.parametrize(
    "matrix",
    [
        np.zeros((4, 6), np.float64),
        np.zeros((4, 5), np.float32),
        np.zeros(6, np.float32),
        np.zeros((0, 6), np.float32),
        np.asfortranarray(np.zeros((4, 6), np.float32)),
        [[0.0] * 6],
    ],
    ids=["float64", "width5", "rank1", "empty", "fortran", "list"],
)
def test_bad_feature_matrix_is_a_usage_error(tmp_path: Path, matrix: np.ndarray) -> None:
    checked = inspect_model(saved(tmp_path, factory.linear_model()))

    with pytest.raises(UsageError):
        score_model(checked, matrix)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 0}, {"max_opset": 0}, {"intra_op_threads": 0}, {"inter_op_threads": -1}],
)
def test_nonsensical_limits_are_a_usage_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        ScoringLimits(**kwargs)


def test_checked_model_is_frozen(tmp_path: Path) -> None:
    checked: CheckedModel = inspect_model(saved(tmp_path, factory.linear_model()))

    with pytest.raises(AttributeError):
        checked.opset = 1  # type: ignore[misc]
