"""CLIP ViT-L/14 vision from one `.safetensors` file, as ComfyUI's models/clip_vision holds it,
into transformers' CLIPVisionModel (frozen), with no network.

Accepted key layouts, transformers' own: a whole CLIPModel (vision_model.* + text_model.* +
visual_projection / text_projection), a CLIPVisionModel (vision_model.*, or embeddings.* /
encoder.* at the top level as transformers >= 5.6 saves it), a CLIPVisionModelWithProjection
(vision_model.* + visual_projection.weight). Only the vision tower is read.

The config: every size but the number of attention heads is read from the shapes (width, layers,
MLP width, patch size from the patch embedding, image size from the position embeddings). The
config, then checked against those shapes, is the first of:
  1. `config`: a transformers config.json (CLIPVisionConfig, or a whole CLIPConfig), or a folder with one;
  2. next to the file: `<file stem>.json`, else `config.json` in its folder, where it describes CLIP;
  3. the shipped CLIP ViT-L/14 config (configs/clip_vit_l14), where the shapes are ViT-L/14's at 224 px.
Other known CLIPs (ViT-B, ViT-L/14 at 336 px, ViT-H, ViT-bigG), SigLIP, DINOv2 and open_clip's
`visual.*` layout are refused whatever the config, naming what was found; a model of other shapes
(the tests' tiny CLIP) loads only with its config (1 or 2).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PluginFileError
from ..formats import load_state_checked
from ..models.files import holds_plugin
from ..vocabulary import CLIP_VISION_TYPES
from .weight_files import WeightFile

VIT_L14_CONFIG = Path(__file__).resolve().parent / "configs" / "clip_vit_l14" / "config.json"
NEEDS = ("the Task-Plugins need CLIP ViT-L/14 vision at 224 px (width 1024, 24 layers, patch 14), "
         "e.g. openai/clip-vit-large-patch14 as ComfyUI's clip_vision folder holds it")
ACCEPTED = ("accepted: the transformers key layouts of CLIP ViT-L/14 (a whole CLIPModel, a CLIPVisionModel or a "
            "CLIPVisionModelWithProjection: vision_model.* keys)")
_SIZES = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H", (1664, 48): "bigG"}
# config attribute <- the shape it must equal (CLIPVisionConfig's names)
_CHECKED = ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size", "image_size", "num_channels")


@dataclass(frozen=True)
class ClipVisionInfo:
    """What a CLIP vision file holds and the config it loads with."""

    path: Path
    layout: str  # CLIPModel, CLIPVisionModel or CLIPVisionModelWithProjection
    prefix: str  # where the vision tower's keys start: "vision_model." or ""
    shapes: dict  # hidden_size, num_hidden_layers, intermediate_size, patch_size, image_size, num_channels, projection_dim
    config: dict = field(repr=False)  # the CLIPVisionConfig as a dict
    config_source: str = ""

    @property
    def name(self) -> str:
        return _family(self.shapes) or "a CLIP vision model"

    def describe(self) -> str:
        return f"{self.path.name}: {self.name} ({_sizes_text(self.shapes)}), {self.layout} layout, config from {self.config_source}"


def inspect_clip_vision_file(path: Path | str, *, config: Path | str | None = None) -> ClipVisionInfo:
    """Read a CLIP vision file's header: its layout, its sizes and the config it loads with; refuse
    other models with one message naming what was found. Reads no weights."""
    return _inspect(_open(path), config)


def load_clip_vision_file(path: Path | str, device="cpu", dtype=torch.float32, *, config: Path | str | None = None):
    """transformers' CLIPVisionModel from a CLIP vision .safetensors file, frozen; checked in full
    (every key and shape, on the meta device) before a weight is read."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModel

    weights = _open(path)
    info = _inspect(weights, config)
    with init_empty_weights():
        model = CLIPVisionModel(CLIPVisionConfig.from_dict(dict(info.config)))
    load_state_checked(model, _vision_state(weights.meta(info.prefix), info.prefix, model), f"{weights.path} (CLIP vision)")
    model.load_state_dict(_vision_state(weights.tensors(info.prefix, dtype), info.prefix, model), strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------- what the file is


def _open(path) -> WeightFile:
    path = Path(path)
    if path.is_file() and path.suffix.lower() != ".safetensors":
        raise PluginFileError(f"{path}: not a .safetensors file; give CLIP vision as a .safetensors file or a transformers folder")
    return WeightFile.open(path, "a CLIP vision .safetensors file")


def _inspect(weights: WeightFile, config) -> ClipVisionInfo:
    layout, prefix = _layout(weights)
    shapes = _shapes(weights, prefix)
    family = _family(shapes)
    vit_l14 = family == "CLIP ViT-L/14" and shapes["image_size"] == 224
    if family and not vit_l14:
        raise PluginFileError(f"{weights.path}: {family} vision ({_sizes_text(shapes)}); {NEEDS}")
    found, source = _find_config(weights.path, config)
    if found is None:
        if not vit_l14:
            raise PluginFileError(
                f"{weights.path}: a CLIP vision model of {_sizes_text(shapes)}, not CLIP ViT-L/14; {NEEDS}. A model of other "
                "shapes loads only with its transformers config.json (next to the file, as <name>.json or config.json)")
        found, source = _read_config(VIT_L14_CONFIG), "the shipped CLIP ViT-L/14 config"
    _check_config(weights.path, shapes, found, source)
    return ClipVisionInfo(weights.path, layout, prefix, shapes, found, source)


def _layout(weights: WeightFile) -> tuple[str, str]:
    for prefix in ("vision_model.", ""):
        if weights.shape(prefix + "embeddings.patch_embedding.weight") is None:
            continue
        if weights.shape(prefix + "embeddings.class_embedding") is None or weights.has(prefix + "head."):
            head = f", an attention-pooling head {prefix}head.*" if weights.has(prefix + "head.") else ""
            raise PluginFileError(f"{weights.path}: SigLIP vision (no class embedding{head}); {NEEDS}")
        if not prefix:
            return "CLIPVisionModel", prefix
        if weights.has("text_model."):
            return "CLIPModel", prefix
        return ("CLIPVisionModelWithProjection" if weights.shape("visual_projection.weight") else "CLIPVisionModel"), prefix
    if weights.has("visual."):
        found = "open_clip's key layout (visual.*)"
    elif weights.count(r"encoder\.layer\.(\d+)\.layer_scale") or weights.has("embeddings.mask_token"):
        found = "DINOv2 (encoder.layer.N.layer_scale*), not CLIP"
    elif weights.has("model.diffusion_model."):
        found = "a Stable Diffusion checkpoint, not CLIP vision"
    elif holds_plugin(weights.shapes):
        found = "this is a Task-Plugin (tpb.*, scb.*), not CLIP vision: give it with --plugin"
    elif weights.has("text_model."):
        found = "a CLIP text model alone (text_model.*), no vision tower"
    else:
        found = f"no CLIP vision tower (keys like {weights.sample_keys()})"
    raise PluginFileError(f"{weights.path}: {found}; {ACCEPTED}")


def _shapes(weights: WeightFile, prefix: str) -> dict:
    embeddings = prefix + "embeddings."
    patch = weights.shape(embeddings + "patch_embedding.weight")
    positions = weights.shape(embeddings + "position_embedding.weight")
    fc1 = weights.shape(prefix + "encoder.layers.0.mlp.fc1.weight")
    if len(patch) != 4 or not positions:
        raise PluginFileError(f"{weights.path}: an incomplete CLIP vision file (patch embedding {list(patch)}, "
                              f"position embedding {list(positions) if positions else 'missing'}); {ACCEPTED}")
    side = math.isqrt(max(positions[0] - 1, 0))
    projection = weights.shape("visual_projection.weight") if prefix else None
    return {
        "hidden_size": weights.shape(embeddings + "class_embedding")[0],
        "num_hidden_layers": weights.count(rf"^{re.escape(prefix)}encoder\.layers\.(\d+)\."),
        "intermediate_size": fc1[0] if fc1 else None,
        "patch_size": patch[2],
        "image_size": side * patch[2] if side * side == positions[0] - 1 else None,
        "num_channels": patch[1],
        "projection_dim": projection[0] if projection else None,
    }


def _family(shapes: dict) -> str | None:
    size = _SIZES.get((shapes["hidden_size"], shapes["num_hidden_layers"]))
    return f"CLIP ViT-{size}/{shapes['patch_size']}" if size else None


def _sizes_text(shapes: dict) -> str:
    image = f"{shapes['image_size']} px" if shapes["image_size"] else "positions not a square grid"
    return f"width {shapes['hidden_size']}, {shapes['num_hidden_layers']} layers, patch {shapes['patch_size']}, {image}"


# ---------------------------------------------------------------------- the config


def _find_config(path: Path, config) -> tuple[dict | None, str]:
    if config is not None:
        given = Path(config)
        file = given / "config.json" if given.is_dir() else given
        found = _read_config(file)
        if found is None:
            raise PluginFileError(f"{file}: not a CLIP config (model_type {' or '.join(CLIP_VISION_TYPES)})")
        return found, str(file)
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file() and (found := _read_config(candidate)) is not None:
            return found, str(candidate)
    return None, ""


def _read_config(file: Path) -> dict | None:
    """The vision config in a transformers config.json (a CLIPConfig's vision_config), or None when
    the file describes another model."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginFileError(f"{file}: config not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PluginFileError(f"{file}: not a readable JSON config: {error}") from None
    kind = data.get("model_type") if isinstance(data, dict) else None
    if kind == "clip":
        data = dict(data.get("vision_config") or {}, model_type="clip_vision_model")
    return data if kind in CLIP_VISION_TYPES else None


def _check_config(path: Path, shapes: dict, config: dict, source: str) -> None:
    from transformers import CLIPVisionConfig

    resolved = CLIPVisionConfig.from_dict(dict(config))
    differences = [f"{name} {shapes[name]} (config: {getattr(resolved, name)})" for name in _CHECKED
                   if shapes[name] is not None and shapes[name] != getattr(resolved, name)]
    if resolved.hidden_size % resolved.num_attention_heads:
        differences.append(f"{resolved.num_attention_heads} attention heads do not divide width {resolved.hidden_size}")
    if differences:
        raise PluginFileError(f"{path}: its shapes do not fit the config ({source}): {', '.join(differences)}")


def _vision_state(state: dict, prefix: str, model) -> dict:
    """The vision tower's weights under the installed CLIPVisionModel's key names (with or without
    vision_model., as the transformers version names them); position_ids only where it is a weight."""
    expected = set(model.state_dict())
    nested = any(key.startswith("vision_model.") for key in expected)
    out = {}
    for key, value in state.items():
        name = key[len(prefix):]
        name = f"vision_model.{name}" if nested else name
        if name in expected or not name.endswith("position_ids"):
            out[name] = value
    return out


__all__ = ["VIT_L14_CONFIG", "ClipVisionInfo", "inspect_clip_vision_file", "load_clip_vision_file"]
