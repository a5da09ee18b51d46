"""Reading and writing Task-Plugins and the Plugin-Selector.

Two layouts are understood:

* the reference layout: `<task>/tpb.pt` + `<task>/scb/{config.json, diffusion_pytorch_model.bin
  | .safetensors}` and `plugin_selector/PromptTunner.pt` (Python pickles);
* the project's own: ONE `.safetensors` file per plugin (`tpb.*` and `scb.*` tensors, the
  config and task metadata in the safetensors header) and one per selector.

Pickles are only ever read through `torch.load(weights_only=True)`: a file that needs
anything beyond plain tensors is refused and nothing in it runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from .config import FORMAT_VERSION, PluginConfig, PluginInfo, default_start_mode
from .errors import PluginFileError
from .formats import (
    PLUGIN_FORMAT,
    SELECTOR_FORMAT,
    read_safetensors,
    read_torch_pickle,
    safetensors_metadata,
    write_safetensors,
)
from .plugin import TaskPlugin
from .selector import PluginSelector

log = logging.getLogger("diffplugin")

REFERENCE_SELECTOR_FILE = Path("plugin_selector") / "PromptTunner.pt"
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


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept `{'model': state_dict}` or a bare state dict; drop DataParallel's `module.`."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PluginFileError(f"{path}: does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in obj.items()}


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with a message naming each missing, unexpected or misshapen key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"'{k}': expected {list(expected[k].shape)}, found {list(state[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if misshapen:
        problems.append("wrong shapes: " + "; ".join(misshapen[:6]) + (" ..." if len(misshapen) > 6 else ""))
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:6])}" + (" ..." if len(unexpected) > 6 else ""))
    if problems:
        raise PluginFileError(f"{source}: weights do not fit the {type(module).__name__}: " + " | ".join(problems))
    module.load_state_dict(state)


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
    missing = [str(p) for p in (tpb_path, config_path) if not p.is_file()]
    if weights_path is None:
        missing.append(str(scb_dir / "diffusion_pytorch_model.{bin,safetensors}"))
    if missing:
        raise PluginFileError(f"{folder}: not a Diff-Plugin task folder; missing {', '.join(missing)}")

    tpb_state = _unwrap_state_dict(read_torch_pickle(tpb_path), tpb_path)
    try:
        raw_config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PluginFileError(f"{config_path}: not valid JSON: {error}") from None
    if weights_path.suffix == ".safetensors":
        scb_state = read_safetensors(weights_path)[0]
    else:
        scb_state = _unwrap_state_dict(read_torch_pickle(weights_path), weights_path)

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


def find_plugins(directory: Path | str) -> dict[str, Path]:
    """Task name -> plugin path for every plugin file and reference task folder in a directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PluginFileError(f"{directory}: not a folder")
    found: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and is_reference_task_folder(entry):
            found.setdefault(entry.name, entry)
        elif entry.suffix == ".safetensors" and entry.is_file():
            metadata = safetensors_metadata(entry)
            if metadata.get("format") == PLUGIN_FORMAT:
                found.setdefault(metadata.get("task") or entry.stem, entry)
    return found


# --------------------------------------------------------------------------- selector


DEFAULT_TEXT_ENCODER = {"kind": "sd-clip-l-pooled", "width": 768}


def save_selector(
    selector,
    path: Path,
    tasks: list[str] | None = None,
    extra: dict | None = None,
    text_encoder: dict | None = None,
    lexicon: dict[str, int] | None = None,
) -> Path:
    """selector: a PluginSelector or a SelectorEnsemble (saved as members.<i>.<key>); tasks:
    what it was trained on; text_encoder: which encoder it reads (text.describe()); lexicon:
    its instruction normalizer's words (text.Normalizer), if it has one. An instruction memory
    is saved as memory.<key>; its columns are `tasks`."""
    memory = getattr(selector, "memory", None)
    if memory is not None and list(tasks or []) != memory.tasks:
        raise ValueError(f"the selector's instruction memory is for tasks {memory.tasks}, not {list(tasks or [])}")
    metadata = {
        "format": SELECTOR_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "tasks": json.dumps(list(tasks or [])),
        "text_encoder": json.dumps(text_encoder or DEFAULT_TEXT_ENCODER, sort_keys=True),
        "info": json.dumps(extra or {}, sort_keys=True),
    }
    if lexicon:
        metadata["lexicon"] = json.dumps(lexicon, sort_keys=True)
    write_safetensors(Path(path), selector.state_dict(), metadata)
    return Path(path)


def _selector_from_state(state: dict[str, torch.Tensor], source: str):
    if "q_conv.weight" in state:
        raise PluginFileError(f"{source}: this is the reference's text-only PromptTunner variant, which the demo never uses")
    if any(key.startswith("members.") for key in state):  # a SelectorEnsemble: members.<i>.<selector key>
        from .selector import SelectorEnsemble

        groups: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            index, _, rest = key.removeprefix("members.").partition(".")
            if not key.startswith("members.") or not index.isdigit() or not rest:
                raise PluginFileError(f"{source}: unexpected key {key!r} in a selector ensemble")
            groups.setdefault(int(index), {})[rest] = value
        if sorted(groups) != list(range(len(groups))):
            raise PluginFileError(f"{source}: selector ensemble members {sorted(groups)} are not numbered 0..{len(groups) - 1}")
        members = [_selector_from_state(groups[i], f"{source} (member {i})") for i in range(len(groups))]
        try:
            return SelectorEnsemble(members).eval()
        except ValueError as error:
            raise PluginFileError(f"{source}: {error}") from None
    if "proj_v.weight" not in state or "proj_t.weight" not in state:
        raise PluginFileError(f"{source}: not a Plugin-Selector (no proj_v / proj_t weights)")
    embed_width, prompt_width = state["proj_v.weight"].shape
    selector = PluginSelector(
        prompt_width=prompt_width, text_width=state["proj_t.weight"].shape[1], embed_width=embed_width,
        learned_null="null_prompt" in state,
        reader_width=state["reader.query.weight"].shape[0] if "reader.query.weight" in state else 0,
    )
    load_state_checked(selector, state, source)
    return selector.eval()


def _memory_from_state(state: dict[str, torch.Tensor], tasks: list[str], source: str):
    from .selector_memory import InstructionMemory

    missing = {"embeddings", "wanted", "settings"} - set(state)
    if missing or len(state) != 3:
        raise PluginFileError(f"{source}: the instruction memory needs memory.embeddings, memory.wanted and memory.settings, "
                              f"found {sorted('memory.' + k for k in state)}")
    try:
        return InstructionMemory.from_state(state, tasks)
    except ValueError as error:
        raise PluginFileError(f"{source}: {error}") from None


def load_selector(path: Path | str, device=None, dtype=None) -> tuple[PluginSelector, dict]:
    """The selector (a PluginSelector, or a SelectorEnsemble of them) and its metadata: the
    `tasks` it was trained on (if recorded) and the `text_encoder` it reads."""
    path = Path(path)
    if path.is_dir() and (path / REFERENCE_SELECTOR_FILE).is_file():
        path = path / REFERENCE_SELECTOR_FILE
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") == PLUGIN_FORMAT:
            raise PluginFileError(f"{path}: this is a Task-Plugin file, not a Plugin-Selector")
        memory = {key.removeprefix("memory."): tensors.pop(key) for key in [k for k in tensors if k.startswith("memory.")]}
        selector = _selector_from_state(tensors, str(path))
        meta = {
            "tasks": json.loads(metadata.get("tasks", "[]")),
            "text_encoder": json.loads(metadata.get("text_encoder", json.dumps(DEFAULT_TEXT_ENCODER))),
            "lexicon": json.loads(metadata.get("lexicon", "{}")),
            "info": json.loads(metadata.get("info", "{}")),
        }
        if memory:
            selector.memory = _memory_from_state(memory, meta["tasks"], str(path))
    else:
        selector = _selector_from_state(_unwrap_state_dict(read_torch_pickle(path), path), str(path))
        meta = {"tasks": [], "text_encoder": dict(DEFAULT_TEXT_ENCODER), "lexicon": {}, "info": {"source": "reference PromptTunner"}}
    selector.meta = meta  # what running it needs: its text encoder and normalizer
    return selector.to(device=device, dtype=dtype), meta


def convert_reference_selector(path: Path, output: Path) -> Path:
    selector, meta = load_selector(path)
    return save_selector(selector, output, tasks=meta["tasks"], extra=meta["info"], text_encoder=meta["text_encoder"],
                         lexicon=meta["lexicon"])
