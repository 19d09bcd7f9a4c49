"""Helpers for tests of the running service: a nightly repository, the App in-process or as a
real ``python -m bot`` process, and what a maintainer sees in the sandbox afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from bot.app import SERVICES, create_app
from bot.demo import DEFAULT_FEATURES, DEFAULT_REGISTRY, demo_files, manifest_permissions
from bot.handlers.nightly_view import NIGHTLY_CHECK, NIGHTLY_PURPOSE
from bot.settings import Settings
from bot.surfaces.sticky import marker
from sandbox import Sandbox
from sandbox.records import CheckRun, CheckStatus, Comment, Installation, Issue, Repo
from sandbox.state import SandboxState

ROOT = Path(__file__).resolve().parents[2]
OWNER, NAME = "acme", "video-models"
REPO = f"{OWNER}/{NAME}"
CONFIG = b"""\
version: 1
registry: models/registry.json
features: golden/features.parquet
gate:
  min_plcc: 0.9
"""
# The same gate and paths, with the scheduler told to leave the repository alone.
UNSCHEDULED_CONFIG = CONFIG + b"nightly:\n  enabled: false\n"


def seed_nightly_repo(state: SandboxState, *, config: bytes = CONFIG) -> tuple[Installation, Repo]:
    """Install the App (app.yml's permissions) on acme/video-models: regression at index 6."""
    files = demo_files(DEFAULT_REGISTRY, DEFAULT_FEATURES)
    files[".github/model-guard.yml"] = config
    installation = state.add_installation(OWNER, permissions=manifest_permissions())
    repo = state.add_repo(OWNER, NAME, files, installation=installation)
    return state.installations[installation.id], repo


@dataclass(frozen=True)
class Seen:
    """What a maintainer sees on the repository: model-guard comments, nightly checks, issues."""

    comments: tuple[Comment, ...]
    checks: tuple[CheckRun, ...]
    issues: tuple[Issue, ...]

    def checks_for(self, external_id: str) -> tuple[CheckRun, ...]:
        """The nightly check runs of one job (its key is the external id)."""
        return tuple(run for run in self.checks if run.external_id == external_id)


def seen(state: SandboxState, repo: Repo) -> Seen:
    """Read the sandbox: live marker comments, nightly check runs, and live issues (no PRs)."""
    tag = marker(NIGHTLY_PURPOSE)
    return Seen(
        comments=tuple(
            c
            for c in state.comments.values()
            if c.repo_id == repo.id and not c.deleted and tag in c.body
        ),
        checks=tuple(
            r for r in state.check_runs.values() if r.repo_id == repo.id and r.name == NIGHTLY_CHECK
        ),
        issues=tuple(
            i
            for (repo_id, _), i in state.issues.items()
            if repo_id == repo.id and not i.deleted and i.pull is None
        ),
    )


def any_completed(runs: tuple[CheckRun, ...]) -> bool:
    """True when at least one run is completed (a stray second run would still be open)."""
    return any(r.status is CheckStatus.COMPLETED for r in runs)


def completed(runs: tuple[CheckRun, ...]) -> bool:
    """True when there is at least one run and every one is completed."""
    return bool(runs) and all(r.status is CheckStatus.COMPLETED for r in runs)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 0.05,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (and ``details()``) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}{extra}")
        await asyncio.sleep(interval)


def app_settings(
    sandbox: Sandbox, *, database: Path, data_dir: Path, **changes: object
) -> Settings:
    """Settings of an App talking to ``sandbox`` with the sandbox App's credentials."""
    state = sandbox.state
    values: dict[str, object] = {
        "webhook_secret": state.app.webhook_secret,
        "app_id": str(state.app.id),
        "private_key": state.private_key_pem,
        "api_url": sandbox.url,
        "database": database,
        "data_dir": data_dir,
        "workers": 1,
        "poll_s": 0.05,
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_app(settings: Settings, **options: object) -> AsyncIterator[web.Application]:
    """Start ``create_app(settings, **options)`` (store, client, workers...) and stop it after."""
    app = create_app(settings, **options)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # runs the cleanup_ctx start-up: the workers are claiming from here
    try:
        yield app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def replica_in_thread(settings: Settings, **options: object) -> AsyncIterator[str]:
    """Run another ``create_app(settings)`` on an event loop of its own in a thread.

    Locks that live per event loop are not shared with it, as with a second process; it
    yields that replica's worker prefix and stops it (and joins the thread) on exit.
    """
    started: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve_until(settings, options, started, stop)),
        name="replica",
        daemon=True,
    )
    thread.start()
    try:
        yield await asyncio.wrap_future(started)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60.0)


async def _serve_until(
    settings: Settings,
    options: Mapping[str, object],
    started: concurrent.futures.Future[str],
    stop: threading.Event,
) -> None:
    try:
        async with running_app(settings, **options) as app:
            started.set_result(app[SERVICES].workers.worker_prefix)
            while not stop.is_set():
                await asyncio.sleep(0.05)
    except BaseException as error:
        if not started.done():
            started.set_exception(error)
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(
    sandbox: Sandbox, *, database: Path, data_dir: Path, port: int, **extra: str
) -> dict[str, str]:
    """The environment ``model-guard serve`` reads, pointing at the sandbox, on loopback."""
    state = sandbox.state
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(data_dir)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "GITHUB_WEBHOOK_SECRET": state.app.webhook_secret,
        "GITHUB_APP_ID": str(state.app.id),
        "GITHUB_PRIVATE_KEY": state.private_key_pem,
        "GITHUB_API_URL": sandbox.url,
        "MODEL_GUARD_DB": str(database),
        "MODEL_GUARD_DATA": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    env.update(extra)
    return env


class ServiceProcess:
    """``python -m bot`` in a session of its own, so it and its engine workers die together."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path) -> None:
        """Run with exactly ``env``; stderr (the JSON logs) goes to ``log_path``."""
        self.env = dict(env)
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.env.get('PORT', '3000')}"
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The service's process id (also its process group id)."""
        if self._process is None:
            raise RuntimeError("the service was not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process is reaped, else None."""
        return None if self._process is None else self._process.returncode

    async def start(self) -> None:
        """Spawn the service; it answers once ``wait_ready`` returns."""
        self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )

    def logs(self, *, last: int = 30) -> str:
        """The last lines the service logged, for failure messages."""
        if not self.log_path.is_file():
            return ""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-last:])

    async def wait_ready(self, *, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` answers 200; fail with the logs if the process exits first."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise AssertionError(
                        f"service exited with {self._process.returncode}:\n{self.logs()}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"service not ready after {timeout:.0f} s:\n{self.logs()}")

    async def kill(self) -> None:
        """SIGKILL the whole process group (service and engine workers) and reap the service."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        await self._process.wait()
        self._close_log()

    async def stop(self, *, grace: float = 15.0) -> int:
        """SIGTERM (aiohttp's graceful shutdown), then SIGKILL whatever is left; the exit status."""
        if self._process is None:
            return 0
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), timeout=grace)
        status = self._process.returncode
        # Engine workers left behind by a service that did not shut down cleanly.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        final = await self._process.wait()
        self._close_log()
        return final if status is None else status

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{labels}': value}`` (comments skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    return values


def metric_total(values: Mapping[str, float], name: str) -> float:
    """The sum of every sample of ``name`` (any labels)."""
    return sum(v for key, v in values.items() if key == name or key.startswith(name + "{"))
