"""Writes subgraphs/<name>.json: the one-plugin restore as one node, a subgraph blueprint in
ComfyUI's format (a workflow whose one node is an instance of the subgraph it defines, in
`definitions.subgraphs`). ComfyUI's node library lists a pack's `subgraphs/*.json` under
"Subgraph Blueprints" (the host serves them at /global_subgraphs; nodes/blueprints.py does for
hosts older than that).

    python scripts/build_blueprint.py            # rewrite the file
    python scripts/build_blueprint.py --check    # exit 1 if it differs

The blueprint is made from the example workflow "Restore a photo with one Task-Plugin" (its
nodes, values and links, so the two cannot drift): its LoadImage becomes the subgraph's `image`
input, its SaveImage the `image` output, its notes are left out, and four widgets inside are
exposed on the node: the plugin (Load Task-Plugin), strength (Apply Task-Plugin) and steps
(KSampler), beside the photo. The checkpoint and CLIP vision are chosen inside (double-click the
node), with the example's file names."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example_workflows" / "Diff-Plugin - Restore a photo with one Task-Plugin.json"
NAME = "Restore a photo with one Task-Plugin"
OUT = REPO / "subgraphs" / f"{NAME}.json"
NAMESPACE = uuid.UUID("5d2c0b1e-6f3a-4c55-9a64-1f0c2b7e9d10")  # this pack's: ids stay the same on every build
DESCRIPTION = ("Restore a photo with one Diff-Plugin Task-Plugin (derain, dehaze, desnow, deblur, demoire, low light, "
               "highlight, face): the photo back at its own size with only that degradation removed. Inside: Load "
               "Task-Plugin, Apply Task-Plugin, KSampler (cfg 1, UniPC, the reference's recipe) and VAE Decode; "
               "double-click the node to choose the checkpoint and CLIP vision files.")
ALIASES = ["derain", "dehaze", "desnow", "deblur", "remove rain", "remove haze", "restore photo", "diff-plugin"]
# The widgets exposed on the node: (subgraph input, inner node type, widget, type).
EXPOSED = [("plugin", "LoadTaskPlugin", "plugin_name", "COMBO"), ("strength", "ApplyTaskPlugin", "strength", "FLOAT"),
           ("steps", "KSampler", "steps", "INT")]


def uid(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


def inner_graph(example: dict) -> tuple[list, list, int, list]:
    """The example's nodes without its notes, LoadImage and SaveImage, their links as subgraph
    link objects, and the links that came from the LoadImage and went to the SaveImage."""
    dropped = {n["id"] for n in example["nodes"] if n["type"] in ("MarkdownNote", "LoadImage", "SaveImage")}
    photo = next(n["id"] for n in example["nodes"] if n["type"] == "LoadImage")
    save = next(n["id"] for n in example["nodes"] if n["type"] == "SaveImage")
    nodes = [json.loads(json.dumps(n)) for n in example["nodes"] if n["id"] not in dropped]
    links, from_photo, to_save = [], [], None
    for link_id, origin, origin_slot, target, target_slot, kind in example["links"]:
        if origin == photo:
            from_photo.append(link_id)
            origin, origin_slot = -10, 0
        if target == save:
            to_save = link_id
            target, target_slot = -20, 0
        links.append({"id": link_id, "origin_id": origin, "origin_slot": origin_slot, "target_id": target,
                      "target_slot": target_slot, "type": kind})
    return nodes, links, to_save, from_photo


def expose_widgets(nodes: list, links: list, first_link: int) -> list[int]:
    """Link subgraph inputs 1.. to the EXPOSED widgets: each becomes a widget input of its node.
    Returns the new link ids, in EXPOSED's order."""
    new = []
    for slot, (_, node_type, widget, kind) in enumerate(EXPOSED, start=1):
        node = next(n for n in nodes if n["type"] == node_type)
        link_id = first_link + slot
        node["inputs"].append({"name": widget, "type": kind, "widget": {"name": widget}, "link": link_id})
        links.append({"id": link_id, "origin_id": -10, "origin_slot": slot, "target_id": node["id"],
                      "target_slot": len(node["inputs"]) - 1, "type": kind})
        new.append(link_id)
    return new


def subgraph(example: dict) -> dict:
    """The subgraph definition: the inner graph, its inputs (image and the exposed widgets) and output."""
    nodes, links, to_save, from_photo = inner_graph(example)
    widget_links = expose_widgets(nodes, links, max(link["id"] for link in links))
    inputs = [{"id": uid("input image"), "name": "image", "type": "IMAGE", "linkIds": from_photo, "pos": [100, 120]}]
    inputs += [{"id": uid(f"input {name}"), "name": name, "type": kind, "linkIds": [link], "pos": [100, 140 + 20 * i]}
               for i, ((name, _, _, kind), link) in enumerate(zip(EXPOSED, widget_links))]
    return {
        "id": uid("subgraph"), "version": 1, "revision": 0, "config": {}, "name": NAME,
        "state": {"lastGroupId": 0, "lastNodeId": max(n["id"] for n in nodes), "lastLinkId": max(widget_links),
                  "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 100, 120, 120]},
        "outputNode": {"id": -20, "bounding": [2900, 100, 120, 60]},
        "inputs": inputs,
        "outputs": [{"id": uid("output image"), "name": "image", "type": "IMAGE", "linkIds": [to_save], "pos": [2920, 120]}],
        "widgets": [], "nodes": nodes, "groups": [], "links": links, "extra": {},
        "category": "Diff-Plugin", "description": DESCRIPTION,
    }


def blueprint() -> dict:
    """The blueprint file: one instance node of the subgraph, with its inputs and output."""
    definition = subgraph(json.loads(EXAMPLE.read_text()))
    widget_nodes = {node_type: next(n["id"] for n in definition["nodes"] if n["type"] == node_type)
                    for _, node_type, _, _ in EXPOSED}
    instance = {
        "id": definition["state"]["lastNodeId"] + 1, "type": definition["id"], "pos": [0, 0], "size": [360, 190],
        "flags": {}, "order": 0, "mode": 0, "title": NAME,
        "inputs": [{"name": "image", "type": "IMAGE", "link": None}]
        + [{"name": name, "type": kind, "widget": {"name": name}, "link": None} for name, _, _, kind in EXPOSED],
        "outputs": [{"name": "image", "type": "IMAGE", "links": []}],
        "properties": {"proxyWidgets": [[str(widget_nodes[node_type]), widget] for _, node_type, widget, _ in EXPOSED]},
        "widgets_values": [],
    }
    return {"revision": 0, "last_node_id": instance["id"], "last_link_id": 0, "nodes": [instance], "links": [],
            "version": 0.4, "definitions": {"subgraphs": [definition]},
            "extra": {"BlueprintDescription": DESCRIPTION, "BlueprintSearchAliases": ALIASES}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = parser.parse_args(argv)
    text = json.dumps(blueprint(), indent=2, ensure_ascii=False) + "\n"
    if args.check:
        same = OUT.is_file() and OUT.read_text() == text
        print(f"{OUT.relative_to(REPO)}: {'up to date' if same else 'differs: run python scripts/build_blueprint.py'}")
        return 0 if same else 1
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
