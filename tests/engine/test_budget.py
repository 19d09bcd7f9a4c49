"""A budget per model evaluation (issue 12): hostile models that cost memory or time are broken steps.

The attacks are real tiny ONNX models (tests/engine/attack_models.py), built from allowed ops
only, bisected on the bundled 6,048-row golden cache as the head of the regression timeline
(first bad model at index 6): the attack must be a one-line broken step, the bisect must go
on and still find fr-mlp-v06, and the evaluation store must keep nothing of the attack.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from engine.bisection import Outcome, find_first_regression
from engine.budget import DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_S, score_within_budget
from engine.cli import main
from engine.errors import BudgetExceeded, ModelRejected, UsageError
from engine.evaluation import EvaluationStore, Evaluator, refs_from_paths
from engine.features import load_features
from engine.scoring import ScoringLimits, inspect_model, score_model
from engine.threshold import StepStatus, Thresholds
from tests.engine import attack_models
from tests.engine import onnx_factory as factory

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
GATE = Thresholds(min_plcc=0.9)
MIB = 1024 * 1024
# Far above what a real model of the timeline needs, far below what the attacks take.
SMALL = ScoringLimits(max_memory_bytes=256 * MIB)


@pytest.fixture(scope="module")
def golden():
    return load_features(BISECT / "features.parquet")


def timeline_with_head(tmp_path: Path, model: onnx.ModelProto) -> list[Path]:
    """The regression timeline (v00..v08) with ``model`` as its head, index 9."""
    head = factory.save(model, tmp_path / "attack.onnx")
    return [*sorted((BISECT / "regression").glob("*.onnx"))[:-1], head]


def bisect_attack(tmp_path: Path, golden, model: onnx.ModelProto, limits: ScoringLimits):
    """Bisect the timeline whose head is ``model``; return the result, the head's step, the store."""
    store = EvaluationStore(tmp_path / "store")
    refs = refs_from_paths(timeline_with_head(tmp_path, model))
    result = find_first_regression(
        len(refs), Evaluator(refs, golden, GATE, limits=limits, store=store)
    )
    head = next(visit.result for visit in result.visits if visit.index == len(refs) - 1)
    return result, head, store


def stored_records(store: EvaluationStore) -> list[dict]:
    return [json.loads(path.read_text()) for path in store.directory.rglob("*.json")]


def assert_broken_and_bisect_goes_on(result, head, store, reason: str) -> None:
    assert head.status is StepStatus.FAIL
    assert head.broken == reason
    assert head.reasons == (f"broken: {reason}",)
    assert result.outcome is Outcome.REGRESSION
    assert result.first_bad_index == 6
    assert result.visits[-1].index != 9  # the search went on past the attack
    names = [record["name"] for record in stored_records(store)]
    assert "attack" not in names
    assert len(names) == len(result.visits) - 1  # every other visited model is stored


def test_default_budget_is_documented_values() -> None:
    limits = ScoringLimits()
    assert (limits.max_memory_bytes, limits.timeout_s) == (1024 * MIB, 60.0)
    assert (DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_S) == (1024, 60.0)


# --- the static estimate: refused before onnxruntime sees the model ---


def test_sparse_initializer_bomb_is_refused_before_load_by_its_dense_size(tmp_path: Path) -> None:
    model = attack_models.sparse_bomb_model()
    path = factory.save(model, tmp_path / "bomb.onnx")
    assert path.stat().st_size < 1024
    with pytest.raises(ModelRejected) as caught:
        inspect_model(path)
    assert str(caught.value) == (
        "tensor 'bomb' is 5.0 GiB when dense; initializers and constants add up to 5.0 GiB, "
        "over the 1024 MiB memory budget"
    )


def test_sparse_bomb_in_a_bisect_is_broken_and_the_bisect_finds_v06(tmp_path: Path, golden) -> None:
    result, head, store = bisect_attack(tmp_path, golden, attack_models.sparse_bomb_model(), SMALL)
    assert head.broken is not None and head.broken.startswith("tensor 'bomb' is 5.0 GiB when dense")
    assert head.broken.endswith("over the 256 MiB memory budget")
    assert result.first_bad_index == 6
    assert "attack" not in [record["name"] for record in stored_records(store)]


def test_sparse_constant_value_counts_at_its_dense_size(tmp_path: Path) -> None:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "v"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "i"),
        [1_000_000, 6],
    )
    model = factory.make_model(
        [
            helper.make_node("Constant", [], ["c"], sparse_value=sparse),
            helper.make_node("Concat", ["x", "c"], ["cat"], axis=0),
            helper.make_node("Transpose", ["cat"], ["t"], perm=[1, 0]),
            helper.make_node("MatMul", ["t", "cat"], ["g"]),
            helper.make_node("MatMul", ["x", "g"], ["xg"]),
            helper.make_node("MatMul", ["xg", "w"], ["y"]),
        ],
        initializers=[numpy_helper.from_array(factory.default_weight(), "w")],
    )
    path = factory.save(model, tmp_path / "constant.onnx")
    with pytest.raises(
        ModelRejected, match=r"^tensor 'c' is 22.9 MiB when dense; .* 16 MiB memory"
    ):
        inspect_model(path, limits=ScoringLimits(max_memory_bytes=16 * MIB))
    assert inspect_model(path, limits=ScoringLimits(max_memory_bytes=32 * MIB)).op_types


def test_dense_sizes_add_up_across_initializers(tmp_path: Path) -> None:
    model = factory.linear_model()
    for index in range(3):
        array = np.zeros((512, 1024), dtype=np.float32)  # 2 MiB each
        model.graph.initializer.append(numpy_helper.from_array(array, f"pad{index}"))
    path = factory.save(model, tmp_path / "padded.onnx")
    with pytest.raises(ModelRejected, match=r"add up to 6.0 MiB, over the 5 MiB memory budget"):
        inspect_model(path, limits=ScoringLimits(max_memory_bytes=5 * MIB))
    inspect_model(path, limits=ScoringLimits(max_memory_bytes=7 * MIB))


def test_negative_dimension_is_refused(tmp_path: Path) -> None:
    model = factory.linear_model()
    model.graph.initializer[0].dims[0] = -6
    with pytest.raises(ModelRejected, match="declares a negative dimension -6"):
        inspect_model(factory.save(model, tmp_path / "negative.onnx"))


# --- the run-time budget: a child process held to memory and time ---


def test_quadratic_model_exceeds_memory_while_scoring_and_bisect_finds_v06(
    tmp_path: Path, golden
) -> None:
    result, head, store = bisect_attack(tmp_path, golden, attack_models.quadratic_model(), SMALL)
    assert_broken_and_bisect_goes_on(result, head, store, "exceeded 256 MiB while scoring")


def test_concat_doubling_model_exceeds_memory_while_scoring(tmp_path: Path, golden) -> None:
    result, head, store = bisect_attack(tmp_path, golden, attack_models.doubling_model(), SMALL)
    assert_broken_and_bisect_goes_on(result, head, store, "exceeded 256 MiB while scoring")


def test_slow_model_exceeds_the_time_limit_and_bisect_finds_v06(tmp_path: Path, golden) -> None:
    # The slow model loads in milliseconds; its first [N, N] product alone takes seconds.
    # 2 s (not 1) leaves a busy machine time to finish loading, so the phase is stable.
    limits = ScoringLimits(timeout_s=2.0)
    result, head, store = bisect_attack(tmp_path, golden, attack_models.slow_model(), limits)
    assert_broken_and_bisect_goes_on(result, head, store, "exceeded the 2 s limit while scoring")


def test_transient_failure_is_judged_again_by_the_next_run(tmp_path: Path, golden) -> None:
    refs = refs_from_paths(timeline_with_head(tmp_path, attack_models.quadratic_model(2)))
    store = EvaluationStore(tmp_path / "store")
    first = Evaluator(refs, golden, GATE, limits=SMALL, store=store)
    assert first(9).broken == "exceeded 256 MiB while scoring"
    # Two [N, N] copies (about 290 MB) fit a 1 GiB budget: the re-run judges, then stores.
    roomy = Evaluator(refs, golden, GATE, store=store)
    step = roomy(9)
    assert (roomy.evaluated, roomy.from_store) == (1, 0)
    assert step.broken is None and step.metrics is not None
    again = Evaluator(refs, golden, GATE, store=store)
    assert again(9).cached and (again.evaluated, again.from_store) == (0, 1)


def test_budgeted_scores_equal_in_process_scores(golden) -> None:
    checked = inspect_model(BISECT / "regression" / "fr-mlp-v05.onnx")
    matrix = golden.matrix()
    in_child = score_within_budget(checked, matrix, limits=ScoringLimits())
    assert in_child.dtype == np.float32
    assert np.array_equal(in_child, score_model(checked, matrix))


def test_a_model_error_in_the_child_is_the_models_rejection_not_a_budget(tmp_path: Path) -> None:
    checked = inspect_model(factory.save(factory.nan_on_zero_model(), tmp_path / "nan.onnx"))
    matrix = np.zeros((3, 6), dtype=np.float32)
    with pytest.raises(ModelRejected, match="non-finite predictions") as caught:
        score_within_budget(checked, matrix, limits=ScoringLimits())
    assert not isinstance(caught.value, BudgetExceeded)


def test_a_bad_matrix_is_the_callers_usage_error(tmp_path: Path) -> None:
    checked = inspect_model(factory.save(factory.linear_model(), tmp_path / "linear.onnx"))
    with pytest.raises(UsageError, match="must be float32"):
        score_within_budget(checked, np.zeros((3, 6)), limits=ScoringLimits())


@pytest.mark.parametrize(
    "kwargs", [{"max_memory_bytes": 1024}, {"timeout_s": 0.0}, {"timeout_s": -1.0}]
)
def test_nonsense_budget_is_refused(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        ScoringLimits(**kwargs)


# --- the command line ---


def test_cli_model_timeout_makes_the_slow_head_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = timeline_with_head(tmp_path, attack_models.slow_model())
    argv = ["bisect", "--models", *map(str, models), "--features", str(BISECT / "features.parquet")]
    argv += [
        "--min-plcc",
        "0.9",
        "--cache-dir",
        str(tmp_path / "s"),
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main([*argv, "--model-timeout", "2", "--max-memory-mib", "768"]) == 2
    report = json.loads((tmp_path / "r.json").read_text())
    head = next(step for step in report["steps"] if step["name"] == "attack")
    assert head["broken"] == "exceeded the 2 s limit while scoring"
    assert report["first_bad_index"] == 6


def test_sparse_bomb_under_the_estimate_exceeds_memory_while_loading(
    tmp_path: Path, golden
) -> None:
    # 229 MiB dense passes the 256 MiB estimate; onnxruntime's densified copies do not fit.
    model = attack_models.sparse_bomb_model(10_000_000)
    result, head, store = bisect_attack(tmp_path, golden, model, SMALL)
    assert_broken_and_bisect_goes_on(result, head, store, "exceeded 256 MiB while loading")
