"""Writes tests/data/saved-workflow-<version>.json: a UI workflow as this version of the pack saves
it, holding every node of the pack once, each widget at a valid value other than its default.
tests/test_comfyui_saved_workflows.py loads every such file in the real frontends and reads each
widget back: the check that a later version still opens the workflows saved with an earlier one.

    $COMFYUI_PYTHON scripts/saved_workflow.py    # once per released version (pyproject's)

It never overwrites a file: a saved workflow is what users have on disk, so the file of a version
is frozen once written (docs/nodes.md, "Saved workflows keep working"); a new version adds its own.
The format is the example workflows' (scripts/build_example_workflows.py): nodes with their sockets
(required ones, unlinked), outputs, `Node name for S&R` and widgets_values in the order of
scripts/node_contract.py, which the contract file freezes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import node_contract  # beside this script

REPO = node_contract.REPO
COLUMNS, COLUMN_WIDTH, GAP = 4, 440, 60
# Values a widget's schema cannot give: free text (meaningful, and where the name says so, a plain
# name or a path inside input/ or output/) and the file lists (files the test server has).
CHOSEN = {"tasks": "derain, dehaze", "instruction": "remove the haze\nand the rain", "shares": "derain=2, dehaze=1",
          "region_tasks": "desnow", "save_to": "diff-plugin-synthetic/saved", "data_path": "pairs/train.csv",
          "save_name": "saved_workflow", "task_instructions": "denoise: remove the grain",
          "plugin_name": "desnow.safetensors", "selector_name": "selector.safetensors",
          "control_after_generate": "increment"}


def version() -> str:
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)


def decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def number(kind: str, options: dict):
    """A few steps from the default, inside the bounds, on the step grid."""
    default = options.get("default", 0)
    step = options.get("step", 1 if kind == "INT" else 0.01)
    low, high = options.get("min", -1e18), options.get("max", 1e18)
    value = default + 3 * step if default + 3 * step <= high else default - 3 * step
    assert low <= value <= high, (options, value)
    return int(value) if kind == "INT" else round(value, decimals(step))


def widget_value(name: str, kind, options: dict):
    """A valid value of one widget that is not its default."""
    choices = kind if isinstance(kind, list) else options.get("options")
    if name in CHOSEN:
        value = CHOSEN[name]
    elif choices is not None:  # the option after the default
        value = choices[(choices.index(options.get("default", choices[0])) + 1) % len(choices)]
    elif kind in ("INT", "FLOAT"):
        value = number(kind, options)
    elif kind == "BOOLEAN":
        value = not options.get("default", False)
    else:
        value = f"saved by {version()}: {name}"
    assert value != options.get("default"), (name, value)
    return value


def widgets_values(info: dict) -> list:
    """The node's widget values in the order node_contract.frontend_widgets names them."""
    by_name = {name: (kind, options) for name, kind, options, _ in node_contract.declared_inputs(info)}
    values = []
    for name in node_contract.frontend_widgets(info):
        kind, options = by_name.get(name, ("COMBO", {}))
        values.append(CHOSEN[name] if name in ("control_after_generate", "upload") else widget_value(name, kind, options))
    return values


def ui_node(index: int, node_id: str, info: dict, pos: list[int]) -> tuple[dict, int]:
    """(the node as the frontend saves it, its height)."""
    sockets = [(name, kind) for name, kind, options, optional in node_contract.declared_inputs(info)
               if not node_contract.is_widget(kind, options) and not optional]
    values = widgets_values(info)
    height = 60 + 28 * max(len(sockets), len(info["output"])) + 30 * len(values)
    return {
        "id": index + 1, "type": node_id, "pos": pos, "size": [400, height], "flags": {}, "order": index, "mode": 0,
        "inputs": [{"name": name, "type": kind, "link": None} for name, kind in sockets],
        "outputs": [{"name": name, "type": kind, "links": [], "slot_index": slot}
                    for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))],
        "properties": {"Node name for S&R": node_id},
        "widgets_values": values,
    }, height


def saved_workflow(infos: dict[str, dict]) -> dict:
    """Every node once, in columns, ids 1.. in the order of the node ids."""
    nodes, tops = [], [0] * COLUMNS
    for index, node_id in enumerate(sorted(infos)):
        column = index % COLUMNS
        node, height = ui_node(index, node_id, infos[node_id], [column * COLUMN_WIDTH, tops[column] + 30])
        tops[column] += 30 + height + GAP
        nodes.append(node)
    return {"last_node_id": len(nodes), "last_link_id": 0, "nodes": nodes, "links": [], "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.65, "offset": [40, 60]}, "diff_plugin_version": version()}, "version": 0.4}


def main() -> int:
    path = REPO / "tests" / "data" / f"saved-workflow-{version()}.json"
    if path.exists():
        print(f"{path.relative_to(REPO)} exists and is frozen: a saved workflow is never rewritten (docs/nodes.md)")
        return 1
    path.write_text(json.dumps(saved_workflow(node_contract.pack_infos()), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
