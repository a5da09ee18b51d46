"""locales/en/nodeDefs.json from the node schemas: every registered node's display name and
description, each input's name and tooltip (by input id) and each output's name and tooltip (by
its index), in the layout ComfyUI's frontend reads a custom node pack's translations in
(`nodeDefs.<NodeId>.inputs.<input id>.name`, `...outputs.<index>.tooltip`; the host's
app/custom_node_manager.py serves locales/<lang>/*.json at GET /i18n). The other languages
(locales/zh/nodeDefs.json) are written by hand with exactly these keys; tests/test_comfyui_locales.py
checks both against today's schemas.

Run it with ComfyUI's Python (it imports the pack as ComfyUI does):

    COMFYUI_DIR=/path/to/ComfyUI /path/to/ComfyUI/.venv/bin/python scripts/build_locales.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EN = REPO / "locales" / "en" / "nodeDefs.json"
CONTROL = "control_after_generate"  # the widget the frontend adds after a seed; its label is looked up like an input's


def has_control(spec) -> bool:
    """Whether the frontend adds a control_after_generate widget after this input: an INT that asks
    for one, or, asking nothing, is named seed or noise_seed (the frontend's own rule)."""
    if spec.get_io_type() != "INT":
        return False
    asked = getattr(spec, "control_after_generate", None)
    return bool(asked) if asked is not None else spec.id in ("seed", "noise_seed")


def node_entry(node) -> dict:
    """One node's strings as the frontend looks them up; absent strings are left out."""
    schema = node.define_schema()
    entry = {"display_name": schema.display_name or schema.node_id}
    if schema.description:
        entry["description"] = schema.description
    inputs = {}
    for spec in schema.inputs:
        inputs[spec.id] = {"name": spec.display_name or spec.id, **({"tooltip": spec.tooltip} if spec.tooltip else {})}
        if has_control(spec):
            inputs[CONTROL] = {"name": "control after generate"}
    entry["inputs"] = inputs
    entry["outputs"] = {str(index): {"name": out.display_name or out.io_type, **({"tooltip": out.tooltip} if out.tooltip else {})}
                        for index, out in enumerate(schema.outputs)}
    return entry


def node_defs() -> dict:
    """{node id: entry} for every node the pack registers, in its order."""
    sys.path.insert(0, str(REPO))
    from tests import comfy_support

    pack = comfy_support.load_pack()
    sys.modules[f"{pack.__name__}.nodes.library"].register_folder()  # as the pack's entry point does
    nodes = sys.modules[f"{pack.__name__}.nodes"].NODES
    return {node.define_schema().node_id: node_entry(node) for node in nodes}


def text(defs: dict) -> str:
    return json.dumps(defs, ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str]) -> int:
    wanted = text(node_defs())
    if "--check" in argv:
        same = EN.is_file() and EN.read_text(encoding="utf-8") == wanted
        print(f"{EN.relative_to(REPO)} is {'up to date' if same else 'out of date: run scripts/build_locales.py'}")
        return 0 if same else 1
    EN.parent.mkdir(parents=True, exist_ok=True)
    EN.write_text(wanted, encoding="utf-8")
    print(f"wrote {EN.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
