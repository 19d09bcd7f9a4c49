"""The App manifest and the container image stay in step with what the App does."""

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from bot.handlers import ALWAYS_SENT_EVENTS, HANDLED_EVENTS, ROUTERS

ROOT = Path(__file__).resolve().parents[2]
# What the nightly and /bisect jobs call: each endpoint family and the permission it needs
# (https://docs.github.com/rest/authentication/permissions-required-for-github-apps).
NEEDED_PERMISSIONS = {
    "checks": "write",
    "contents": "read",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "read",
}


def _manifest() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "app.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_manifest_subscribes_to_exactly_the_handled_events() -> None:
    subscribed = set(_manifest()["default_events"])  # type: ignore[arg-type]
    assert subscribed == set(HANDLED_EVENTS - ALWAYS_SENT_EVENTS)


def test_every_handled_event_has_a_router_callback() -> None:
    actions = ("rerequested", "created", "added")
    for event in HANDLED_EVENTS:
        found = [router.fetch(_event(event, action)) for router in ROUTERS for action in actions]
        assert any(found), event


def _event(name: str, action: str) -> object:
    from gidgethub import sansio

    return sansio.Event({"action": action}, event=name, delivery_id="1")


def test_manifest_asks_for_the_least_privileges_the_app_uses() -> None:
    assert _manifest()["default_permissions"] == NEEDED_PERMISSIONS


def test_manifest_has_the_fields_github_requires() -> None:
    manifest = _manifest()
    for key in ("name", "url", "hook_attributes", "default_events", "default_permissions"):
        assert key in manifest, key
    hook = manifest["hook_attributes"]
    assert isinstance(hook, dict) and str(hook["url"]).endswith("/webhook")


def test_dockerfile_runs_the_service_as_a_non_root_user_without_training_deps() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "[train]" not in text and "torch==" not in text
    assert re.search(r"^HEALTHCHECK .*?/healthz", text, re.M | re.S)
    assert re.search(r'^CMD \["model-guard", "serve"\]', text, re.M)
    assert "SECRET=" not in text and "PRIVATE_KEY=" not in text


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    first_install = next(i for i, line in enumerate(lines) if "pip install ." in line)
    copy_source = next(i for i, line in enumerate(lines) if line.startswith("COPY engine"))
    assert first_install < copy_source


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_every_file_of_the_sandbox_data_is_declared_package_data() -> None:
    # The sandbox reads them with importlib.resources; an undeclared file is missing from a wheel.
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["sandbox"]
    package = ROOT / "sandbox"
    files = sorted(p.relative_to(package) for p in (package / "data").rglob("*") if p.is_file())
    assert any(f.name == "openapi-subset.json" for f in files)
    assert [f for f in files if not any(f.match(pattern) for pattern in patterns)] == []


def _copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_service_image_copies_engine_and_bot_but_never_the_sandbox() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert sorted(_copy_sources(text)) == ["README.md", "bot", "engine", "pyproject.toml"]
    assert "[demo]" not in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "sandbox" in ignored and "tests" in ignored and "testdata" in ignored
    assert not {"engine", "bot", "pyproject.toml", "README.md"} & set(ignored)


def test_core_dependencies_leave_the_sandbox_validator_to_the_demo_extra() -> None:
    project = _pyproject()["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower() for r in requirements}

    assert "openapi-schema-validator" not in names(project["dependencies"])
    assert "openapi-schema-validator" in names(project["optional-dependencies"]["demo"])
