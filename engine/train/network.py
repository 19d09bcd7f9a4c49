"""The FR regressor MLP and its deterministic full-batch Adam training, alone or as a stack.

One network maps the six standardised libvmaf features (optionally followed by the codec
block, ``engine.codec``) through small hidden layers to the standardised MOS. Training is
full-batch: one Adam step per epoch on the mean squared error over every training row,
so there is no shuffling and nothing random after the seeded initialisation. ``fit_stack``
trains many independent networks as ONE batched computation (stacked weights
``[B, in, out]``, ``torch.baddbmm``); each network's rows are selected by a 0/1 weight
and its loss is the weighted mean, which gives it exactly the gradient it would get
alone (Adam is element-wise, so stacking does not couple the networks). See
``docs/training.md``.
"""

import itertools
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import torch

from engine.errors import UsageError
from engine.features import FEATURES
from engine.onnxbuild import Activation, Dense

Float32Array = npt.NDArray[np.float32]

DEFAULT_HIDDEN: tuple[int, ...] = (32, 16)
DEFAULT_EPOCHS = 200
DEFAULT_LEARNING_RATE = 0.03
DEFAULT_THREADS = 2

_TORCH_ACTIVATIONS = {
    Activation.RELU: torch.relu,
    Activation.TANH: torch.tanh,
    Activation.SIGMOID: torch.sigmoid,
}
_PROGRESS_INTERVAL_S = 0.2


def _bad_count(value: object) -> bool:
    """Return whether a value is not a positive int (bools excluded)."""
    return isinstance(value, bool) or not isinstance(value, int) or value < 1


@dataclass(frozen=True)
class TrainConfig:
    """Network shape and optimiser settings; ``threads`` is fixed so results do not follow the machine."""

    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    activation: Activation = Activation.SIGMOID
    epochs: int = DEFAULT_EPOCHS
    learning_rate: float = DEFAULT_LEARNING_RATE
    codec: bool = False
    threads: int = DEFAULT_THREADS

    def __post_init__(self) -> None:
        """Refuse settings that cannot train: no layers, zero widths, epochs < 1, lr <= 0."""
        if not self.hidden or any(_bad_count(width) for width in self.hidden):
            raise UsageError(f"hidden widths must be positive integers, not {self.hidden!r}")
        if not isinstance(self.activation, Activation):
            raise UsageError(f"activation must be an Activation, not {self.activation!r}")
        if _bad_count(self.epochs):
            raise UsageError(f"epochs must be a positive integer, not {self.epochs!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise UsageError(f"learning_rate must be a positive number, not {rate!r}")
        if _bad_count(self.threads):
            raise UsageError(f"threads must be a positive integer, not {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (recorded in reports and manifests)."""
        return {
            "network": "mlp",
            "hidden": list(self.hidden),
            "activation": self.activation.name.lower(),
            "epochs": self.epochs,
            "optimiser": "adam",
            "learning_rate": self.learning_rate,
            "batch": "full",
            "loss": "mse on the standardised target",
            "init": "uniform(+-1/sqrt(fan_in)), torch.Generator seeded with the seed",
            "codec": self.codec,
            "threads": self.threads,
        }


DEFAULT_CONFIG = TrainConfig()
"""The settings used when none are given (and by ``model-guard loso``)."""


@dataclass(frozen=True, eq=False)
class Standardisation:
    """Feature and target centring and scaling, fitted on training rows only (float32 values)."""

    feature_mean: Float32Array
    feature_std: Float32Array
    target_mean: float
    target_std: float

    def features(self, matrix: Float32Array) -> Float32Array:
        """Return ``(matrix - mean) / std`` in float32, as the exported graph computes it."""
        return np.ascontiguousarray((matrix - self.feature_mean) / self.feature_std)

    def target(self, target: Float32Array) -> Float32Array:
        """Return the standardised target in float32."""
        mean, std = np.float32(self.target_mean), np.float32(self.target_std)
        return np.ascontiguousarray((target - mean) / std, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as a JSON-ready dict."""
        return {
            "feature_mean": [float(v) for v in self.feature_mean],
            "feature_std": [float(v) for v in self.feature_std],
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }


@dataclass(frozen=True)
class Fit:
    """The weights one training produced (float32, ``weight`` [in, out]) and its last loss."""

    layers: tuple[Dense, ...] = field(repr=False)
    final_loss: float


@dataclass(frozen=True, eq=False)
class TrainedNetwork:
    """A trained network with everything needed to predict on raw features and to export it."""

    layers: tuple[Dense, ...] = field(repr=False)
    activation: Activation
    standardisation: Standardisation
    codec_width: int
    seed: int
    final_loss: float

    def predict(self, matrix: Float32Array, codec: Float32Array | None = None) -> Float32Array:
        """Return float32 MOS predictions [N] for raw features [N, 6] (and the codec block)."""
        inputs = network_inputs(self.standardisation.features(matrix), codec, self.codec_width)
        # torch.tensor copies: the stored weights are read-only arrays.
        params = [(torch.tensor(layer.weight), torch.tensor(layer.bias)) for layer in self.layers]
        with torch.no_grad():
            out = _forward(params, torch.tensor(inputs), self.activation).numpy()
        scale = np.float32(self.standardisation.target_std)
        offset = np.float32(self.standardisation.target_mean)
        # Mul then Add, in float32: the order the exported graph uses.
        return np.ascontiguousarray(out * scale + offset, dtype=np.float32)


@contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Run torch with deterministic algorithms and a fixed thread count; restore both after."""
    previous_threads = torch.get_num_threads()
    previous_mode = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_mode, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)


def fit_standardisation(matrix: Float32Array, target: Float32Array) -> Standardisation:
    """Fit means and population stds (float64, stored as float32) on training rows."""
    _check_rows(matrix, target)
    values = matrix.astype(np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    # A constant feature carries no information; scale 1 keeps it at 0 instead of dividing by 0.
    std[~(std > 0)] = 1.0
    y = target.astype(np.float64)
    target_std = float(np.float32(y.std()))
    if not target_std > 0:
        raise UsageError("the target (mos) is constant on the training rows: nothing to learn")
    return Standardisation(
        feature_mean=_frozen(mean.astype(np.float32)),
        feature_std=_frozen(std.astype(np.float32)),
        target_mean=float(np.float32(y.mean())),
        target_std=target_std,
    )


def network_inputs(
    standardised: Float32Array, codec: Float32Array | None, codec_width: int
) -> Float32Array:
    """Return the network input: standardised features, then the codec block when there is one."""
    if codec_width == 0:
        if codec is not None:
            raise UsageError("this network reads no codec block, but one was given")
        return standardised
    if codec is None:
        raise UsageError(f"this network reads a codec block of width {codec_width}; none given")
    codec = np.asarray(codec, dtype=np.float32)
    if codec.shape != (standardised.shape[0], codec_width):
        raise UsageError(
            f"codec block has shape {list(codec.shape)}, expected "
            f"[{standardised.shape[0]}, {codec_width}]"
        )
    return np.ascontiguousarray(np.concatenate([standardised, codec], axis=1))


def init_layers(widths: Sequence[int], *, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return float32 (weight [in, out], bias [out]) pairs, uniform(+-1/sqrt(fan_in)), from a seeded generator."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, not {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / math.sqrt(fan_in)
        weight = torch.rand((fan_in, fan_out), generator=generator, dtype=torch.float32)
        bias = torch.rand((fan_out,), generator=generator, dtype=torch.float32)
        params.append(((weight * 2 - 1) * bound, (bias * 2 - 1) * bound))
    return params


def train_network(
    matrix: Float32Array,
    target: Float32Array,
    *,
    seed: int,
    config: TrainConfig = DEFAULT_CONFIG,
    codec: Float32Array | None = None,
    progress: bool = False,
    label: str = "train",
) -> TrainedNetwork:
    """Train one network on raw features [N, 6] and MOS [N]; standardisation is fitted here."""
    _check_rows(matrix, target)
    codec_width = _codec_width(codec, config=config)
    standardisation = fit_standardisation(matrix, target)
    inputs = network_inputs(standardisation.features(matrix), codec, codec_width)
    fit = fit_single(
        inputs,
        standardisation.target(target),
        seed=seed,
        config=config,
        progress=progress,
        label=label,
    )
    return TrainedNetwork(
        layers=fit.layers,
        activation=config.activation,
        standardisation=standardisation,
        codec_width=codec_width,
        seed=seed,
        final_loss=fit.final_loss,
    )


def fit_single(
    inputs: Float32Array,
    targets: Float32Array,
    *,
    seed: int,
    config: TrainConfig,
    progress: bool = False,
    label: str = "train",
) -> Fit:
    """Fit one network on standardised inputs [N, in] and targets [N] (the reference path)."""
    with deterministic(config.threads):
        pairs = init_layers((inputs.shape[1], *config.hidden, 1), seed=seed)
        params = [tensor.requires_grad_() for pair in pairs for tensor in pair]
        # torch.tensor copies, so read-only arrays are fine and the caller's stay untouched.
        x, y = torch.tensor(inputs), torch.tensor(targets)
        optimiser = torch.optim.Adam(params, lr=config.learning_rate, foreach=False)
        line = ProgressLine(label, total=config.epochs, enabled=progress)
        loss = torch.zeros(())
        for epoch in range(config.epochs):
            optimiser.zero_grad(set_to_none=True)
            pred = _forward(_pairs(params), x, config.activation)
            loss = torch.mean((pred - y) ** 2)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            if line.enabled:
                line.update(epoch + 1, float(loss.detach()))
        line.close()
        return Fit(layers=_dense(_pairs(params)), final_loss=float(loss.detach()))


def fit_stack(
    inputs: Float32Array,
    targets: Float32Array,
    weights: Float32Array,
    *,
    seeds: Sequence[int],
    config: TrainConfig,
    progress: bool = False,
    label: str = "train",
) -> tuple[Fit, ...]:
    """Fit B independent networks in one batched computation; network b trains on rows with weight 1.

    ``inputs`` [B, N, in], ``targets`` [B, N], ``weights`` [B, N] of 0/1 (rows with weight
    0 are padding or held out: they add exactly nothing to the loss or the gradient).
    Network b starts from ``init_layers(..., seed=seeds[b])``, as ``fit_single`` would,
    and gets the same Adam updates; gradients are computed by hand into buffers
    allocated once, because allocating fresh multi-megabyte activations every step
    costs more (page faults) than the arithmetic.
    """
    if any(array.dtype != np.float32 for array in (inputs, targets, weights)):
        raise UsageError("stacked inputs, targets and weights must be float32")
    if inputs.ndim != 3:
        raise UsageError(f"stacked inputs must be [B, N, in], not {list(inputs.shape)}")
    slots, rows, width = inputs.shape
    if targets.shape != (slots, rows) or weights.shape != (slots, rows) or len(seeds) != slots:
        raise UsageError("inputs, targets, weights and seeds must agree on the stack shape")
    counts = weights.sum(axis=1, dtype=np.float64)
    if not (counts > 0).all():
        raise UsageError("every stacked network needs at least one training row")
    with deterministic(config.threads), torch.no_grad():
        stack = _Stack(
            x=torch.tensor(inputs),
            y=torch.tensor(targets),
            weights=torch.tensor(weights),
            counts=torch.from_numpy(counts.astype(np.float32)),
            params=_stacked_init((width, *config.hidden, 1), seeds),
            activation=config.activation,
        )
        optimiser = torch.optim.Adam(stack.params, lr=config.learning_rate, foreach=False)
        line = ProgressLine(label, total=config.epochs, enabled=progress)
        for epoch in range(config.epochs):
            stack.forward()
            stack.backward()
            optimiser.step()
            if line.enabled:
                line.update(epoch + 1, float(stack.last_losses.mean()))
        line.close()
        # The loss of the weights the last step started from, as fit_single reports it.
        final = stack.last_losses.numpy()
        pairs = _pairs(stack.params)
        return tuple(
            Fit(
                layers=_dense([(weight[b], bias[b, 0]) for weight, bias in pairs]),
                final_loss=float(final[b]),
            )
            for b in range(slots)
        )


class _Stack:
    """B stacked MLPs with preallocated activations and gradients, differentiated by hand.

    Forward, hidden layer l: ``a_l = act(a_{l-1} @ W_l + b_l)``; output ``z = a_{L-1} @ W_L
    + b_L``. With loss ``sum_b sum_n w_bn (z_bn - y_bn)^2 / n_b``, the output gradient is
    ``g = 2 w (z - y) / n``, and backwards ``dW_l = a_{l-1}^T g_l``, ``db_l = sum_n g_l``,
    ``g_{l-1} = (g_l W_l^T) * act'(a_{l-1})`` with act' written in terms of the output.
    Hidden layers use ``baddbmm``/``bmm``; the one-unit output layer is a broadcast
    multiply and a sum, because batched matrix-vector products are slow on CPU.
    """

    def __init__(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        weights: torch.Tensor,
        counts: torch.Tensor,
        params: list[torch.Tensor],
        activation: Activation,
    ) -> None:
        """Allocate every buffer once: activations, their gradients, and parameter gradients."""
        slots, rows, _ = x.shape
        self.x, self.y, self.weights, self.counts = x, y, weights, counts
        self.scale = weights * 2 / counts.unsqueeze(1)  # d loss / d z = scale * (z - y)
        self.params = params
        self.activation = activation
        self.pairs = _pairs(params)
        widths = [weight.shape[2] for weight, _ in self.pairs[:-1]]
        self.acts = [torch.empty(slots, rows, w) for w in widths]
        self.grads = [torch.empty(slots, rows, w) for w in widths]
        self.spare = [torch.empty(slots, rows, w) for w in widths]
        self.out = torch.empty(slots, rows)
        self.residual = torch.empty(slots, rows)
        self.delta = torch.empty(slots, rows)
        self.one = torch.ones(1)
        for param in params:
            param.grad = torch.zeros_like(param)
        self.last_losses = torch.zeros(slots)

    def forward(self) -> None:
        """Compute every activation and the output into their buffers."""
        current = self.x
        for index, (weight, bias) in enumerate(self.pairs[:-1]):
            torch.baddbmm(bias, current, weight, out=self.acts[index])
            _activate_(self.acts[index], self.activation)
            current = self.acts[index]
        weight, bias = self.pairs[-1]  # [B, h, 1], [B, 1, 1]
        torch.mul(current, weight.transpose(1, 2), out=self.spare[-1])
        torch.sum(self.spare[-1], dim=2, out=self.out)
        self.out.add_(bias.squeeze(2))

    def backward(self) -> None:
        """Fill every parameter's ``.grad`` from the buffers of the last forward pass."""
        torch.sub(self.out, self.y, out=self.residual)
        torch.mul(self.residual, self.residual, out=self.delta)
        self.delta.mul_(self.weights)
        torch.sum(self.delta, dim=1, out=self.last_losses)
        self.last_losses.div_(self.counts)
        torch.mul(self.residual, self.scale, out=self.delta)
        weight, bias = self.pairs[-1]
        top = self.acts[-1]
        assert weight.grad is not None and bias.grad is not None
        torch.mul(top, self.delta.unsqueeze(2), out=self.spare[-1])
        torch.sum(self.spare[-1], dim=1, out=weight.grad.squeeze(2))
        torch.sum(self.delta, dim=1, out=bias.grad.view(-1))
        torch.mul(self.delta.unsqueeze(2), weight.transpose(1, 2), out=self.grads[-1])
        self._apply_derivative(len(self.acts) - 1)
        for index in range(len(self.pairs) - 2, -1, -1):
            weight, bias = self.pairs[index]
            grad = self.grads[index]
            below = self.x if index == 0 else self.acts[index - 1]
            assert weight.grad is not None and bias.grad is not None
            torch.bmm(below.transpose(1, 2), grad, out=weight.grad)
            torch.sum(grad, dim=1, keepdim=True, out=bias.grad)
            if index > 0:
                torch.bmm(grad, weight.transpose(1, 2), out=self.grads[index - 1])
                self._apply_derivative(index - 1)

    def _apply_derivative(self, index: int) -> None:
        """Multiply the gradient of hidden layer ``index`` by the activation's derivative there."""
        a, grad, spare = self.acts[index], self.grads[index], self.spare[index]
        if self.activation is Activation.TANH:  # 1 - a^2
            torch.addcmul(self.one, a, a, value=-1.0, out=spare)
        elif self.activation is Activation.SIGMOID:  # a - a^2
            torch.addcmul(a, a, a, value=-1.0, out=spare)
        else:  # relu: 1 where a > 0; a >= 0, so its sign is 0 or 1
            torch.sign(a, out=spare)
        grad.mul_(spare)


def _activate_(h: torch.Tensor, activation: Activation) -> None:
    """Apply an activation in place."""
    if activation is Activation.TANH:
        h.tanh_()
    elif activation is Activation.SIGMOID:
        h.sigmoid_()
    else:
        h.relu_()


class ProgressLine:
    """A one-line progress display on stderr, redrawn in place; silent unless enabled and a TTY."""

    def __init__(
        self, label: str, *, total: int, enabled: bool, stream: TextIO | None = None
    ) -> None:
        """Prepare the line; nothing is written until the first update."""
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and _is_tty(self._stream)
        self._label = label
        self._total = total
        self._last = -math.inf
        self._drawn = False

    def update(self, done: int, loss: float) -> None:
        """Redraw the line at most every 0.2 s, and always at the last step."""
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self._total and now - self._last < _PROGRESS_INTERVAL_S:
            return
        self._last = now
        width = 24
        filled = width * done // max(self._total, 1)
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(f"\r{self._label} [{bar}] {done}/{self._total} loss {loss:.4f}")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line (only if something was drawn)."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def _forward(
    params: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, activation: Activation
) -> torch.Tensor:
    """Run one network on [N, in]; return [N]."""
    act = _TORCH_ACTIVATIONS[activation]
    h = x
    for index, (weight, bias) in enumerate(params):
        h = torch.addmm(bias, h, weight)
        if index < len(params) - 1:
            h = act(h)
    return h.squeeze(-1)


def _stacked_init(widths: Sequence[int], seeds: Sequence[int]) -> list[torch.Tensor]:
    """Return leaf tensors [B, in, out] and [B, 1, out]; slot b holds ``init_layers(seed=seeds[b])``."""
    by_seed = {seed: init_layers(widths, seed=seed) for seed in dict.fromkeys(seeds)}
    params: list[torch.Tensor] = []
    for layer in range(len(widths) - 1):
        weight = torch.stack([by_seed[seed][layer][0] for seed in seeds])
        bias = torch.stack([by_seed[seed][layer][1] for seed in seeds]).unsqueeze(1)
        params += [weight, bias]
    return params


def _pairs(params: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Group a flat [w0, b0, w1, b1, ...] list into (weight, bias) pairs."""
    return [(params[i], params[i + 1]) for i in range(0, len(params), 2)]


def _dense(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Dense, ...]:
    """Copy trained tensors out as float32 numpy layers."""
    return tuple(
        Dense(
            weight=_frozen(weight.detach().numpy().astype(np.float32, copy=True)),
            bias=_frozen(bias.detach().numpy().astype(np.float32, copy=True)),
        )
        for weight, bias in pairs
    )


def _codec_width(codec: Float32Array | None, *, config: TrainConfig) -> int:
    """Return the codec block's width, refusing a block the config does not ask for (or vice versa)."""
    if config.codec and codec is None:
        raise UsageError("config.codec is set but no codec block was given")
    if codec is None:
        return 0
    if not config.codec:
        raise UsageError("a codec block was given but config.codec is not set")
    if codec.ndim != 2 or codec.shape[1] < 1:
        raise UsageError(f"codec block must be [N, K], not {list(codec.shape)}")
    return int(codec.shape[1])


def _check_rows(matrix: Float32Array, target: Float32Array) -> None:
    """Require float32 features [N, 6] and a float32 target [N] with N >= 2."""
    width = len(FEATURES)
    if matrix.dtype != np.float32 or target.dtype != np.float32:
        raise UsageError("features and target must be float32")
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise UsageError(f"features must have shape [N, {width}], not {list(matrix.shape)}")
    if target.shape != (matrix.shape[0],):
        raise UsageError(
            f"target has shape {list(target.shape)}, expected [{matrix.shape[0]}] to match"
        )
    if matrix.shape[0] < 2:
        raise UsageError(f"training needs at least 2 rows, got {matrix.shape[0]}")


def _frozen(array: Float32Array) -> Float32Array:
    """Return an array marked read-only (weights and statistics are values)."""
    array.setflags(write=False)
    return array


def _is_tty(stream: TextIO) -> bool:
    """Return whether a stream is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
