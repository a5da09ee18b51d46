"""Writes example_workflows/*.json (ComfyUI's UI format, shown in the template browser) and
their API-format twins in example_workflows/api/ from one description, so the two never drift;
with --thumbnails also the template browser's thumbnails (<title>.jpg: a drawn scene with the
workflow's degradation, made by plugin_core's synthetic degradations).

    python scripts/build_example_workflows.py                # rewrite the files
    python scripts/build_example_workflows.py --thumbnails   # and the thumbnails
    python scripts/build_example_workflows.py --check        # exit 1 if a file differs, is missing or is left over

What the description holds, and why:

* The template browser of ComfyUI's frontend shows a custom node pack's workflow under its file
  name (title) and the same name with '-' and '_' as spaces (description); it reads no index or
  metadata for packs (frontend 1.27.10 and its main branch). So a UI file is named by its title,
  which says what the workflow does; its API twin keeps a short key (api/<key>.json) for scripts.
* Widget values are written in the order the frontend creates the widgets: the schema's inputs,
  with a `control_after_generate` widget after every INT that has one. The frontend adds it where
  the input asks for it, and also, unasked, after every INT named `seed` or `noise_seed` (its
  legacy rule), so Synthesize Degraded Pairs and Train Task-Plugin get one too. Its value is
  saved in `widgets_values` (never sent with the prompt); "fixed" keeps the seed as saved.
* Loader nodes name their files in `properties.models` ({name, url, directory}), as the
  workflow_templates specification asks: the frontend offers to download a missing file (from
  huggingface.co, a .safetensors name, into that models folder). The Task-Plugins have no such
  download; a Note in every workflow says where they come from.
* The layout is computed: groups are columns read left to right, nodes stacked in them with
  sizes at least what the frontend computes for them, so nothing overlaps.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "example_workflows"

# The SD 1.5 checkpoint exactly as ComfyUI's own SD 1.5 templates name it (Comfy-Org/workflow_templates,
# templates/default.json): a user who ran those already has it.
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = ("https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                  "v1-5-pruned-emaonly-fp16.safetensors?download=true")
# CLIP ViT-L/14 (openai/clip-vit-large-patch14, the encoder the plugins were trained with): the
# repository's model.safetensors (both towers; ComfyUI's CLIP vision loader keeps the vision one),
# saved under a name that says what it is.
CLIP_VISION = "clip-vit-large-patch14.safetensors"
CLIP_VISION_URL = "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors?download=true"
DIFF_PLUGIN_REPO = "https://github.com/yuhaoliu7456/Diff-Plugin"

# The files the frontend can offer to download: loader type -> its `models` entry (name: the file the
# loader's widget names; directory: the models folder it is read from).
DOWNLOADS = {
    "CheckpointLoaderSimple": {"name": CHECKPOINT, "url": CHECKPOINT_URL, "directory": "checkpoints"},
    "CLIPVisionLoader": {"name": CLIP_VISION, "url": CLIP_VISION_URL, "directory": "clip_vision"},
}

# Socket signatures of the node types used: (link inputs [(name, type)], widgets [(name, type)], outputs [(name, type)]),
# widgets in the order of the node's schema.
NODE_TYPES = {
    "LoadImage": ([], [("image", "COMBO"), ("upload", "IMAGEUPLOAD")], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadImageMask": ([], [("image", "COMBO"), ("channel", "COMBO"), ("upload", "IMAGEUPLOAD")], [("MASK", "MASK")]),
    "CheckpointLoaderSimple": ([], [("ckpt_name", "COMBO")], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPVisionLoader": ([], [("clip_name", "COMBO")], [("CLIP_VISION", "CLIP_VISION")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("text", "STRING")], [("CONDITIONING", "CONDITIONING")]),
    "KSampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        [("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"), ("scheduler", "COMBO"),
         ("denoise", "FLOAT")],
        [("LATENT", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "VAEDecodeTiled": ([("samples", "LATENT"), ("vae", "VAE")],
                       [("tile_size", "INT"), ("overlap", "INT"), ("temporal_size", "INT"), ("temporal_overlap", "INT")],
                       [("IMAGE", "IMAGE")]),
    "DiffPluginColorFix": ([("image", "IMAGE"), ("reference", "IMAGE")], [("color_fix", "COMBO")], [("image", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], [("filename_prefix", "STRING")], []),
    "GetImageSize": ([("image", "IMAGE")], [], [("width", "INT"), ("height", "INT"), ("batch_size", "INT")]),
    "ImageScale": ([("image", "IMAGE")], [("upscale_method", "COMBO"), ("width", "INT"), ("height", "INT"), ("crop", "COMBO")],
                   [("IMAGE", "IMAGE")]),
    "LoadTaskPlugin": ([], [("plugin_name", "COMBO")], [("task_plugin", "TASK_PLUGIN")]),
    "LoadTaskPluginLibrary": ([], [("tasks", "STRING"), ("selector_name", "COMBO")],
                              [("task_plugins", "TASK_PLUGINS"), ("selector", "PLUGIN_SELECTOR")]),
    "ApplyTaskPlugin": (
        [("model", "MODEL"), ("task_plugin", "TASK_PLUGIN"), ("clip_vision", "CLIP_VISION"), ("vae", "VAE"),
         ("image", "IMAGE"), ("mask", "MASK")],
        [("strength", "FLOAT"), ("start_percent", "FLOAT"), ("end_percent", "FLOAT"), ("resolution", "INT"),
         ("tile_size", "INT"), ("tile_overlap", "INT"), ("tile_batch", "INT"), ("tile_prompt", "COMBO"),
         ("plugin_guidance", "BOOLEAN")],
        [("model", "MODEL"), ("latent", "LATENT")],
    ),
    "PluginSelector": (
        [("image", "IMAGE"), ("task_plugins", "TASK_PLUGINS"), ("selector", "PLUGIN_SELECTOR"), ("clip", "CLIP"),
         ("clip_vision", "CLIP_VISION")],
        [("instruction", "STRING"), ("threshold", "FLOAT")],
        [("selected", "TASK_PLUGINS"), ("scores", "STRING")],
    ),
    "SynthesizeDegradedPairs": (
        [("clean_images", "IMAGE")],
        [("degradation", "COMBO"), ("second_degradation", "COMBO"), ("intensity_min", "FLOAT"), ("intensity_max", "FLOAT"),
         ("pairs_per_image", "INT"), ("seed", "INT"), ("save_to", "STRING"), ("overwrite", "BOOLEAN")],
        [("input_images", "IMAGE"), ("target_images", "IMAGE")],
    ),
    "TrainTaskPlugin": (
        [("model", "MODEL"), ("vae", "VAE"), ("clip_vision", "CLIP_VISION"), ("input_images", "IMAGE"), ("target_images", "IMAGE")],
        [("data_path", "STRING"), ("save_name", "STRING"), ("steps", "INT"), ("batch_size", "INT"), ("learning_rate", "FLOAT"),
         ("resolution", "INT"), ("seed", "INT"), ("start_mode", "COMBO"), ("gradient_checkpointing", "BOOLEAN"),
         ("cache_encodings", "BOOLEAN"), ("checkpoint_every", "INT"), ("resume", "BOOLEAN"), ("overwrite", "BOOLEAN")],
        [("task_plugin", "TASK_PLUGIN"), ("loss_curve", "IMAGE")],
    ),
    "RestoreWithTaskPlugins": (
        [("model", "MODEL"), ("task_plugins", "TASK_PLUGINS"), ("clip_vision", "CLIP_VISION"), ("vae", "VAE"), ("image", "IMAGE")],
        [("seed", "INT"), ("steps", "INT"), ("later_steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
         ("scheduler", "COMBO"), ("resolution", "INT"), ("output_size", "COMBO"), ("tile_size", "INT"), ("tile_overlap", "INT"),
         ("tile_batch", "INT"), ("tile_prompt", "COMBO"), ("color_fix", "COMBO"), ("plugin_guidance", "BOOLEAN"),
         ("batch_size", "INT"), ("same_noise", "BOOLEAN"), ("strength", "FLOAT")],
        [("image", "IMAGE")],
    ),
    "ComposeTaskPlugins": ([("task_plugins", "TASK_PLUGINS"), *[(f"region_{n}", "MASK") for n in range(1, 5)], ("weights", "STRING")],
                           [("compose", "COMBO"), ("joint_context", "COMBO"), ("shares", "STRING"), ("region_tasks", "STRING")],
                           [("task_plugins", "TASK_PLUGINS"), ("task_plugin", "TASK_PLUGIN")]),
    # Frontend-only: never in a prompt.
    "MarkdownNote": ([], [("text", "STRING")], []),
}
VIRTUAL = {"MarkdownNote", "Note"}
OPTIONAL_LINKS = {"mask", "input_images", "target_images"}  # optional sockets: drawn hollow, left out when unlinked
# An INT input's explicit control_after_generate flag, where its schema sets one; without a flag the
# frontend adds the control widget to INTs named seed / noise_seed.
CONTROL_FLAGS = {("KSampler", "seed"): True, ("RestoreWithTaskPlugins", "seed"): True}
SEED_CONTROL = "fixed"  # keep every seed as saved: the examples give the same result, a training run resumes


def has_control_widget(node_type: str, widget: str, kind: str) -> bool:
    """Whether ComfyUI's frontend puts a control_after_generate widget after this widget."""
    return kind == "INT" and CONTROL_FLAGS.get((node_type, widget), widget in ("seed", "noise_seed"))


def frontend_widgets(node_type: str) -> list[str]:
    """The names of the (saved) widgets the frontend creates for a node type, in order."""
    names = []
    for name, kind in NODE_TYPES[node_type][1]:
        names.append(name)
        if has_control_widget(node_type, name, kind):
            names.append("control_after_generate")
    return names


# Node sizes: at least what the frontend computes for each (it grows a smaller saved size, and the
# node then covers its neighbours); LoadImage and SaveImage leave room for the image.
SIZES = {
    "LoadImage": (360, 440), "CheckpointLoaderSimple": (360, 110), "CLIPVisionLoader": (360, 70), "LoadTaskPlugin": (360, 70),
    "LoadTaskPluginLibrary": (360, 110), "CLIPTextEncode": (380, 100), "KSampler": (360, 280), "VAEDecode": (360, 60),
    "VAEDecodeTiled": (360, 160), "DiffPluginColorFix": (360, 90), "SaveImage": (420, 460), "GetImageSize": (360, 80),
    "ImageScale": (360, 140), "ApplyTaskPlugin": (380, 350), "PluginSelector": (400, 450), "SynthesizeDegradedPairs": (380, 300),
    "TrainTaskPlugin": (380, 470), "RestoreWithTaskPlugins": (380, 550), "MarkdownNote": (460, 300),
    "ComposeTaskPlugins": (380, 320), "LoadImageMask": (360, 440),
}
# PluginSelector: room for its scores after a run (web/plugin_scores.js: 18 px a row) for the
# reference's eight tasks and "(none)", so the node stays inside its group.
NODE_TITLE = 30  # the frontend draws a node's title bar above its pos
GROUP_TITLE = 40  # a group's title bar (font size 24)
PAD, GAP, COLUMN_GAP = 20, 40, 80
GROUP_COLOR = "#3f789e"


@dataclass
class Node:
    id: int
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input (or widget) name -> (source node id, output index)
    title: str | None = None
    size: tuple[int, int] | None = None
    pos: tuple[int, int] = (0, 0)  # set by the layout

    def __post_init__(self):
        self.size = self.size or SIZES[self.type]


@dataclass
class Group:
    title: str
    nodes: list[Node]


@dataclass
class Workflow:
    key: str  # the API twin's name (api/<key>.json)
    title: str  # the UI file's name: what the template browser shows
    notes: list[Node]  # left of the groups, read first
    groups: list[Group]  # columns, left to right

    @property
    def nodes(self) -> list[Node]:
        return self.notes + [n for g in self.groups for n in g.nodes]


def layout(workflow: Workflow) -> list[tuple[str, list[int]]]:
    """Positions every node; returns the groups' (title, bounding)."""
    x = 0
    y = 0
    for note in workflow.notes:  # a column of notes, outside the groups
        note.pos = (x, y + NODE_TITLE)
        y += NODE_TITLE + note.size[1] + GAP
    x += max(n.size[0] for n in workflow.notes) + COLUMN_GAP
    bounds = []
    for group in workflow.groups:
        width = max(n.size[0] for n in group.nodes) + 2 * PAD
        y = GROUP_TITLE + PAD
        for node in group.nodes:
            node.pos = (x + PAD, y + NODE_TITLE)
            y += NODE_TITLE + node.size[1] + GAP
        bounds.append((group.title, [x, 0, width, y - GAP + PAD]))
        x += width + COLUMN_GAP
    return bounds


def ui_inputs(node: Node) -> list[tuple[str, str, bool]]:
    """The node's input sockets in the UI: (name, type, is a widget) - its link inputs, then the
    widgets driven by a link (a widget input, e.g. ImageScale's width from GetImageSize)."""
    link_inputs, widgets, _ = NODE_TYPES[node.type]
    return [(name, kind, False) for name, kind in link_inputs] + [(w, kind, True) for w, kind in widgets if w in node.links]


def widgets_values(node: Node) -> list:
    values = []
    for name, kind in NODE_TYPES[node.type][1]:
        if kind == "IMAGEUPLOAD":
            values.append("image")  # the upload button's value
            continue
        values.append(node.widgets.get(name, 0))  # a linked widget keeps a placeholder value
        if has_control_widget(node.type, name, kind):
            values.append(SEED_CONTROL)
    return values


def ui_format(workflow: Workflow) -> dict:
    groups = layout(workflow)
    nodes = workflow.nodes
    by_id = {n.id: n for n in nodes}
    links, ui_nodes = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for node in nodes:
        names = [name for name, _, _ in ui_inputs(node)]
        for name, (source, slot) in node.links.items():
            link_id = len(links) + 1
            links.append([link_id, source, slot, node.id, names.index(name), NODE_TYPES[by_id[source].type][2][slot][1]])
            outgoing.setdefault((source, slot), []).append(link_id)
    incoming = {(link[3], link[4]): link[0] for link in links}
    for order, node in enumerate(nodes):
        _, _, outputs = NODE_TYPES[node.type]
        properties = {} if node.type in VIRTUAL else {"Node name for S&R": node.type}
        if node.type in DOWNLOADS:
            properties["models"] = [dict(DOWNLOADS[node.type])]
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(node.size),
            "flags": {},
            "order": order,
            "mode": 0,
            "inputs": [
                {"name": name, "type": kind, "link": incoming.get((node.id, index))}
                | ({"widget": {"name": name}} if is_widget else {})
                | ({"shape": 7} if name in OPTIONAL_LINKS else {})
                for index, (name, kind, is_widget) in enumerate(ui_inputs(node))
                if (node.id, index) in incoming or name not in OPTIONAL_LINKS
            ],
            "outputs": [
                {"name": name, "type": kind, "links": outgoing.get((node.id, slot), []), "slot_index": slot}
                for slot, (name, kind) in enumerate(outputs)
            ],
            "properties": properties,
            "widgets_values": widgets_values(node),
        }
        if node.title:
            entry["title"] = node.title
        if node.type in VIRTUAL:
            entry.update(color="#432", bgcolor="#653")
        ui_nodes.append(entry)
    left = min(n.pos[0] for n in nodes)
    return {
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [{"id": i + 1, "title": title, "bounding": bounding, "color": GROUP_COLOR, "font_size": 24, "flags": {}}
                   for i, (title, bounding) in enumerate(groups)],
        "config": {},
        # opened at the top left, at a zoom where the frontend still draws the text (above 0.6)
        "extra": {"ds": {"scale": 0.65, "offset": [40 - left, 60]}},
        "version": 0.4,
    }


def api_format(workflow: Workflow) -> dict:
    prompt = {}
    for node in workflow.nodes:
        if node.type in VIRTUAL:
            continue
        inputs = dict(node.widgets)
        inputs.update({name: [str(source), slot] for name, (source, slot) in node.links.items()})
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return prompt


# ---------------------------------------------------------------------- the notes

PLUGINS_NOTE = f"""## Where the models come from

**Task-Plugins** go in `ComfyUI/models/diff_plugins/`. They come from the authors' release: the
pre-trained weights linked in the README of [Diff-Plugin]({DIFF_PLUGIN_REPO}) (a `pre-trained/` folder;
CC BY-NC-SA 4.0, non-commercial). Either

* convert them once, one file per task (`derain.safetensors`, `dehaze.safetensors`, ...) and the
  Plugin-Selector (`selector.safetensors`):
  `diffplugin convert pre-trained -o ComfyUI/models/diff_plugins`
  (`diffplugin` comes with this pack: `pip install -e ComfyUI/custom_nodes/diff-plugin`), or
* drop the reference task folders as they are (e.g. `derain/` with `tpb.pt` and `scb/`, and
  `plugin_selector/` with `PromptTunner.pt`) into `ComfyUI/models/diff_plugins/`.

**SD 1.5 checkpoint** `{CHECKPOINT}` in `models/checkpoints/` (any SD 1.x checkpoint works) and
**CLIP ViT-L/14 vision** `{CLIP_VISION}` in `models/clip_vision/`: ComfyUI offers to download
both when they are missing (the loaders carry their links)."""


def note(node_id: int, text: str, title: str, height: int = 300) -> Node:
    return Node(node_id, "MarkdownNote", {"text": text}, title=title, size=(SIZES["MarkdownNote"][0], height))


def plugins_note(node_id: int = 20) -> Node:
    return note(node_id, PLUGINS_NOTE, "Note: models", height=320)


# ---------------------------------------------------------------------- the workflows

# The tile widgets of Apply / Restore: the defaults (a photo that fits one 1536 px tile is not tiled).
TILES = {"tile_size": 1536, "tile_overlap": 256, "tile_batch": 1, "tile_prompt": "tile"}
SAMPLER = {"seed": 42, "steps": 20, "cfg": 1.0, "sampler_name": "uni_pc_bh2", "scheduler": "normal", "denoise": 1.0}
APPLY = {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "resolution": 512, **TILES, "plugin_guidance": False}
RESTORE = {"seed": 42, "steps": 20, "later_steps": 3, "cfg": 1.0, "sampler_name": "uni_pc_bh2", "scheduler": "normal",
           "resolution": 512, "output_size": "original", **TILES, "color_fix": "none", "plugin_guidance": False,
           "batch_size": 4, "same_noise": False, "strength": 1.0}


def checkpoint(node_id: int = 2) -> Node:
    return Node(node_id, "CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}, title="Any SD 1.x checkpoint")


def clip_vision(node_id: int = 3) -> Node:
    return Node(node_id, "CLIPVisionLoader", {"clip_name": CLIP_VISION}, title="CLIP ViT-L/14 vision")


def back_to_size(decoded: tuple[int, int], photo: tuple[int, int]) -> list[Node]:
    """The restored image back at the photo's own size (the plugin runs at a working size: short
    side raised to 512, sides to multiples of 8): node 13 reads the size, node 14 scales."""
    return [
        Node(13, "GetImageSize", {}, {"image": photo}, title="The photo's size"),
        Node(14, "ImageScale", {"upscale_method": "lanczos", "crop": "disabled"},
             {"image": decoded, "width": (13, 0), "height": (13, 1)}, title="Back to the photo's size"),
    ]


def restore_groups(photo: Node, apply_links: dict, extra_loaders=(), apply_title=None, apply_widgets=None) -> tuple[list[Group], dict]:
    """Photo + models -> Apply Task-Plugin -> KSampler -> VAE Decode -> back to size -> Save."""
    apply = Node(5, "ApplyTaskPlugin", dict(apply_widgets or APPLY), apply_links, title=apply_title)
    text = Node(6, "CLIPTextEncode", {"text": ""}, {"clip": (2, 1)}, title="Empty prompt (ignored while the plugin is active)")
    sampler = Node(7, "KSampler", dict(SAMPLER), {"model": (5, 0), "positive": (6, 0), "negative": (6, 0), "latent_image": (5, 1)})
    decode = Node(8, "VAEDecode", {}, {"samples": (7, 0), "vae": (2, 2)})
    save = Node(9, "SaveImage", {"filename_prefix": "diff-plugin/restored"}, {"images": (14, 0)}, title="The restored photo")
    groups = [
        Group("1 - The photo and the models", [photo, checkpoint(), clip_vision(), *extra_loaders]),
        Group("2 - Apply the Task-Plugin", [apply, text]),
        Group("3 - Sample (cfg 1, UniPC, 20 steps)", [sampler]),
        Group("4 - Decode, at the photo's size", [decode, *back_to_size((8, 0), (photo.id, 0))]),
        Group("5 - Result", [save]),
    ]
    return groups, {n.id: n for g in groups for n in g.nodes}


def single_task() -> Workflow:
    photo = Node(1, "LoadImage", {"image": "demo_rain.jpg"}, title="Degraded photo")
    plugin = Node(4, "LoadTaskPlugin", {"plugin_name": "derain.safetensors"}, title="Task-Plugin (the task to remove)")
    links = {"model": (2, 0), "task_plugin": (4, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)}
    groups, _ = restore_groups(photo, links, [plugin])
    how = note(21, "## Restore a photo with one Task-Plugin\n\nLoad your photo, choose the Task-Plugin of what spoils it "
                   "(rain, haze, snow, blur, moire, glare, low light, a damaged face) and run. Apply Task-Plugin patches the "
                   "model and gives the start latent; KSampler samples it at denoise 1.0; the result comes back at the "
                   "photo's own size.", "Note: this workflow", height=180)
    return Workflow("diff_plugin_single_task", "Diff-Plugin - Restore a photo with one Task-Plugin", [plugins_note(), how], groups)


def region_mask() -> Workflow:
    """The region to restore is the mask painted on the photo (LoadImage's MASK): the rest is kept."""
    photo = Node(1, "LoadImage", {"image": "demo_rain.jpg"}, title="Degraded photo: paint the region to restore")
    plugin = Node(4, "LoadTaskPlugin", {"plugin_name": "derain.safetensors"}, title="Task-Plugin (the task to remove)")
    links = {"model": (2, 0), "task_plugin": (4, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0), "mask": (1, 1)}
    groups, _ = restore_groups(photo, links, [plugin], apply_title="Apply Task-Plugin (in the painted region)")
    how = note(21, "## Restore only a region\n\nRight-click the photo, **Open in MaskEditor**, paint over the part to "
                   "restore and **Save**: the photo's MASK output carries the painting. The plugin acts only there and "
                   "the rest of the photo is kept as it is. Nothing painted: the photo comes back unchanged.",
               "Note: paint the region", height=180)
    return Workflow("diff_plugin_region_mask", "Diff-Plugin - Restore only a painted region", [plugins_note(), how], groups)


def large_photo() -> Workflow:
    """A photo larger than a tile: sampled in 512 px tiles (the plugins' training scale), decoded by
    tiles, its colour kept by the colour fix, given back at its size."""
    photo = Node(1, "LoadImage", {"image": "demo_rain.jpg"}, title="Degraded photo (any size)")
    plugin = Node(4, "LoadTaskPlugin", {"plugin_name": "derain.safetensors"}, title="Task-Plugin (the task to remove)")
    links = {"model": (2, 0), "task_plugin": (4, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)}
    groups, by_id = restore_groups(photo, links, [plugin], apply_title="Apply Task-Plugin (512 px tiles)",
                                   apply_widgets={**APPLY, "tile_size": 512, "tile_overlap": 64})
    decode = by_id[8]
    decode.type, decode.size = "VAEDecodeTiled", SIZES["VAEDecodeTiled"]
    decode.widgets = {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}
    fix = Node(15, "DiffPluginColorFix", {"color_fix": "wavelet"}, {"image": (8, 0), "reference": (1, 0)}, title="Keep the photo's colour")
    by_id[14].links["image"] = (15, 0)
    groups[3] = Group("4 - Decode by tiles, keep colour", [decode, fix, by_id[13], by_id[14]])
    how = note(21, "## A large photo, in tiles\n\nThe photo is sampled in overlapping 512 px tiles, each with its own "
                   "spatial branch and visual prompt, decoded by tiles (VAE Decode (Tiled)), its colour kept by the wavelet "
                   "colour fix and given back at its own size: for photos of any size.", "Note: this workflow", height=180)
    return Workflow("diff_plugin_large_photo_tiles", "Diff-Plugin - Restore a large photo in tiles", [plugins_note(), how], groups)


def text_driven() -> Workflow:
    photo = Node(1, "LoadImage", {"image": "demo_snow_and_haze.jpg"}, title="Degraded photo")
    library = Node(4, "LoadTaskPluginLibrary", {"tasks": "", "selector_name": "selector.safetensors"},
                   title="Every Task-Plugin and the Plugin-Selector")
    selector = Node(5, "PluginSelector", {"instruction": "remove the snow and the haze", "threshold": 0.0},
                    {"image": (1, 0), "task_plugins": (4, 0), "selector": (4, 1), "clip": (2, 1), "clip_vision": (3, 0)},
                    title="Plugin-Selector: type what to fix")
    restore = Node(6, "RestoreWithTaskPlugins", dict(RESTORE),
                   {"model": (2, 0), "task_plugins": (5, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)})
    save = Node(7, "SaveImage", {"filename_prefix": "diff-plugin/restored"}, {"images": (6, 0)}, title="The restored photo")
    groups = [
        Group("1 - The photo and the models", [photo, checkpoint(), clip_vision(), library]),
        Group("2 - Select by instruction", [selector]),
        Group("3 - Run the chosen plugins", [restore]),
        Group("4 - Result", [save]),
    ]
    how = note(21, "## Restore by instruction\n\nType what to fix (*\"remove the snow and the haze\"*): the Plugin-Selector "
                   "scores every Task-Plugin against the instruction and the photo, draws the scores on the node and passes "
                   "the chosen ones on; Restore with Task-Plugins runs them one after another. The selector is "
                   "`selector.safetensors`, as `diffplugin convert` writes it (the release's unconverted "
                   "`plugin_selector/PromptTunner.pt` works too).", "Note: this workflow", height=200)
    return Workflow("diff_plugin_text_driven_multi_task", "Diff-Plugin - Restore by instruction (Plugin-Selector)",
                    [plugins_note(), how], groups)


def rain_and_haze_one_pass() -> Workflow:
    """Two plugins together in one denoising pass (Compose Task-Plugins, joint), each at its weight."""
    photo = Node(1, "LoadImage", {"image": "demo_rain_and_haze.jpg"}, title="Photo with rain and haze")
    library = Node(4, "LoadTaskPluginLibrary", {"tasks": "derain, dehaze", "selector_name": "none"},
                   title="The derain and dehaze Task-Plugins")
    compose = Node(10, "ComposeTaskPlugins", {"compose": "joint", "joint_context": "attention", "shares": "derain=1, dehaze=1",
                                              "region_tasks": ""},
                   {"task_plugins": (4, 0)}, title="Together in one pass, each at its share")
    links = {"model": (2, 0), "task_plugin": (10, 1), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)}
    groups, _ = restore_groups(photo, links, [library], apply_title="Apply both Task-Plugins")
    groups[1] = Group("2 - Compose and apply", [compose, *groups[1].nodes])
    how = note(21, "## Remove rain and haze in one pass\n\nCompose Task-Plugins runs the derain and dehaze plugins together: "
                   "every step each plugin's spatial branch reads its own visual prompt and their residuals add up by their "
                   "shares, and the model reads both prompts; one pass of 20 steps instead of one after another. Change the "
                   "shares (`derain=2, dehaze=1`: only the ratios count; 0 leaves a plugin out), Apply's strength (how strongly "
                   "both act), or choose `chain` for the reference's one-after-another (with Restore with Task-Plugins).", "Note: this workflow", height=220)
    return Workflow("diff_plugin_rain_and_haze_one_pass", "Diff-Plugin - Remove rain and haze in one pass",
                    [plugins_note(), how], groups)


def snow_on_the_river() -> Workflow:
    """Each plugin its own region (Compose Task-Plugins' region_N): the snow removed on the river
    only, the haze everywhere, in one pass; the rest of the photo is kept."""
    photo = Node(1, "LoadImage", {"image": "demo_snow_river.png"}, title="Photo: snow over the sky and the river")
    river = Node(5, "LoadImageMask", {"image": "demo_river_mask.png", "channel": "red"},
                 title="The river (white), drawn over the photo")
    library = Node(4, "LoadTaskPluginLibrary", {"tasks": "desnow, dehaze", "selector_name": "none"},
                   title="The desnow and dehaze Task-Plugins")
    compose = Node(10, "ComposeTaskPlugins", {"compose": "joint", "joint_context": "attention", "shares": "",
                                              "region_tasks": "desnow"},
                   {"task_plugins": (4, 0), "region_1": (5, 0)}, title="desnow in region_1 (the river), dehaze everywhere")
    restore = Node(6, "RestoreWithTaskPlugins", dict(RESTORE), {"model": (2, 0), "task_plugins": (10, 0), "clip_vision": (3, 0),
                                                                "vae": (2, 2), "image": (1, 0)})
    save = Node(7, "SaveImage", {"filename_prefix": "diff-plugin/restored"}, {"images": (6, 0)}, title="The restored photo")
    groups = [
        Group("1 - Photo, river and models", [photo, river, checkpoint(), clip_vision(), library]),
        Group("2 - A region for each plugin", [compose]),
        Group("3 - Restore in one pass", [restore]),
        Group("4 - Result", [save]),
    ]
    how = note(21, "## Remove the snow only on the river\n\nThe paper's own limitation: it cannot *remove only the snow on the "
                   "river while keeping those in the sky*. Compose Task-Plugins gives each plugin its region: `region_1` (the "
                   "river, white in the mask) goes to the first plugin named in `region_tasks` (desnow); dehaze has no region, so "
                   "it acts everywhere. In the UNet each position reads the plugins whose regions cover it, by their shares "
                   "there; the snow in the sky stays. Use your own photo and mask (or paint one: the photo's MASK from the "
                   "MaskEditor works too). Regions need `joint_context` attention.", "Note: this workflow", height=260)
    return Workflow("diff_plugin_snow_on_the_river", "Diff-Plugin - Remove the snow only on the river", [plugins_note(), how], groups)


def train_then_apply() -> Workflow:
    """Synthetic rain on a clean photo -> a new derain plugin -> applied to a real rainy photo."""
    clean = Node(1, "LoadImage", {"image": "example.png"}, title="Clean photo (use your own; a batch works too)")
    pairs = Node(4, "SynthesizeDegradedPairs",
                 {"degradation": "rain", "second_degradation": "none", "intensity_min": 0.3, "intensity_max": 0.9,
                  "pairs_per_image": 8, "seed": 0, "save_to": "diff-plugin-synthetic/rain", "overwrite": False},
                 {"clean_images": (1, 0)}, title="Synthetic rain: (rainy, clean) pairs")
    train = Node(5, "TrainTaskPlugin",
                 {"data_path": "", "save_name": "my_derain", "steps": 1000, "batch_size": 2, "learning_rate": 1e-4,
                  "resolution": 512, "seed": 42, "start_mode": "auto", "gradient_checkpointing": False,
                  "cache_encodings": True, "checkpoint_every": 250, "resume": True, "overwrite": False},
                 {"model": (2, 0), "vae": (2, 2), "clip_vision": (3, 0), "input_images": (4, 0), "target_images": (4, 1)})
    curve = Node(6, "SaveImage", {"filename_prefix": "diff-plugin/loss_curve"}, {"images": (5, 1)}, title="Loss curve")
    rainy = Node(7, "LoadImage", {"image": "demo_rain.jpg"}, title="A real rainy photo to restore")
    apply = Node(8, "ApplyTaskPlugin", dict(APPLY),
                 {"model": (2, 0), "task_plugin": (5, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (7, 0)},
                 title="Apply the new Task-Plugin")
    text = Node(9, "CLIPTextEncode", {"text": ""}, {"clip": (2, 1)}, title="Empty prompt (ignored while the plugin is active)")
    sampler = Node(10, "KSampler", dict(SAMPLER), {"model": (8, 0), "positive": (9, 0), "negative": (9, 0), "latent_image": (8, 1)})
    decode = Node(11, "VAEDecode", {}, {"samples": (10, 0), "vae": (2, 2)})
    save = Node(12, "SaveImage", {"filename_prefix": "diff-plugin/restored"}, {"images": (14, 0)}, title="The restored photo")
    groups = [
        Group("1 - A clean photo and the models", [clean, checkpoint(), clip_vision()]),
        Group("2 - Make training pairs", [pairs]),
        Group("3 - Train the Task-Plugin", [train, curve]),
        Group("4 - Apply it to a real photo", [rainy, apply, text]),
        Group("5 - Sample", [sampler]),
        Group("6 - Decode, at the photo's size", [decode, *back_to_size((11, 0), (7, 0))]),
        Group("7 - Result", [save]),
    ]
    how = note(21, "## Train a Task-Plugin on synthetic rain\n\nSynthesize Degraded Pairs puts seeded synthetic rain on the "
                   "clean photo(s); Train Task-Plugin trains a new plugin on the pairs (1000 steps; a checkpoint every 250, "
                   "and `resume` carries a stopped run on) and saves `models/diff_plugins/my_derain.safetensors`; the new "
                   "plugin then restores a real rainy photo. Both seeds stay fixed, so queuing again resumes the same run "
                   "instead of starting another.", "Note: this workflow", height=200)
    return Workflow("diff_plugin_train_task_plugin", "Diff-Plugin - Train a Task-Plugin on synthetic rain",
                    [plugins_note(), how], groups)


# Thumbnail of each workflow: (the degradation it removes, a caption, the region it restores or None).
THUMBNAILS = {
    "diff_plugin_single_task": (["rain"], "one plugin: remove the rain", None),
    "diff_plugin_text_driven_multi_task": (["snow", "haze"], '"remove the snow and the haze"', None),
    "diff_plugin_region_mask": (["rain"], "only a region of the photo", (0.0, 0.5)),
    "diff_plugin_large_photo_tiles": (["rain"], "a large photo, in tiles", None),
    "diff_plugin_rain_and_haze_one_pass": (["rain", "haze"], "rain and haze, in one pass", None),
    "diff_plugin_snow_on_the_river": (["snow"], "the snow removed only in a region", (0.0, 0.5)),
    "diff_plugin_train_task_plugin": (["rain"], "train a plugin on synthetic rain", None),
}


def thumbnail(kinds: list[str], caption: str, region):
    """A drawn scene, its left part degraded by plugin_core's own synthetic degradations (the
    restored right part is the clean scene), with the caption; a restored region is outlined."""
    from PIL import ImageDraw

    sys.path.insert(0, str(OUT.parent))
    from plugin_core.synthetic import degrade
    from tests.photos import landscape  # the tests' photos are drawn there too

    width, height = 400, 300
    scene = landscape(width, height)
    split = int((region[1] if region else 0.5) * width)
    degraded = degrade(scene, kinds, seed=3, intensity=0.8)
    image = scene.copy()
    if region:  # the region is restored, the rest of the photo is kept as it was
        image.paste(degraded.crop((split, 0, width, height)), (split, 0))
        image.paste(scene.crop((0, 0, split, height)), (0, 0))
    else:
        image.paste(degraded.crop((0, 0, split, height)), (0, 0))
    draw = ImageDraw.Draw(image)
    if region:
        draw.rectangle((0, 0, split - 1, height - 45), outline=(80, 220, 120), width=4)
    else:
        draw.line((split, 0, split, height), fill=(255, 255, 255), width=2)
    draw.rectangle((0, height - 44, width, height), fill=(20, 20, 20))
    draw.text((12, height - 36), "Diff-Plugin", fill=(120, 200, 255))
    draw.text((12, height - 20), caption, fill=(235, 235, 235))
    return image


BUILDERS = [single_task, text_driven, rain_and_haze_one_pass, snow_on_the_river, region_mask, large_photo, train_then_apply]


def workflows() -> list[Workflow]:
    return [build() for build in BUILDERS]


def ui_path(workflow: Workflow) -> Path:
    return OUT / f"{workflow.title}.json"


def api_path(workflow: Workflow) -> Path:
    return OUT / "api" / f"{workflow.key}.json"


def thumbnail_path(workflow: Workflow) -> Path:
    return OUT / f"{workflow.title}.jpg"  # where the template browser asks for it


def render() -> dict[Path, str]:
    files = {}
    for workflow in workflows():
        files[ui_path(workflow)] = json.dumps(ui_format(workflow), indent=1) + "\n"
        files[api_path(workflow)] = json.dumps(api_format(workflow), indent=1) + "\n"
    return files


def left_over(expected: set[Path]) -> list[Path]:
    """Workflow files and thumbnails no workflow writes (an old name would show in the browser)."""
    found = [*OUT.glob("*.json"), *OUT.glob("*.jpg"), *(OUT / "api").glob("*.json")]
    return sorted(p for p in found if p not in expected)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--thumbnails", action="store_true", help="also write the thumbnails")
    args = parser.parse_args(argv)
    files = render()
    thumbnails = {thumbnail_path(w): THUMBNAILS[w.key] for w in workflows()}
    if args.check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        stale += [p for p in thumbnails if not p.is_file()]
        stale += [f"{p} (left over)" for p in left_over(set(files) | set(thumbnails))]
        if stale:
            print("out of date (run scripts/build_example_workflows.py):", *stale, sep="\n  ")
            return 1
        return 0
    if args.thumbnails:
        for path, (kinds, caption, region) in thumbnails.items():
            thumbnail(kinds, caption, region).save(path, quality=85)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in left_over(set(files) | set(thumbnails)):
        if path.suffix == ".json":  # an old workflow file would still be listed by the template browser
            path.unlink()
            print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
