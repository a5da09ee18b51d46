"""Writes example_workflows/*.json (ComfyUI's UI format, shown in the template browser) and
their API-format twins in example_workflows/api/ from one description, so the two never drift;
with --thumbnails also the template browser's thumbnails (<name>.jpg: a drawn scene with the
workflow's degradation, made by plugin_core's synthetic degradations).

    python scripts/build_example_workflows.py                # rewrite the files
    python scripts/build_example_workflows.py --thumbnails   # and the thumbnails
    python scripts/build_example_workflows.py --check        # exit 1 if a file differs or a thumbnail is missing
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "example_workflows"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CLIP_VISION = "clip-vit-large-patch14.safetensors"

# Socket signatures of the node types used: (link inputs [(name, type)], widget names, outputs [(name, type)]).
NODE_TYPES = {
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "CheckpointLoaderSimple": ([], ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPVisionLoader": ([], ["clip_name"], [("CLIP_VISION", "CLIP_VISION")]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")]),
    "KSampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        [("LATENT", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "VAEDecodeTiled": ([("samples", "LATENT"), ("vae", "VAE")], ["tile_size", "overlap", "temporal_size", "temporal_overlap"],
                       [("IMAGE", "IMAGE")]),
    "DiffPluginColorFix": ([("image", "IMAGE"), ("reference", "IMAGE")], ["color_fix"], [("image", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "GetImageSize": ([("image", "IMAGE")], [], [("width", "INT"), ("height", "INT"), ("batch_size", "INT")]),
    "ImageScale": ([("image", "IMAGE")], ["upscale_method", "width", "height", "crop"], [("IMAGE", "IMAGE")]),
    "SolidMask": ([], ["value", "width", "height"], [("MASK", "MASK")]),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], ["x", "y", "operation"], [("MASK", "MASK")]),
    "LoadTaskPlugin": ([], ["plugin_name"], [("task_plugin", "TASK_PLUGIN")]),
    "LoadTaskPluginLibrary": ([], ["tasks", "selector_name"], [("task_plugins", "TASK_PLUGINS"), ("selector", "PLUGIN_SELECTOR")]),
    "ApplyTaskPlugin": (
        [("model", "MODEL"), ("task_plugin", "TASK_PLUGIN"), ("clip_vision", "CLIP_VISION"), ("vae", "VAE"),
         ("image", "IMAGE"), ("mask", "MASK")],
        ["strength", "start_percent", "end_percent", "resolution", "tile_size", "tile_overlap", "tile_batch", "tile_prompt"],
        [("model", "MODEL"), ("latent", "LATENT")],
    ),
    "PluginSelector": (
        [("image", "IMAGE"), ("task_plugins", "TASK_PLUGINS"), ("selector", "PLUGIN_SELECTOR"), ("clip", "CLIP"),
         ("clip_vision", "CLIP_VISION")],
        ["instruction", "threshold"],
        [("selected", "TASK_PLUGINS"), ("scores", "STRING")],
    ),
    "SynthesizeDegradedPairs": (
        [("clean_images", "IMAGE")],
        ["degradation", "second_degradation", "intensity_min", "intensity_max", "pairs_per_image", "seed", "save_to", "overwrite"],
        [("input_images", "IMAGE"), ("target_images", "IMAGE")],
    ),
    "TrainTaskPlugin": (
        [("model", "MODEL"), ("vae", "VAE"), ("clip_vision", "CLIP_VISION"), ("input_images", "IMAGE"), ("target_images", "IMAGE")],
        ["data_path", "save_name", "steps", "batch_size", "learning_rate", "resolution", "seed", "start_mode",
         "gradient_checkpointing", "cache_encodings", "checkpoint_every", "resume", "overwrite"],
        [("task_plugin", "TASK_PLUGIN"), ("loss_curve", "IMAGE")],
    ),
    "RestoreWithTaskPlugins": (
        [("model", "MODEL"), ("task_plugins", "TASK_PLUGINS"), ("clip_vision", "CLIP_VISION"), ("vae", "VAE"), ("image", "IMAGE")],
        ["seed", "steps", "later_steps", "cfg", "sampler_name", "scheduler", "resolution", "output_size", "tile_size",
         "tile_overlap", "tile_batch", "tile_prompt", "color_fix"],
        [("image", "IMAGE")],
    ),
}


# Nodes whose seed has ComfyUI's "control after generate" widget (not the training nodes:
# a seed that changes on every queue would retrain every time).
SEED_CONTROL = {"KSampler", "RestoreWithTaskPlugins"}
OPTIONAL_LINKS = {"mask", "input_images", "target_images"}  # optional sockets: drawn hollow, left out when unlinked


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input (or widget) name -> (source node id, output index)
    title: str | None = None


def ui_inputs(node: Node) -> list[tuple[str, str, bool]]:
    """The node's input sockets in the UI: (name, type, is a widget) - its link inputs, then the
    widgets driven by a link (a widget input, e.g. ImageScale's width from GetImageSize)."""
    link_inputs, widget_names, _ = NODE_TYPES[node.type]
    return [(name, kind, False) for name, kind in link_inputs] + [(w, "INT", True) for w in widget_names if w in node.links]


def ui_format(nodes: list[Node]) -> dict:
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
        link_inputs, widget_names, outputs = NODE_TYPES[node.type]
        values = []
        for name in widget_names:
            if name == "upload":
                values.append("image")
                continue
            values.append(node.widgets.get(name, 0))  # a linked widget keeps a placeholder value
            if name == "seed" and node.type in SEED_CONTROL:
                values.append("fixed")  # the control_after_generate widget
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": [320, 60 + 26 * (len(link_inputs) + len(widget_names))],
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
            "properties": {"Node name for S&R": node.type},
            "widgets_values": values,
        }
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    return {
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def api_format(nodes: list[Node]) -> dict:
    prompt = {}
    for node in nodes:
        inputs = {k: v for k, v in node.widgets.items()}
        inputs.update({name: [str(source), slot] for name, (source, slot) in node.links.items()})
        if node.type == "LoadImage":
            inputs.pop("upload", None)
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return prompt


# The tile widgets of Apply / Restore: the defaults (a photo that fits one 1536 px tile is not tiled).
TILES = {"tile_size": 1536, "tile_overlap": 256, "tile_batch": 1, "tile_prompt": "tile"}


def base_loaders(image: str) -> list[Node]:
    return [
        Node(1, "LoadImage", (40, 60), {"image": image}, title="Degraded photo"),
        Node(2, "CheckpointLoaderSimple", (40, 420), {"ckpt_name": CHECKPOINT}, title="Any SD 1.x checkpoint"),
        Node(3, "CLIPVisionLoader", (40, 580), {"clip_name": CLIP_VISION}, title="CLIP ViT-L/14 vision"),
    ]


def at_original_size(restored: tuple[int, int], original: tuple[int, int], save: Node, pos: tuple[int, int]) -> list[Node]:
    """The restored image back at the photo's own size (the plugin runs at a working size:
    short side raised to 512, sides to multiples of 8), for `save` (SaveImage)."""
    save.links = {"images": (14, 0)}
    return [
        Node(13, "GetImageSize", (pos[0], pos[1] + 160), {}, {"image": original}, title="The photo's size"),
        Node(14, "ImageScale", pos, {"upscale_method": "lanczos", "crop": "disabled"},
             {"image": restored, "width": (13, 0), "height": (13, 1)}, title="Back to the photo's size"),
        save,
    ]


def single_task(image="demo_rain.jpg", plugin="derain.safetensors", mask_nodes=()) -> list[Node]:
    apply_links = {"model": (2, 0), "task_plugin": (4, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)}
    if mask_nodes:
        apply_links["mask"] = (mask_nodes[-1].id, 0)
    return base_loaders(image) + [
        Node(4, "LoadTaskPlugin", (40, 700), {"plugin_name": plugin}),
        Node(5, "ApplyTaskPlugin", (420, 60),
             {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "resolution": 512, **TILES}, apply_links),
        Node(6, "CLIPTextEncode", (420, 400), {"text": ""}, {"clip": (2, 1)}, title="(ignored while the plugin is active)"),
        Node(7, "KSampler", (800, 60),
             {"seed": 42, "steps": 20, "cfg": 1.0, "sampler_name": "uni_pc_bh2", "scheduler": "normal", "denoise": 1.0},
             {"model": (5, 0), "positive": (6, 0), "negative": (6, 0), "latent_image": (5, 1)}),
        Node(8, "VAEDecode", (1180, 60), {}, {"samples": (7, 0), "vae": (2, 2)}),
        *at_original_size((8, 0), (1, 0), Node(9, "SaveImage", (1560, 60), {"filename_prefix": "diff-plugin/restored"}), (1180, 200)),
        *mask_nodes,
    ]


def large_photo(image="demo_rain.jpg", plugin="derain.safetensors") -> list[Node]:
    """A photo larger than a tile: sampled in 512 px tiles (the plugins' training scale), decoded by
    tiles, its colour kept by the colour fix, given back at its size."""
    nodes = single_task(image, plugin)
    apply = next(n for n in nodes if n.type == "ApplyTaskPlugin")
    apply.widgets.update(tile_size=512, tile_overlap=64)
    apply.title = "Apply Task-Plugin (512 px tiles)"
    decode = next(n for n in nodes if n.type == "VAEDecode")
    decode.type, decode.widgets = "VAEDecodeTiled", {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}
    scale = next(n for n in nodes if n.type == "ImageScale")
    scale.links["image"] = (15, 0)
    return nodes + [Node(15, "DiffPluginColorFix", (1180, 400), {"color_fix": "wavelet"}, {"image": (8, 0), "reference": (1, 0)})]


def region_mask() -> list[Node]:
    # The left half of the 1200x900 demo photo; any MASK works (e.g. painted in the mask editor).
    mask = [
        Node(10, "SolidMask", (40, 860), {"value": 0.0, "width": 1200, "height": 900}, title="Whole photo: keep"),
        Node(11, "SolidMask", (40, 1020), {"value": 1.0, "width": 600, "height": 900}, title="Region to restore"),
        Node(12, "MaskComposite", (420, 860), {"x": 0, "y": 0, "operation": "add"}, {"destination": (10, 0), "source": (11, 0)}),
    ]
    return single_task(mask_nodes=mask)


def text_driven(image="demo_snow_and_haze.jpg", instruction="remove the snow and the haze") -> list[Node]:
    return base_loaders(image) + [
        Node(4, "LoadTaskPluginLibrary", (40, 700), {"tasks": "", "selector_name": "plugin_selector/PromptTunner.pt"}),
        Node(5, "PluginSelector", (420, 60), {"instruction": instruction, "threshold": 0.0},
             {"image": (1, 0), "task_plugins": (4, 0), "selector": (4, 1), "clip": (2, 1), "clip_vision": (3, 0)}),
        Node(6, "RestoreWithTaskPlugins", (800, 60),
             {"seed": 42, "steps": 20, "later_steps": 3, "cfg": 1.0, "sampler_name": "uni_pc_bh2", "scheduler": "normal",
              "resolution": 512, "output_size": "original", **TILES, "color_fix": "none"},
             {"model": (2, 0), "task_plugins": (5, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (1, 0)}),
        Node(7, "SaveImage", (1180, 60), {"filename_prefix": "diff-plugin/restored"}, {"images": (6, 0)}),
    ]


def train_then_apply(clean="example.png", degraded="demo_rain.jpg") -> list[Node]:
    """Synthetic rain on a clean photo -> a new derain plugin -> applied to a real rainy photo."""
    return [
        Node(1, "LoadImage", (40, 60), {"image": clean}, title="Clean photo (use your own; a batch works too)"),
        Node(2, "CheckpointLoaderSimple", (40, 420), {"ckpt_name": CHECKPOINT}, title="Any SD 1.x checkpoint"),
        Node(3, "CLIPVisionLoader", (40, 580), {"clip_name": CLIP_VISION}, title="CLIP ViT-L/14 vision"),
        Node(4, "SynthesizeDegradedPairs", (420, 60),
             {"degradation": "rain", "second_degradation": "none", "intensity_min": 0.3, "intensity_max": 0.9,
              "pairs_per_image": 8, "seed": 0, "save_to": "diff-plugin-synthetic/rain", "overwrite": False},
             {"clean_images": (1, 0)}),
        Node(5, "TrainTaskPlugin", (800, 60),
             {"data_path": "", "save_name": "my_derain", "steps": 1000, "batch_size": 2, "learning_rate": 1e-4,
              "resolution": 512, "seed": 42, "start_mode": "auto", "gradient_checkpointing": False,
              "cache_encodings": True, "checkpoint_every": 250, "resume": True, "overwrite": False},
             {"model": (2, 0), "vae": (2, 2), "clip_vision": (3, 0), "input_images": (4, 0), "target_images": (4, 1)}),
        Node(6, "SaveImage", (1180, 420), {"filename_prefix": "diff-plugin/loss_curve"}, {"images": (5, 1)}),
        Node(7, "LoadImage", (420, 520), {"image": degraded}, title="Degraded photo to restore"),
        Node(8, "ApplyTaskPlugin", (1180, 60),
             {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "resolution": 512, **TILES},
             {"model": (2, 0), "task_plugin": (5, 0), "clip_vision": (3, 0), "vae": (2, 2), "image": (7, 0)}),
        Node(9, "CLIPTextEncode", (800, 700), {"text": ""}, {"clip": (2, 1)}, title="(ignored while the plugin is active)"),
        Node(10, "KSampler", (1560, 60),
             {"seed": 42, "steps": 20, "cfg": 1.0, "sampler_name": "uni_pc_bh2", "scheduler": "normal", "denoise": 1.0},
             {"model": (8, 0), "positive": (9, 0), "negative": (9, 0), "latent_image": (8, 1)}),
        Node(11, "VAEDecode", (1940, 60), {}, {"samples": (10, 0), "vae": (2, 2)}),
        *at_original_size((11, 0), (7, 0), Node(12, "SaveImage", (2320, 60), {"filename_prefix": "diff-plugin/restored"}), (1940, 200)),
    ]


# Thumbnail of each workflow: (the degradation it removes, a caption, the region it restores or None).
THUMBNAILS = {
    "diff_plugin_single_task": (["rain"], "one plugin: remove the rain", None),
    "diff_plugin_text_driven_multi_task": (["snow", "haze"], '"remove the snow and the haze"', None),
    "diff_plugin_region_mask": (["rain"], "only a region of the photo", (0.0, 0.5)),
    "diff_plugin_large_photo_tiles": (["rain"], "a large photo, in tiles", None),
    "diff_plugin_train_task_plugin": (["rain"], "train a plugin on synthetic rain", None),
}


def thumbnail(kinds: list[str], caption: str, region):
    """A drawn scene, its left part degraded by plugin_core's own synthetic degradations (the
    restored right part is the clean scene), with the caption; a restored region is outlined."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(OUT.parent))
    from plugin_core.synthetic import degrade

    width, height = 400, 300
    scene = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(scene)
    for y in range(height):  # sky
        draw.line((0, y, width, y), fill=(90 + y // 4, 150 + y // 6, 230 - y // 5))
    draw.ellipse((290, 40, 350, 100), fill=(255, 220, 120))
    draw.polygon([(0, 200), (110, 120), (230, 200)], fill=(70, 120, 80))
    draw.polygon([(150, 210), (290, 110), (400, 200), (400, 210)], fill=(50, 100, 70))
    draw.rectangle((0, 200, width, height), fill=(60, 140, 70))
    draw.rectangle((60, 150, 120, 210), fill=(200, 80, 60))
    draw.polygon([(50, 150), (90, 115), (130, 150)], fill=(120, 50, 40))
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


WORKFLOWS = {
    "diff_plugin_single_task": single_task,
    "diff_plugin_text_driven_multi_task": text_driven,
    "diff_plugin_region_mask": region_mask,
    "diff_plugin_large_photo_tiles": large_photo,
    "diff_plugin_train_task_plugin": train_then_apply,
}


def render() -> dict[Path, str]:
    files = {}
    for name, build in WORKFLOWS.items():
        nodes = build()
        files[OUT / f"{name}.json"] = json.dumps(ui_format(nodes), indent=1) + "\n"
        files[OUT / "api" / f"{name}.json"] = json.dumps(api_format(nodes), indent=1) + "\n"
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--thumbnails", action="store_true", help="also write the thumbnails")
    args = parser.parse_args(argv)
    stale = [OUT / f"{name}.jpg" for name in WORKFLOWS if args.check and not (OUT / f"{name}.jpg").is_file()]
    if args.thumbnails and not args.check:
        for name, (kinds, caption, region) in THUMBNAILS.items():
            thumbnail(kinds, caption, region).save(OUT / f"{name}.jpg", quality=85)
    for path, text in render().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run scripts/build_example_workflows.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
