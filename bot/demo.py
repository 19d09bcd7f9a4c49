"""``model-guard demo``: the whole App against a local GitHub sandbox, with no GitHub account.

It starts the sandbox and the App on loopback, installs the App (with the permissions of
``app.yml``) on a sandbox repository holding the bundled registry and golden cache, lets
the scheduler fire the nightly job, and prints what a maintainer would see: the tracking
comment and the check run. Then it opens the pull requests of ``bot.demo_pulls`` (a
regression, an honest promotion, a flip without evidence, a verdict laxer than the
policy) and prints each one's ``model-guard/registry`` check and comment, and finally a
maintainer's ``/bisect --min-plcc 0.95`` comment on a pull request and the App's answer
(reactions and the result comment). Nothing leaves 127.0.0.1.
"""

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO, TypeVar

import yaml
from aiohttp import web

from bot.app import create_app
from bot.demo_pulls import PullScenario, base_files, pull_scenarios
from bot.handlers.bisect_view import BISECT_PURPOSE
from bot.handlers.nightly_view import NIGHTLY_CHECK, NIGHTLY_PURPOSE
from bot.handlers.registry_view import PR_PURPOSE, REGISTRY_CHECK
from bot.settings import Settings
from bot.surfaces.sticky import marker
from engine.errors import RegistryError
from engine.registry import load_registry
from sandbox import Sandbox, SandboxState
from sandbox.records import CheckRun, CheckStatus, Comment, Installation, Repo
from sandbox.webhooks import load_example

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGISTRY = ROOT / "testdata" / "videos" / "timelines" / "regression" / "registry.json"
DEFAULT_FEATURES = ROOT / "testdata" / "videos" / "real" / "features.parquet"
DEMO_OWNER, DEMO_NAME = "acme", "video-models"
T = TypeVar("T")
DEMO_CONFIG = b"""\
# model-guard's configuration for this repository (docs/configuration.md)
version: 1
registry: models/registry.json
features: golden/features.parquet
gate:
  min_plcc: 0.9
"""


class DemoError(Exception):
    """The demo could not show a finished nightly run (one line for the user)."""


@dataclass(frozen=True)
class PullResult:
    """What the maintainer sees on one demo pull request."""

    scenario: PullScenario
    repo: str
    number: int
    check: CheckRun
    comment: Comment
    requests: int = 0  # the GitHub requests the App made for it


@dataclass(frozen=True)
class CommandResult:
    """What the maintainer sees after a ``/bisect`` comment: the reactions and the result."""

    command: Comment
    reactions: tuple[str, ...]
    result: Comment


@dataclass(frozen=True)
class DemoResult:
    """What the maintainer sees after the nightly run (and on the demo's pull requests)."""

    comment: Comment
    check: CheckRun
    issue_title: str
    issue_number: int
    pulls: tuple[PullResult, ...] = ()
    command: CommandResult | None = None


def demo_files(registry: Path, features: Path) -> dict[str, bytes]:
    """The sandbox repository: the config, the registry and every file it names under models/."""
    if not registry.is_file():
        raise DemoError(f"registry {registry} not found")
    if not features.is_file():
        raise DemoError(f"feature cache {features} not found")
    try:
        loaded = load_registry(registry)
    except RegistryError as error:
        raise DemoError(f"registry {registry}: {error}") from None
    files = {
        ".github/model-guard.yml": DEMO_CONFIG,
        "golden/features.parquet": features.read_bytes(),
        "models/registry.json": registry.read_bytes(),
    }
    # The registry names its models (in subfolders too) and their external data; a file it
    # names but that is absent stays absent, and the nightly run reports that model broken.
    for entry in loaded.models:
        for name in entry.files():
            source = registry.parent / name
            if source.is_file():
                files[f"models/{name}"] = source.read_bytes()
    return files


def manifest_permissions(path: Path = ROOT / "app.yml") -> Mapping[str, str] | None:
    """The permissions ``app.yml`` asks for (None when the manifest is not beside the code)."""
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    permissions = data.get("default_permissions") if isinstance(data, dict) else None
    return (
        {str(k): str(v) for k, v in permissions.items()} if isinstance(permissions, dict) else None
    )


async def run_demo(
    *,
    registry: Path = DEFAULT_REGISTRY,
    features: Path = DEFAULT_FEATURES,
    out: TextIO = sys.stdout,
    timeout: float = 300.0,
    pulls: bool = True,
) -> DemoResult:
    """Run the nightly job once (then the pull requests) against the sandbox; print what a maintainer sees."""
    state = SandboxState()
    installation = state.add_installation(DEMO_OWNER, permissions=manifest_permissions())
    repo = state.add_repo(
        DEMO_OWNER, DEMO_NAME, demo_files(registry, features), installation=installation
    )
    with tempfile.TemporaryDirectory(prefix="model-guard-demo-") as tmp:
        async with Sandbox(state) as sandbox:
            settings = Settings(
                webhook_secret=state.app.webhook_secret,
                app_id=str(state.app.id),
                private_key=state.private_key_pem,
                api_url=sandbox.url,
                database=Path(tmp) / "model-guard.sqlite3",
                data_dir=Path(tmp) / "data",
                workers=1,
            )
            runner = web.AppRunner(create_app(settings), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            try:
                app_url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
                out.write(f"GitHub sandbox on {sandbox.url}; model-guard on {app_url}\n")
                ping = await sandbox.deliver(app_url, "ping", load_example("ping", "event"))
                out.write(f"signed webhook ping -> HTTP {ping.status_code}\n")
                out.write(
                    f"installed on {repo.full_name}; the scheduler fires the nightly job...\n\n"
                )
                result = await _wait_for_nightly(state, repo, timeout=timeout)
                _show(result, repo, out)
                if pulls:
                    shown = []
                    for scenario in pull_scenarios():
                        shown.append(
                            await _pull_request(
                                sandbox, app_url, scenario, installation, timeout=timeout
                            )
                        )
                        _show_pull(shown[-1], out)
                    command = await _bisect_command(sandbox, app_url, repo, timeout=timeout)
                    _show_command(command, out)
                    result = replace(result, pulls=tuple(shown), command=command)
            finally:
                await runner.cleanup()
            sandbox.assert_valid()
    return result


async def _pull_request(
    sandbox: Sandbox,
    app_url: str,
    scenario: PullScenario,
    installation: Installation,
    *,
    timeout: float,
) -> PullResult:
    """Open the scenario's pull request on a repository of its own and wait for the check."""
    state = sandbox.state
    repo = state.add_repo(
        DEMO_OWNER,
        f"project-models-{scenario.branch}",
        base_files(config=scenario.config),
        installation=installation,
    )
    pull = state.add_pull(
        repo, head=scenario.branch, files=dict(scenario.change), title=scenario.title
    )
    head = state.pull_head(repo, pull)
    since = len(sandbox.requests)
    await sandbox.deliver_pull_request(app_url, repo, pull)

    def done() -> PullResult | None:
        checks = _completed_checks(state, repo, REGISTRY_CHECK, head_sha=head)
        comments = _marked_comments(state, repo, PR_PURPOSE, issue_number=pull.number)
        if not (checks and comments):
            return None
        made = len(sandbox.requests) - since
        return PullResult(scenario, repo.full_name, pull.number, checks[0], comments[0], made)

    return await _until(
        done, timeout=timeout, what=f"the registry check of {scenario.title!r} did not finish"
    )


async def _wait_for_nightly(state: SandboxState, repo: Repo, *, timeout: float) -> DemoResult:
    """Poll the sandbox until the nightly check run is completed and the comment is there."""

    def done() -> DemoResult | None:
        checks = _completed_checks(state, repo, NIGHTLY_CHECK)
        comments = _marked_comments(state, repo, NIGHTLY_PURPOSE)
        if not (checks and comments):
            return None
        issue = state.issues[(repo.id, comments[0].issue_number)]
        return DemoResult(comments[0], checks[0], issue.title, issue.number)

    return await _until(done, timeout=timeout, what="the nightly job did not finish")


def _completed_checks(
    state: SandboxState, repo: Repo, name: str, *, head_sha: str | None = None
) -> list[CheckRun]:
    """The App's completed check runs called ``name`` on ``repo`` (on ``head_sha`` if given)."""
    return [
        run
        for run in state.check_runs.values()
        if run.repo_id == repo.id
        and run.name == name
        and (head_sha is None or run.head_sha == head_sha)
        and run.status is CheckStatus.COMPLETED
    ]


def _marked_comments(
    state: SandboxState, repo: Repo, purpose: str, *, issue_number: int | None = None
) -> list[Comment]:
    """The live comments on ``repo`` (on issue ``issue_number`` if given) carrying ``purpose``'s marker."""
    tag = marker(purpose)
    return [
        c
        for c in state.comments.values()
        if c.repo_id == repo.id
        and not c.deleted
        and (issue_number is None or c.issue_number == issue_number)
        and tag in c.body
    ]


async def _until(found: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``found`` every 0.2 s until it returns a value; a DemoError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value is not None:
            return value
        await asyncio.sleep(0.2)
    raise DemoError(f"{what} within {timeout:.0f} s")


def _show(result: DemoResult, repo: Repo, out: TextIO) -> None:
    rule = "-" * 78
    check = result.check
    conclusion = check.conclusion.value if check.conclusion is not None else "none"
    title, summary = check.output.title or "", check.output.summary or ""
    out.write(
        f"{rule}\nTracking issue #{result.issue_number} on {repo.full_name}: "
        f"{result.issue_title!r}\nits model-guard comment (edited in place every night):\n"
        f"{rule}\n{result.comment.body}\n{rule}\n"
        f"Check run {check.name} on {check.head_sha[:7]}: {check.status.value}, "
        f"conclusion {conclusion}\n  {title}\n  {summary}\n{rule}\n"
    )


DEMO_COMMAND = "/bisect --min-plcc 0.95"
DEMO_MAINTAINER = "maintainer"


async def _bisect_command(
    sandbox: Sandbox, app_url: str, repo: Repo, *, timeout: float
) -> CommandResult:
    """A maintainer comments ``/bisect`` on a pull request; wait for the 🚀 and the result."""
    state = sandbox.state
    state.set_permission(repo, DEMO_MAINTAINER, "write")
    pull = state.add_pull(
        repo, head="docs", files={"README.md": b"# video models\n"}, title="Document the models"
    )
    command = state.add_comment(repo, pull.number, DEMO_COMMAND, user=DEMO_MAINTAINER)
    await sandbox.deliver_issue_comment(app_url, repo, command)
    bot = state.app.bot

    def answered() -> CommandResult | None:
        reactions = tuple(r.content.value for r in state.reactions_on(command.id) if r.user == bot)
        results = _marked_comments(state, repo, BISECT_PURPOSE, issue_number=pull.number)
        if results and reactions and reactions[-1] in ("rocket", "confused"):
            return CommandResult(command, reactions, results[0])
        return None

    return await _until(
        answered, timeout=timeout, what=f"the {DEMO_COMMAND!r} command got no answer"
    )


def _show_command(result: CommandResult, out: TextIO) -> None:
    rule = "-" * 78
    shown = " ".join(
        {"eyes": "👀", "rocket": "🚀", "confused": "😕"}.get(r, r) for r in result.reactions
    )
    out.write(
        f"\n@{DEMO_MAINTAINER} commented {result.command.body!r}; model-guard reacted {shown} "
        f"and answered:\n{rule}\n{result.result.body}\n{rule}\n"
    )


def _show_pull(result: PullResult, out: TextIO) -> None:
    rule = "-" * 78
    check = result.check
    conclusion = check.conclusion.value if check.conclusion is not None else "none"
    # The registry section of the comment: the diff and the promotions (the bisect table
    # is the nightly's, shown above).
    body = result.comment.body.split("#### Timeline at the head")[0].rstrip()
    out.write(
        f"\nPull request #{result.number} on {result.repo}: {result.scenario.title!r}\n"
        f"Check run {check.name} on {check.head_sha[:7]}: conclusion {conclusion} "
        f"({result.requests} GitHub requests)\n"
        f"  {check.output.title or ''}\n{rule}\n{body}\n{rule}\n"
    )


def main_demo(*, registry: Path | None = None, features: Path | None = None) -> int:
    """Entry point of ``model-guard demo``: exit 0 when the run was shown, 1 otherwise."""
    try:
        asyncio.run(
            run_demo(registry=registry or DEFAULT_REGISTRY, features=features or DEFAULT_FEATURES)
        )
    except DemoError as error:
        sys.stderr.write(f"model-guard demo: {error}\n")
        return 1
    return 0
