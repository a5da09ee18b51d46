"""Reading and writing the Plugin-Selector (torch and safetensors only: no diffusers).

* the reference's `plugin_selector/PromptTunner.pt` (a Python pickle, read with
  `torch.load(weights_only=True)` only);
* the project's own .safetensors: the tensors as the reference names them, `memory.*` for the
  instruction memory; the tasks, the text encoder, the normaliser's words and provenance in
  the header.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .. import formats
from ..errors import PluginFileError
from ..formats import REFERENCE_SELECTOR_FILE, is_selector_file  # noqa: F401  (is_selector_file: part of this module's API)
from .memory import InstructionMemory
from .model import PluginSelector
from .text import CLIP_TEXT_ENCODER

log = logging.getLogger("diffplugin")

FORMAT_VERSION = 1


def save_selector(selector: PluginSelector, path: Path | str) -> Path:
    """One .safetensors file with everything `load_selector` gives back."""
    selector.check_memory()
    metadata = {
        "format": formats.SELECTOR_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "tasks": json.dumps(selector.tasks),
        "text_encoder": json.dumps(selector.text_encoder, sort_keys=True),
        "info": json.dumps(selector.info, sort_keys=True),
    }
    if selector.lexicon:
        metadata["lexicon"] = json.dumps(selector.lexicon, sort_keys=True)
    formats.write_safetensors(Path(path), selector.state_dict(), metadata)
    return Path(path)


def _first_member(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Files of diff-plugin 0.1 could hold an ensemble (members.<i>.*). It scored no better than
    one member on any instruction set (the README's ablation), so only the first is read."""
    if not any(key.startswith("members.") for key in state):
        return state
    members = {key.split(".")[1] for key in state if key.startswith("members.")}
    log.warning("%s: an ensemble of %d selectors from diff-plugin 0.1; using its first member only", source, len(members))
    return {key.removeprefix("members.0."): value for key, value in state.items() if key.startswith("members.0.")}


def _selector_from_state(state: dict[str, torch.Tensor], source: str, **fields) -> PluginSelector:
    if "q_conv.weight" in state:
        raise PluginFileError(f"{source}: this is the reference's text-only PromptTunner variant, which the demo never uses")
    state = _first_member(state, source)
    if "proj_v.weight" not in state or "proj_t.weight" not in state:
        raise PluginFileError(f"{source}: not a Plugin-Selector (no proj_v / proj_t weights)")
    embed_width, prompt_width = state["proj_v.weight"].shape
    memory = fields.pop("memory", None)  # its tensors are read apart from the selector's
    selector = PluginSelector(
        prompt_width=prompt_width, text_width=state["proj_t.weight"].shape[1], embed_width=embed_width,
        learned_null="null_prompt" in state,
        reader_width=state["reader.query.weight"].shape[0] if "reader.query.weight" in state else 0, **fields,
    )
    formats.load_state_checked(selector, state, source)
    selector.memory = memory
    try:
        selector.check_memory()
    except ValueError as error:
        raise PluginFileError(f"{source}: {error}") from None
    return selector


def _memory_from_state(state: dict[str, torch.Tensor], tasks: list[str], source: str) -> InstructionMemory:
    missing = {"embeddings", "wanted", "settings"} - set(state)
    if missing or len(state) != 3:
        raise PluginFileError(f"{source}: the instruction memory needs memory.embeddings, memory.wanted and memory.settings, "
                              f"found {sorted('memory.' + k for k in state)}")
    try:
        return InstructionMemory.from_state(state, tasks)
    except ValueError as error:
        raise PluginFileError(f"{source}: {error}") from None


def _json(metadata: dict[str, str], key: str, default, source: str):
    try:
        return json.loads(metadata[key]) if key in metadata else default
    except json.JSONDecodeError as error:
        raise PluginFileError(f"{source}: invalid {key!r} metadata: {error}") from None


def load_selector(path: Path | str, device=None, dtype=None) -> tuple[PluginSelector, dict]:
    """The selector and its file's metadata (`PluginSelector.metadata()`: the tasks it was
    trained on, the text encoder it reads, its normaliser's words, provenance)."""
    path = Path(path)
    if path.is_dir() and (path / REFERENCE_SELECTOR_FILE).is_file():
        path = path / REFERENCE_SELECTOR_FILE
    if path.suffix == ".safetensors":
        tensors, metadata = formats.read_safetensors(path)
        if metadata.get("format") == formats.PLUGIN_FORMAT:
            raise PluginFileError(f"{path}: this is a Task-Plugin file, not a Plugin-Selector")
        memory_state = {key.removeprefix("memory."): tensors.pop(key) for key in [k for k in tensors if k.startswith("memory.")]}
        tasks = _json(metadata, "tasks", [], str(path))
        selector = _selector_from_state(
            tensors, str(path), tasks=tasks, text_encoder=_json(metadata, "text_encoder", CLIP_TEXT_ENCODER, str(path)),
            lexicon=_json(metadata, "lexicon", {}, str(path)), info=_json(metadata, "info", {}, str(path)),
            memory=_memory_from_state(memory_state, tasks, str(path)) if memory_state else None,
        )
    else:
        selector = _selector_from_state(formats.unwrap_state_dict(formats.read_torch_pickle(path), path), str(path),
                                        info={"source": "reference PromptTunner"})
    return selector.eval().to(device=device, dtype=dtype), selector.metadata()


def convert_reference_selector(path: Path | str, output: Path | str) -> Path:
    return save_selector(load_selector(path)[0], output)


def describe_selector(selector: PluginSelector, path: Path | str) -> str:
    """What `diffplugin info` prints for a selector."""
    count = sum(p.numel() for p in selector.parameters())
    scale = selector.logit_scale.detach().exp()
    lines = [
        f"Plugin-Selector: {path}",
        f"  parameters: {count:,}",
        f"  prompt width {selector.prompt_width}, text width {selector.text_width}",
        f"  logit scale: {scale.item():.3f}",
        f"  trained tasks: {', '.join(selector.tasks) or 'not recorded'}",
    ]
    if selector.memory is not None:
        lines.append(f"  instruction memory: {len(selector.memory.wanted)} training requests")
    return "\n".join(lines)
