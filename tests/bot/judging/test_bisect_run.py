"""Bisecting a repository's timeline over real HTTP: a real RepoFiles, a real engine pool.

One engine pool serves the whole module (its processes import onnxruntime once), so the
tests share the module's event loop; each test gets its own sandbox, blob cache, working
folder and evaluation store, so every count below starts from zero.
"""

import hashlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import onnx
import pytest
import pytest_asyncio
from gidgethub.aiohttp import GitHubAPI

from bot.github.repofiles import RepoFileError, RepoFiles, blob_sha
from bot.judging.bisect_run import MAX_MODEL_BYTES, RunStopped, TimelineJudge, TimelineRun
from bot.judging.pool import EnginePool, EngineTimeout
from bot.repoconfig import RepoConfig
from engine.bisection import Outcome
from engine.errors import RegistryError
from engine.scoring import ScoringLimits
from sandbox import Sandbox, SandboxState
from sandbox.records import Repo
from tests.conftest import installation_token, seed_repo
from tests.engine import attack_models

pytestmark = pytest.mark.asyncio(loop_scope="module")

TESTDATA = Path(__file__).resolve().parents[3] / "testdata" / "bisect"
REPO = "acme/models"
REGISTRY = "models/registry.json"
FEATURES = "golden/features.parquet"
CONFIG = RepoConfig(registry=REGISTRY, features=FEATURES, min_plcc=0.9)
BLOBS = r"/repos/acme/models/git/blobs/([0-9a-f]{40})"


def repository_files(timeline: str) -> dict[str, bytes]:
    """A repository laid out like the demo's: the registry folder under models/, the cache."""
    folder = TESTDATA / timeline
    files = {f"models/{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    files[FEATURES] = (TESTDATA / "features.parquet").read_bytes()
    return files


@dataclass
class World:
    """A seeded sandbox repository, an API client, and a judge on fresh folders."""

    sandbox: Sandbox
    repo: Repo
    files: dict[str, bytes]
    gh: GitHubAPI
    judge: TimelineJudge

    async def run(self, *, full: bool = False) -> TimelineRun:
        snapshot = await self.judge.files.snapshot(self.gh, REPO, "main")
        return await self.judge.judge(self.gh, snapshot, CONFIG, full=full)

    def fetched_paths(self) -> list[str]:
        """The repository paths whose blobs were downloaded, in request order."""
        by_sha = {blob_sha(data): path for path, data in self.files.items()}
        shas = [r.path.rsplit("/", 1)[1] for r in self.sandbox.requests_to("GET", BLOBS)]
        return [by_sha[sha] for sha in shas]

    def fetched_models(self) -> list[str]:
        return [path for path in self.fetched_paths() if path.endswith(".onnx")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool() -> AsyncIterator[EnginePool]:
    engine = EnginePool(processes=1, timeout=120.0)
    try:
        yield engine
    finally:
        await engine.close()


async def make_world(
    pool: EnginePool, tmp_path: Path, files: Mapping[str, bytes]
) -> AsyncIterator[World]:
    sandbox = Sandbox(SandboxState())
    await sandbox.start()
    try:
        installation, repo = seed_repo(sandbox.state, files)
        token = await installation_token(sandbox, installation)
        async with aiohttp.ClientSession() as session:
            gh = GitHubAPI(session, "model-guard-tests", oauth_token=token, base_url=sandbox.url)
            judge = TimelineJudge(
                files=RepoFiles(tmp_path / "blobs"),
                pool=pool,
                workdir=tmp_path / "work",
                evaluations=tmp_path / "evaluations",
            )
            yield World(sandbox, repo, dict(files), gh, judge)
        sandbox.assert_valid()
    finally:
        await sandbox.close()


@pytest_asyncio.fixture(loop_scope="module")
async def regression(pool: EnginePool, tmp_path: Path) -> AsyncIterator[World]:
    async for world in make_world(pool, tmp_path, repository_files("regression")):
        yield world


def visited(run: TimelineRun) -> list[str]:
    return [step["name"] for step in run.report["steps"]]


def workdir_is_empty(world: World) -> bool:
    work = world.judge.workdir
    return not work.exists() or not any(work.iterdir())


async def test_regression_timeline_finds_v06_fetching_only_the_visited_models(
    regression: World,
) -> None:
    run = await regression.run()
    assert run.outcome is Outcome.REGRESSION
    assert run.report["first_bad_model"] == "fr-mlp-v06"
    assert run.report["last_good_model"] == "fr-mlp-v05"
    assert "fr-mlp-v06" in run.summary and "fr-mlp-v06" in run.markdown
    assert run.repo == REPO
    assert run.commit_sha == regression.sandbox.state.branches[regression.repo.id]["main"]
    bound = math.ceil(math.log2(10)) + 2
    assert run.fetched_models <= bound == 6
    # Exactly the visited models' blobs were requested, each once; the others never were.
    fetched = regression.fetched_models()
    assert sorted(fetched) == sorted(f"models/{name}.onnx" for name in visited(run))
    assert len(fetched) == run.fetched_models == len(set(fetched))
    assert sorted(regression.fetched_paths()) == sorted([*fetched, REGISTRY, FEATURES])
    assert run.report["evaluations"]["scored"] == run.fetched_models


async def test_allgood_timeline_fetches_only_the_newest_model(
    pool: EnginePool, tmp_path: Path
) -> None:
    async for world in make_world(pool, tmp_path, repository_files("allgood")):
        run = await world.run()
        assert run.outcome is Outcome.NO_REGRESSION
        assert run.fetched_models == 1
        assert world.fetched_models() == ["models/fr-mlp-good-v07.onnx"]


async def test_full_run_fetches_and_judges_every_model(regression: World) -> None:
    run = await regression.run(full=True)
    assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
    assert run.report["mode"] == "full"
    assert run.fetched_models == 10
    assert sorted(regression.fetched_models()) == [
        f"models/fr-mlp-v{i:02d}.onnx" for i in range(10)
    ]


async def test_report_names_repository_paths_never_the_working_folder(
    regression: World, tmp_path: Path
) -> None:
    run = await regression.run()
    dumped = json.dumps(run.report)
    for shown in (dumped, run.markdown, run.summary):
        assert str(tmp_path) not in shown
        assert str(regression.judge.workdir) not in shown
    assert run.report["timeline"]["registry"] == REGISTRY
    assert run.report["features"]["path"] == FEATURES
    assert {step["path"] for step in run.report["steps"]} == {
        f"models/{name}.onnx" for name in visited(run)
    }


async def test_working_folder_is_removed_after_a_run(regression: World) -> None:
    await regression.run()
    assert regression.judge.workdir.is_dir()  # it was used...
    assert workdir_is_empty(regression)  # ...and the job's copy is gone


async def test_second_run_takes_every_verdict_from_the_evaluation_store(
    regression: World,
) -> None:
    first = await regression.run()
    second = await regression.run()
    assert second.outcome is first.outcome and second.summary == first.summary
    assert second.report["evaluations"]["scored"] == 0
    assert second.report["evaluations"]["from_store"] == second.fetched_models
    assert all(step["cached"] for step in second.report["steps"])


async def test_model_missing_from_the_tree_is_a_broken_step_with_a_one_line_reason(
    pool: EnginePool, tmp_path: Path
) -> None:
    files = repository_files("regression")
    del files["models/fr-mlp-v09.onnx"]
    async for world in make_world(pool, tmp_path, files):
        run = await world.run()
        assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
        newest = next(s for s in run.report["steps"] if s["name"] == "fr-mlp-v09")
        assert newest["status"] == "fail"
        assert newest["broken"] is not None and "\n" not in newest["broken"]
        assert newest["broken"].startswith("models/fr-mlp-v09.onnx at ")
        assert newest["broken"].endswith(": missing")
        assert "models/fr-mlp-v09.onnx" not in world.fetched_models()
        assert workdir_is_empty(world)


async def test_model_over_the_size_cap_is_broken_without_being_downloaded(
    pool: EnginePool, tmp_path: Path
) -> None:
    files = repository_files("regression")
    files["models/fr-mlp-v09.onnx"] = b"\0" * (MAX_MODEL_BYTES + 1)
    async for world in make_world(pool, tmp_path, files):
        run = await world.run()
        assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
        newest = next(s for s in run.report["steps"] if s["name"] == "fr-mlp-v09")
        assert newest["status"] == "fail"
        assert newest["broken"] is not None and "\n" not in newest["broken"]
        assert "16,777,217 bytes is over the 16 MiB limit" in newest["broken"]
        assert "models/fr-mlp-v09.onnx" not in world.fetched_models()


def registry_with(onnx: str) -> bytes:
    """The regression registry with its newest model pointing at ``onnx``."""
    document = json.loads((TESTDATA / "regression" / "registry.json").read_bytes())
    document["models"][-1]["onnx"] = onnx
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("onnx", "message"),
    [
        ("../fr-mlp-v09.onnx", "must not contain '..'"),
        ("weights/../../secret.onnx", "must not contain '..'"),
        ("/etc/fr-mlp-v09.onnx", "must be relative to the registry folder"),
    ],
)
async def test_registry_naming_a_model_outside_the_repository_is_a_clear_error(
    pool: EnginePool, tmp_path: Path, onnx: str, message: str
) -> None:
    files = repository_files("regression")
    files[REGISTRY] = registry_with(onnx)
    async for world in make_world(pool, tmp_path, files):
        with pytest.raises(RegistryError) as raised:
            await world.run()
        text = str(raised.value)
        assert "\n" not in text
        assert message in text and onnx in text
        assert world.fetched_models() == []
        assert workdir_is_empty(world)


async def test_config_naming_a_registry_outside_the_repository_is_a_clear_error(
    regression: World,
) -> None:
    snapshot = await regression.judge.files.snapshot(regression.gh, REPO, "main")
    config = RepoConfig(registry="../registry.json", features=FEATURES)
    with pytest.raises(RepoFileError, match=r"^\.\./registry\.json at [0-9a-f]{7}: .*'\.\.'"):
        await regression.judge.judge(regression.gh, snapshot, config)
    assert regression.fetched_paths() == []
    assert workdir_is_empty(regression)


def with_external_newest(files: dict[str, bytes], tmp_path: Path) -> dict[str, bytes]:
    """``files`` with the newest model's weights moved to an external data file beside it."""
    source = tmp_path / "v09" / "fr-mlp-v09.onnx"
    source.parent.mkdir()
    source.write_bytes(files["models/fr-mlp-v09.onnx"])
    model = onnx.load_model(str(source))
    onnx.save_model(
        model,
        str(source),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="fr-mlp-v09.onnx.data",
        size_threshold=0,
    )
    graph, weights = source.read_bytes(), (source.parent / "fr-mlp-v09.onnx.data").read_bytes()
    document = json.loads(files[REGISTRY])
    newest = document["models"][-1]
    newest["sha256"] = hashlib.sha256(graph).hexdigest()
    newest["external_data"] = [
        {"path": "fr-mlp-v09.onnx.data", "sha256": hashlib.sha256(weights).hexdigest()}
    ]
    return {
        **files,
        REGISTRY: json.dumps(document).encode(),
        "models/fr-mlp-v09.onnx": graph,
        "models/fr-mlp-v09.onnx.data": weights,
    }


async def test_model_with_external_data_fetches_its_weights_and_is_judged(
    pool: EnginePool, tmp_path: Path
) -> None:
    files = with_external_newest(repository_files("regression"), tmp_path)
    async for world in make_world(pool, tmp_path, files):
        run = await world.run()
        assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
        newest = next(s for s in run.report["steps"] if s["name"] == "fr-mlp-v09")
        assert newest["broken"] is None and newest["metrics"] is not None
        assert newest["path"] == "models/fr-mlp-v09.onnx"
        assert "models/fr-mlp-v09.onnx.data" in world.fetched_paths()


async def test_model_whose_external_data_is_missing_is_a_broken_step(
    pool: EnginePool, tmp_path: Path
) -> None:
    files = with_external_newest(repository_files("regression"), tmp_path)
    del files["models/fr-mlp-v09.onnx.data"]
    async for world in make_world(pool, tmp_path, files):
        run = await world.run()
        assert run.report["first_bad_model"] == "fr-mlp-v06"
        newest = next(s for s in run.report["steps"] if s["name"] == "fr-mlp-v09")
        assert newest["status"] == "fail"
        assert newest["broken"].startswith("models/fr-mlp-v09.onnx.data at ")
        assert newest["broken"].endswith(": missing")


def with_newest(files: dict[str, bytes], model: onnx.ModelProto) -> dict[str, bytes]:
    """``files`` with the newest model replaced by ``model`` (its registry sha256 updated)."""
    data = model.SerializeToString()
    document = json.loads(files[REGISTRY])
    document["models"][-1]["sha256"] = hashlib.sha256(data).hexdigest()
    return {**files, REGISTRY: json.dumps(document).encode(), "models/fr-mlp-v09.onnx": data}


async def test_a_model_over_its_own_budget_is_a_broken_step_and_the_run_goes_on(
    pool: EnginePool, tmp_path: Path
) -> None:
    files = with_newest(repository_files("regression"), attack_models.slow_model())
    async for world in make_world(pool, tmp_path, files):
        world.judge = replace(world.judge, limits=ScoringLimits(timeout_s=2.0))
        run = await world.run()
        assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
        newest = next(s for s in run.report["steps"] if s["name"] == "fr-mlp-v09")
        assert newest["status"] == "fail"
        assert newest["broken"] == "exceeded the 2 s limit while scoring"
        stored = [p.read_text() for p in world.judge.evaluations.rglob("*.json")]
        assert len(stored) == len(run.report["steps"]) - 1
        assert not any('"fr-mlp-v09"' in text for text in stored)


async def test_a_run_past_its_engine_time_limit_stops_with_the_limit_named(
    regression: World,
) -> None:
    # The limit covers the whole run, not each call: a budget spent before the first
    # engine call stops the run there, and the working copy is still cleaned up.
    regression.judge = replace(regression.judge, time_limit=1e-9)
    with pytest.raises(EngineTimeout, match=r"exceeded the 1e-09 s limit of a run"):
        await regression.run()
    assert not regression.fetched_models()
    assert workdir_is_empty(regression)


async def test_a_stop_check_saying_true_stops_the_run_before_the_next_model(
    regression: World,
) -> None:
    asked: list[int] = []

    async def stop() -> bool:
        asked.append(len(asked))
        return len(asked) > 2  # let two models be judged, then stop

    snapshot = await regression.judge.files.snapshot(regression.gh, REPO, "main")
    with pytest.raises(RunStopped):
        await regression.judge.judge(regression.gh, snapshot, CONFIG, stop=stop)
    assert len(asked) == 3
    assert len(regression.fetched_models()) == 2
    assert workdir_is_empty(regression)


async def test_a_stop_check_saying_false_changes_nothing(regression: World) -> None:
    async def stop() -> bool:
        return False

    snapshot = await regression.judge.files.snapshot(regression.gh, REPO, "main")
    run = await regression.judge.judge(regression.gh, snapshot, CONFIG, stop=stop)
    assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"


async def test_mixed_registry_fetches_only_visited_regressors_and_the_frame_models(
    pool: EnginePool, tmp_path: Path
) -> None:
    """A frame model of kind fr is found out when visited: it leaves its family, not judged."""
    from tests.families import mixed_files

    async for world in make_world(pool, tmp_path, mixed_files()):
        run = await world.run()
        assert run.outcome is Outcome.REGRESSION and run.report["first_bad_model"] == "fr-mlp-v06"
        families = {f["family"]: f for f in run.report["families"]}
        assert families["fr/good"]["outcome"] == "no_regression"
        skipped = {item["name"]: item for item in run.report["not_judged"]}
        assert skipped["fr-pair-v1"]["family"] == "fr/frames2"
        assert skipped["fr-pair-v1"]["reason"] == "kind fr: needs two or more frame inputs"
        assert skipped["nr-frames-v1"]["reason"] == "kind nr: needs frames"
        visited = {step["path"] for f in families.values() for step in f["steps"]}
        frames = {f"models/frames/{name}.onnx" for name in skipped}
        assert sorted(world.fetched_models()) == sorted(visited | frames)
