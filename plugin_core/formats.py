"""File formats: safetensors with metadata, pickles read safely, atomic writes, and state
dicts checked against a module. No model code here, so this module (and the ComfyUI folder
listing that uses it) needs neither diffusers nor the plugin modules."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import PluginFileError

PLUGIN_FORMAT = "diff-plugin/task-plugin"
SELECTOR_FORMAT = "diff-plugin/plugin-selector"


def read_torch_pickle(path: Path) -> object:
    """torch.load restricted to tensors and plain containers, with errors that say why."""
    path = Path(path)
    if not path.is_file():
        raise PluginFileError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = next((line for line in str(error).splitlines() if "GLOBAL" in line), str(error).splitlines()[0])
        raise PluginFileError(
            f"{path}: refused. This pickle asks for Python objects beyond plain tensors ({detail.strip()}); "
            "loading it could run arbitrary code, so it is not loaded. Only weight files are accepted."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PluginFileError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first}") from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise PluginFileError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise PluginFileError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {error}") from None
    return tensors, metadata


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """`write(temp_path)` then rename onto `path`: a crash mid-write never leaves a half file
    under the real name, and readers see the old file or the new one. The file gets the
    usual permissions (umask), not mkstemp's owner-only ones, so a ComfyUI running as
    another user can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically (see atomic_write)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def read_safetensors_header(path: Path) -> dict[str, str]:
    """The metadata of a .safetensors file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise PluginFileError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {error}") from None


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata, or {} for a file that cannot be read (listings that skip such files)."""
    try:
        return read_safetensors_header(path)
    except PluginFileError:
        return {}


def unwrap_state_dict(obj: object, path: Path | str) -> dict[str, torch.Tensor]:
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
    for label, items in (("wrong shapes", misshapen), ("missing keys", missing), ("unexpected keys", unexpected)):
        if items:
            problems.append(f"{label}: " + ("; " if label == "wrong shapes" else ", ").join(items[:6]) + (" ..." if len(items) > 6 else ""))
    if problems:
        raise PluginFileError(f"{source}: weights do not fit the {type(module).__name__}: " + " | ".join(problems))
    module.load_state_dict(state)
