"""Safety checks on untrusted ONNX models, and scoring them: the engine's only onnxruntime importer.

Models arrive from pull requests, so ``inspect_model`` reads a model without trusting
it: size caps before reading, a closed op allowlist in the default ONNX domain only,
external-data locations that must be plain file names inside the model's folder, and
the [N, 6] float32 -> [N] / [N, 1] float32 interface. External data is then embedded
from the very bytes that were checked and hashed, and onnxruntime is given those bytes:
it never opens a file itself (given bytes, it would resolve external data against the
process's working directory).

``score_model`` runs the whole feature matrix through the model in ONE call, in the
given row order. int8 models quantise their input with ``DynamicQuantizeLinear``, whose
scale and zero point are computed over the whole batch, so one row's prediction depends
on every other row in the batch. Scoring the whole cache at once, in its fixed order,
with fixed thread counts and sequential execution, makes predictions reproducible.

A model also has a memory budget (``ScoringLimits.max_memory_bytes``): ``inspect_model``
refuses one whose initializers and constants would exceed it once dense (a sparse
initializer of a few bytes can stand for gigabytes that onnxruntime allocates at load),
and ``engine.budget`` holds the session creation and run to it, and to a wall-time limit.
"""

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, ValueInfoProto

from engine.budget import ScoringLimits as ScoringLimits  # re-exported: its old home
from engine.errors import ModelRejected, UsageError
from engine.features import FEATURES
from engine.hashing import sha256_bytes
from engine.onnxbuild import CODEC_INPUT_NAME

CODEC_INPUT = CODEC_INPUT_NAME
ALLOWED_OPS: frozenset[str] = frozenset(
    {
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Erf",
        "Gelu",
        "Clip",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Reshape",
        "Flatten",
        "Identity",
        "Transpose",
        "Cast",
        "Constant",
        "DynamicQuantizeLinear",
        "QuantizeLinear",
        "DequantizeLinear",
        "MatMulInteger",
    }
)

_DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
# "checksum" is informational (onnxruntime ignores it); anything else is refused rather
# than guessed at ("basepath" would redirect where a location is resolved).
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DIGITS = re.compile(r"[0-9]{1,19}")
_MIB = 1024 * 1024
_GIB = 1024 * _MIB
_MAX_MESSAGE = 300
# Bytes per element by ONNX data type; unknown or variable-size types count as 8.
_ELEMENT_BYTES: dict[int, int] = {
    TensorProto.FLOAT: 4,
    TensorProto.UINT8: 1,
    TensorProto.INT8: 1,
    TensorProto.UINT16: 2,
    TensorProto.INT16: 2,
    TensorProto.INT32: 4,
    TensorProto.INT64: 8,
    TensorProto.BOOL: 1,
    TensorProto.FLOAT16: 2,
    TensorProto.DOUBLE: 8,
    TensorProto.UINT32: 4,
    TensorProto.UINT64: 8,
    TensorProto.COMPLEX64: 8,
    TensorProto.COMPLEX128: 16,
    TensorProto.BFLOAT16: 2,
}
# Opening a FIFO blocks unless non-blocking; on regular files the flag changes nothing.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class CheckedModel:
    """A model that passed every check, with its external data embedded in ``payload``."""

    path: Path
    sha256: str
    n_bytes: int
    ir_version: int
    opset: int
    input_name: str
    output_name: str
    op_types: tuple[str, ...]
    external_files: tuple[str, ...]
    payload: bytes = field(repr=False)
    codec_input: str | None = None
    codec_width: int = 0


@dataclass(frozen=True)
class _ExternalRef:
    """Where one tensor's bytes live: a plain file name, an offset and an optional length."""

    location: str
    offset: int
    length: int | None


def inspect_model(
    path: Path,
    *,
    limits: ScoringLimits = ScoringLimits(),
    external_data: Mapping[str, str] | None = None,
    codec_width: int | None = None,
    scored: bool = True,
    features_input: str | None = None,
    codec_input: str | None = None,
    output_name: str | None = None,
) -> CheckedModel:
    """Check an untrusted ONNX file without running it; every problem is a one-line ModelRejected.

    ``external_data`` maps each allowed external file name to its sha256 (from the
    registry); when None, any plain file name in the model's own folder is allowed.
    ``codec_width`` (from the registry row) declares a codec-aware model: it must then have
    a second float32 input of shape [N, codec_width], named ``codec_input`` (default
    ``codec``). ``features_input`` and ``output_name``, when declared (``engine.declaration``),
    must be the graph's features input and its output. ``scored`` False is for a model the
    engine never runs (a row not judged, such as a frame model): the checks that protect
    onnxruntime (op allowlist, input and output shapes) are skipped, the file, size, opset,
    external-data and hash checks stay; input and output names are then empty.
    """
    path = Path(path)
    raw = _read_model_file(path, limit=limits.max_bytes)
    model = _parse(raw)
    opset = _check_opsets(model, max_opset=limits.max_opset)
    if model.functions:
        raise _rejected("model-local functions are not allowed")
    if model.training_info:
        raise _rejected("training_info graphs are not allowed")
    graphs = list(_graphs(model.graph))
    op_types = _check_nodes(graphs) if scored else {n.op_type for g in graphs for n in g.node}
    _check_dense_size(graphs, budget=limits.max_memory_bytes)
    tensors = [tensor for graph in graphs for tensor in _graph_tensors(graph)]
    external = [(tensor, _external_ref(tensor)) for tensor in tensors if _is_external(tensor)]
    folder = path.parent.resolve()
    names = sorted({ref.location for _, ref in external})
    files = {name: _locate_external(folder, name, external_data=external_data) for name in names}
    sizes = {name: _regular_size(file, name) for name, file in files.items()}
    n_bytes = len(raw) + sum(sizes.values())
    if n_bytes > limits.max_bytes:
        raise _rejected(
            f"model is {_size(n_bytes)} with its external data, over the {_size(limits.max_bytes)} cap"
        )
    _check_bounds([ref for _, ref in external], sizes, cap=limits.max_bytes)
    input_name, codec_name, output = "", None, ""
    if scored:
        input_name, codec_name = _check_inputs(
            model.graph,
            codec_width=codec_width,
            features_input=features_input,
            codec_input=codec_input or CODEC_INPUT,
        )
        output = _check_output(model.graph, declared=output_name)
    contents = {name: _read_external(files[name], sizes[name], name) for name in names}
    if external_data is not None:
        for name in names:
            _check_hash(name, contents[name], expected=external_data[name])
    for tensor, ref in external:
        _embed(tensor, ref, contents[ref.location])
    _run_checker(model)
    return CheckedModel(
        path=path,
        sha256=sha256_bytes(raw),
        n_bytes=n_bytes,
        ir_version=model.ir_version,
        opset=opset,
        input_name=input_name,
        output_name=output,
        op_types=tuple(sorted(op_types)),
        external_files=tuple(names),
        payload=model.SerializeToString(),
        codec_input=codec_name,
        codec_width=codec_width or 0,
    )


def external_data_names(path: Path, *, limits: ScoringLimits = ScoringLimits()) -> tuple[str, ...]:
    """Return the plain file names of the external data a model's graph reads (sorted).

    For provenance: nothing is embedded or hashed, and a file that is not a readable,
    well-formed ONNX model (or names unsafe locations) reads none, so () comes back.
    """
    try:
        model = _parse(_read_model_file(Path(path), limit=limits.max_bytes))
        names = {
            _external_ref(tensor).location
            for graph in _graphs(model.graph)
            for tensor in _graph_tensors(graph)
            if _is_external(tensor)
        }
    except ModelRejected:
        return ()
    return tuple(sorted(names))


@dataclass(frozen=True)
class GraphInput:
    """One real (non-constant) graph input: its name, element type and dims ('?' if symbolic)."""

    name: str
    elem_type: int
    dims: tuple[str, ...]


def read_graph_inputs(
    path: Path, *, limits: ScoringLimits = ScoringLimits()
) -> tuple[GraphInput, ...]:
    """Read a model's graph inputs from its header, under the size cap, without running it.

    Only the ONNX protobuf is decoded (no external data, no onnxruntime); every problem is a
    one-line ModelRejected. Inputs without a tensor type come back with rank 0.
    """
    model = _parse(_read_model_file(Path(path), limit=limits.max_bytes))
    graph = model.graph
    constant_names = {tensor.name for tensor in graph.initializer}
    constant_names.update(sparse.values.name for sparse in graph.sparse_initializer)
    found = []
    for value in graph.input:
        if value.name in constant_names:
            continue
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        dims: tuple[str, ...] = ()
        if tensor is not None and tensor.HasField("shape"):
            dims = tuple(
                str(dim.dim_value) if dim.HasField("dim_value") else "?" for dim in tensor.shape.dim
            )
        found.append(
            GraphInput(
                name=str(value.name)[:_MAX_MESSAGE],
                elem_type=0 if tensor is None else int(tensor.elem_type),
                dims=dims,
            )
        )
    return tuple(found)


def score_model(
    model: CheckedModel,
    matrix: np.ndarray,
    *,
    codec: np.ndarray | None = None,
    limits: ScoringLimits = ScoringLimits(),
    on_phase: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Score a float32 C-contiguous [N, 6] matrix in one onnxruntime call; return float32 [N].

    A codec-aware model also needs its codec block ``codec`` [N, K], row for row.
    ``on_phase`` is told ``"loading"`` before the session is created and ``"scoring"``
    before it runs (``engine.budget`` names the phase a model ran out of budget in).
    This runs in the calling process with no budget: ``engine.budget`` applies one.
    """
    _check_matrix(matrix, width=len(FEATURES), what="features")
    feeds = {model.input_name: matrix}
    if model.codec_input is not None:
        if codec is None:
            raise UsageError(f"model {model.path.name} is codec-aware: it needs a codec block")
        _check_matrix(codec, width=model.codec_width, what="codec block")
        if codec.shape[0] != matrix.shape[0]:
            raise UsageError(
                f"codec block has {codec.shape[0]} rows, features have {matrix.shape[0]}"
            )
        feeds[model.codec_input] = codec
    elif codec is not None:
        raise UsageError(f"model {model.path.name} takes no codec block")
    options = ort.SessionOptions()
    options.intra_op_num_threads = limits.intra_op_threads
    options.inter_op_num_threads = limits.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # onnxruntime's default level, pinned so a change of default cannot change results.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors come back as exceptions; do not also print them (or warnings) to stderr.
    options.log_severity_level = 4
    # Never let crafted bytes be taken for the flatbuffer ORT format.
    options.add_session_config_entry("session.load_model_format", "ONNX")
    # Any exception from onnxruntime is the model's fault: report it in one line.
    if on_phase is not None:
        on_phase("loading")
    try:
        session = ort.InferenceSession(
            model.payload, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise _rejected(f"onnxruntime cannot load the model: {error}") from None
    if on_phase is not None:
        on_phase("scoring")
    try:
        outputs = session.run([model.output_name], feeds)
    except Exception as error:
        raise _rejected(f"onnxruntime failed while scoring: {error}") from None
    return _check_predictions(outputs[0], n_rows=matrix.shape[0])


def _read_model_file(path: Path, *, limit: int) -> bytes:
    """Return the model file's bytes after checking it is a regular file under the cap."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _rejected(f"model file {_quote(path.name)} not found") from None
    except OSError as error:
        raise _rejected(f"model file {_quote(path.name)} cannot be read: {error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _rejected(f"model path {_quote(path.name)} is not a regular file")
    if info.st_size > limit:
        raise _rejected(f"model is {_size(info.st_size)}, over the {_size(limit)} cap")
    return _read_exactly(path, info.st_size, label=f"model file {_quote(path.name)}")


def _read_exactly(path: Path, size: int, *, label: str, flags: int = 0) -> bytes:
    """Read a regular file that must still have the size it had when checked."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS | flags)
    except OSError as error:
        raise _rejected(f"{label} cannot be opened: {error}") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            raise _rejected(f"{label} changed while it was being checked")
        data = handle.read(size + 1)
    if len(data) != size:
        raise _rejected(f"{label} changed while it was being checked")
    return data


def _parse(raw: bytes) -> ModelProto:
    """Decode ModelProto bytes without touching any external data."""
    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError) as error:
        raise _rejected(f"not a valid ONNX file: {error}") from None
    if model.ir_version < 1:
        raise _rejected("not a valid ONNX file: no ir_version")
    if not model.HasField("graph"):
        raise _rejected("not a valid ONNX file: no graph")
    return model


def _check_opsets(model: ModelProto, *, max_opset: int) -> int:
    """Allow only the default ONNX domain at a version up to ``max_opset``; return that version."""
    if not model.opset_import:
        raise _rejected("model declares no opset")
    versions: list[int] = []
    for entry in model.opset_import:
        if entry.domain not in _DEFAULT_DOMAINS:
            raise _rejected(
                f"opset domain {_quote(entry.domain)} is not allowed, only the default ONNX domain"
            )
        if not 1 <= entry.version <= max_opset:
            raise _rejected(f"opset {entry.version} is outside the allowed range 1..{max_opset}")
        versions.append(entry.version)
    if len(versions) > 1:
        raise _rejected("model imports the default ONNX domain more than once")
    return versions[0]


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """Yield a graph and every subgraph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in _attribute_graphs(attribute):
                yield from _graphs(subgraph)


def _attribute_graphs(attribute: AttributeProto) -> list[GraphProto]:
    """Return the subgraphs an attribute carries (``g`` and ``graphs``)."""
    found = list(attribute.graphs)
    if attribute.HasField("g"):
        found.insert(0, attribute.g)
    return found


def _check_nodes(graphs: list[GraphProto]) -> set[str]:
    """Reject any node outside the default domain or the op allowlist; return the op types."""
    op_types: set[str] = set()
    for graph in graphs:
        for node in graph.node:
            if node.domain not in _DEFAULT_DOMAINS:
                raise _rejected(
                    f"op {_quote(node.op_type)} in domain {_quote(node.domain)} is not allowed, "
                    "only the default ONNX domain"
                )
            if node.op_type not in ALLOWED_OPS:
                raise _rejected(f"op {_quote(node.op_type)} is not on the allowlist")
            op_types.add(node.op_type)
    return op_types


def _check_dense_size(graphs: list[GraphProto], *, budget: int) -> None:
    """Refuse a model whose stored tensors would not fit the memory budget once dense.

    onnxruntime densifies sparse initializers and sparse Constant values when it loads a
    model, so a few bytes on disk can stand for gigabytes; the sizes are computed from the
    declared shapes alone, before anything is allocated.
    """
    total, largest, largest_name = 0, 0, ""
    for name, n_bytes in _dense_tensors(graphs):
        total += n_bytes
        if n_bytes > largest:
            largest, largest_name = n_bytes, name
    if total > budget:
        raise _rejected(
            f"tensor {_quote(largest_name)} is {_size(largest)} when dense; initializers and "
            f"constants add up to {_size(total)}, over the {_size(budget)} memory budget"
        )


def _dense_tensors(graphs: list[GraphProto]) -> Iterator[tuple[str, int]]:
    """Yield (name, dense bytes) of every initializer, sparse initializer and tensor attribute."""
    for graph in graphs:
        for tensor in graph.initializer:
            yield tensor.name, _dense_bytes(tensor.name, tensor.dims, tensor.data_type)
        for sparse in graph.sparse_initializer:
            yield (
                sparse.values.name,
                _dense_bytes(sparse.values.name, sparse.dims, sparse.values.data_type),
            )
        for node in graph.node:
            for attribute in node.attribute:
                label = node.name or (node.output[0] if node.output else node.op_type)
                tensors = list(attribute.tensors)
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                for tensor in tensors:
                    yield label, _dense_bytes(label, tensor.dims, tensor.data_type)
                sparse_tensors = list(attribute.sparse_tensors)
                if attribute.HasField("sparse_tensor"):
                    sparse_tensors.append(attribute.sparse_tensor)
                for sparse in sparse_tensors:
                    yield label, _dense_bytes(label, sparse.dims, sparse.values.data_type)


def _dense_bytes(name: str, dims: Iterable[int], data_type: int) -> int:
    """Return a tensor's dense size from its declared shape (a negative dimension is refused)."""
    count = 1
    for dim in dims:
        if dim < 0:
            raise _rejected(f"tensor {_quote(name)} declares a negative dimension {dim}")
        count *= dim
    return count * _ELEMENT_BYTES.get(data_type, 8)


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Yield every tensor of one graph that could carry data: initializers and node attributes.

    Subgraphs are visited by the caller through ``_graphs``. Sparse tensors count twice
    (values and indices); onnx's own ``load_external_data_for_model`` skips them.
    """
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            sparse_tensors = list(attribute.sparse_tensors)
            if attribute.HasField("sparse_tensor"):
                sparse_tensors.insert(0, attribute.sparse_tensor)
            for sparse in sparse_tensors:
                yield sparse.values
                yield sparse.indices


def _is_external(tensor: TensorProto) -> bool:
    """Return whether a tensor keeps its data in a file; stray external entries are refused."""
    if tensor.data_location == TensorProto.EXTERNAL:
        return True
    if tensor.external_data:
        raise _rejected(
            f"tensor {_quote(tensor.name)} lists external data but is not marked as external"
        )
    return False


def _external_ref(tensor: TensorProto) -> _ExternalRef:
    """Parse and validate one tensor's external_data entries (keys, plain name, numbers)."""
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise _rejected(
                f"tensor {_quote(tensor.name)} has unknown external data key {_quote(entry.key)}"
            )
        if entry.key in entries:
            raise _rejected(
                f"tensor {_quote(tensor.name)} repeats external data key {_quote(entry.key)}"
            )
        entries[entry.key] = entry.value
    location = entries.get("location", "")
    if not _is_plain_name(location):
        raise _rejected(
            f"external data location {_quote(location)} is not a plain file name in the model's folder"
        )
    numbers: dict[str, int] = {}
    for key in ("offset", "length"):
        if key in entries:
            if not _DIGITS.fullmatch(entries[key]):
                raise _rejected(
                    f"tensor {_quote(tensor.name)} has external data {key} {_quote(entries[key])}, "
                    "not a non-negative integer"
                )
            numbers[key] = int(entries[key])
    return _ExternalRef(
        location=location, offset=numbers.get("offset", 0), length=numbers.get("length")
    )


def _is_plain_name(location: str) -> bool:
    """Return whether a location is a bare file name: no separators, drive, NUL or dot names."""
    if location in ("", ".", ".."):
        return False
    if any(char in location for char in "/\\:\x00"):
        return False
    return not os.path.isabs(location)


def _locate_external(folder: Path, name: str, *, external_data: Mapping[str, str] | None) -> Path:
    """Return the resolved path of an external file that must be listed and live in ``folder``."""
    if external_data is not None and name not in external_data:
        raise _rejected(f"external data file {_quote(name)} is not listed in the registry")
    try:
        resolved = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise _rejected(
            f"external data file {_quote(name)} not found in the model's folder"
        ) from None
    if resolved.parent != folder:
        raise _rejected(f"external data file {_quote(name)} resolves outside the model's folder")
    return resolved


def _regular_size(path: Path, name: str) -> int:
    """Return the size of an external file that must be a regular file."""
    try:
        info = path.stat()
    except OSError as error:
        raise _rejected(f"external data file {_quote(name)} cannot be read: {error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _rejected(f"external data file {_quote(name)} is not a regular file")
    return info.st_size


def _check_bounds(refs: list[_ExternalRef], sizes: Mapping[str, int], *, cap: int) -> None:
    """Require every offset/length to fall inside its file, and the embedded total under the cap.

    The second check stops many tensors pointing at the same bytes from multiplying memory.
    """
    total = 0
    for ref in refs:
        size = sizes[ref.location]
        end = size if ref.length is None else ref.offset + ref.length
        if ref.offset > size or end > size:
            raise _rejected(
                f"external data in {_quote(ref.location)} at offset {ref.offset} "
                f"length {end - ref.offset} runs past the end of the {size}-byte file"
            )
        total += end - ref.offset
    if total > cap:
        raise _rejected(
            f"external data references add up to {_size(total)}, over the {_size(cap)} cap"
        )


def _read_external(path: Path, size: int, name: str) -> bytes:
    """Read an external file that was located and sized earlier."""
    return _read_exactly(
        path,
        size,
        label=f"external data file {_quote(name)}",
        flags=getattr(os, "O_NOFOLLOW", 0),
    )


def _check_hash(name: str, content: bytes, *, expected: str) -> None:
    """Compare an external file's bytes with the sha256 the registry lists for it."""
    found = sha256_bytes(content)
    if found != expected.lower():
        raise _rejected(
            f"external data file {_quote(name)} does not match its registry sha256 "
            f"(expected {expected[:12]}..., found {found[:12]}...)"
        )


def _embed(tensor: TensorProto, ref: _ExternalRef, content: bytes) -> None:
    """Move a tensor's external bytes into ``raw_data`` so nothing refers to a file any more."""
    end = len(content) if ref.length is None else ref.offset + ref.length
    tensor.raw_data = content[ref.offset : end]
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _check_inputs(
    graph: GraphProto, *, codec_width: int | None, features_input: str | None, codec_input: str
) -> tuple[str, str | None]:
    """Require the real inputs: float32 [N, 6], plus ``codec_input`` [N, K] for a codec-aware model.

    Returns the features input's name and the codec input's name (None without one).
    A declared ``features_input`` must be the features input's name.
    """
    constant_names = {tensor.name for tensor in graph.initializer}
    constant_names.update(sparse.values.name for sparse in graph.sparse_initializer)
    inputs = [value for value in graph.input if value.name not in constant_names]
    names = ", ".join(_quote(value.name) for value in inputs) or "none"
    if features_input is not None and features_input not in {value.name for value in inputs}:
        raise _rejected(
            f"declared features input {_quote(features_input)} is not an input of the graph "
            f"(it has {names})"
        )
    if codec_width is None:
        if len(inputs) != 1:
            hint = (
                " (a codec-aware model needs a registry row with a codec block)"
                if len(inputs) == 2
                else ""
            )
            raise _rejected(
                f"model has {len(inputs)} inputs, expected exactly one [N, {len(FEATURES)}]{hint}"
            )
        return _check_width(inputs[0], len(FEATURES), what="features"), None
    if len(inputs) != 2 or codec_input not in {value.name for value in inputs}:
        raise _rejected(
            f"codec-aware model must have inputs [N, {len(FEATURES)}] and {_quote(codec_input)} "
            f"[N, {codec_width}], it has {names}"
        )
    features = next(value for value in inputs if value.name != codec_input)
    codec = next(value for value in inputs if value.name == codec_input)
    return (
        _check_width(features, len(FEATURES), what="features"),
        _check_width(codec, codec_width, what="codec columns"),
    )


def _check_width(value: ValueInfoProto, width: int, *, what: str) -> str:
    """Require a float32 rank-2 input whose second dimension is ``width``; return its name."""
    dims = _float_tensor_dims(value, role="input")
    if len(dims) != 2:
        raise _rejected(f"input {_quote(value.name)} has rank {len(dims)}, expected [N, {width}]")
    if dims[1] != str(width):
        raise _rejected(f"input {_quote(value.name)} has {dims[1]} {what}, expected {width}")
    return str(value.name)


def _check_output(graph: GraphProto, *, declared: str | None = None) -> str:
    """Require exactly one output, float32 [N] or [N, 1] (named ``declared`` if given); return its name."""
    if len(graph.output) != 1:
        raise _rejected(
            f"model has {len(graph.output)} outputs, expected exactly one [N] or [N, 1]"
        )
    value = graph.output[0]
    if declared is not None and value.name != declared:
        raise _rejected(
            f"declared output {_quote(declared)} is not the graph's output {_quote(value.name)}"
        )
    dims = _float_tensor_dims(value, role="output")
    if not (len(dims) == 1 or (len(dims) == 2 and dims[1] == "1")):
        raise _rejected(
            f"output {_quote(value.name)} has shape [{', '.join(dims)}], expected [N] or [N, 1]"
        )
    return str(value.name)


def _float_tensor_dims(value: ValueInfoProto, *, role: str) -> list[str]:
    """Require a float32 tensor with a declared shape; return its dims as text ('?' if unknown)."""
    if not value.type.HasField("tensor_type"):
        raise _rejected(f"{role} {_quote(value.name)} is not a tensor")
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        raise _rejected(
            f"{role} {_quote(value.name)} has element type {_dtype_name(tensor_type.elem_type)}, "
            "expected FLOAT (float32)"
        )
    if not tensor_type.HasField("shape"):
        raise _rejected(f"{role} {_quote(value.name)} declares no shape")
    dims: list[str] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(str(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(_quote(dim.dim_param))
        else:
            dims.append("?")
    return dims


def _dtype_name(elem_type: int) -> str:
    """Return an ONNX element type's name, or its number when it is not a known type."""
    try:
        return str(TensorProto.DataType.Name(elem_type))
    except ValueError:
        return str(elem_type)


def _run_checker(model: ModelProto) -> None:
    """Run onnx's structural checker on the in-memory model (external data already embedded).

    Run before embedding, the checker would stat external locations relative to the
    process's working directory, so it runs on the self-contained model instead.
    """
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise _rejected(f"ONNX checker: {error}") from None


def _check_matrix(matrix: np.ndarray, *, width: int, what: str) -> None:
    """Require a non-empty float32 C-contiguous [N, width] array."""
    if not isinstance(matrix, np.ndarray):
        raise UsageError(f"{what} must be a numpy array, not {type(matrix).__name__}")
    if matrix.dtype != np.float32:
        raise UsageError(f"{what} must be float32, not {matrix.dtype}")
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise UsageError(f"{what} must have shape [N, {width}], not {list(matrix.shape)}")
    if matrix.shape[0] == 0:
        raise UsageError(f"{what} have no rows")
    if not matrix.flags.c_contiguous:
        raise UsageError(f"{what} must be C-contiguous")


def _check_predictions(result: object, *, n_rows: int) -> np.ndarray:
    """Require one finite float per row; return them as float32 [N]."""
    if not isinstance(result, np.ndarray):
        raise _rejected(f"model output is a {type(result).__name__}, not a tensor")
    if result.shape not in ((n_rows,), (n_rows, 1)):
        raise _rejected(
            f"model output has shape {list(result.shape)}, expected [{n_rows}] or [{n_rows}, 1]"
        )
    predictions = np.ascontiguousarray(result.reshape(n_rows), dtype=np.float32)
    bad = ~np.isfinite(predictions)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _rejected(
            f"model produced {int(bad.sum())} non-finite predictions out of {n_rows} "
            f"(first at row {first})"
        )
    return predictions


def _rejected(message: str) -> ModelRejected:
    """Return a ModelRejected whose message is one line of at most ~300 characters."""
    text = " ".join(message.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return ModelRejected(text)


def _quote(text: str) -> str:
    """Quote an untrusted name for a message: escaped, so it cannot break the line, and short."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _size(n_bytes: int) -> str:
    """Render a byte count: whole MiB as '16 MiB', then '5.4 GiB', '17.2 MiB', else in bytes."""
    if n_bytes >= _MIB and n_bytes % _MIB == 0:
        return f"{n_bytes // _MIB} MiB"
    if n_bytes >= _GIB:
        return f"{n_bytes / _GIB:.1f} GiB"
    if n_bytes >= _MIB:
        return f"{n_bytes / _MIB:.1f} MiB"
    return f"{n_bytes} bytes"
