"""Reading and writing Task-Plugins.

Two layouts are understood:

* the reference layout: `<task>/tpb.pt` + `<task>/scb/{config.json, diffusion_pytorch_model.bin
  | .safetensors}` (Python pickles);
* the project's own: ONE `.safetensors` file per plugin (`tpb.*` and `scb.*` tensors, the
  config and task metadata in the safetensors header).

Pickles are only ever read through `torch.load(weights_only=True)`: a file that needs
anything beyond plain tensors is refused and nothing in it runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ..errors import PluginFileError
from ..formats import (
    PLUGIN_FORMAT,
    SELECTOR_FORMAT,
    load_state_checked,
    read_safetensors,
    read_torch_pickle,
    read_safetensors_header,
    unwrap_state_dict,
    write_safetensors,
)
from .config import FORMAT_VERSION, PluginConfig, PluginInfo, default_start_mode
from .plugin import TaskPlugin

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


# --------------------------------------------------------------------------- configs


def tpb_dims(state: dict[str, torch.Tensor], source: str) -> dict:
    """CLIP width, context width and depth of a TPB, read off its tensors."""
    linear = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"visual_projection\.(\d+)\.weight", k)) and state[k].ndim == 2
    )
    if not linear:
        raise PluginFileError(f"{source}: no TPB tensors (visual_projection.*) found")
    first, last = state[f"visual_projection.{linear[0]}.weight"], state[f"visual_projection.{linear[-1]}.weight"]
    return {"clip_width": first.shape[1], "context_width": last.shape[0], "tpb_layers": len(linear) - 1}


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


# --------------------------------------------------------------------------- plugins


def load_reference_plugin(folder: Path, task: str | None = None) -> TaskPlugin:
    """A reference task folder: tpb.pt + scb/{config.json, weights}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PluginFileError(f"{folder}: not a folder")
    tpb_path, scb_dir = folder / "tpb.pt", folder / "scb"
    config_path = scb_dir / "config.json"
    weights_path = next((scb_dir / name for name in SCB_WEIGHT_FILES if (scb_dir / name).is_file()), None)
    problem = reference_folder_problem(folder)
    if problem:
        raise PluginFileError(f"{folder}: not a Diff-Plugin task folder; {problem}")

    tpb_state = unwrap_state_dict(read_torch_pickle(tpb_path), tpb_path)
    try:
        raw_config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PluginFileError(f"{config_path}: not valid JSON: {error}") from None
    if weights_path.suffix == ".safetensors":
        scb_state = read_safetensors(weights_path)[0]
    else:
        scb_state = unwrap_state_dict(read_torch_pickle(weights_path), weights_path)

    dims = tpb_dims(tpb_state, str(tpb_path))
    scb_values = _scb_config_from_reference(raw_config, str(config_path))
    if scb_values.get("context_width", dims["context_width"]) != dims["context_width"]:
        raise PluginFileError(
            f"{folder}: TPB outputs width {dims['context_width']} but the SCB's cross-attention "
            f"expects {scb_values['context_width']}"
        )
    config = PluginConfig(**{**dims, **scb_values})
    task = task or folder.name
    plugin = TaskPlugin(config, PluginInfo.for_task(task, extra={"source": "reference layout"}))
    load_state_checked(plugin.tpb, tpb_state, str(tpb_path))
    load_state_checked(plugin.scb, scb_state, str(weights_path))
    return plugin.eval()


def plugin_metadata(plugin: TaskPlugin) -> dict[str, str]:
    info = plugin.info
    return {
        "format": PLUGIN_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "task": info.task,
        "start_mode": info.start_mode,
        "clip_layer": str(info.clip_layer),
        "instructions": json.dumps(list(info.instructions)),
        "config": plugin.config.to_json(),
        "info": json.dumps(info.extra, sort_keys=True),
    }


def save_plugin(plugin: TaskPlugin, path: Path, dtype: torch.dtype | None = None) -> Path:
    """One .safetensors file: `tpb.*` + `scb.*` tensors, config and task in the header."""
    tensors = {k: (v.to(dtype) if dtype is not None else v) for k, v in plugin.state_dict().items()}
    write_safetensors(Path(path), tensors, plugin_metadata(plugin))
    return Path(path)


def _plugin_from_safetensors(path: Path) -> TaskPlugin:
    tensors, metadata = read_safetensors(path)
    kind = metadata.get("format")
    if kind == SELECTOR_FORMAT:
        raise PluginFileError(f"{path}: this is a Plugin-Selector file, not a Task-Plugin")
    if kind not in (PLUGIN_FORMAT, None):
        raise PluginFileError(f"{path}: unknown format {kind!r}")
    if not any(k.startswith("tpb.") for k in tensors) or not any(k.startswith("scb.") for k in tensors):
        sample = ", ".join(list(tensors)[:3]) or "no tensors"
        raise PluginFileError(
            f"{path}: not a Diff-Plugin task plugin (no diff-plugin metadata and no tpb./scb. tensors; it holds {sample})"
        )
    version = int(metadata.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise PluginFileError(f"{path}: written by a newer diff-plugin (format {version}); please update")
    tpb_state = {k[4:]: v for k, v in tensors.items() if k.startswith("tpb.")}
    scb_state = {k[4:]: v for k, v in tensors.items() if k.startswith("scb.")}
    try:
        config_values = json.loads(metadata["config"]) if "config" in metadata else {}
        config = PluginConfig.from_dict({**tpb_dims(tpb_state, str(path)), **config_values})
        task = metadata.get("task") or path.stem
        info = PluginInfo(
            task=task,
            start_mode=metadata.get("start_mode", default_start_mode(task)),
            instructions=json.loads(metadata.get("instructions", "[]")),
            clip_layer=int(metadata.get("clip_layer", 24)),
            format_version=version,
            extra=json.loads(metadata.get("info", "{}")),
        )
    except (ValueError, TypeError, KeyError) as error:
        raise PluginFileError(f"{path}: invalid plugin metadata: {error}") from None
    plugin = TaskPlugin(config, info).to(next(iter(tensors.values())).dtype)  # keep the stored precision
    load_state_checked(plugin.tpb, tpb_state, f"{path} (tpb.*)")
    load_state_checked(plugin.scb, scb_state, f"{path} (scb.*)")
    return plugin.eval()


def load_plugin(path: Path | str, device=None, dtype=None) -> TaskPlugin:
    """A plugin from a .safetensors file or a reference task folder."""
    path = Path(path)
    if path.is_dir():
        plugin = load_reference_plugin(path)
    elif path.suffix == ".safetensors":
        plugin = _plugin_from_safetensors(path)
    elif not path.exists():
        raise PluginFileError(f"{path}: file not found")
    else:
        raise PluginFileError(
            f"{path}: a Task-Plugin is a .safetensors file or a reference task folder with tpb.pt and scb/"
        )
    return plugin.to(device=device, dtype=dtype)


def convert_reference_plugin(folder: Path, output: Path, dtype: torch.dtype | None = None) -> Path:
    return save_plugin(load_reference_plugin(folder), output, dtype=dtype)


def is_reference_task_folder(folder: Path) -> bool:
    return (folder / "tpb.pt").is_file() and (folder / "scb" / "config.json").is_file()


def scan_plugins(directory: Path | str) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Every plugin in a directory, without loading one: (task -> its files and reference
    folders, [(entry, why it is not a plugin)] for the entries that look like one but are not).
    Selector files, and files of other kinds, are not plugins and are not reported."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PluginFileError(f"{directory}: not a folder")
    found: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            if is_reference_task_folder(entry):
                found.setdefault(entry.name, []).append(entry)
            elif (entry / "tpb.pt").is_file() or (entry / "scb").is_dir():
                skipped.append((entry, "a partial task folder: " + reference_folder_problem(entry)))
        elif entry.suffix == ".safetensors" and entry.is_file():
            try:
                metadata = read_safetensors_header(entry)
            except PluginFileError as error:
                skipped.append((entry, str(error).removeprefix(f"{entry}: ")))
                continue
            if metadata.get("format") == PLUGIN_FORMAT:
                found.setdefault(metadata.get("task") or entry.stem, []).append(entry)
    return found, skipped


def find_plugins(directory: Path | str) -> dict[str, Path]:
    """Task name -> plugin path for every plugin file and reference task folder in a directory.
    What is left out is logged with the reason; two plugins for one task are refused, naming both."""
    found, skipped = scan_plugins(directory)
    for entry, reason in skipped:
        log.warning("%s: left out (%s)", entry, reason)
    ambiguous = {task: paths for task, paths in found.items() if len(paths) > 1}
    if ambiguous:
        raise PluginFileError("; ".join(f"two plugins for task '{task}': " + " and ".join(str(p) for p in paths)
                                        for task, paths in ambiguous.items()) + ": remove or rename one")
    return {task: paths[0] for task, paths in found.items()}


def reference_folder_problem(folder: Path) -> str:
    """What a reference task folder lacks ('' when it is complete)."""
    scb = folder / "scb"
    missing = [name for name, ok in (("tpb.pt", (folder / "tpb.pt").is_file()), ("scb/config.json", (scb / "config.json").is_file()),
                                     ("scb/diffusion_pytorch_model.{bin,safetensors}", any((scb / n).is_file() for n in SCB_WEIGHT_FILES)))
               if not ok]
    return f"missing {', '.join(missing)}" if missing else ""


def convert_reference_folder(source: Path, output: Path, dtype: torch.dtype | None = None,
                             overwrite: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every reference task folder directly in `source` (e.g. the release's pre-trained/) ->
    output/<task>.safetensors: (the files written, [(folder, why it was skipped)]). Existing
    outputs are refused, before anything is written, unless `overwrite`."""
    from ..outputs import check_new_files

    folders, skipped = [], []
    for folder in sorted(p for p in Path(source).iterdir() if p.is_dir()):
        if is_reference_task_folder(folder):
            folders.append(folder)
        elif (folder / "tpb.pt").is_file() or (folder / "scb").is_dir():
            skipped.append((folder, reference_folder_problem(folder)))
    targets = check_new_files([Path(output) / f"{f.name}.safetensors" for f in folders], overwrite=overwrite)
    return [convert_reference_plugin(f, t, dtype=dtype) for f, t in zip(folders, targets)], skipped


def describe_plugin(plugin: TaskPlugin, path: Path | str) -> str:
    """What `diffplugin info` prints for a plugin."""
    tpb = sum(p.numel() for p in plugin.tpb.parameters())
    scb = sum(p.numel() for p in plugin.scb.parameters())
    dtype = next(plugin.parameters()).dtype
    lines = [
        f"Task-Plugin: {path}",
        f"  task: {plugin.task}",
        f"  start: {plugin.start_mode} ({'pure noise' if plugin.start_mode == 'noise' else 'noised input latent'})",
        f"  base: {plugin.config.describe()}",
        f"  CLIP vision layer: {plugin.info.clip_layer}",
        f"  parameters: TPB {tpb:,} + SCB {scb:,} = {tpb + scb:,} ({dtype})",
        f"  instructions: {'; '.join(plugin.info.instructions) or '-'}",
    ]
    if plugin.info.extra:
        lines.append(f"  info: {json.dumps(plugin.info.extra, sort_keys=True)}")
    return "\n".join(lines)
