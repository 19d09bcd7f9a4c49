"""The per-repository configuration .github/model-guard.yml: read strictly, validated, explained.

One module per concern: ``model`` (RepoConfig), ``reader`` (strict YAML), ``validation`` and
``problems`` (what is wrong, explained), ``schema``, ``docs`` (docs/configuration.md), ``cli``.
"""

from bot.github.permissions import Permission
from bot.repoconfig.cli import main
from bot.repoconfig.docs import REGENERATE_DOCS, render_configuration_docs
from bot.repoconfig.model import CONFIG_PATH, RepoConfig, default_config
from bot.repoconfig.parsing import parse_repo_config
from bot.repoconfig.problems import MAX_SHOWN_PROBLEMS, ConfigError, ConfigProblem
from bot.repoconfig.reader import MAX_CONFIG_BYTES
from bot.repoconfig.schema import config_schema

__all__ = [
    "CONFIG_PATH",
    "MAX_CONFIG_BYTES",
    "MAX_SHOWN_PROBLEMS",
    "REGENERATE_DOCS",
    "ConfigError",
    "ConfigProblem",
    "Permission",
    "RepoConfig",
    "config_schema",
    "default_config",
    "main",
    "parse_repo_config",
    "render_configuration_docs",
]
