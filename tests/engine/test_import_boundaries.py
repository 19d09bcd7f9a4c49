"""The engine stays a pure library: it never imports the App, and heavy runtimes stay in one place."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _imports(path: Path) -> set[str]:
    """Return the top-level module names a source file imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _engine_files() -> list[Path]:
    files = sorted(ENGINE.rglob("*.py"))
    assert files, "engine sources not found"
    return files


def test_engine_never_imports_bot_aiohttp_or_gidgethub() -> None:
    offenders = {
        str(path.relative_to(ENGINE)): sorted(_imports(path) & {"bot", "aiohttp", "gidgethub"})
        for path in _engine_files()
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_only_scoring_module_imports_onnxruntime() -> None:
    importers = {
        str(path.relative_to(ENGINE)) for path in _engine_files() if "onnxruntime" in _imports(path)
    }
    assert importers <= {"scoring.py"}


def test_only_train_package_imports_torch() -> None:
    importers = {
        str(path.relative_to(ENGINE))
        for path in _engine_files()
        if "torch" in _imports(path) and path.relative_to(ENGINE).parts[0] != "train"
    }
    assert importers == set()
