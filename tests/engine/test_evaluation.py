"""Tests for evaluating timeline models: hostile models come back broken, the store saves work."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from engine.bisection import Outcome, find_first_regression
from engine.errors import UsageError
from engine.evaluation import (
    EvaluationStore,
    Evaluator,
    MetricSettings,
    ModelRef,
    plan_resampling,
    refs_from_paths,
)
from engine.features import FEATURES, features_from_frame, load_features
from engine.scoring import ScoringLimits
from engine.threshold import StepStatus, Thresholds
from tests.engine import onnx_factory as factory

BISECT = Path(__file__).resolve().parents[2] / "testdata" / "bisect"
GATE = Thresholds(min_plcc=0.9)


@pytest.fixture(scope="module")
def golden():
    return load_features(BISECT / "features.parquet")


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    target = tmp_path / "good.onnx"
    shutil.copy(BISECT / "regression" / "fr-mlp-v05.onnx", target)
    return target


def _custom_domain(path: Path) -> Path:
    model = factory.make_model(
        [helper.make_node("Fancy", ["x"], ["y"], domain="com.evil")], extra_opsets=[("com.evil", 1)]
    )
    return factory.save(model, path)


def _unlisted_op(path: Path) -> Path:
    model = factory.make_model([helper.make_node("TopK", ["x", "k"], ["y", "i"])])
    return factory.save(model, path)


def _traversal(path: Path) -> Path:
    model = factory.linear_model()
    factory.point_external(model.graph.initializer[0], "../../etc/passwd")
    return factory.save(model, path)


def _truncated(path: Path) -> Path:
    data = (BISECT / "regression" / "fr-mlp-v05.onnx").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _wrong_width(path: Path) -> Path:
    model = factory.make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        inputs=[factory.features(width=5)],
        initializers=[helper.make_tensor("w", TensorProto.FLOAT, [5, 1], np.ones(5, np.float32))],
    )
    return factory.save(model, path)


def _nan_output(path: Path) -> Path:
    return factory.save(factory.nan_on_zero_model(), path)


def _oversized(path: Path) -> Path:
    model = factory.linear_model()
    padding = helper.make_tensor("pad", TensorProto.FLOAT, [300_000], np.zeros(300_000, np.float32))
    model.graph.initializer.append(padding)
    return factory.save(model, path)


HOSTILE = {
    "external data path traversal": (_traversal, "../../etc/passwd"),
    "custom-domain op": (_custom_domain, "com.evil"),
    "op outside the allowlist": (_unlisted_op, "TopK"),
    "file over the cap": (_oversized, "cap"),
    "truncated bytes": (_truncated, "not a valid ONNX"),
    "wrong input width": (_wrong_width, "expected 6"),
    "NaN output": (_nan_output, "non-finite"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_model_in_timeline_is_reported_broken_with_one_line_reason(
    case: str, tmp_path: Path, golden, good_model: Path
) -> None:
    build, needle = HOSTILE[case]
    bad = build(tmp_path / "bad.onnx")
    if case == "NaN output":  # make the golden cache contain a zero so 0/0 fires
        golden = _with_a_zero(golden)
    refs = refs_from_paths([good_model, bad])
    evaluator = Evaluator(refs, golden, GATE, limits=ScoringLimits(max_bytes=1024 * 1024))
    result = find_first_regression(2, evaluator)
    assert result.outcome is Outcome.REGRESSION
    step = result.visits[0].result
    assert step.status is StepStatus.FAIL
    assert step.broken is not None and "\n" not in step.broken
    assert needle in step.broken
    assert step.reasons == (f"broken: {step.broken}",)


def _with_a_zero(table):
    from engine.features import features_from_frame

    frame = table.frame.copy()
    frame.loc[0, "adm2"] = np.float32(0.0)
    return features_from_frame(frame)


def test_second_run_over_unchanged_timeline_scores_no_model(tmp_path: Path, golden) -> None:
    refs = refs_from_paths(sorted((BISECT / "regression").glob("*.onnx")))
    store = EvaluationStore(tmp_path / "store")
    first = Evaluator(refs, golden, GATE, store=store)
    result_1 = find_first_regression(len(refs), first)
    second = Evaluator(refs, golden, GATE, store=store)
    result_2 = find_first_regression(len(refs), second)
    assert (first.evaluated, first.from_store) == (result_1.evaluations, 0)
    assert (second.evaluated, second.from_store) == (0, result_2.evaluations)
    assert result_2.first_bad_index == result_1.first_bad_index == 6
    assert all(visit.result.cached for visit in result_2.visits)
    assert [v.result.metrics for v in result_2.visits] == [
        v.result.metrics for v in result_1.visits
    ]


def test_store_key_changes_with_metric_settings(tmp_path: Path, golden, good_model: Path) -> None:
    store = EvaluationStore(tmp_path / "store")
    refs = refs_from_paths([good_model])
    Evaluator(refs, golden, GATE, store=store)(0)
    for settings in (
        MetricSettings(logistic=True),
        MetricSettings(bootstrap=100),
        MetricSettings(bootstrap=100, seed=1),
        MetricSettings(bootstrap=100, group_by="encoder"),
    ):
        other = Evaluator(refs, golden, GATE, settings=settings, store=store)
        other(0)
        assert (other.evaluated, other.from_store) == (1, 0), settings


def test_changing_a_threshold_rescores_nothing_and_judges_under_the_new_gate(
    tmp_path: Path, golden
) -> None:
    refs = refs_from_paths(sorted((BISECT / "regression").glob("*.onnx")))
    store = EvaluationStore(tmp_path / "store")
    first = Evaluator(refs, golden, GATE, store=store)
    records = [first(index) for index in range(len(refs))]
    assert first.evaluated == len(refs)
    plccs = [record.metrics.plcc for record in records if record.metrics is not None]
    strict = Thresholds(min_plcc=max(plccs) + 0.001)  # every model fails this gate
    for gate, expected in ((strict, StepStatus.FAIL), (Thresholds(max_rmse=1e9), StepStatus.PASS)):
        again = Evaluator(refs, golden, gate, store=store)
        judged = [again(index) for index in range(len(refs))]
        assert (again.evaluated, again.from_store) == (0, len(refs))
        assert {record.status for record in judged} == {expected}
        assert [r.metrics for r in judged] == [r.metrics for r in records]
        fresh = [Evaluator(refs, golden, gate)(index) for index in (0, len(refs) - 1)]
        assert [r.reasons for r in fresh] == [judged[0].reasons, judged[-1].reasons]


def test_corrupt_store_entry_is_a_miss_not_a_crash(
    tmp_path: Path, golden, good_model: Path
) -> None:
    store = EvaluationStore(tmp_path / "store")
    refs = refs_from_paths([good_model])
    Evaluator(refs, golden, GATE, store=store)(0)
    for entry in (tmp_path / "store").rglob("*.json"):
        entry.write_text('{"key": "' + entry.stem + '", "status": "maybe"}')
    again = Evaluator(refs, golden, GATE, store=store)
    assert again(0).status is StepStatus.PASS
    assert again.evaluated == 1


def test_changed_model_bytes_are_a_store_miss(tmp_path: Path, golden, good_model: Path) -> None:
    store = EvaluationStore(tmp_path / "store")
    refs = refs_from_paths([good_model])
    Evaluator(refs, golden, GATE, store=store)(0)
    shutil.copy(BISECT / "regression" / "fr-mlp-v06.onnx", good_model)
    again = Evaluator(refs, golden, GATE, store=store)
    assert again(0).status is StepStatus.FAIL
    assert again.evaluated == 1


def test_registry_hash_mismatch_is_broken(good_model: Path, golden) -> None:
    ref = ModelRef(name="v05", path=good_model, expected_sha256="0" * 64)
    step = Evaluator([ref], golden, GATE)(0)
    assert step.status is StepStatus.FAIL
    assert step.broken is not None and "sha256 mismatch" in step.broken


def test_missing_model_file_is_broken(tmp_path: Path, golden) -> None:
    step = Evaluator(refs_from_paths([tmp_path / "gone.onnx"]), golden, GATE)(0)
    assert step.broken == "model file gone.onnx not found"


def test_statistical_mode_attaches_intervals(golden, good_model: Path) -> None:
    settings = MetricSettings(statistical=True, bootstrap=200)
    step = Evaluator(refs_from_paths([good_model]), golden, GATE, settings=settings)(0)
    assert step.status is StepStatus.PASS
    assert step.metrics is not None and step.metrics.grouped
    assert step.metrics.ci["plcc"].low > 0.9


def test_onnx_checker_sanity_of_factory_models(tmp_path: Path) -> None:
    onnx.checker.check_model(factory.linear_model())


def _grouped_features(n_groups: int, *, column: str = "source"):

    rng = np.random.default_rng(1)
    rows = 6 * n_groups

    frame = pd.DataFrame({name: rng.uniform(0, 1, rows).astype(np.float32) for name in FEATURES})
    frame["mos"] = rng.uniform(0, 100, rows).astype(np.float32)
    if column:
        frame[column] = [f"g{i % n_groups}" for i in range(rows)]
    return features_from_frame(frame)


def test_statistical_refuses_three_sources_naming_the_count_and_the_minimum() -> None:

    settings = MetricSettings(statistical=True, bootstrap=1000)
    with pytest.raises(UsageError) as caught:
        plan_resampling(_grouped_features(3), settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "at least 5 source groups" in message and "has 3 (10 distinct resamples)" in message


def test_statistical_accepts_the_minimum_and_records_the_resolution() -> None:

    plan = plan_resampling(_grouped_features(5), MetricSettings(statistical=True, bootstrap=1000))
    assert (plan.method, plan.column, plan.groups) == ("grouped", "source", 5)
    assert (plan.distinct_resamples, plan.min_groups, plan.warnings) == (126, 5, ())
    lower = MetricSettings(statistical=True, bootstrap=1000, confidence=0.9)
    assert plan_resampling(_grouped_features(4), lower).min_groups == 4


def test_informational_bootstrap_over_few_groups_warns_instead_of_refusing() -> None:

    plan = plan_resampling(_grouped_features(3), MetricSettings(bootstrap=200))
    assert plan.method == "grouped" and plan.distinct_resamples == 10
    assert "only 3 source group(s), 10 distinct resamples" in plan.warnings[0]


def test_no_grouping_column_warns_that_rows_are_independent() -> None:

    plan = plan_resampling(
        _grouped_features(3, column=""), MetricSettings(statistical=True, bootstrap=1000)
    )
    assert plan.method == "rows" and plan.groups is None
    assert "as independent" in plan.warnings[0]


def test_group_by_selects_another_loaded_column_and_refuses_unknown_ones() -> None:

    features = _grouped_features(6, column="encoder")
    chosen = MetricSettings(statistical=True, bootstrap=1000, group_by="encoder")
    plan = plan_resampling(features, chosen)
    assert (plan.column, plan.groups) == ("encoder", 6)
    with pytest.raises(UsageError, match="no source column"):
        plan_resampling(features, MetricSettings(bootstrap=10, group_by="source"))
    with pytest.raises(UsageError, match="--group-by must be one of"):
        plan_resampling(features, MetricSettings(bootstrap=10, group_by="scene"))


def test_group_by_is_part_of_the_store_key_only_when_chosen() -> None:
    assert "group_by" not in MetricSettings().to_dict()
    assert MetricSettings(group_by="encoder").to_dict()["group_by"] == "encoder"
