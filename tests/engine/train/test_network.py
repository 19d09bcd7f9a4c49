"""The MLP and its training: determinism, train-only standardisation, stacked == single."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the whole tests/engine/train folder needs torch

from engine.errors import UsageError  # noqa: E402
from engine.onnxbuild import Activation  # noqa: E402
from engine.train.export import export_network  # noqa: E402
from engine.train.network import (  # noqa: E402
    ProgressLine,
    TrainConfig,
    fit_single,
    fit_stack,
    fit_standardisation,
    train_network,
)
from tests.engine.tables import small_table  # noqa: E402

FAST = TrainConfig(epochs=15)


@pytest.mark.slow
def test_training_twice_gives_identical_weights_and_onnx_bytes() -> None:
    table = small_table()
    first = train_network(table.matrix(), table.target(), seed=3, config=FAST)
    second = train_network(table.matrix(), table.target(), seed=3, config=FAST)
    for a, b in zip(first.layers, second.layers, strict=True):
        assert a.weight.tobytes() == b.weight.tobytes()
        assert a.bias.tobytes() == b.bias.tobytes()
    assert export_network(first, name="m") == export_network(second, name="m")


@pytest.mark.slow
def test_other_seed_gives_other_weights() -> None:
    table = small_table()
    first = train_network(table.matrix(), table.target(), seed=0, config=FAST)
    second = train_network(table.matrix(), table.target(), seed=1, config=FAST)
    assert first.layers[0].weight.tobytes() != second.layers[0].weight.tobytes()


@pytest.mark.slow
def test_training_restores_torch_global_settings() -> None:
    threads = torch.get_num_threads()
    mode = torch.are_deterministic_algorithms_enabled()
    table = small_table()
    train_network(table.matrix(), table.target(), seed=0, config=TrainConfig(epochs=2, threads=1))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == mode


@pytest.mark.slow
def test_standardisation_is_fitted_on_the_rows_given_only() -> None:
    table = small_table()
    matrix, target = table.matrix(), table.target()
    train = table.groups() != "src01"
    network = train_network(matrix[train], target[train], seed=0, config=TrainConfig(epochs=1))
    expected = fit_standardisation(matrix[train], target[train])
    np.testing.assert_array_equal(network.standardisation.feature_mean, expected.feature_mean)
    np.testing.assert_array_equal(
        network.standardisation.feature_mean,
        matrix[train].astype(np.float64).mean(0).astype(np.float32),
    )
    assert network.standardisation.target_std == pytest.approx(float(target[train].std()), rel=1e-6)


def test_constant_feature_gets_unit_scale_and_constant_target_is_refused() -> None:
    table = small_table()
    matrix = table.matrix().copy()
    matrix[:, 5] = 3.0
    stats = fit_standardisation(matrix, table.target())
    assert stats.feature_std[5] == 1.0
    with pytest.raises(UsageError, match="constant"):
        fit_standardisation(matrix, np.full(matrix.shape[0], 50.0, dtype=np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("activation", list(Activation))
def test_stacked_training_matches_separate_trainings(activation: Activation) -> None:
    """Hand-written stacked gradients with masked rows == autograd on each network's own rows."""
    table = small_table()
    stats = fit_standardisation(table.matrix(), table.target())
    x, y = stats.features(table.matrix()), stats.target(table.target())
    rng = np.random.default_rng(0)
    masks = [rng.random(x.shape[0]) < p for p in (0.5, 0.8, 1.0)]
    config = TrainConfig(epochs=25, activation=activation)
    stacked = fit_stack(
        np.stack([x] * 3),
        np.stack([y] * 3),
        np.stack([m.astype(np.float32) for m in masks]),
        seeds=[4, 5, 4],
        config=config,
    )
    for fit, mask, seed in zip(stacked, masks, (4, 5, 4), strict=True):
        alone = fit_single(x[mask], y[mask], seed=seed, config=config)
        assert fit.final_loss == pytest.approx(alone.final_loss, rel=1e-4)
        for a, b in zip(fit.layers, alone.layers, strict=True):
            np.testing.assert_allclose(a.weight, b.weight, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(a.bias, b.bias, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_stacked_training_twice_is_bitwise_identical() -> None:
    table = small_table()
    stats = fit_standardisation(table.matrix(), table.target())
    x, y = stats.features(table.matrix()), stats.target(table.target())
    mask = (table.groups() != "src02").astype(np.float32)
    args = (np.stack([x, x]), np.stack([y, y]), np.stack([mask, np.ones_like(mask)]))
    first = fit_stack(*args, seeds=[0, 1], config=FAST)
    second = fit_stack(*args, seeds=[0, 1], config=FAST)
    for a, b in zip(first, second, strict=True):
        for la, lb in zip(a.layers, b.layers, strict=True):
            assert la.weight.tobytes() == lb.weight.tobytes()
            assert la.bias.tobytes() == lb.bias.tobytes()


def test_stack_refuses_float64_and_empty_networks() -> None:
    x = np.zeros((2, 5, 6), dtype=np.float32)
    y = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(UsageError, match="float32"):
        fit_stack(x.astype(np.float64), y, y, seeds=[0, 1], config=FAST)
    with pytest.raises(UsageError, match="at least one training row"):
        fit_stack(x, y, y, seeds=[0, 1], config=FAST)


@pytest.mark.slow
def test_training_reduces_the_loss_and_predicts_on_the_mos_scale() -> None:
    table = small_table()
    short = train_network(table.matrix(), table.target(), seed=0, config=TrainConfig(epochs=2))
    longer = train_network(table.matrix(), table.target(), seed=0, config=TrainConfig(epochs=60))
    assert longer.final_loss < short.final_loss
    pred = longer.predict(table.matrix())
    assert pred.dtype == np.float32
    assert np.corrcoef(pred, table.target())[0, 1] > 0.9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden": ()},
        {"hidden": (0, 4)},
        {"epochs": 0},
        {"learning_rate": -1.0},
        {"threads": 0},
        {"activation": "relu"},
    ],
)
def test_config_refuses_settings_that_cannot_train(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_codec_block_must_match_the_config() -> None:
    table = small_table()
    codec = np.zeros((table.n_rows, 6), dtype=np.float32)
    with pytest.raises(UsageError, match=r"config\.codec is not set"):
        train_network(table.matrix(), table.target(), seed=0, config=FAST, codec=codec)
    with pytest.raises(UsageError, match="no codec block was given"):
        train_network(
            table.matrix(), table.target(), seed=0, config=TrainConfig(epochs=1, codec=True)
        )


def test_progress_line_is_silent_when_not_a_tty_and_draws_on_a_tty() -> None:
    quiet = io.StringIO()
    line = ProgressLine("x", total=3, enabled=True, stream=quiet)
    line.update(3, 0.5)
    line.close()
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    loud = Terminal()
    line = ProgressLine("train", total=3, enabled=True, stream=loud)
    line.update(3, 0.5)
    line.close()
    assert loud.getvalue().startswith("\rtrain [")
    assert loud.getvalue().endswith("3/3 loss 0.5000\n")
    off = Terminal()
    ProgressLine("train", total=3, enabled=False, stream=off).update(3, 0.5)
    assert off.getvalue() == ""
