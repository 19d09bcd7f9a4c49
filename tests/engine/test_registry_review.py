"""The pull-request check of a registry change: annotations on the right lines, promotions backed by verdicts.

Each test builds a real working tree (feature table, LOSO reports, ONNX models, verdicts),
then fetches into the head folder only what the App fetches: the registry, the files of
new or changed rows (``changed_model_files``) and each verdict with its inputs
(``verdict_inputs``). Unchanged rows' models are therefore absent, as in production.
"""

import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper

from engine.errors import EvidenceError, UsageError
from engine.features import load_features
from engine.gate import GateThresholds
from engine.hashing import sha256_file
from engine.policy import PromotionPolicy
from engine.registry_diff import Change, row_lines
from engine.registry_review import (
    FAILURE,
    MAX_MARKDOWN_BYTES,
    NO_VERDICT,
    NOTICE,
    RegistryReview,
    changed_model_files,
    review_registry_change,
    verdict_inputs,
)
from engine.scoring import ScoringLimits
from engine.verdict import decide
from tests.engine import onnx_factory
from tests.engine.test_verdict import (
    GOOD,
    bind_final_models,
    feature_frame,
    write_loso,
    write_parquet,
)

REGISTRY = "model/registry.json"
V03, V04, V05 = "fr-mlp-v03", "fr-mlp-v04", "fr-mlp-v05"
POLICY = PromotionPolicy()


@dataclass
class Work:
    """An author's working tree, and the base/head folders the App fetches from it."""

    root: Path
    base: Path
    head: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def model(self) -> Path:
        """Return the registry's folder."""
        return self.root / "model"

    def registry(self, rows: list[tuple[str, bool]], **changes: dict[str, Any]) -> str:
        """Write the working registry: (id, smoke) rows with real hashes, ``changes`` per id; return its text."""
        entries = []
        for timeline, (model_id, smoke) in enumerate(rows):
            onnx_path = self.files[model_id]
            entry: dict[str, Any] = {
                "id": model_id,
                "kind": "fr",
                "onnx": onnx_path.name,
                "sha256": sha256_file(onnx_path),
                "smoke": smoke,
                "opset": onnx_factory.OPSET,
                "license": "MIT",
                "timeline": timeline,
            }
            data = onnx_path.parent / f"{onnx_path.name}.data"
            if data.exists():
                entry["external_data"] = [{"path": data.name, "sha256": sha256_file(data)}]
            entry.update(changes.get(model_id, {}))
            entries.append(entry)
        text = json.dumps({"schema_version": 1, "models": entries}, indent=2)
        (self.root / REGISTRY).write_text(text, encoding="utf-8")
        return text

    def commit_base(self) -> None:
        """Fetch the base commit's registry (the App fetches nothing else at base)."""
        fetch(self.root, self.base, [REGISTRY])

    def verdict(self, name: str, models: list[str], *, loso: str = "runs/loso", **gate: Any) -> str:
        """Decide over the LOSO reports in ``loso`` for ``models``; return the verdict's repo path."""
        bind_final_models(self.root / loso, [self.files[model_id] for model_id in models])
        outcome = decide(
            self.root / loso,
            features=self.root / "data" / "features.parquet",
            out=self.model / "evidence" / name,
            thresholds=GateThresholds(**gate),
        )
        return outcome.path.relative_to(self.root).as_posix()

    def review(
        self,
        verdicts: tuple[str, ...] = (),
        *,
        policy: PromotionPolicy = POLICY,
        limits: ScoringLimits | None = None,
    ) -> RegistryReview:
        """Fetch the head commit as the App does, then review the change."""
        fetch(self.root, self.head, [REGISTRY])
        fetch(self.root, self.head, changed_model_files(self.base, self.head, REGISTRY))
        for verdict in verdicts:
            fetch(self.root, self.head, [verdict])
            if (self.head / verdict).is_file():
                folder = PurePosixPath(verdict).parent
                try:
                    inputs = verdict_inputs(self.head / verdict, root=self.head)
                except EvidenceError:
                    inputs = ()
                fetch(self.root, self.head, [os.path.normpath(folder / p) for p in inputs])
        return review_registry_change(
            self.base, self.head, REGISTRY, verdicts=verdicts, policy=policy, limits=limits
        )


def fetch(source: Path, target: Path, files: Any) -> None:
    """Copy repo-relative files from one tree to another (a file missing at source is skipped)."""
    for name in files:
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)


@pytest.fixture
def work(tmp_path: Path) -> Work:
    """A tree with a feature table, passing LOSO reports (seeds 0-4), and three models."""
    root = tmp_path / "work"
    features = write_parquet(feature_frame(), root / "data" / "features.parquet")
    write_loso(root / "runs" / "loso", load_features(features).content_hash)
    model = root / "model"
    model.mkdir()
    tree = Work(root=root, base=tmp_path / "base", head=tmp_path / "head")
    tree.files[V03] = onnx_factory.save(onnx_factory.linear_model(), model / f"{V03}.onnx")
    tree.files[V04] = onnx_factory.save_external(
        onnx_factory.linear_model(bias=1.5), model / f"{V04}.onnx", location=f"{V04}.onnx.data"
    )
    tree.files[V05] = onnx_factory.save(onnx_factory.linear_model(bias=2.5), model / f"{V05}.onnx")
    return tree


def flip(work: Work) -> str:
    """Base: v03 in production, v04 in smoke; head flips v04 to production. Return head text."""
    work.registry([(V03, False), (V04, True)])
    work.commit_base()
    return work.registry([(V03, False), (V04, False)])


def only(review: RegistryReview) -> tuple[str, ...]:
    """Return the problems of the review's single promotion."""
    assert len(review.promotions) == 1
    return review.promotions[0].problems


def test_honest_flip_is_backed_by_its_verdict_and_unchanged_models_are_not_needed(
    work: Work,
) -> None:
    text = flip(work)
    verdict = work.verdict("v04", [V04])
    review = work.review((verdict,))
    assert not (work.head / "model" / f"{V03}.onnx").exists()  # unchanged: never fetched
    assert review.annotations == ()
    [check] = review.promotions
    assert (check.model_id, check.verdict, check.problems) == (V04, verdict, ())
    assert check.line == row_lines(text)[V04]
    assert review.ok
    assert review.headline() == "1 promotion backed; registry valid"
    assert review.diff is not None and review.diff.ids(Change.PROMOTED) == (V04,)
    markdown = review.render_markdown()
    assert f"| `{V04}` | {check.line} | `{verdict}` | backed |" in markdown
    assert f"| `{V04}` | promoted | {check.line} | smoke: true -> false |" in markdown


def test_one_verdict_backs_every_model_it_binds(work: Work) -> None:
    work.registry([(V03, True), (V04, True)])
    work.commit_base()
    work.registry([(V03, False), (V04, False)])
    verdict = work.verdict("ensemble", [V03, V04])
    review = work.review((verdict,))
    assert [(p.model_id, p.verdict) for p in review.promotions] == [(V03, verdict), (V04, verdict)]
    assert review.headline() == "2 promotions backed; registry valid"


def test_flip_without_a_verdict_is_not_backed(work: Work) -> None:
    flip(work)
    review = work.review()
    assert only(review) == (NO_VERDICT,)
    assert review.promotions[0].verdict is None
    assert not review.ok
    assert review.headline() == (
        "fr-mlp-v04 is promoted without a PROMOTE verdict (none in the pull request's head commit)"
    )


def test_verdict_that_binds_another_model_does_not_back_the_flip(work: Work) -> None:
    flip(work)
    verdict = work.verdict("v03", [V03])
    review = work.review((verdict,))
    digest = sha256_file(work.files[V04])[:12]
    assert only(review) == (
        f"{verdict}: does not bind this model: registry would promote fr-mlp-v04 "
        f"(sha256 {digest}…) which the verdict does not cover",
    )
    assert review.headline().endswith("without a PROMOTE verdict that binds its model")


def test_verdict_for_the_old_bytes_does_not_back_a_changed_production_model(work: Work) -> None:
    work.registry([(V03, False)])
    work.commit_base()
    verdict = work.verdict("v03", [V03])
    onnx_factory.save(onnx_factory.linear_model(bias=9.0), work.files[V03])  # retrained
    work.registry([(V03, False)])
    review = work.review((verdict,))
    assert review.diff is not None and review.diff.ids(Change.CHANGED) == (V03,)
    assert (work.head / "model" / f"{V03}.onnx").is_file()  # changed: fetched and checked
    assert review.annotations == ()
    digest = sha256_file(work.files[V03])[:12]
    assert only(review) == (
        f"{verdict}: does not bind this model: registry would promote fr-mlp-v03 "
        f"(sha256 {digest}…) which the verdict does not cover",
    )


def test_verdict_passing_its_own_lax_thresholds_fails_the_policy_naming_the_rule(
    work: Work,
) -> None:
    flip(work)
    corpus = load_features(work.root / "data" / "features.parquet").content_hash
    write_loso(work.root / "runs" / "weak", corpus, dict.fromkeys(range(5), 0.90))
    verdict = work.verdict("v04", [V04], loso="runs/weak", mean_plcc=0.0, per_seed_min=0.0)
    assert verdict.endswith("/PROMOTE.json")  # the author's own gate passed
    other = work.verdict("v03", [V03])
    review = work.review((other, verdict))
    problems = only(review)
    assert problems[-1].startswith(f"{other}: does not bind this model: ")
    assert problems[0] == (
        f"{verdict}: policy: mean PLCC threshold 0.0 is laxer than the policy's 0.95 "
        "(promotion.min_mean_plcc)"
    )
    assert (
        f"{verdict}: policy: mean PLCC over seeds 0.9000 is below the policy's 0.95 "
        "(promotion.min_mean_plcc)"
    ) in problems
    assert review.headline() == (
        "fr-mlp-v04 is promoted without a PROMOTE verdict that meets the policy "
        "(min_mean_plcc, min_seed_plcc)"
    )


def test_verdict_with_fewer_seeds_and_sources_than_the_policy_is_not_enough(work: Work) -> None:
    flip(work)
    corpus = load_features(work.root / "data" / "features.parquet").content_hash
    write_loso(work.root / "runs" / "short", corpus, {0: 0.961, 1: 0.962, 2: 0.963})
    verdict = work.verdict("v04", [V04], loso="runs/short", seeds=(0, 1, 2))
    problems = only(work.review((verdict,), policy=PromotionPolicy(min_sources=6)))
    assert problems == (
        f"{verdict}: policy: the verdict was judged needing at least 5 held-out source(s), "
        "laxer than the policy's 6 (promotion.min_sources)",
        f"{verdict}: policy: the verdict's evidence has seeds 0,1,2; the policy asks for seeds "
        "0,1,2,3,4 (missing 3,4) (promotion.seeds)",
        f"{verdict}: policy: 5 held-out source(s), the policy asks for at least 6 "
        "(promotion.min_sources)",
    )


def test_hold_verdict_never_backs_even_when_it_binds_the_model(work: Work) -> None:
    flip(work)
    hold = work.verdict("v04", [V04], mean_plcc=0.99)
    assert hold.endswith("/HOLD.json")
    problems = only(work.review((hold,)))
    assert problems[0] == (
        f"{hold}: verdict HOLD.json is HOLD: a HOLD verdict can never back a promotion "
        "(its hashes are still checked)"
    )


def test_one_good_verdict_backs_the_flip_whatever_else_the_pull_request_holds(
    work: Work,
) -> None:
    flip(work)
    other = work.verdict("v03", [V03])
    good = work.verdict("v04", [V04])
    review = work.review((other, good, good))
    assert review.promotions[0].verdict == good and review.ok


def test_verdict_that_is_not_json_is_a_problem_line_not_an_exception(work: Work) -> None:
    flip(work)
    broken = work.model / "evidence" / "v04" / "PROMOTE.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"verdict": "PROMOTE",', encoding="utf-8")
    problems = only(work.review(("model/evidence/v04/PROMOTE.json", "../outside/PROMOTE.json")))
    assert problems[0].startswith("model/evidence/v04/PROMOTE.json: invalid JSON: ")
    assert problems[1] == (
        "../outside/PROMOTE.json: verdict path '../outside/PROMOTE.json' must not contain '..'"
    )
    assert str(work.head) not in "".join(problems)


def unsafe_model() -> Any:
    """Return a model using TopK, an op outside the scoring allowlist."""
    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    nodes = [helper.make_node("TopK", ["x", "k"], ["y", "idx"])]
    return onnx_factory.make_model(nodes, initializers=[k])


def test_new_model_failing_the_safety_check_is_annotated_on_its_file_and_its_row(
    work: Work,
) -> None:
    work.registry([(V03, False)])
    work.commit_base()
    onnx_factory.save(unsafe_model(), work.files[V05])
    text = work.registry([(V03, False), (V05, True)])
    review = work.review()
    reason = "op 'TopK' is not on the allowlist"
    on_file, on_row = review.annotations
    assert (on_file.path, on_file.line, on_file.level) == ("model/fr-mlp-v05.onnx", 1, FAILURE)
    assert on_file.message == f"model/fr-mlp-v05.onnx: {reason}"
    assert (on_row.path, on_row.line) == (REGISTRY, row_lines(text)[V05])
    assert on_row.message == f"fr-mlp-v05: model/fr-mlp-v05.onnx: {reason}"
    assert review.promotions == () and not review.ok
    assert review.headline().startswith("2 problems in the change: model/fr-mlp-v05.onnx: op")


def test_new_model_over_the_memory_budget_is_annotated_under_the_given_limits(
    work: Work,
) -> None:
    work.registry([(V03, False)])
    work.commit_base()
    model = onnx_factory.linear_model()
    padding = np.zeros((1024, 1024), dtype=np.float32)  # 4 MiB, under the 16 MiB file cap
    model.graph.initializer.append(numpy_helper.from_array(padding, "pad"))
    onnx_factory.save(model, work.files[V05])
    work.registry([(V03, False), (V05, True)])
    assert not any("memory budget" in a.message for a in work.review().annotations)
    review = work.review(limits=ScoringLimits(max_memory_bytes=2 * 1024 * 1024))
    on_file = review.annotations[0]
    assert on_file.message == (
        "model/fr-mlp-v05.onnx: tensor 'pad' is 4 MiB when dense; initializers and constants "
        "add up to 4.0 MiB, over the 2 MiB memory budget"
    )


def test_schema_error_in_the_head_registry_is_annotated_on_its_row(work: Work) -> None:
    flip(work)
    text = work.registry([(V03, False), (V04, False)], **{V04: {"smoke": "yes"}})
    review = work.review()
    assert review.diff is None and review.promotions == ()
    [annotation] = review.annotations
    assert (annotation.path, annotation.level) == (REGISTRY, FAILURE)
    assert annotation.line == row_lines(text)[V04] != 1
    assert annotation.message.startswith(f"{REGISTRY}#/models/1/smoke: ")
    assert review.headline().startswith(f"registry invalid: {REGISTRY}#/models/1/smoke: ")


def test_duplicate_id_is_annotated_where_it_repeats(work: Work) -> None:
    flip(work)
    text = work.registry([(V03, False), (V04, False), (V05, True)], **{V05: {"id": V03}})
    [annotation] = work.review().annotations
    assert "duplicate id 'fr-mlp-v03'" in annotation.message
    assert annotation.line == text.splitlines().index(f'      "id": "{V03}",', 5) + 1


def test_head_registry_that_is_not_json_is_annotated_at_the_error_line(work: Work) -> None:
    flip(work)
    (work.root / REGISTRY).write_text('{\n  "schema_version": 1,\n  "models": [\n}\n')
    [annotation] = work.review().annotations
    assert annotation.line == 4
    assert annotation.message.startswith(f"{REGISTRY}: invalid JSON: ")
    assert str(work.head) not in annotation.message


def test_hash_mismatch_of_a_new_row_is_annotated_on_its_row_but_unchanged_rows_are_not_checked(
    work: Work,
) -> None:
    work.registry([(V03, False), (V04, True)])
    work.commit_base()
    text = work.registry([(V03, False), (V04, True), (V05, True)], **{V05: {"sha256": "0" * 64}})
    review = work.review()
    [annotation] = review.annotations
    assert annotation.line == row_lines(text)[V05]
    assert annotation.message.startswith(f"{REGISTRY}#/models/2/sha256: sha256 mismatch")
    assert review.promotions == ()


def test_new_registry_treats_every_row_as_new(work: Work) -> None:
    work.registry([(V03, False), (V04, True)])
    review = review_registry_change_for_new(work)
    assert [p.model_id for p in review.promotions] == [V03]
    assert only(review) == (NO_VERDICT,)
    assert review.annotations == ()


def review_registry_change_for_new(work: Work) -> RegistryReview:
    """Review with no base registry (base_root None), fetching like the App."""
    assert changed_model_files(None, work.root, REGISTRY) == (
        f"model/{V03}.onnx",
        f"model/{V04}.onnx",
        f"model/{V04}.onnx.data",
    )
    fetch(work.root, work.head, [REGISTRY, *changed_model_files(None, work.root, REGISTRY)])
    return review_registry_change(None, work.head, REGISTRY, policy=POLICY)


def test_unreadable_base_registry_is_a_notice_and_every_row_counts_as_new(work: Work) -> None:
    work.registry([(V03, False)])
    (work.base / "model").mkdir(parents=True)
    (work.base / REGISTRY).write_text("not json", encoding="utf-8")
    review = work.review()
    assert review.annotations[0].level == NOTICE
    assert "every head row is treated as new" in review.annotations[0].message
    assert [p.model_id for p in review.promotions] == [V03]


def test_changed_model_files_lists_only_new_and_changed_rows_with_their_external_data(
    work: Work,
) -> None:
    work.registry([(V03, False), (V05, True)])
    work.commit_base()
    work.registry([(V03, False), (V05, True), (V04, True)], **{V05: {"sha256": "1" * 64}})
    fetch(work.root, work.head, [REGISTRY])
    assert changed_model_files(work.base, work.head, REGISTRY) == (
        f"model/{V05}.onnx",
        f"model/{V04}.onnx",
        f"model/{V04}.onnx.data",
    )


def test_unsafe_registry_path_is_refused() -> None:
    with pytest.raises(UsageError, match=r"must not contain '\.\.'"):
        review_registry_change(None, Path("."), "../registry.json", policy=POLICY)


def test_verdict_inputs_names_every_bound_file_relative_to_the_verdict(work: Work) -> None:
    verdict = work.root / work.verdict("v04", [V04])
    assert verdict_inputs(verdict, root=work.root) == (
        "../../../data/features.parquet",
        *(f"../../../runs/loso/loso_seed{seed}.json" for seed in GOOD),
        f"../../{V04}.onnx",
        f"../../{V04}.onnx.data",
        *(f"../../../runs/loso/final_seed{seed}.onnx" for seed in (1, 2, 3, 4)),
    )


def test_verdict_inputs_refuses_paths_leaving_the_repository_and_bad_json(work: Work) -> None:
    verdict = work.root / work.verdict("v04", [V04])
    with pytest.raises(EvidenceError, match=r"resolves outside the repository"):
        verdict_inputs(verdict, root=work.model)
    verdict.write_text("[1,", encoding="utf-8")
    with pytest.raises(EvidenceError, match=r"^model/evidence/v04/PROMOTE.json: invalid JSON"):
        verdict_inputs(verdict, root=work.root)
    verdict.write_text('{"verdict": "PROMOTE"}', encoding="utf-8")
    with pytest.raises(EvidenceError, match=r"PROMOTE.json: not a verdict: "):
        verdict_inputs(verdict, root=work.root)


def test_review_survives_pickling_and_serialises_to_json(work: Work) -> None:
    flip(work)
    review = work.review((work.verdict("v03", [V03]),))
    assert pickle.loads(pickle.dumps(review)) == review
    document = json.loads(json.dumps(review.to_dict()))
    assert document["ok"] is False and document["promotions"][0]["model_id"] == V04


def test_markdown_of_a_thousand_promotions_stays_under_the_limit(work: Work) -> None:
    rows = [
        {
            "id": f"fr-mlp-{index:04d}-{'x' * 40}",
            "kind": "fr",
            "onnx": f"{V03}.onnx",
            "sha256": sha256_file(work.files[V03]),
            "smoke": False,
            "opset": onnx_factory.OPSET,
            "license": "MIT",
            "timeline": index,
        }
        for index in range(1000)
    ]
    (work.root / REGISTRY).write_text(json.dumps({"schema_version": 1, "models": rows}, indent=2))
    fetch(work.root, work.head, [REGISTRY, *changed_model_files(None, work.root, REGISTRY)])
    review = review_registry_change(None, work.head, REGISTRY, policy=POLICY)
    markdown = review.render_markdown()
    assert len(review.promotions) == 1000
    assert len(markdown.encode("utf-8")) < MAX_MARKDOWN_BYTES
    assert "... and 960 more" in markdown
    assert "| model | line | verdict | result |" in markdown


def test_row_pointed_at_a_missing_file_is_checked_even_with_the_same_hash(work: Work) -> None:
    work.registry([(V03, False)])
    work.commit_base()
    text = work.registry([(V03, False)], **{V03: {"onnx": "moved/fr-mlp-v03.onnx"}})
    review = work.review()
    assert review.diff is not None and review.diff.items == ()  # same bytes: not a change
    [annotation] = review.annotations
    assert annotation.line == row_lines(text)[V03]
    assert annotation.message == f"{REGISTRY}#/models/0/onnx: model file fr-mlp-v03.onnx not found"


def test_model_appended_to_an_honest_verdict_does_not_back_its_flip(work: Work) -> None:
    work.registry([(V03, False), (V04, True), (V05, True)])
    work.commit_base()
    work.registry([(V03, False), (V04, False), (V05, False)])
    verdict = work.verdict("v04", [V04])
    path = work.root / verdict
    document = json.loads(path.read_text(encoding="utf-8"))
    document["bound_to"]["models"].append(
        {
            "path": f"../../{V05}.onnx",
            "sha256": sha256_file(work.files[V05]),
            "seed": 0,
            "external_data": [],
        }
    )
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    review = work.review((verdict,))
    assert not review.ok
    problems = {p.model_id: p.problems for p in review.promotions}
    expected = (
        f"{verdict}: model ../../{V05}.onnx: seed 0 is already traced to model ../../{V04}.onnx"
    )
    assert expected in problems[V05]
    assert expected in problems[V04]  # the forged verdict backs nothing at all
