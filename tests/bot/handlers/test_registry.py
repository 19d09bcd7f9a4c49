"""End-to-end tests of the registry check on pull requests: the real App against the sandbox.

The repository is this project's own model registry (``model/``: five single models and
the five members of the ensemble ``fr-ens-v1`` with its real LOSO evidence and PROMOTE
verdict) and the golden cache. The base branch has the ensemble's rows still ``smoke:
true``; each pull request changes what a maintainer would change, and the tests assert on
what the maintainer sees: the check run on the head commit (conclusion, title, annotations)
and the one sticky comment on the pull request.
"""

import asyncio
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from gidgethub import sansio

from bot.demo_pulls import (
    CONFIG,
    CONFIG_PATH,
    ENSEMBLE,
    STRICT_CONFIG,
    base_files,
    evidence_files,
    registry_text,
    regressing_change,
)
from bot.handlers.registry import (
    KIND,
    is_model_related,
    plan_pull_request,
    plan_rerun,
    plan_suite_rerun,
)
from bot.handlers.registry_view import PR_PURPOSE, REGISTRY_CHECK
from bot.jobs.scheduler import ScheduledRepo
from bot.repoconfig import default_config, parse_repo_config
from bot.store import JobSpec
from bot.surfaces.sticky import marker
from sandbox import Sandbox
from sandbox.events import pull_request_payload
from sandbox.records import CheckConclusion, CheckRun, CheckStatus, Comment, Issue, Repo
from sandbox.render import Renderer
from sandbox.webhooks import load_example
from tests.bot.handlers.conftest import (
    app_settings,
    running_app,
    seeded,
    wait_for_jobs,
)
from tests.bot.handlers.test_nightly import app_comments

ROOT = Path(__file__).resolve().parents[3]
TAG = marker(PR_PURPOSE)


async def no_schedules() -> list[ScheduledRepo]:
    """No nightly: these tests look at pull requests only."""
    return []


def registry_checks(sandbox: Sandbox, repo: Repo) -> list[CheckRun]:
    """Every registry check run on ``repo``, oldest first."""
    runs = [
        r
        for r in sandbox.state.check_runs.values()
        if r.repo_id == repo.id and r.name == REGISTRY_CHECK
    ]
    return sorted(runs, key=lambda r: r.id)


def only_registry_check(sandbox: Sandbox, repo: Repo, sha: str) -> CheckRun:
    """The one completed registry check on ``sha``."""
    runs = [r for r in registry_checks(sandbox, repo) if r.head_sha == sha]
    assert len(runs) == 1, runs
    assert runs[0].status is CheckStatus.COMPLETED
    return runs[0]


def pr_comment(sandbox: Sandbox, repo: Repo, pull: Issue) -> Comment:
    """The App's one sticky comment on the pull request."""
    comments = [c for c in app_comments(sandbox, repo) if c.issue_number == pull.number]
    assert len(comments) == 1, [c.body[:80] for c in comments]
    assert TAG in comments[0].body
    return comments[0]


async def judge_pull(
    sandbox: Sandbox,
    tmp_path: Path,
    head_files: Mapping[str, bytes | None],
    *,
    base: Mapping[str, bytes] | None = None,
) -> tuple[Repo, Issue, str]:
    """Open a pull request changing ``head_files`` on the base, deliver ``opened``, wait."""
    _, repo = seeded(sandbox, base if base is not None else base_files())
    pull = sandbox.state.add_pull(repo, head="change", files=dict(head_files))
    head = sandbox.state.pull_head(repo, pull)
    async with running_app(
        app_settings(sandbox, tmp_path), schedule_source=no_schedules
    ) as running:
        delivery = await sandbox.deliver_pull_request(running.webhook_url, repo, pull)
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=1, timeout=120)
    sandbox.assert_valid()
    return repo, pull, head


# ---- the scenarios a maintainer meets ------------------------------------------------------


async def test_honest_promotion_passes_with_every_row_backed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The ensemble's flip with its real PROMOTE verdict and LOSO reports: green, one comment."""
    change = {"model/registry.json": registry_text(promoted=True)} | evidence_files()
    repo, pull, head = await judge_pull(sandbox, tmp_path, change)
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.SUCCESS, check.output
    assert check.external_id is not None and check.external_id.startswith(
        f"registry:{repo.full_name}#{pull.number}:"
    )
    body = pr_comment(sandbox, repo, pull).body
    for member in ENSEMBLE:
        assert f"`{member}`" in body
    assert "model/evidence/fr-ens-v1/PROMOTE.json" in body
    assert check.output.annotations_count == 0
    assert [a.identifier for a in check.actions] == ["full-scan", "rerun"]


async def test_flip_without_a_verdict_fails_naming_each_row(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    repo, pull, head = await judge_pull(
        sandbox, tmp_path, {"model/registry.json": registry_text(promoted=True)}
    )
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.FAILURE
    assert check.output.title is not None and "fr-ens-v1-m" in check.output.title
    body = pr_comment(sandbox, repo, pull).body
    assert "no PROMOTE verdict" in body
    for member in ENSEMBLE:
        assert f"`{member}`" in body
    # Each unbacked row is annotated on its own line of the registry.
    lines = registry_text(promoted=True).decode().splitlines()
    rows = {i for i, line in enumerate(lines, 1) if '"id": "fr-ens-v1-m' in line}
    annotated = {a["start_line"] for a in check.output.annotations}
    assert annotated == rows and len(rows) == 5


async def test_flip_whose_verdict_binds_another_model_hash_fails(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """m0's file swapped for m1's bytes (and the registry's hash updated): the verdict does not bind it."""
    document = json.loads(registry_text(promoted=True))
    swapped = (ROOT / "model" / "fr-ens-v1-m1.onnx").read_bytes()
    for row in document["models"]:
        if row["id"] == "fr-ens-v1-m0":
            row["sha256"] = hashlib.sha256(swapped).hexdigest()
    change = {
        "model/registry.json": (json.dumps(document, indent=2) + "\n").encode(),
        "model/fr-ens-v1-m0.onnx": swapped,
    } | evidence_files()
    repo, pull, head = await judge_pull(sandbox, tmp_path, change)
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.FAILURE
    body = pr_comment(sandbox, repo, pull).body
    assert check.output.title is not None and "fr-ens-v1-m0" in check.output.title
    assert "fr-ens-v1-m0" in body


async def test_verdict_laxer_than_the_base_policy_fails_naming_the_rule(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The verdict passed its own gate (mean PLCC 0.975 >= 0.95); the repository asks 0.98."""
    change = {"model/registry.json": registry_text(promoted=True)} | evidence_files()
    repo, pull, head = await judge_pull(
        sandbox, tmp_path, change, base=base_files(config=STRICT_CONFIG)
    )
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.FAILURE
    assert "min_mean_plcc" in pr_comment(sandbox, repo, pull).body


async def test_a_pull_request_cannot_lower_the_policy_it_is_judged_by(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The base asks 0.98; the pull request lowers it to 0.9 in the same change: still judged at 0.98."""
    lowered = CONFIG + b"promotion:\n  min_mean_plcc: 0.9\n"
    change = {
        "model/registry.json": registry_text(promoted=True),
        CONFIG_PATH: lowered,
    } | evidence_files()
    repo, _pull, head = await judge_pull(
        sandbox, tmp_path, change, base=base_files(config=STRICT_CONFIG)
    )
    assert only_registry_check(sandbox, repo, head).conclusion is CheckConclusion.FAILURE


async def test_a_change_that_regresses_fails_and_names_the_model(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A new smoke model at the end of the timeline that fails the gate turns the check red."""
    change = regressing_change()
    repo, pull, head = await judge_pull(sandbox, tmp_path, change)
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.FAILURE
    assert check.output.title is not None and "fr-mlp-2026.06" in check.output.title
    body = pr_comment(sandbox, repo, pull).body
    assert "fr-mlp-2026.06" in body
    # Blame: the row was added by this pull request's own commit.
    assert f"Introduced by [`{head[:7]}`]" in body
    assert f"[#{pull.number}]" in body and "(Update models)" in body
    assert check.output.text is not None and f"Introduced by [`{head[:7]}`]" in check.output.text


async def test_invalid_head_registry_is_annotated_on_its_line(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A row whose sha256 is not a hash: a failure annotation on that row's line."""
    document = json.loads(registry_text(promoted=False))
    document["models"][2]["sha256"] = "not-a-hash"
    text = (json.dumps(document, indent=2) + "\n").encode()
    repo, _pull, head = await judge_pull(sandbox, tmp_path, {"model/registry.json": text})
    check = only_registry_check(sandbox, repo, head)
    assert check.conclusion is CheckConclusion.FAILURE
    lines = text.decode().splitlines()
    wanted = next(i for i, line in enumerate(lines, 1) if '"id": "fr-mlp-2026.03"' in line)
    annotations = check.output.annotations
    assert annotations, check.output
    assert all(a["path"] == "model/registry.json" for a in annotations)
    assert any(a["start_line"] in range(wanted, wanted + 12) for a in annotations), annotations


async def test_a_pull_request_that_changes_nothing_model_related_gets_no_check(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    repo, pull, _ = await judge_pull(sandbox, tmp_path, {"README.md": b"# models, better\n"})
    assert registry_checks(sandbox, repo) == []
    assert [c for c in app_comments(sandbox, repo) if c.issue_number == pull.number] == []


async def test_a_newer_push_cancels_the_older_check_and_judges_the_new_head(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The opened event arrives after a second push: one completed check per head sha, the old one cancelled."""
    _, repo = seeded(sandbox, base_files())
    state = sandbox.state
    pull = state.add_pull(
        repo, head="change", files={"model/registry.json": registry_text(promoted=True)}
    )
    first = state.pull_head(repo, pull)
    opened = pull_request_payload(Renderer(state, sandbox.url), repo, pull)
    second = state.commit(repo, evidence_files(), message="Add the evidence", branch="change")
    async with running_app(
        app_settings(sandbox, tmp_path), schedule_source=no_schedules
    ) as running:
        await sandbox.deliver(running.webhook_url, "pull_request", opened)
        await sandbox.deliver_pull_request(
            running.webhook_url, repo, pull, action="synchronize", before=first
        )
        await wait_for_jobs(running.store, done=2, timeout=120)
    old, new = only_registry_check(sandbox, repo, first), only_registry_check(sandbox, repo, second)
    assert old.conclusion is CheckConclusion.CANCELLED
    assert old.output.title == f"Superseded by {second[:7]}"
    assert new.conclusion is CheckConclusion.SUCCESS
    assert second[:7] in pr_comment(sandbox, repo, pull).body
    sandbox.assert_valid()


async def test_a_push_while_the_run_is_judging_cancels_it_before_it_publishes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The run has opened its check when the push lands: it judges, sees the new head, publishes nothing."""
    _, repo = seeded(sandbox, base_files())
    state = sandbox.state
    pull = state.add_pull(
        repo, head="change", files={"model/registry.json": registry_text(promoted=True)}
    )
    first = state.pull_head(repo, pull)
    # Hold the run once it is judging (its first read is the base commit), long enough to push.
    base = state.branches[repo.id]["main"]
    sandbox.faults.slow("GET", f"/repos/{repo.full_name}/commits/{base}$", seconds=2.0)
    async with running_app(
        app_settings(sandbox, tmp_path), schedule_source=no_schedules
    ) as running:
        await sandbox.deliver_pull_request(running.webhook_url, repo, pull)
        for _ in range(1000):
            checks = registry_checks(sandbox, repo)
            if checks and checks[0].status is CheckStatus.IN_PROGRESS:
                break
            await asyncio.sleep(0.01)
        assert registry_checks(sandbox, repo)[0].status is CheckStatus.IN_PROGRESS
        second = state.commit(repo, evidence_files(), message="Add the evidence", branch="change")
        await sandbox.deliver_pull_request(
            running.webhook_url, repo, pull, action="synchronize", before=first
        )
        await wait_for_jobs(running.store, done=2, timeout=120)
    old, new = only_registry_check(sandbox, repo, first), only_registry_check(sandbox, repo, second)
    assert old.conclusion is CheckConclusion.CANCELLED
    # It was running, not merely queued: its check turned in progress before it was cancelled.
    patched = sandbox.requests_to("PATCH", f"/repos/{repo.full_name}/check-runs/{old.id}")
    assert [r.body.get("status") for r in patched] == ["in_progress", "completed"]
    assert new.conclusion is CheckConclusion.SUCCESS
    body = pr_comment(sandbox, repo, pull).body
    assert second[:7] in body and first[:7] not in body
    sandbox.assert_valid()


async def test_each_push_edits_the_one_comment_in_place(sandbox: Sandbox, tmp_path: Path) -> None:
    _, repo = seeded(sandbox, base_files())
    state = sandbox.state
    pull = state.add_pull(
        repo, head="change", files={"model/registry.json": registry_text(promoted=True)}
    )
    first = state.pull_head(repo, pull)
    async with running_app(
        app_settings(sandbox, tmp_path), schedule_source=no_schedules
    ) as running:
        await sandbox.deliver_pull_request(running.webhook_url, repo, pull)
        await wait_for_jobs(running.store, done=1, timeout=120)
        comment_id = pr_comment(sandbox, repo, pull).id
        assert only_registry_check(sandbox, repo, first).conclusion is CheckConclusion.FAILURE
        second = state.commit(repo, evidence_files(), message="Add the evidence", branch="change")
        await sandbox.deliver_pull_request(
            running.webhook_url, repo, pull, action="synchronize", before=first
        )
        await wait_for_jobs(running.store, done=2, timeout=120)
    comment = pr_comment(sandbox, repo, pull)
    assert comment.id == comment_id and second[:7] in comment.body
    assert only_registry_check(sandbox, repo, second).conclusion is CheckConclusion.SUCCESS


# ---- planning, without HTTP ------------------------------------------------------------------


def _pull_event(action: str, *, draft: bool = False, delivery: str = "d-1") -> sansio.Event:
    payload = load_example("pull_request", "opened")
    payload["action"] = action
    payload["pull_request"]["draft"] = draft
    payload.setdefault("installation", {"id": 7})
    return sansio.Event(payload, event="pull_request", delivery_id=delivery)


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened", "ready_for_review"])
def test_pull_request_actions_plan_one_job_on_the_head_sha(action: str) -> None:
    event = _pull_event(action)
    jobs: list[JobSpec] = []
    plan_pull_request(event, jobs)
    (job,) = jobs
    pull = event.data["pull_request"]
    assert job.kind == KIND
    assert job.payload["head_sha"] == pull["head"]["sha"]
    assert job.payload["number"] == pull["number"]
    assert job.key == f"registry:{event.data['repository']['full_name']}#{pull['number']}:d-1"
    repo = event.data["repository"]["full_name"].lower()
    assert job.serial_key == f"{repo}#{pull['number']}#pr"  # one check of a pull at a time


@pytest.mark.parametrize("action", ["closed", "labeled", "edited", "assigned"])
def test_other_pull_request_actions_and_drafts_plan_nothing(action: str) -> None:
    jobs: list[JobSpec] = []
    plan_pull_request(_pull_event(action), jobs)
    plan_pull_request(_pull_event("opened", draft=True), jobs)
    assert jobs == []


def test_rerun_of_a_fork_check_finds_the_pull_request_by_its_external_id() -> None:
    payload = load_example("check_run", "rerequested")
    payload.setdefault("installation", {"id": 7})
    repo = payload["repository"]["full_name"]
    payload["check_run"].update(
        name=REGISTRY_CHECK,
        head_sha="f" * 40,
        pull_requests=[],
        external_id=f"registry:{repo}#12:x",
    )
    jobs: list[JobSpec] = []
    plan_rerun(sansio.Event(payload, event="check_run", delivery_id="r-1"), jobs)
    payload["check_run"]["name"] = "model-guard/nightly"
    plan_rerun(sansio.Event(payload, event="check_run", delivery_id="r-2"), jobs)
    (job,) = jobs
    assert (job.payload["number"], job.payload["head_sha"]) == (12, "f" * 40)


def test_suite_rerun_plans_the_registry_check_of_each_pull_request() -> None:
    payload = load_example("check_suite", "rerequested")
    payload.setdefault("installation", {"id": 7})
    payload["check_suite"]["pull_requests"] = [{"number": 3}, {"number": 4}, {"id": "x"}]
    jobs: list[JobSpec] = []
    plan_suite_rerun(sansio.Event(payload, event="check_suite", delivery_id="s-1"), jobs)
    assert [job.payload["number"] for job in jobs] == [3, 4]


def test_model_related_paths_follow_the_configuration() -> None:
    config = parse_repo_config(CONFIG.decode(), source=CONFIG_PATH)
    related = [
        "model/registry.json",
        "model/new.onnx",
        "testdata/bisect/features.parquet",
        CONFIG_PATH,
        "elsewhere/evidence/v2/PROMOTE.json",
        "runs/loso_seed3.json",
        "weights/big.onnx.data",
    ]
    assert all(is_model_related(path, config) for path in related)
    assert not any(
        is_model_related(path, config) for path in ("README.md", "src/app.py", "docs/PROMOTE.md")
    )
    assert is_model_related("model/registry.json", default_config())


# ---- re-runs: the check's buttons and "Re-run all checks" ------------------------------------


async def test_rerun_all_checks_and_the_full_scan_button_judge_the_pull_request_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Each re-run is a new check run on the same head; the one comment is edited in place."""
    _, repo = seeded(sandbox, base_files())
    state = sandbox.state
    change = {"model/registry.json": registry_text(promoted=True)} | evidence_files()
    pull = state.add_pull(repo, head="change", files=change)
    head = state.pull_head(repo, pull)
    async with running_app(
        app_settings(sandbox, tmp_path), schedule_source=no_schedules
    ) as running:
        await sandbox.deliver_pull_request(running.webhook_url, repo, pull)
        await wait_for_jobs(running.store, done=1, timeout=120)
        (first,) = registry_checks(sandbox, repo)
        comment_id = pr_comment(sandbox, repo, pull).id
        suite = await sandbox.deliver_check_suite(running.webhook_url, repo, first.check_suite_id)
        assert suite.status_code == 202
        await wait_for_jobs(running.store, done=2, timeout=120)
        pressed = load_example("check_run", "requested_action")
        pressed["repository"].update(id=repo.id, name=repo.name, full_name=repo.full_name)
        pressed["repository"]["owner"].update(login=repo.owner.login, id=repo.owner.id)
        pressed["installation"] = {"id": sandbox.state.installation_for(repo).id}
        pressed["requested_action"] = {"identifier": "full-scan"}
        pressed["check_run"].update(
            name=REGISTRY_CHECK,
            head_sha=head,
            external_id=first.external_id,
            pull_requests=[{"number": pull.number}],
        )
        delivery = await sandbox.deliver(running.webhook_url, "check_run", pressed)
        assert delivery.status_code == 202
        await wait_for_jobs(running.store, done=3, timeout=120)
    runs = registry_checks(sandbox, repo)
    assert len(runs) == 3 and {r.head_sha for r in runs} == {head}
    assert all(r.conclusion is CheckConclusion.SUCCESS for r in runs)
    assert runs[1].external_id is not None and ":suite:" in runs[1].external_id
    assert runs[2].external_id is not None and ":full-scan:" in runs[2].external_id
    body = pr_comment(sandbox, repo, pull).body
    assert pr_comment(sandbox, repo, pull).id == comment_id
    assert "10 of 10 models visited" in body  # the full scan judged every model
    # The suite of a pull request's commit re-runs the registry check, not the nightly.
    assert [r.name for r in state.check_runs.values() if r.repo_id == repo.id] == [
        REGISTRY_CHECK
    ] * 3


async def test_a_pull_request_adding_a_family_and_frame_models_gets_one_comment_with_each_family(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The base has one FR family (already regressing); the change adds a second family and frame models."""
    from tests.bot.handlers.conftest import CONFIG, CONFIG_PATH
    from tests.families import REGISTRY, mixed_files

    head = mixed_files()
    document = json.loads(head[REGISTRY])
    document["models"] = [row for row in document["models"] if row["onnx"].startswith("a/")]
    base = {
        **{path: data for path, data in head.items() if not path.startswith("models/")},
        **{path: data for path, data in head.items() if path.startswith("models/a/")},
        REGISTRY: json.dumps(document, indent=2).encode(),
        CONFIG_PATH: CONFIG,
    }
    change = {path: data for path, data in head.items() if path not in base or path == REGISTRY}
    repo, pull, sha = await judge_pull(sandbox, tmp_path, change, base=base)
    check = only_registry_check(sandbox, repo, sha)
    # The regression was already there at the base: neutral, and frame models raise nothing.
    assert check.conclusion is CheckConclusion.NEUTRAL, check.output
    assert check.output.annotations_count == 0
    body = pr_comment(sandbox, repo, pull).body
    assert "#### Family `fr/features6`" in body and "#### Family `fr/good`" in body
    assert "not judged (kind nr: needs frames)" in body
    assert "not judged (kind fr: needs two or more frame inputs)" in body


async def test_a_pull_request_on_an_imported_field_registry_raises_no_false_alarm(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The field's 24-row registry, imported, at the base; the change adds a new regressor version."""
    from engine.registry_import import import_registry
    from tests.bot.handlers.conftest import CONFIG, CONFIG_PATH
    from tests.families import BISECT, FEATURES
    from tests.fixtures.foreign_registry import write_foreign_registry

    source = write_foreign_registry(tmp_path / "tiny").registry
    folder = source.parent
    base = {
        f"model/tiny/{path.relative_to(folder).as_posix()}": path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    document = import_registry(source).document
    base["model/tiny/model-guard.json"] = json.dumps(document, indent=2).encode()
    base[FEATURES] = (BISECT / "features.parquet").read_bytes()
    base[CONFIG_PATH] = CONFIG.replace(b"models/registry.json", b"model/tiny/model-guard.json")
    newest = max(
        document["models"],
        key=lambda row: row["timeline"] if row["id"].startswith("fr_tiny") else -1,
    )
    added = {
        **newest,
        "id": "fr_tiny_v11",
        "timeline": 1 + max(r["timeline"] for r in document["models"]),
        "smoke": True,  # not promoted: no verdict needed
    }
    head = {**document, "models": [*document["models"], added]}
    change = {"model/tiny/model-guard.json": json.dumps(head, indent=2).encode()}
    (tmp_path / "run").mkdir()
    repo, pull, sha = await judge_pull(sandbox, tmp_path / "run", change, base=base)
    check = only_registry_check(sandbox, repo, sha)
    body = pr_comment(sandbox, repo, pull).body
    assert check.conclusion is CheckConclusion.SUCCESS, body
    assert check.output.annotations_count == 0
    assert "fr_tiny_v11" in body
    assert "#### Family `fr/features6+codec18`" in body
    assert "not judged (kind nr: needs frames)" in body
