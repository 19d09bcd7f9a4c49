"""Benchmark: GitHub requests per scenario, counted by the sandbox, beside a naive flow's.

Run: ``python -m bench.requests [--comments 150]``.

The real App (``create_app``: store, workers, engine pool, GitHub client) runs against the
local GitHub sandbox, which records every request. Each scenario is measured from the
moment its job is enqueued (or its webhook delivered) until the job is done:

- nightly, first run: the repository was never judged;
- nightly, unchanged: the night after, nothing changed;
- nightly, one new model: a commit added one model (and its registry row);
- pull request opened / pushed to: the registry check of a pull request, then a second push;
- ``/bisect``: a maintainer's command on a pull request.

Beside each, in the same run and on the same sandbox state, a naive flow asks GitHub for
the same result the way a straightforward client would: no conditional requests and no
memory between runs; every blob of the judged tree's registry folder, the config and the
golden cache fetched (no lazy bisect, no blob cache); the comment found by listing every
page of the issue's comments; the check opened and completed in two requests; the comment
PATCHed every time. Its requests are sent, not estimated (its writes leave the bodies as
they were, so the App's next scenario sees the same state). Counted: requests about a
repository; the App's token (once an hour) and identity (once a process) are left out.
"""

import argparse
import asyncio
import hashlib
import json
import platform
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub.aiohttp
from aiohttp import web

from bench.nightly import installation_token
from bot.app import STORE, create_app
from bot.demo import DEFAULT_FEATURES, DEFAULT_REGISTRY, demo_files, manifest_permissions
from bot.demo_pulls import base_files, evidence_files, registry_text
from bot.settings import Settings
from bot.store import JobSpec, JobState, Store
from sandbox import Sandbox, SandboxState
from sandbox.records import Issue, Repo

ROOT = Path(__file__).resolve().parents[1]
NEW_MODEL = ROOT / "testdata" / "videos" / "timelines" / "allgood" / "fr-mlp-good-v07.onnx"
MAINTAINER = "maintainer"


@dataclass(frozen=True)
class Row:
    """One scenario: the App's requests by route, and the naive flow's."""

    scenario: str
    app: Counter[str]
    naive: Counter[str]


def _counted(sandbox: Sandbox, since: int) -> Counter[str]:
    """``METHOD /route`` of every request about a repository since ``since``."""
    return Counter(
        sandbox.route_of(r) for r in sandbox.requests[since:] if r.path.startswith("/repos/")
    )


async def _until_done(store: Store, done: int, *, timeout: float = 300.0) -> None:
    """Poll the store until ``done`` jobs are done (or failed) and none waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = await store.job_counts()
        idle = not counts.get(JobState.QUEUED) and not counts.get(JobState.RUNNING)
        finished = counts.get(JobState.DONE, 0) + counts.get(JobState.FAILED, 0)
        if idle and finished >= done:
            if counts.get(JobState.FAILED):
                raise RuntimeError(f"a job failed: {counts}")
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"jobs did not finish within {timeout:.0f} s")


class Naive:
    """The naive client: plain gidgethub with an installation token, no ETag cache."""

    def __init__(self, gh: gidgethub.aiohttp.GitHubAPI, sandbox: Sandbox) -> None:
        """Send through ``gh`` to ``sandbox``."""
        self.gh = gh
        self.sandbox = sandbox

    async def _blobs(self, repo: str, ref: str, folders: tuple[str, ...]) -> dict[str, Any]:
        """GET the commit and its whole tree, then every blob under ``folders``."""
        commit = await self.gh.getitem(f"/repos/{repo}/commits/{ref}")
        tree = await self.gh.getitem(
            f"/repos/{repo}/git/trees/{commit['commit']['tree']['sha']}?recursive=1"
        )
        for entry in tree["tree"]:
            if entry["type"] == "blob" and entry["path"].startswith(folders):
                await self.gh.getitem(f"/repos/{repo}/git/blobs/{entry['sha']}")
        return commit

    async def _check(self, repo: str, sha: str, name: str) -> None:
        """Open a check run, then complete it."""
        run = await self.gh.post(
            f"/repos/{repo}/check-runs",
            data={"name": name, "head_sha": sha, "status": "in_progress", "external_id": "naive"},
        )
        await self.gh.patch(
            f"/repos/{repo}/check-runs/{run['id']}",
            data={"status": "completed", "conclusion": "neutral"},
        )

    async def _sticky(self, repo: str, number: int, marker: str) -> None:
        """List every comment page for the marker, then PATCH the comment found."""
        found: dict[str, Any] | None = None
        async for comment in self.gh.getiter(
            f"/repos/{repo}/issues/{number}/comments?per_page=100"
        ):
            if marker in (comment.get("body") or "") and comment["user"]["type"] == "Bot":
                found = found or comment
        if found is None:
            raise RuntimeError(f"{repo}#{number}: the App's comment is not there")
        await self.gh.patch(
            f"/repos/{repo}/issues/comments/{found['id']}", data={"body": found["body"]}
        )

    async def nightly(self, repo: str, folders: tuple[str, ...]) -> None:
        """Repository, branch head and tree, every blob, the check, the issue, every comment page."""
        info = await self.gh.getitem(f"/repos/{repo}")
        commit = await self._blobs(repo, info["default_branch"], folders)
        await self._check(repo, commit["sha"], "model-guard/nightly")
        issues = [
            i
            async for i in self.gh.getiter(
                f"/repos/{repo}/issues?labels=model-guard&state=open&per_page=100"
            )
        ]
        await self._sticky(repo, int(issues[0]["number"]), "<!-- model-guard:nightly -->")

    async def pull(self, repo: str, number: int, folders: tuple[str, ...]) -> None:
        """The pull request, both commits' trees and blobs, the check, every comment page."""
        pull = await self.gh.getitem(f"/repos/{repo}/pulls/{number}")
        head = await self._blobs(repo, pull["head"]["sha"], folders)
        await self._blobs(repo, pull["base"]["sha"], folders)
        await self._check(repo, head["sha"], "model-guard/registry")
        await self._sticky(repo, number, "<!-- model-guard:pr -->")

    async def bisect(
        self, repo: str, number: int, comment_id: int, folders: tuple[str, ...]
    ) -> None:
        """Permission, 👀, the pull request, its head's blobs, every comment page, the result, 🚀."""
        await self.gh.getitem(f"/repos/{repo}/collaborators/{MAINTAINER}/permission")
        reactions = f"/repos/{repo}/issues/comments/{comment_id}/reactions"
        await self.gh.post(reactions, data={"content": "eyes"})
        pull = await self.gh.getitem(f"/repos/{repo}/pulls/{number}")
        await self._blobs(repo, pull["head"]["sha"], folders)
        await self._sticky(repo, number, "<!-- model-guard:bisect -->")
        await self.gh.post(reactions, data={"content": "rocket"})


def _chatter(state: SandboxState, repo: Repo, number: int, comments: int) -> None:
    """``comments`` comments by people on an issue or pull request (a discussion)."""
    for n in range(comments):
        state.add_comment(repo, number, f"Looked at it ({n}).", user=MAINTAINER)


def _with_new_model(files: dict[str, bytes]) -> dict[str, bytes]:
    """The changes that add one model (a row and its file) to the demo registry."""
    model = NEW_MODEL.read_bytes()
    registry = json.loads(files["models/registry.json"])
    last = registry["models"][-1]
    registry["models"].append(
        {
            **last,
            "id": "fr-mlp-v10",
            "onnx": "fr-mlp-v10.onnx",
            "sha256": hashlib.sha256(model).hexdigest(),
            "timeline": int(last.get("timeline", len(registry["models"]))) + 1,
        }
    )
    text = json.dumps(registry, indent=2).encode() + b"\n"
    return {"models/registry.json": text, "models/fr-mlp-v10.onnx": model}


async def bench(comments: int) -> list[Row]:
    """Run every scenario with the App, then the naive flow on the same state."""
    state = SandboxState()
    installation = state.add_installation("acme", permissions=manifest_permissions())
    files = demo_files(DEFAULT_REGISTRY, DEFAULT_FEATURES)
    nightly_repo = state.add_repo("acme", "video-models", files, installation=installation)
    pull_repo = state.add_repo("acme", "project-models", base_files(), installation=installation)
    state.set_permission(nightly_repo, MAINTAINER, "write")
    state.set_permission(pull_repo, MAINTAINER, "write")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp:
        async with Sandbox(state, validate=False) as sandbox:
            settings = Settings(
                webhook_secret=state.app.webhook_secret,
                app_id=str(state.app.id),
                private_key=state.private_key_pem,
                api_url=sandbox.url,
                database=Path(tmp) / "store.sqlite3",
                data_dir=Path(tmp) / "data",
                workers=1,
                poll_s=0.05,
            )
            runner = web.AppRunner(create_app(settings, schedule=False), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            app_url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
            store = runner.app[STORE]
            jobs = 0
            token = await installation_token(sandbox, installation.id)
            try:
                async with aiohttp.ClientSession() as session:
                    gh = gidgethub.aiohttp.GitHubAPI(
                        session, "bench", oauth_token=token, base_url=sandbox.url
                    )
                    naive = Naive(gh, sandbox)

                    async def measure(
                        name: str,
                        start: Callable[[], Awaitable[int]],
                        flow: Callable[[], Awaitable[None]],
                    ) -> None:
                        nonlocal jobs
                        before = len(sandbox.requests)
                        jobs += await start()
                        await _until_done(store, jobs)
                        app = _counted(sandbox, before)
                        before = len(sandbox.requests)
                        await flow()
                        rows.append(Row(name, app, _counted(sandbox, before)))

                    async def night(day: int) -> int:
                        spec = JobSpec(
                            kind="nightly",
                            key=f"nightly:{nightly_repo.full_name}:day-{day}",
                            payload={
                                "installation_id": installation.id,
                                "repo": nightly_repo.full_name,
                                "day": f"2026-12-{day:02d}",
                                "default_branch": nightly_repo.default_branch,
                            },
                        )
                        await store.enqueue(spec)
                        return 1

                    folders = (".github/", "models/", "golden/")
                    nightly_flow = lambda: naive.nightly(nightly_repo.full_name, folders)  # noqa: E731
                    await measure("nightly, first run", lambda: night(1), nightly_flow)
                    tracking = _tracking_issue(state, nightly_repo)
                    _chatter(state, nightly_repo, tracking.number, comments)
                    await measure("nightly, unchanged", lambda: night(2), nightly_flow)
                    state.commit(nightly_repo, _with_new_model(files), message="Add fr-mlp-v10")
                    await measure("nightly, one new model", lambda: night(3), nightly_flow)

                    change = {"model/registry.json": registry_text(promoted=True)}
                    pull = state.add_pull(pull_repo, head="promote", files=change)
                    pull_folders = (".github/", "model/", "testdata/")

                    async def deliver_pull(action: str, before: str | None = None) -> int:
                        await sandbox.deliver_pull_request(
                            app_url, pull_repo, pull, action=action, **_before(before)
                        )
                        return 1

                    pull_flow = lambda: naive.pull(pull_repo.full_name, pull.number, pull_folders)  # noqa: E731
                    await measure("pull request opened", lambda: deliver_pull("opened"), pull_flow)
                    _chatter(state, pull_repo, pull.number, comments)
                    first = state.pull_head(pull_repo, pull)
                    state.commit(pull_repo, evidence_files(), message="Evidence", branch="promote")
                    await measure(
                        "pull request pushed to",
                        lambda: deliver_pull("synchronize", first),
                        pull_flow,
                    )

                    docs = state.add_pull(
                        nightly_repo, head="docs", files={"README.md": b"# models\n"}
                    )
                    _chatter(state, nightly_repo, docs.number, comments)
                    command = state.add_comment(
                        nightly_repo, docs.number, "/bisect", user=MAINTAINER
                    )

                    async def deliver_command() -> int:
                        await sandbox.deliver_issue_comment(app_url, nightly_repo, command)
                        return 1

                    await measure(
                        "/bisect on a pull request",
                        deliver_command,
                        lambda: naive.bisect(
                            nightly_repo.full_name, docs.number, command.id, folders
                        ),
                    )
            finally:
                await runner.cleanup()
    return rows


def _before(sha: str | None) -> dict[str, str]:
    return {} if sha is None else {"before": sha}


def _tracking_issue(state: SandboxState, repo: Repo) -> Issue:
    found = [
        issue
        for (repo_id, _), issue in state.issues.items()
        if repo_id == repo.id and issue.pull is None and not issue.deleted
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one tracking issue on {repo.full_name}, found {len(found)}")
    return found[0]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _routes(counts: Counter[str]) -> str:
    short = {
        route.replace("/repos/{owner}/{repo}", "").rstrip() or route: n
        for route, n in sorted(counts.items())
    }
    short = {("GET (the repository)" if r == "GET" else r): n for r, n in short.items()}
    return "; ".join(f"{route} x{n}" if n > 1 else route for route, n in short.items())


def main() -> None:
    """Print the markdown table (totals, then the App's requests by route)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--comments",
        type=int,
        default=150,
        help="people's comments on the tracking issue and each pull request (default 150)",
    )
    args = parser.parse_args()
    rows = asyncio.run(bench(args.comments))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}, {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}; {args.comments} people's "
        "comments on the tracking issue and on each pull request"
    )
    print()
    print("| scenario | App requests | naive requests | naive / App |")
    print("|---|---:|---:|---:|")
    for row in rows:
        app, naive = sum(row.app.values()), sum(row.naive.values())
        print(f"| {row.scenario} | {app} | {naive} | {naive / app:.1f}x |")
    print()
    print("| scenario | the App's requests, by route |")
    print("|---|---|")
    for row in rows:
        print(f"| {row.scenario} | {_routes(row.app)} |")


if __name__ == "__main__":
    main()
