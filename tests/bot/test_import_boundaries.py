"""The service never needs the sandbox: only the demo imports it, and the CLI only when run.

The service image has neither the sandbox nor the ``demo`` extra, so an import of either
from a module the service loads would stop it from starting.
"""

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bot"
# Importing bot.demo imports the sandbox, so it counts as importing it.
SANDBOX_MODULES = ("sandbox", "bot.demo")
# The demo's entry point, and the function of the CLI that runs it (a lazy import there).
DEMO_MODULE = "demo.py"
DEMO_COMMAND = ("cli.py", "run_demo")


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    package = list(path.relative_to(ROOT).parent.parts)
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imported(node: ast.Import | ast.ImportFrom, path: Path) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    module = _absolute(node, path)
    if _is_sandbox(module):
        yield module
    else:  # from bot import demo
        yield from (f"{module}.{alias.name}" for alias in node.names)


def _is_sandbox(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in SANDBOX_MODULES)


def _walk(
    node: ast.AST, function: str | None
) -> Iterator[tuple[str | None, ast.Import | ast.ImportFrom]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(child, function or child.name)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            yield function, child
        else:
            yield from _walk(child, function)


def sandbox_imports(path: Path, source: str | None = None) -> list[tuple[str | None, str]]:
    """(enclosing function or None at module level, module) of each sandbox import in ``path``."""
    text = path.read_text(encoding="utf-8") if source is None else source
    return [
        (function, name)
        for function, node in _walk(ast.parse(text, filename=str(path)), None)
        for name in _imported(node, path)
        if _is_sandbox(name)
    ]


def test_no_bot_module_but_the_demo_imports_the_sandbox() -> None:
    files = sorted(BOT.rglob("*.py"))
    assert len(files) > 10, "bot sources not found"
    offenders = {}
    for path in files:
        where = str(path.relative_to(BOT))
        imports = sandbox_imports(path)
        if where == DEMO_MODULE:
            continue
        if where == DEMO_COMMAND[0]:
            imports = [(f, name) for f, name in imports if f != DEMO_COMMAND[1]]
        if imports:
            offenders[where] = imports
    assert offenders == {}


def test_the_cli_imports_the_demo_lazily_inside_the_demo_command() -> None:
    assert sandbox_imports(BOT / "cli.py") == [("run_demo", "bot.demo")]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sandbox.server", [(None, "sandbox.server")]),
        ("from sandbox.records import Repo", [(None, "sandbox.records")]),
        ("from bot import demo", [(None, "bot.demo")]),
        (
            "def f():\n    from .demo import run_demo",
            [("f", "bot.demo")],
        ),
        ("import sandboxed\nfrom bot.demos import x", []),
    ],
)
def test_sandbox_imports_are_found_in_every_spelling(
    source: str, expected: list[tuple[str | None, str]]
) -> None:
    # Read as if it were a module of bot/, so relative imports resolve against bot.
    assert sandbox_imports(BOT / "probe.py", source) == expected


@pytest.mark.slow  # imports every bot module in a Python process of its own
def test_every_bot_module_but_the_demo_imports_with_the_sandbox_and_extra_missing() -> None:
    # What the AST walk cannot see (importlib, a dependency's dependency), an import run can.
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in BOT.rglob("*.py")
        if path.name != "__main__.py" and path.relative_to(BOT).as_posix() != DEMO_MODULE
    )
    code = (
        "import importlib, sys\n"
        "sys.modules['sandbox'] = sys.modules['openapi_schema_validator'] = None\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


# The engine's numerical stack: only the engine pool's processes need it (and the web
# process once a job has run); a webhook process that loads it at start pays seconds of
# start-up and a few hundred MiB for nothing.
NUMERICAL_MODULES = ("numpy", "pandas", "pyarrow", "scipy", "onnx", "onnxruntime")
_STARTED_AND_IDLE = """
import asyncio, json, sys, tempfile
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.app import SERVICES, create_app
from bot.settings import Settings

key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
loaded = {"import bot.app": sorted(m for m in NUMERICAL if m in sys.modules)}


async def main(folder: Path) -> None:
    settings = Settings(
        webhook_secret="s",
        app_id="1",
        private_key=key,
        api_url="http://127.0.0.1:9",  # never called: no schedule, no job
        database=folder / "store.sqlite3",
        data_dir=folder / "data",
    )
    app = create_app(settings, schedule=False)
    loaded["create_app"] = sorted(m for m in NUMERICAL if m in sys.modules)
    runner = web.AppRunner(app)
    await runner.setup()  # store, GitHub client, engine pool, workers, resumer: started
    try:
        assert app[SERVICES].workers is not None
        await asyncio.sleep(0.3)  # the workers poll the (empty) store
        loaded["started and idle"] = sorted(m for m in NUMERICAL if m in sys.modules)
    finally:
        await runner.cleanup()


with tempfile.TemporaryDirectory() as folder:
    asyncio.run(main(Path(folder)))
print(json.dumps(loaded))
"""


@pytest.mark.slow  # a Python process of its own that starts the service's parts
def test_the_webhook_process_loads_no_numerical_module_until_a_job_needs_the_engine() -> None:
    code = f"NUMERICAL = {NUMERICAL_MODULES!r}\n{_STARTED_AND_IDLE}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == {"import bot.app": [], "create_app": [], "started and idle": []}


def test_the_numerical_modules_are_what_the_engine_imports() -> None:
    # The list above is the one to keep light: each is imported somewhere in the engine.
    imported = {
        name.partition(".")[0]
        for path in (ROOT / "engine").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert set(NUMERICAL_MODULES) <= imported
