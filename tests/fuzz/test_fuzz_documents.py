"""Fuzz the readers of JSON and YAML documents: each gives a value, problems or one line."""

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from bot.repoconfig import parse_repo_config
from bot.repoconfig.problems import ConfigError
from engine.errors import EngineError
from engine.loso_report import load_loso_report
from engine.registry import RegistryInvalid, load_registry, validate_registry
from engine.verdict import verify_verdict
from tests.fuzz.refusals import JSON_VALUES, ODD_TEXT, assert_one_line, encode, mutated

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = json.loads((ROOT / "model" / "registry.json").read_text(encoding="utf-8"))
EVIDENCE = ROOT / "model" / "evidence" / "fr-ens-v1"
LOSO = json.loads((EVIDENCE / "loso_seed0.json").read_text(encoding="utf-8"))
VERDICT = json.loads((EVIDENCE / "PROMOTE.json").read_text(encoding="utf-8"))
EXAMPLE_CONFIG = yaml.safe_load(
    (ROOT / "config" / "model-guard.example.yml").read_text(encoding="utf-8")
)


@st.composite
def documents(draw: st.DrawFn, seed: Any) -> bytes:
    """Bytes of a JSON document near ``seed``, or of any JSON value."""
    value = draw(st.one_of(mutated(seed), mutated(seed, max_mutations=8), JSON_VALUES))
    return encode(value, draw=draw)


@given(documents(REGISTRY))
def test_registry_gives_problems_or_one_line_refusal(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "registry.json"
        path.write_bytes(raw)
        for problem in validate_registry(path):
            assert_one_line(str(problem))
        try:
            load_registry(path)
        except RegistryInvalid as error:
            assert_one_line(str(error))
            for problem in error.problems:
                assert_one_line(str(problem))


@given(documents(LOSO))
def test_loso_report_loads_or_refuses_in_one_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "loso_seed0.json"
        path.write_bytes(raw)
        try:
            load_loso_report(path)
        except EngineError as error:
            assert_one_line(str(error))


@given(documents(VERDICT))
def test_verdict_verifies_with_problems_or_refuses_in_one_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "PROMOTE.json"
        path.write_bytes(raw)
        try:
            result = verify_verdict(path)
        except EngineError as error:
            assert_one_line(str(error))
        else:
            for problem in result.problems:
                assert_one_line(str(problem))


YAML_KEYS = st.one_of(
    st.sampled_from(["gate", "bisect", "schedule", "labels", "min_plcc", "cron", "policy"]),
    ODD_TEXT,
)
YAML_VALUES = st.recursive(
    st.one_of(JSON_VALUES, st.sampled_from(["0 3 * * *", "31 2 30 2 *", "~", "yes", ".nan"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(YAML_KEYS, inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def config_texts(draw: st.DrawFn) -> str | bytes:
    """YAML near the example configuration, any YAML value, or arbitrary text and bytes."""
    kind = draw(st.sampled_from(["mutated", "value", "text", "bytes", "tags"]))
    if kind == "mutated":
        value = draw(mutated(EXAMPLE_CONFIG, max_mutations=4))
    elif kind == "value":
        value = draw(YAML_VALUES)
    elif kind == "text":
        return draw(ODD_TEXT)
    elif kind == "bytes":
        return draw(st.binary(max_size=80))
    else:
        return draw(
            st.sampled_from(
                [
                    "gate: !!python/object:os.system x",
                    "a: &x [1]\nb: *x",
                    "gate: {min_plcc: !!float '0.9'}",
                    '"\\ud800": 1',
                    "gate:\n  min_plcc: 1e400",
                    "? [a]\n: b",
                    "%YAML 1.1\n---\ngate: null",
                    "--- 1\n--- 2",
                    'gate: "\\x00"',
                ]
            )
        )
    escaped = draw(st.booleans())
    style = draw(st.sampled_from([None, '"', "'"]))
    try:
        return yaml.safe_dump(value, allow_unicode=not escaped, default_style=style)
    except RecursionError:  # PyYAML's writer recurses: send the deep nesting as flow text
        return "gate: " + "[" * 5000 + "]" * 5000


@given(config_texts())
def test_repo_config_parses_or_refuses_with_one_line_problems(text: str | bytes) -> None:
    try:
        parse_repo_config(text)
    except ConfigError as error:
        assert_one_line(error.one_line())
        for problem in error.problems:
            assert_one_line(problem.describe())
