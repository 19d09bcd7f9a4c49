"""docs/configuration.md: committed exactly as generated, every key and the sample shown."""

from bot.repoconfig import (
    REGENERATE_DOCS,
    config_schema,
    render_configuration_docs,
)
from tests.bot.repoconfig.confighelpers import ROOT


def test_committed_configuration_docs_are_the_generated_ones() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_configuration_docs(), f"regenerate: {REGENERATE_DOCS}"


def test_docs_show_every_key_and_the_sample_explanation() -> None:
    docs = render_configuration_docs()
    for name, spec in config_schema()["properties"].items():
        assert f"### `{name}`" in docs
        for child in spec.get("properties", {}):
            assert f"#### `{name}.{child}`" in docs
    assert "> - line 3, `gate.min_plcc`: must be at most 1, not `1.2`" in docs
