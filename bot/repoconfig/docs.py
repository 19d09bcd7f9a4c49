"""docs/configuration.md, generated from the schema so the reference never drifts from it."""

import yaml

from bot.repoconfig.model import CONFIG_PATH, default_config
from bot.repoconfig.parsing import parse_repo_config
from bot.repoconfig.pointers import split_pointer
from bot.repoconfig.problems import ConfigError
from bot.repoconfig.reader import MAX_CONFIG_BYTES
from bot.repoconfig.schema import (
    SCHEMA_FILE,
    describe_allowed,
    describe_default,
    find_subschema,
    load_schema,
)

REGENERATE_DOCS = "python -m bot.repoconfig --docs > docs/configuration.md"
EXAMPLE_FILE = "config/model-guard.example.yml"


_SAMPLE_INVALID = """\
registry: ../models/registry.json
gate:
  min_plcc: 1.2
nightly:
  schedule: "*/10 * * * *"
comands:
  min_permission: owner
"""


_READING = [
    "## How the file is read",
    "",
    "- The App reads the file at the commit it judges, so a change takes effect with the",
    "  push that makes it.",
    "- No file, an empty file or a file of only comments: every default below applies.",
    f"- The file must be UTF-8 text of at most {MAX_CONFIG_BYTES // 1024} KiB holding one",
    "  YAML mapping. Aliases (`*name`), merge keys (`<<`), tags (`!!python/object`, ...),",
    "  dates and duplicate keys are refused rather than guessed at.",
    "- An escape in double quotes must name a character: a lone surrogate such as",
    "  `\\uD800`, a pair such as `\\uD83D\\uDE00` (YAML does not join it) or anything past",
    "  `\\U0010FFFF` is refused at its line; write the character itself.",
    "- An invalid file is never skipped: the App explains every problem, with its line",
    "  and JSON pointer, in the tracking comment or check run (see the sample at the end).",
    "- While the file on the default branch is invalid, the nightly run keeps the default",
    f"  schedule (`{default_config().schedule}`) and reports the problems on its check run and",
    "  in the tracking comment, so a broken file (or a schedule that never fires) is never",
    "  a repository that silently stops running.",
    "- To check a file before pushing it:",
    f"  `python -m bot.repoconfig --check {CONFIG_PATH}` (exit 0 valid, 1 invalid).",
    "",
]


def render_configuration_docs() -> str:
    """Return docs/configuration.md, generated from the schema (never edit the file by hand)."""
    schema = load_schema()
    out = [
        f"# Repository configuration: `{CONFIG_PATH}`",
        "",
        f"<!-- Generated from config/{SCHEMA_FILE}; edit the schema and run",
        f"     `{REGENERATE_DOCS}`. -->",
        "",
        schema["description"].replace(CONFIG_PATH, f"`{CONFIG_PATH}`"),
        "",
        *_READING,
        "## Keys",
        "",
    ]
    for name, spec in schema["properties"].items():
        out += _render_key(f"/{name}", level=3)
        for child in spec.get("properties", {}):
            out += _render_key(f"/{name}/{child}", level=4)
    example = yaml.safe_dump(schema["examples"][0], sort_keys=False)
    defaults = yaml.safe_dump(default_config().to_dict(), sort_keys=False)
    out += ["## Example", "", *_yaml_block(example)]
    out += [f"`{EXAMPLE_FILE}` lists every key at its default, with comments.", ""]
    out += ["## Every default", "", "A file with exactly this content behaves like no file at all:"]
    out += ["", *_yaml_block(defaults)]
    out += ["## When the file is invalid", "", "For this file:", "", *_yaml_block(_SAMPLE_INVALID)]
    out += ["the App writes:", "", *(f"> {line}".rstrip() for line in _sample_explanation())]
    return "\n".join(out) + "\n"


def _yaml_block(text: str) -> list[str]:
    """Return YAML text as a fenced markdown block followed by a blank line."""
    return ["```yaml", text.rstrip("\n"), "```", ""]


def _sample_explanation() -> list[str]:
    """Return the lines of the explanation the App writes for the sample invalid file."""
    try:
        parse_repo_config(_SAMPLE_INVALID)
    except ConfigError as error:
        return error.markdown().rstrip("\n").split("\n")
    raise RuntimeError("the sample invalid configuration parsed; the docs would explain nothing")


def _render_key(pointer: str, *, level: int) -> list[str]:
    """Render one key's section: title, description, type, allowed values, default."""
    spec, name = find_subschema(pointer) or {}, ".".join(split_pointer(pointer))
    lines = ["#" * level + f" `{name}`", "", f"**{spec['title']}.** {spec['description']}", ""]
    if "properties" in spec:
        lines.append(f"- Type: a mapping with the keys {', '.join(spec['properties'])}")
    else:
        lines.append(f"- Type: {describe_allowed(spec)}")
    lines += [
        f"- {rule['errorMessage'][0].upper()}{rule['errorMessage'][1:]}"
        for rule in spec.get("allOf", [])
        if "errorMessage" in rule
    ]
    if "errorMessage" in spec:
        lines.append(f"- When invalid: {spec['errorMessage']}")
    default = describe_default(pointer)
    if default is not None:
        lines.append(f"- Default: {default}")
    return [*lines, ""]
