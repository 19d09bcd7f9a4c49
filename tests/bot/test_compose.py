"""compose.yaml (three replicas on PostgreSQL behind nginx) stays in step with the App.

There is no Docker here, so these tests check what can go wrong in the file itself: that
it parses, runs the Dockerfile's image, sets only variables the App (or libpq) reads, with
values ``Settings.from_env`` accepts, and that docs/scaling.md shows the file as it is.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from bot.settings import Settings
from bot.store.select import is_postgres_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
# ${NAME:?message} and ${NAME}: what compose fills in from the shell that runs it.
VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service_variables() -> set[str]:
    """Every environment variable bot/settings.py reads (config/defaults.yml lists them all;
    tests/bot/repoconfig/test_documented_defaults.py checks that list against the code)."""
    defaults = yaml.safe_load((ROOT / "config" / "defaults.yml").read_text(encoding="utf-8"))
    return set(defaults["service"])


def _interpolated(value: str) -> str:
    """``value`` as compose would pass it, with a stand-in for each shell variable."""
    return VARIABLE.sub(lambda match: f"{match.group(1).lower()}-value", value)


def test_compose_runs_three_replicas_of_the_dockerfile_image_on_postgres() -> None:
    services = _compose()["services"]
    app = services["model-guard"]
    assert app["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert app["deploy"]["replicas"] == 3
    assert "ports" not in app  # only the balancer is published
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["image"].startswith("postgres:")
    assert "model-guard" in services["balancer"]["depends_on"]


def test_compose_sets_only_variables_the_app_reads_with_values_it_accepts() -> None:
    environment = _compose()["services"]["model-guard"]["environment"]
    assert set(environment) <= _service_variables(), set(environment) - _service_variables()
    env = {name: _interpolated(str(value)) for name, value in environment.items()}
    assert is_postgres_url(env["MODEL_GUARD_DB"])
    # The key file is a compose secret, mounted at run time: read here without it.
    del env["GITHUB_PRIVATE_KEY_PATH"]
    settings = Settings.from_env(env)
    assert settings.database == env["MODEL_GUARD_DB"]
    assert settings.database_pool * 3 < 100  # under PostgreSQL's default max_connections
    assert settings.workers + 4 <= settings.database_pool  # docs/scaling.md's sizing rule


def test_compose_balancer_forwards_to_the_port_the_replicas_listen_on() -> None:
    data = _compose()
    port = data["services"]["model-guard"]["environment"]["PORT"]
    conf = data["configs"]["nginx-conf"]["content"]
    assert f"server model-guard:{port}" in conf
    assert "client_max_body_size 25m" in conf  # GitHub's payload cap, as the App's own limit
    secret = data["services"]["model-guard"]["environment"]["GITHUB_PRIVATE_KEY_PATH"]
    assert secret == "/run/secrets/github-app-key"
    assert data["services"]["model-guard"]["secrets"] == ["github-app-key"]


def test_scaling_doc_shows_compose_yaml_as_it_is() -> None:
    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    shown = re.search(
        r"<!-- compose.yaml -->\n```yaml\n(.*?)```\n<!-- /compose.yaml -->", doc, re.S
    )
    assert shown is not None, "docs/scaling.md lacks the compose.yaml block"
    assert shown.group(1) == COMPOSE.read_text(encoding="utf-8")
