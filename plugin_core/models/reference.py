"""The reference implementation's plugin layout: `<task>/tpb.pt` + `<task>/scb/{config.json,
diffusion_pytorch_model.bin | .safetensors}` (Python pickles, read only through
`torch.load(weights_only=True)`), read and checked. Its conversion to the project's one
.safetensors file per plugin is files.py's, which writes that file."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import PluginFileError
from ..formats import read_safetensors, read_torch_pickle, unwrap_state_dict
from .config import PluginConfig, PluginInfo

log = logging.getLogger("diffplugin")

SCB_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# Reference SCB config fields that never change the module (or only with values the
# reference itself never used, checked in `_scb_config_from_reference`).
_REFERENCE_SCB_INERT_KEYS = {
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "conditioning_embedding_out_channels",
    "controlnet_conditioning_channel_order",
    "mid_block_scale_factor",
    "downsample_padding",
    "down_block_types",
    "global_pool_conditions",
    "class_embed_type",
    "num_class_embeds",
    "projection_class_embeddings_input_dim",
}
# Reference config name -> PluginConfig field.
_REFERENCE_SCB_FIELDS = {
    "in_channels": "latent_channels",
    "cross_attention_dim": "context_width",
    "layers_per_block": "scb_layers",
    "attention_head_dim": "scb_heads",  # old diffusers naming: the number of heads
    "norm_num_groups": "norm_num_groups",
    "norm_eps": "norm_eps",
    "act_fn": "act_fn",
    "flip_sin_to_cos": "flip_sin_to_cos",
    "freq_shift": "freq_shift",
    "use_linear_projection": "use_linear_projection",
    "only_cross_attention": "only_cross_attention",
    "upcast_attention": "upcast_attention",
    "resnet_time_scale_shift": "resnet_time_scale_shift",
}


def tpb_dims(shapes: dict[str, list[int]], source: str) -> dict:
    """CLIP width, context width and depth of a TPB, read off the shapes of its tensors."""
    linear = sorted(
        int(m.group(1)) for k in shapes if (m := re.fullmatch(r"visual_projection\.(\d+)\.weight", k)) and len(shapes[k]) == 2
    )
    if not linear:
        raise PluginFileError(f"{source}: no TPB tensors (visual_projection.*) found")
    first, last = shapes[f"visual_projection.{linear[0]}.weight"], shapes[f"visual_projection.{linear[-1]}.weight"]
    return {"clip_width": first[1], "context_width": last[0], "tpb_layers": len(linear) - 1}


def _shapes(state: dict) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in state.items()}


def _scb_config_from_reference(raw: dict, source: str) -> dict:
    """Map a reference (diffusers 0.17) SCB config.json onto PluginConfig fields."""
    blocks = raw.get("down_block_types", ["CrossAttnDownBlock2D"])
    channels = raw.get("block_out_channels", [320])
    if list(blocks) != ["CrossAttnDownBlock2D"] or len(channels) != 1:
        raise PluginFileError(
            f"{source}: an SCB has exactly one CrossAttnDownBlock2D level; this config has "
            f"down_block_types={blocks}, block_out_channels={channels}"
        )
    if raw.get("global_pool_conditions") or raw.get("class_embed_type") or raw.get("num_class_embeds"):
        raise PluginFileError(f"{source}: global pooling or class embeddings are not part of an SCB")
    values = {"channels": int(channels[0])}
    for name, field in _REFERENCE_SCB_FIELDS.items():
        if name in raw:
            value = raw[name]
            if field == "scb_heads" and isinstance(value, list):
                value = value[0]
            values[field] = value
    unknown = sorted(set(raw) - set(_REFERENCE_SCB_FIELDS) - _REFERENCE_SCB_INERT_KEYS - {"block_out_channels"})
    if unknown:
        # The released configs carry keys the reference SCB never reads (use_vae_conditioning, ...).
        log.info("%s: ignoring config keys the SCB does not use: %s", source, ", ".join(unknown))
    return values



@dataclass
class ReferenceFolder:
    """What a reference task folder holds: the plugin's shapes and purpose and both state dicts."""

    config: PluginConfig
    info: PluginInfo
    tpb_state: dict
    scb_state: dict
    tpb_path: Path
    weights_path: Path


def read_reference_folder(folder: Path, task: str | None = None) -> ReferenceFolder:
    """A reference task folder's config and weights (pickles through weights_only), checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PluginFileError(f"{folder}: not a folder")
    problem = reference_folder_problem(folder)
    if problem:
        raise PluginFileError(f"{folder}: not a Diff-Plugin task folder; {problem}")
    tpb_path, config_path = folder / "tpb.pt", folder / "scb" / "config.json"
    weights_path = next(folder / "scb" / name for name in SCB_WEIGHT_FILES if (folder / "scb" / name).is_file())
    tpb_state = unwrap_state_dict(read_torch_pickle(tpb_path), tpb_path)
    try:
        raw_config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PluginFileError(f"{config_path}: not valid JSON: {error}") from None
    if weights_path.suffix == ".safetensors":
        scb_state = read_safetensors(weights_path)[0]
    else:
        scb_state = unwrap_state_dict(read_torch_pickle(weights_path), weights_path)
    dims = tpb_dims(_shapes(tpb_state), str(tpb_path))
    scb_values = _scb_config_from_reference(raw_config, str(config_path))
    if scb_values.get("context_width", dims["context_width"]) != dims["context_width"]:
        raise PluginFileError(f"{folder}: TPB outputs width {dims['context_width']} but the SCB's cross-attention "
                              f"expects {scb_values['context_width']}")
    info = PluginInfo.for_task(task or folder.name, extra={"source": "reference layout"})
    return ReferenceFolder(PluginConfig(**{**dims, **scb_values}), info, tpb_state, scb_state, tpb_path, weights_path)


def load_reference_plugin(folder: Path, task: str | None = None):
    """A TaskPlugin from a reference task folder."""
    from ..formats import load_state_checked
    from .plugin import TaskPlugin

    found = read_reference_folder(folder, task)
    plugin = TaskPlugin(found.config, found.info)
    load_state_checked(plugin.tpb, found.tpb_state, str(found.tpb_path))
    load_state_checked(plugin.scb, found.scb_state, str(found.weights_path))
    return plugin.eval()


def is_reference_task_folder(folder: Path) -> bool:
    return (folder / "tpb.pt").is_file() and (folder / "scb" / "config.json").is_file()


def is_partial_task_folder(folder: Path) -> bool:
    """A folder that starts to be a reference task folder (tpb.pt or scb/) but is not a whole one."""
    return not is_reference_task_folder(folder) and ((folder / "tpb.pt").is_file() or (folder / "scb").is_dir())


def reference_folder_problem(folder: Path) -> str:
    """What a reference task folder lacks ('' when it is complete)."""
    scb = folder / "scb"
    missing = [name for name, ok in (("tpb.pt", (folder / "tpb.pt").is_file()), ("scb/config.json", (scb / "config.json").is_file()),
                                     ("scb/diffusion_pytorch_model.{bin,safetensors}", any((scb / n).is_file() for n in SCB_WEIGHT_FILES)))
               if not ok]
    return f"missing {', '.join(missing)}" if missing else ""
