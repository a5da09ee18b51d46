"""The pack's node ids and each node's widget order, frozen in tests/data/node_contract.json: what a
saved workflow relies on. ComfyUI's frontend saves a node's widget values by position
(`widgets_values`), so a node id removed or renamed, or a widget removed, renamed or moved, breaks
every workflow saved with it. tests/test_comfyui_contract.py compares today's schemas with the file.

    $COMFYUI_PYTHON scripts/node_contract.py            # exit 1 if the file differs from today's schemas
    $COMFYUI_PYTHON scripts/node_contract.py --write    # rewrite it: only after an allowed change

Run with ComfyUI's Python and COMFYUI_DIR set (`export $(.ci/comfy_host ../shared/comfyui)`): the
schemas are the real ones, the pack imported the way ComfyUI imports a custom node folder.

Allowed (the file must then be rewritten): a new node, a new widget at the END of a node's widgets,
new or renamed sockets and outputs (listed for reference; links are saved by slot). Not allowed
(--write refuses): a node id gone or a widget changed, unless the old id has a replacement in
nodes/replacements.py whose old_widget_ids are the frozen order; the file then keeps the old id,
marked with the id that replaces it.

A node's widgets, as the frontend makes and saves them: one per widget input (INT, FLOAT, STRING,
BOOLEAN, COMBO or a list of options, not forceInput), required then optional in the schema's
order; after an input with control_after_generate, or (unasked) an INT named seed / noise_seed, the
frontend's control widget `control_after_generate` (saved, never sent); after an image_upload
COMBO, its `upload` button. scripts/build_example_workflows.py writes widgets_values by the same
rule (its NODE_TYPES table, which the contract test checks against this file).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "tests" / "data" / "node_contract.json"
WRITE_COMMAND = "$COMFYUI_PYTHON scripts/node_contract.py --write"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")  # INTs the frontend gives a control widget unasked
ABOUT = ("Frozen by scripts/node_contract.py: every node id of the pack and its widgets in the order the frontend "
         "saves their values (widgets_values). Never edit by hand; see docs/nodes.md, 'Saved workflows keep working'.")


# ---------------------------------------------------------------------- schemas -> contract


def declared_inputs(info: dict):
    """(name, type, options, optional) of each input of a node's object_info entry, in the
    frontend's order: required, then optional (hidden inputs are no widgets and no sockets)."""
    for section in ("required", "optional"):
        declared = info.get("input", {}).get(section, {})
        for name in info.get("input_order", {}).get(section, list(declared)):
            entry = declared[name]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            yield name, entry[0], options, section == "optional"


def is_widget(kind, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def frontend_widgets(info: dict) -> list[str]:
    """The names of the widgets the frontend saves for a node, in widgets_values' order."""
    names = []
    for name, kind, options, _ in declared_inputs(info):
        if not is_widget(kind, options):
            continue
        names.append(name)
        if options.get("control_after_generate", kind == "INT" and name in SEED_NAMES):
            names.append("control_after_generate")
        if options.get("image_upload"):
            names.append("upload")
    return names


def node_entry(info: dict) -> dict:
    """A node's contract: its widgets (the contract), its sockets and output types (for reference)."""
    return {"widgets": frontend_widgets(info),
            "inputs": [name for name, kind, options, _ in declared_inputs(info) if not is_widget(kind, options)],
            "outputs": list(info.get("output", []))}


def schema_nodes(infos: dict[str, dict]) -> dict[str, dict]:
    """node id -> node_entry, from object_info entries."""
    return {node_id: node_entry(info) for node_id, info in sorted(infos.items())}


def pack_infos() -> dict[str, dict]:
    """Today's object_info entry of every node the pack registers: the pack imported as ComfyUI
    imports a custom node folder (tests/comfy_support.py), its nodes from its extension's list."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from tests import comfy_support

    extension = importlib.import_module(f"{comfy_support.load_pack().__name__}.nodes").DiffPluginExtension()
    return {node.GET_SCHEMA().node_id: node.GET_NODE_INFO_V1() for node in asyncio.run(extension.get_node_list())}


# ---------------------------------------------------------------------- frozen vs today


def read_contract(path: Path | None = None) -> dict:
    return json.loads((path or CONTRACT).read_text())


def widget_problem(node_id: str, was: list[str], now: list[str]) -> str | None:
    """What breaks in saved workflows when `was` (frozen) became `now`; None when `now` only adds at the end."""
    if now[:len(was)] == was:
        return None
    gone = [name for name in was if name not in now]
    moved = [name for name in was if name in now and was.index(name) != now.index(name)]
    return (f"{node_id}: widgets {was} are now {now} (gone: {gone}, moved: {moved}): saved workflows give their "
            "values by position, so every later value lands in the wrong widget. Keep the order and add new widgets "
            "at the end, or give the node a new id and register a replacement for the old one in nodes/replacements.py")


def mapping_problems(node_id: str, frozen: dict, replacement, target: dict) -> list[str]:
    """Names and slots of a replacement's mappings that neither node has."""
    old_names = set(frozen["widgets"]) | set(frozen["inputs"])
    new_names = set(target["widgets"]) | set(target["inputs"])
    problems = []
    for entry in replacement.input_mapping:
        if entry.get("new_id") not in new_names:
            problems.append(f"{node_id}: input_mapping names {entry.get('new_id')!r}, which {replacement.new_node_id} lacks")
        if "old_id" in entry and entry["old_id"] not in old_names:
            problems.append(f"{node_id}: input_mapping reads {entry['old_id']!r}, which {node_id} never had")
    for entry in replacement.output_mapping:
        if not (0 <= entry.get("old_idx", -1) < len(frozen["outputs"]) and 0 <= entry.get("new_idx", -1) < len(target["outputs"])):
            problems.append(f"{node_id}: output_mapping {entry} is out of the outputs' range")
    return problems


def replacement_problems(node_id: str, frozen: dict, replacement, current: dict[str, dict]) -> list[str]:
    """Why a replacement does not carry the workflows saved with `node_id` over (none: it does)."""
    if node_id in current:  # the frontend replaces only a node type the server no longer has
        return [(f"{node_id}: has a replacement but is still registered, so the frontend never applies it: "
                 "a node that changes incompatibly needs a new id")]
    if replacement.new_node_id not in current:
        return [f"{node_id}: its replacement {replacement.new_node_id} is no node of the pack"]
    problems = []
    if list(replacement.old_widget_ids) != frozen["widgets"]:
        problems.append(f"{node_id}: the replacement's old_widget_ids {list(replacement.old_widget_ids)} must be the frozen "
                        f"widget order {frozen['widgets']} (how saved workflows hold its values)")
    return problems + mapping_problems(node_id, frozen, replacement, current[replacement.new_node_id])


def breaking_changes(frozen: dict[str, dict], current: dict[str, dict], replacements) -> list[str]:
    """What breaks workflows saved with the frozen nodes, given today's nodes and replacements."""
    by_old = {r.old_node_id: r for r in replacements}
    problems = []
    for node_id, entry in frozen.items():
        if node_id in by_old:
            problems += replacement_problems(node_id, entry, by_old[node_id], current)
        elif node_id not in current:
            problems.append(f"{node_id}: no node of the pack has this id any more (removed or renamed): workflows saved "
                            "with it no longer load. Keep the id, or register a replacement for it in nodes/replacements.py")
        else:
            problems += filter(None, [widget_problem(node_id, entry["widgets"], current[node_id]["widgets"])])
    return problems


def updated_contract(frozen: dict[str, dict], current: dict[str, dict], replacements) -> dict:
    """The file --write writes: today's nodes, and each replaced id that is gone with its frozen entry."""
    nodes = dict(current)
    for replacement in replacements:
        old = replacement.old_node_id
        if old in frozen and old not in current:
            nodes[old] = {**frozen[old], "replaced_by": replacement.new_node_id}
    return {"about": ABOUT, "nodes": dict(sorted(nodes.items()))}


def stale_entries(contract: dict, updated: dict) -> list[str]:
    """The node ids whose entry --write would change (new nodes, widgets added at the end, sockets)."""
    was, now = contract.get("nodes", {}), updated["nodes"]
    return sorted(node_id for node_id in set(was) | set(now) if was.get(node_id) != now.get(node_id))


def render(contract: dict) -> str:
    return json.dumps(contract, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------- command line


def replacements_of_pack() -> list:
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from tests import comfy_support

    return importlib.import_module(f"{comfy_support.load_pack().__name__}.nodes.replacements").REPLACEMENTS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite tests/data/node_contract.json (allowed changes only)")
    args = parser.parse_args(argv)
    current = schema_nodes(pack_infos())
    replacements = replacements_of_pack()
    contract = read_contract() if CONTRACT.exists() else {"nodes": {}}
    breaking = breaking_changes(contract["nodes"], current, replacements)
    if breaking:
        print("changes that break saved workflows (not written):", *breaking, sep="\n  ")
        return 1
    updated = updated_contract(contract["nodes"], current, replacements)
    stale = stale_entries(contract, updated)
    if args.write:
        CONTRACT.write_text(render(updated))
        print(f"wrote {CONTRACT}" + (f" ({', '.join(stale)})" if stale else ""))
        return 0
    if stale:
        print(f"{CONTRACT} is out of date for {stale}: run {WRITE_COMMAND}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
