"""Registry diffs: what a registry change adds, removes, changes, reorders and promotes, and where."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.evidence import schema_problems
from engine.registry import ModelEntry, Registry, load_registry
from engine.registry_diff import SCHEMA_FILE, Change, diff_registries, row_lines

MODEL = Path(__file__).resolve().parents[2] / "model"


def row(index: int, **changes: Any) -> dict[str, Any]:
    """Return a registry row for model ``m<index>`` (smoke, timeline = index)."""
    entry: dict[str, Any] = {
        "id": f"m{index}",
        "kind": "fr",
        "onnx": f"m{index}.onnx",
        "sha256": f"{index:x}" * 64,
        "smoke": True,
        "opset": 17,
        "license": "MIT",
        "timeline": index,
    }
    entry.update(changes)
    return entry


def registry(folder: Path, rows: list[dict[str, Any]], *, indent: int | None = 2) -> Registry:
    """Write rows as ``folder/registry.json`` and load it (files need not exist to load)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, "models": rows}, indent=indent))
    return load_registry(path)


def changes(diff: Any) -> list[tuple[str, str]]:
    """Return (change, model id) pairs in item order."""
    return [(item.change.value, item.model_id) for item in diff.items]


def test_identical_registries_have_no_changes(tmp_path: Path) -> None:
    rows = [row(0), row(1, smoke=False)]
    diff = diff_registries(registry(tmp_path / "a", rows), registry(tmp_path / "b", rows))
    assert diff.items == () and diff.needs_verdict == ()
    assert diff.render_markdown() == "No model changes in the registry.\n"


def test_flip_from_smoke_to_production_is_a_promotion_on_the_row_line(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0), row(1)])
    head = registry(tmp_path / "b", [row(0), row(1, smoke=False)])
    diff = diff_registries(base, head, lines=row_lines(head.path.read_text()))
    assert changes(diff) == [("promoted", "m1")]
    assert diff.needs_verdict == ("m1",)
    [item] = diff.items
    assert item.detail == "smoke: true -> false"
    assert item.line is not None
    assert head.path.read_text().splitlines()[item.line - 1].strip() == '"id": "m1",'


def test_new_production_row_is_a_promotion_and_a_new_smoke_row_is_not(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0)])
    head = registry(tmp_path / "b", [row(0), row(1, smoke=False), row(2)])
    diff = diff_registries(base, head)
    assert changes(diff) == [("added", "m1"), ("promoted", "m1"), ("added", "m2")]
    assert diff.needs_verdict == ("m1",)
    assert diff.ids(Change.ADDED) == ("m1", "m2")


def test_a_new_registry_promotes_every_production_row(tmp_path: Path) -> None:
    head = registry(tmp_path / "b", [row(0), row(1, smoke=False)])
    diff = diff_registries(None, head)
    assert changes(diff) == [("added", "m0"), ("added", "m1"), ("promoted", "m1")]
    assert diff.needs_verdict == ("m1",)


def test_removed_models_come_last_without_a_line(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0), row(1, smoke=False), row(2)])
    head = registry(tmp_path / "b", [row(2)])
    diff = diff_registries(base, head, lines=row_lines(head.path.read_text()))
    assert changes(diff) == [("removed", "m0"), ("removed", "m1")]
    assert [item.detail for item in diff.items] == [
        "smoke model removed",
        "production model removed",
    ]
    assert all(item.line is None for item in diff.items) and diff.needs_verdict == ()


def test_changed_hash_of_a_production_row_needs_a_verdict_but_of_a_smoke_row_does_not(
    tmp_path: Path,
) -> None:
    base = registry(tmp_path / "a", [row(0), row(1, smoke=False)])
    head = registry(tmp_path / "b", [row(0, sha256="a" * 64), row(1, smoke=False, sha256="b" * 64)])
    diff = diff_registries(base, head)
    assert changes(diff) == [("changed", "m0"), ("changed", "m1")]
    assert diff.items[0].detail == "sha256 000000000000… -> aaaaaaaaaaaa…"
    assert diff.needs_verdict == ("m1",)


def test_changed_external_data_is_named(tmp_path: Path) -> None:
    data = [{"path": "m0.onnx.data", "sha256": "c" * 64}]
    base = registry(tmp_path / "a", [row(0, external_data=data)])
    head = registry(
        tmp_path / "b", [row(0, external_data=[{"path": "m0.onnx.data", "sha256": "d" * 64}])]
    )
    [item] = diff_registries(base, head).items
    assert (item.change, item.detail) == (Change.CHANGED, "external data m0.onnx.data changed")


def test_moved_path_with_the_same_hashes_is_not_a_change(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0)])
    head = registry(tmp_path / "b", [row(0, onnx="models/m0.onnx")])
    assert diff_registries(base, head).items == ()


def test_reorder_names_only_the_moved_model(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(i) for i in range(4)])
    head = registry(
        tmp_path / "b", [row(0), row(1, timeline=9), row(2), row(3)]
    )  # m1 moved to the end
    diff = diff_registries(base, head)
    assert changes(diff) == [("reordered", "m1")]
    assert diff.items[0].detail == "timeline 1 -> 9, order changed"


def test_swap_of_two_models_names_one_of_them(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(i) for i in range(4)])
    head = registry(tmp_path / "b", [row(0), row(1, timeline=2), row(2, timeline=1), row(3)])
    assert len(diff_registries(base, head).ids(Change.REORDERED)) == 1


def test_renumbered_timeline_in_the_same_order_is_not_a_reorder(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(i) for i in range(3)])
    head = registry(tmp_path / "b", [row(i, timeline=10 * i) for i in range(3)])
    assert diff_registries(base, head).items == ()


def test_rollback_is_a_demotion_and_needs_no_verdict(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0, smoke=False)])
    head = registry(tmp_path / "b", [row(0)])
    diff = diff_registries(base, head)
    assert changes(diff) == [("demoted", "m0")] and diff.needs_verdict == ()


def test_json_document_is_schema_valid_and_markdown_is_a_table(tmp_path: Path) -> None:
    base = registry(tmp_path / "a", [row(0), row(1)])
    head = registry(tmp_path / "b", [row(0, sha256="e" * 64), row(1, smoke=False), row(2)])
    diff = diff_registries(base, head, lines=row_lines(head.path.read_text()))
    document = diff.to_dict()
    assert schema_problems(json.loads(json.dumps(document)), SCHEMA_FILE) == []
    assert document["needs_verdict"] == ["m1"]
    assert document["items"][1] == {
        "change": "promoted",
        "model_id": "m1",
        "detail": "smoke: true -> false",
        "line": 15,
    }
    assert diff.render_markdown().splitlines() == [
        "| model | change | line | detail |",
        "|---|---|---|---|",
        "| `m0` | changed | 5 | sha256 000000000000… -> eeeeeeeeeeee… |",
        "| `m1` | promoted | 15 | smoke: true -> false |",
        "| `m2` | added | 25 | new smoke model |",
        "",
        "Needs a PROMOTE verdict: `m1`.",
    ]


@pytest.mark.parametrize("indent", [None, 0, 2, 4])
@pytest.mark.parametrize("sort_keys", [False, True])
def test_row_lines_finds_each_id_member_whatever_the_layout(
    indent: int | None, sort_keys: bool
) -> None:
    rows = [row(i, notes='"id": "decoy"') for i in range(3)]
    text = json.dumps(
        {"description": '"id": "m7"', "models": rows, "schema_version": 1},
        indent=indent,
        sort_keys=sort_keys,
    )
    found = row_lines(text)
    assert set(found) == {"m0", "m1", "m2"}
    for model_id, line in found.items():
        assert f'"id": "{model_id}"' in text.splitlines()[line - 1]


def test_row_lines_ignores_ids_outside_the_models_rows_and_decodes_escapes() -> None:
    text = (
        '{"other": [{"id": "x"}],\n'
        ' "models": [\n'
        '  {"codec": {"id": "y"},\n'
        '   "id": "\\u006d1"},\n'
        '  {"id" : "m2"}\n'
        " ]}\n"
    )
    assert row_lines(text) == {"m1": 4, "m2": 5}


@pytest.mark.parametrize(
    "text", ["", "[", '{"models": [{"id": "m0"', '{"models": [{"id": "m', "]]}}"]
)
def test_row_lines_on_broken_text_returns_what_it_found_and_never_raises(text: str) -> None:
    assert row_lines(text) in ({}, {"m0": 1})


def test_committed_registry_lines_match_its_rows() -> None:
    text = (MODEL / "registry.json").read_text(encoding="utf-8")
    found = row_lines(text)
    loaded = load_registry(MODEL / "registry.json")
    assert set(found) == {entry.id for entry in loaded.models}
    assert diff_registries(loaded, loaded).items == ()
    new = diff_registries(None, loaded, lines=found)
    assert new.needs_verdict == tuple(f"fr-ens-v1-m{k}" for k in range(5))
    for model_id, line in found.items():
        assert text.splitlines()[line - 1].strip() == f'"id": "{model_id}",'


def in_memory(order: list[int]) -> Registry:
    """Return a registry of smoke models m<i>, in the given timeline order, without files."""
    entries = tuple(
        ModelEntry(
            id=f"m{index}",
            kind="fr",
            onnx=f"m{index}.onnx",
            sha256="0" * 64,
            smoke=True,
            opset=17,
            license="MIT",
            timeline=timeline,
            pointer=f"/models/{timeline}",
        )
        for timeline, index in enumerate(order)
    )
    return Registry(path=Path("registry.json"), root=Path(), schema_version=1, models=entries)


@given(st.permutations(list(range(8))))
def test_reordered_models_are_the_fewest_moves_that_explain_the_new_order(
    order: list[int],
) -> None:
    diff = diff_registries(in_memory(list(range(8))), in_memory(order))
    moved = set(diff.ids(Change.REORDERED))
    assert len(moved) == len(diff.items)  # nothing but reorders
    head = [f"m{i}" for i in order]
    kept = [model_id for model_id in head if model_id not in moved]
    assert kept == sorted(kept, key=lambda model_id: int(model_id[1:]))
    longest = [1] * len(order)  # the reference: an O(n^2) longest increasing run
    for j in range(len(order)):
        for i in range(j):
            if order[i] < order[j]:
                longest[j] = max(longest[j], longest[i] + 1)
    assert len(moved) == len(order) - max(longest)
