"""The project's plugin file: ONE `.safetensors` per plugin (`tpb.*` and `scb.*` tensors, the
config and task metadata in the header); loading either layout (reference.py has the other),
finding the plugins of a folder, and describing a plugin file from its header alone (no
diffusers, and no torch for a .safetensors file); converting reference task folders into such
files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import PluginFileError
from ..formats import (
    PLUGIN_FORMAT,
    SELECTOR_FORMAT,
    load_state_checked,
    read_safetensors,
    read_safetensors_header,
    safetensors_layout,
    write_safetensors,
)
from .config import FORMAT_VERSION, PluginConfig, PluginInfo, default_start_mode
from .reference import (
    _shapes,
    is_partial_task_folder,
    is_reference_task_folder,
    load_reference_plugin,
    read_reference_folder,
    reference_folder_problem,
    tpb_dims,
)

log = logging.getLogger("diffplugin")

_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def plugin_metadata(plugin) -> dict[str, str]:
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


def save_plugin(plugin, path: Path, dtype=None) -> Path:
    """One .safetensors file: `tpb.*` + `scb.*` tensors, config and task in the header."""
    tensors = {k: (v.to(dtype) if dtype is not None else v) for k, v in plugin.state_dict().items()}
    write_safetensors(Path(path), tensors, plugin_metadata(plugin))
    return Path(path)


def holds_plugin(keys) -> bool:
    """Whether a weights file's tensor names are a Task-Plugin's (`tpb.*` and `scb.*`): the one test
    of the layout, also for a plugin file given where a base model belongs (--sd, --clip-vision)."""
    keys = list(keys)
    return any(k.startswith("tpb.") for k in keys) and any(k.startswith("scb.") for k in keys)


def _read_header(path: Path, metadata: dict[str, str], shapes: dict[str, list[int]]) -> tuple[PluginConfig, PluginInfo]:
    """A plugin file's config and info, from its header (metadata and tensor shapes)."""
    kind = metadata.get("format")
    if kind == SELECTOR_FORMAT:
        raise PluginFileError(f"{path}: this is a Plugin-Selector file, not a Task-Plugin")
    if kind not in (PLUGIN_FORMAT, None):
        raise PluginFileError(f"{path}: unknown format {kind!r}")
    if not holds_plugin(shapes):
        sample = ", ".join(list(shapes)[:3]) or "no tensors"
        raise PluginFileError(f"{path}: not a Diff-Plugin task plugin (no diff-plugin metadata and no tpb./scb. tensors; it holds {sample})")
    version = int(metadata.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise PluginFileError(f"{path}: written by a newer diff-plugin (format {version}); please update")
    try:
        config_values = json.loads(metadata["config"]) if "config" in metadata else {}
        config = PluginConfig.from_dict({**tpb_dims({k[4:]: v for k, v in shapes.items() if k.startswith("tpb.")}, str(path)),
                                         **config_values})
        task = metadata.get("task") or path.stem
        info = PluginInfo(task=task, start_mode=metadata.get("start_mode", default_start_mode(task)),
                          instructions=json.loads(metadata.get("instructions", "[]")), clip_layer=int(metadata.get("clip_layer", 24)),
                          format_version=version, extra=json.loads(metadata.get("info", "{}")))
    except (ValueError, TypeError, KeyError) as error:
        raise PluginFileError(f"{path}: invalid plugin metadata: {error}") from None
    return config, info


def _plugin_from_safetensors(path: Path):
    from .plugin import TaskPlugin

    config, info = _read_header(path, *safetensors_layout(path))
    tensors = read_safetensors(path)[0]
    plugin = TaskPlugin(config, info).to(next(iter(tensors.values())).dtype)  # keep the stored precision
    load_state_checked(plugin.tpb, {k[4:]: v for k, v in tensors.items() if k.startswith("tpb.")}, f"{path} (tpb.*)")
    load_state_checked(plugin.scb, {k[4:]: v for k, v in tensors.items() if k.startswith("scb.")}, f"{path} (scb.*)")
    return plugin.eval()


def _check_plugin_path(path: Path) -> None:
    if not path.exists():
        raise PluginFileError(f"{path}: file not found")
    if not path.is_dir() and path.suffix != ".safetensors":
        raise PluginFileError(f"{path}: a Task-Plugin is a .safetensors file or a reference task folder with tpb.pt and scb/")


def load_plugin(path: Path | str, device=None, dtype=None):
    """A plugin from a .safetensors file or a reference task folder."""
    path = Path(path)
    _check_plugin_path(path)
    plugin = load_reference_plugin(path) if path.is_dir() else _plugin_from_safetensors(path)
    return plugin.to(device=device, dtype=dtype)


def convert_reference_plugin(folder: Path, output: Path, dtype=None) -> Path:
    """A reference task folder -> one .safetensors plugin file."""
    return save_plugin(load_reference_plugin(folder), output, dtype=dtype)


def convert_reference_folder(source: Path, output: Path, dtype=None,
                             overwrite: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every reference task folder directly in `source` (e.g. the release's pre-trained/) ->
    output/<task>.safetensors: (the files written, [(folder, why it was skipped)]). Existing
    outputs are refused, before anything is written, unless `overwrite`."""
    from ..outputs import check_new_files

    folders, skipped = [], []
    for folder in sorted(p for p in Path(source).iterdir() if p.is_dir()):
        if is_reference_task_folder(folder):
            folders.append(folder)
        elif is_partial_task_folder(folder):
            skipped.append((folder, reference_folder_problem(folder)))
    targets = check_new_files([Path(output) / f"{f.name}.safetensors" for f in folders], overwrite=overwrite)
    return [convert_reference_plugin(f, t, dtype=dtype) for f, t in zip(folders, targets)], skipped


def describe_plugin(path: Path | str) -> str:
    """What `diffplugin info` prints for a plugin file or reference folder, read without building
    the plugin (no diffusers; a .safetensors file from its header alone)."""
    path = Path(path)
    _check_plugin_path(path)
    if path.is_dir():
        found = read_reference_folder(path)
        config, info, shapes = found.config, found.info, {**{f"tpb.{k}": v for k, v in _shapes(found.tpb_state).items()},
                                                          **{f"scb.{k}": v for k, v in _shapes(found.scb_state).items()}}
        dtype = str(next(iter(found.tpb_state.values())).dtype).removeprefix("torch.")
    else:
        metadata, layout = safetensors_layout(path)
        shapes = {name: shape for name, (_, shape) in layout.items()}
        config, info = _read_header(path, metadata, shapes)
        dtype = _SAFETENSORS_DTYPES.get(next(iter(layout.values()))[0], next(iter(layout.values()))[0])
    count = {prefix: sum(_numel(s) for k, s in shapes.items() if k.startswith(prefix)) for prefix in ("tpb.", "scb.")}
    lines = [
        f"Task-Plugin: {path}",
        f"  task: {info.task}",
        f"  start: {info.start_mode} ({'pure noise' if info.start_mode == 'noise' else 'noised input latent'})",
        f"  base: {config.describe()}",
        f"  CLIP vision layer: {info.clip_layer}",
        f"  parameters: TPB {count['tpb.']:,} + SCB {count['scb.']:,} = {sum(count.values()):,} ({dtype})",
        f"  instructions: {'; '.join(info.instructions) or '-'}",
    ]
    if info.extra:
        lines.append(f"  info: {json.dumps(info.extra, sort_keys=True)}")
    return "\n".join(lines)


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


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
            elif is_partial_task_folder(entry):
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


def one_per_task(found: dict[str, list]) -> dict[str, object]:
    """Task -> its one plugin; two plugins for one task are refused, naming both."""
    ambiguous = {task: items for task, items in found.items() if len(items) > 1}
    if ambiguous:
        raise PluginFileError("; ".join(f"two plugins for task '{task}': " + " and ".join(str(p) for p in items)
                                        for task, items in ambiguous.items()) + ": remove or rename one")
    return {task: items[0] for task, items in found.items()}


def find_plugins(directory: Path | str) -> dict[str, Path]:
    """Task name -> plugin path for every plugin file and reference task folder in a directory.
    What is left out is logged with the reason; two plugins for one task are refused, naming both."""
    found, skipped = scan_plugins(directory)
    for entry, reason in skipped:
        log.warning("%s: left out (%s)", entry, reason)
    return one_per_task(found)
