"""Node replacements: how a saved workflow that holds a node id this pack no longer registers
becomes today's node (ComfyUI's Node Replacement API, docs.comfy.org/custom-nodes/backend/node-replacement).

A saved workflow stores each node's widget values by position (`widgets_values`), so a node id and
its widget order are a contract (tests/data/node_contract.json, tests/test_comfyui_contract.py). A
node that must change incompatibly (a widget removed, renamed or moved) gets a NEW id, and the old
id an entry here: the frontend then offers to swap every old node of a workflow for the new one,
reading the old values by `old_widget_ids` (the old node's widgets in their saved order, as the
contract froze them, `control_after_generate` included) and moving them and the links by the
mappings. The contract test accepts a difference only with such an entry.

    Replacement(old_node_id="ApplyTaskPlugin", new_node_id="ApplyTaskPluginV2",
                old_widget_ids=[...the frozen widget order of ApplyTaskPlugin...],
                input_mapping=[{"new_id": "plugin_strength", "old_id": "strength"},
                               {"new_id": "mode", "set_value": "fast"}],
                output_mapping=[{"new_idx": 0, "old_idx": 0}])

The host registers them from the extension's `on_load`; a host without the API (ComfyUI v0.3.64,
which the CI runs, has neither `ComfyAPI().node_replacement` nor `io.NodeReplace`, and never calls
`on_load`) gets one debug line and nothing registered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("diffplugin")


@dataclass(frozen=True)
class Replacement:
    """One io.NodeReplace, as plain data (its keyword arguments)."""

    old_node_id: str
    new_node_id: str
    old_widget_ids: list[str] = field(default_factory=list)
    input_mapping: list[dict] = field(default_factory=list)  # {"new_id", "old_id"} or {"new_id", "set_value"}
    output_mapping: list[dict] = field(default_factory=list)  # {"new_idx", "old_idx"}

    def arguments(self) -> dict:
        """io.NodeReplace's keyword arguments (an empty mapping as None: the host's "keep as is")."""
        return {"new_node_id": self.new_node_id, "old_node_id": self.old_node_id,
                "old_widget_ids": list(self.old_widget_ids) or None, "input_mapping": list(self.input_mapping) or None,
                "output_mapping": list(self.output_mapping) or None}


# Every node id this pack has given up, oldest first. Today none: every id of 0.1.0 is still registered
# with its widgets in their order.
REPLACEMENTS: list[Replacement] = []


def host_api():
    """(the host's ComfyAPI instance, io.NodeReplace) where the host offers node replacement, else None."""
    from .api import ComfyAPI, io

    node_replace = getattr(io, "NodeReplace", None)
    if node_replace is None:
        return None
    api = ComfyAPI()
    if getattr(api, "node_replacement", None) is None:
        return None
    return api, node_replace


async def register(replacements: list[Replacement] | None = None, host=None) -> int:
    """Register the replacements with the host (`host`: host_api()'s pair, looked up when not
    given); the number registered. Without the API: a debug line, nothing registered. One the host
    refuses is logged and left out: the pack's nodes load regardless."""
    replacements = REPLACEMENTS if replacements is None else replacements
    host = host or host_api()
    if host is None:
        log.debug("Diff-Plugin: this ComfyUI has no node replacement API (io.NodeReplace, ComfyAPI().node_replacement); "
                  "%d node replacement(s) not registered", len(replacements))
        return 0
    api, node_replace = host
    registered = 0
    for replacement in replacements:
        try:
            await api.node_replacement.register(node_replace(**replacement.arguments()))
            registered += 1
        except Exception as error:  # noqa: BLE001 - a refused entry must not stop the pack from loading
            log.warning("Diff-Plugin: the host refused the node replacement %s -> %s: %s",
                        replacement.old_node_id, replacement.new_node_id, error)
    return registered
