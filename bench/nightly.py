"""Benchmark: the App's nightly bisect, fetching models lazily, against fetching every model first.

Run: ``python -m bench.nightly [--sizes 16 64 256] [--rows 20000] [--repeats 3]``.
Both paths run the real ``TimelineJudge`` (blob fetches over HTTP from the local GitHub
sandbox on 127.0.0.1, the engine pool, the bisect) on the same repository in the same run,
each with a fresh blob cache and no evaluation store hits. The eager baseline downloads
every model blob of the registry before judging, as a job that materialised the whole
registry folder would. Figures are medians over ``--repeats`` runs.
"""

import argparse
import asyncio
import hashlib
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import gidgethub.aiohttp
import numpy as np
import pandas as pd

from bench.bisect import make_features
from bot.github.repofiles import RepoFiles
from bot.judging.bisect_run import TimelineJudge
from bot.judging.pool import EnginePool
from bot.repoconfig import RepoConfig
from engine.features import features_from_frame
from engine.onnxbuild import Dense, build_mlp
from sandbox import Sandbox, SandboxState


@dataclass(frozen=True)
class Measure:
    """One timed run: seconds, blob requests and bytes of blobs downloaded."""

    seconds: float
    blobs: int
    blob_bytes: int
    outcome: str


def make_timeline(folder: Path, n_models: int, *, hidden: int, first_bad: int) -> list[Path]:
    """``n_models`` MLPs 6 -> ``hidden`` -> 1 (about 28 bytes per hidden unit on disk).

    Each hidden unit carries one feature times its weight, so the network computes the
    same signal at any width; from ``first_bad`` on the VIF/ADM signal is inverted.
    """
    rng = np.random.default_rng(1)
    good = np.array([15, 15, 15, 15, 15, -0.3])
    paths = []
    for index in range(n_models):
        weights = good + rng.normal(0, 0.05, 6)
        if index >= first_bad:
            weights[:5] *= -0.2
        first = np.zeros((6, hidden))
        first[np.arange(hidden) % 6, np.arange(hidden)] = np.tile(weights, hidden // 6 + 1)[
            :hidden
        ] * (6 / hidden)
        layers = [Dense(first, np.zeros(hidden)), Dense(np.ones((hidden, 1)), np.zeros(1))]
        path = folder / f"m{index:04d}.onnx"
        path.write_bytes(build_mlp(layers, name=f"m{index}"))
        paths.append(path)
    return paths


def build_repo(folder: Path, n_models: int, rows: int, hidden: int) -> dict[str, bytes]:
    """A repository: registry.json and ``n_models`` MLPs under model/, a golden cache."""
    models = folder / "model"
    models.mkdir(parents=True)
    paths = make_timeline(models, n_models, hidden=hidden, first_bad=int(n_models * 0.7))
    entries = [
        {
            "id": path.stem,
            "kind": "fr",
            "onnx": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "smoke": True,
            "opset": 17,
            "license": "MIT",
            "timeline": index,
        }
        for index, path in enumerate(paths)
    ]
    registry = json.dumps({"schema_version": 1, "models": entries}, indent=2).encode() + b"\n"
    table = folder / "features.parquet"
    make_features(rows, seed=2).to_parquet(table, index=False)
    features_from_frame(pd.read_parquet(table))  # the engine accepts it as a golden cache
    files = {f"model/{path.name}": path.read_bytes() for path in paths}
    return {**files, "model/registry.json": registry, "data/features.parquet": table.read_bytes()}


async def measure(
    sandbox: Sandbox, token: str, pool: EnginePool, work: Path, *, eager: bool, names: list[str]
) -> Measure:
    """Judge the repository once with a fresh blob cache; count what was downloaded."""
    before = len(sandbox.requests)
    files = RepoFiles(work / "blobs")
    judge = TimelineJudge(files=files, pool=pool, workdir=work / "w", evaluations=work / "e")
    config = RepoConfig(
        registry="model/registry.json", features="data/features.parquet", min_plcc=0.9
    )
    async with aiohttp.ClientSession() as session:
        gh = gidgethub.aiohttp.GitHubAPI(session, "bench", oauth_token=token, base_url=sandbox.url)
        started = time.perf_counter()
        snapshot = await files.snapshot(gh, "acme/models", "main")
        if eager:
            for name in names:
                await files.read(gh, snapshot, name)
        run = await judge.judge(gh, snapshot, config)
        seconds = time.perf_counter() - started
    blobs = [r for r in sandbox.requests[before:] if "/git/blobs/" in r.path]
    fetched = {r.path.rsplit("/", 1)[1] for r in blobs}
    size = sum(entry.size for entry in snapshot.files.values() if entry.sha in fetched)
    return Measure(seconds, len(blobs), size, run.outcome.value)


async def bench(sizes: list[int], rows: int, repeats: int, hidden: int) -> list[dict[str, object]]:
    """Run both paths for every size; return one row of medians per size."""
    results = []
    pool = EnginePool(processes=1, timeout=600)
    try:
        for n_models in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                files = build_repo(Path(tmp) / "repo", n_models, rows, hidden)
                names = sorted(p for p in files if p.endswith(".onnx"))
                state = SandboxState()
                installation = state.add_installation("acme")
                state.add_repo("acme", "models", files, installation=installation)
                async with Sandbox(state, validate=False) as sandbox:
                    token = await installation_token(sandbox, installation.id)
                    runs: dict[bool, list[Measure]] = {False: [], True: []}
                    # Warm up: the engine process imports onnxruntime and pandas once.
                    await measure(
                        sandbox, token, pool, Path(tmp) / "warm", eager=False, names=names
                    )
                    for repeat in range(repeats):
                        for eager in (False, True):
                            work = Path(tmp) / f"work-{repeat}-{eager}"
                            runs[eager].append(
                                await measure(sandbox, token, pool, work, eager=eager, names=names)
                            )
            lazy, eager = runs[False], runs[True]
            lazy_s = statistics.median(m.seconds for m in lazy)
            eager_s = statistics.median(m.seconds for m in eager)
            results.append(
                {
                    "models": n_models,
                    "lazy_blobs": lazy[0].blobs,
                    "lazy_mib": lazy[0].blob_bytes / 2**20,
                    "lazy_s": lazy_s,
                    "eager_blobs": eager[0].blobs,
                    "eager_mib": eager[0].blob_bytes / 2**20,
                    "eager_s": eager_s,
                    "ratio": eager_s / lazy_s,
                    "outcome": lazy[0].outcome,
                }
            )
    finally:
        await pool.close()
    return results


async def installation_token(sandbox: Sandbox, installation_id: int) -> str:
    """An installation token minted from the sandbox as the App would (a JWT, then POST)."""
    import jwt

    now = int(time.time()) - 60
    claims = {"iat": now, "exp": now + 540, "iss": str(sandbox.state.app.id)}
    app_jwt = jwt.encode(claims, sandbox.state.private_key_pem, algorithm="RS256")
    async with aiohttp.ClientSession() as session:
        gh = gidgethub.aiohttp.GitHubAPI(session, "bench", base_url=sandbox.url)
        data = await gh.post(
            "/app/installations/{id}/access_tokens",
            url_vars={"id": str(installation_id)},
            data={},
            jwt=app_jwt,
        )
    return str(data["token"])


def main() -> None:
    """Print a markdown table of medians, with the machine it ran on."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=8192, help="hidden units per model")
    args = parser.parse_args()
    rows = asyncio.run(bench(args.sizes, args.rows, args.repeats, args.hidden))
    print(
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; {args.rows} feature rows; {args.hidden} hidden units per "
        f"model; medians of {args.repeats}"
    )
    print(
        "| models | lazy blobs | lazy MiB | lazy s | eager blobs | eager MiB | eager s | eager/lazy |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['models']} | {row['lazy_blobs']} | {row['lazy_mib']:.2f} | {row['lazy_s']:.3f} "
            f"| {row['eager_blobs']} | {row['eager_mib']:.2f} | {row['eager_s']:.3f} "
            f"| {row['ratio']:.1f}x |"
        )


if __name__ == "__main__":
    main()
