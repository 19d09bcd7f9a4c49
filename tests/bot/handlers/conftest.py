"""Helpers shared by the end-to-end tests of the job kinds: a seeded repository, the real app.

``running_app`` starts ``create_app`` on loopback against the test's sandbox; the tests post
signed webhooks to it and wait for the store's jobs to finish (``wait_for_jobs``).
"""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.app import STORE, create_app
from bot.settings import Settings
from bot.store import JobState, Store
from sandbox import Sandbox
from sandbox.records import Repo
from tests.conftest import seed_repo

ROOT = Path(__file__).resolve().parents[3]
BISECT = ROOT / "testdata" / "bisect"
CONFIG_PATH = ".github/model-guard.yml"
CONFIG = b"""\
version: 1
registry: models/registry.json
features: golden/features.parquet
gate:
  min_plcc: 0.9
"""


def repo_files(timeline: str = "regression", *, config: bytes | None = CONFIG) -> dict[str, bytes]:
    """A repository holding the bundled ``timeline`` under models/ and the golden cache."""
    files = {"golden/features.parquet": (BISECT / "features.parquet").read_bytes()}
    if config is not None:
        files[CONFIG_PATH] = config
    for path in sorted((BISECT / timeline).iterdir()):
        files[f"models/{path.name}"] = path.read_bytes()
    return files


def seeded(
    sandbox: Sandbox, files: Mapping[str, bytes], *, name: str = "models"
) -> tuple[int, Repo]:
    """Seed ``acme/<name>`` and return its installation id and the repo."""
    installation, repo = seed_repo(sandbox.state, files, name=name)
    return installation.id, repo


def app_settings(sandbox: Sandbox, root: Path) -> Settings:
    """The service's settings for the sandbox's App, with its database and data under ``root``."""
    state = sandbox.state
    return Settings(
        webhook_secret=state.app.webhook_secret,
        app_id=str(state.app.id),
        private_key=state.private_key_pem,
        api_url=sandbox.url,
        database=root / "store.sqlite3",
        data_dir=root / "data",
        workers=1,
        poll_s=0.05,
    )


@dataclass(frozen=True)
class RunningApp:
    """The started app, its webhook URL and its store."""

    app: web.Application
    webhook_url: str

    @property
    def store(self) -> Store:
        """The store the app opened."""
        return self.app[STORE]


@asynccontextmanager
async def running_app(settings: Settings, **options: Any) -> AsyncIterator[RunningApp]:
    """``create_app(settings, **options)`` started on loopback, as the service runs it."""
    runner = web.AppRunner(create_app(settings, **options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield RunningApp(runner.app, f"http://127.0.0.1:{runner.addresses[0][1]}/webhook")
    finally:
        await runner.cleanup()


async def wait_for_jobs(store: Store, *, done: int, timeout: float = 60.0) -> None:
    """Poll the store until ``done`` jobs are done and none is queued or running."""
    deadline = time.monotonic() + timeout
    counts: dict[JobState, int] = {}
    while time.monotonic() < deadline:
        counts = await store.job_counts()
        idle = not counts.get(JobState.QUEUED) and not counts.get(JobState.RUNNING)
        if idle and counts.get(JobState.DONE, 0) + counts.get(JobState.FAILED, 0) >= done:
            assert counts.get(JobState.DONE, 0) == done, counts
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs did not finish within {timeout:.0f} s: {counts}")
