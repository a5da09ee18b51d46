"""File formats: safetensors with metadata, pickles read safely, atomic writes, and state
dicts checked against a module. No model code here, so this module (and the ComfyUI folder
listing that uses it) needs neither diffusers nor the plugin modules; a safetensors header is
read in pure Python (`safetensors_layout`), without torch."""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Callable

from .errors import PluginFileError

PLUGIN_FORMAT = "diff-plugin/task-plugin"
SELECTOR_FORMAT = "diff-plugin/plugin-selector"
REFERENCE_SELECTOR_FILE = Path("plugin_selector") / "PromptTunner.pt"  # the reference release's selector


def is_selector_file(path: Path | str) -> bool:
    """A Plugin-Selector file: the project's .safetensors (by its header) or the reference's PromptTunner.pt."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path.is_file() and safetensors_metadata(path).get("format") == SELECTOR_FORMAT
    return path.name == REFERENCE_SELECTOR_FILE.name


def read_torch_pickle(path: Path) -> object:
    """torch.load restricted to tensors and plain containers, with errors that say why."""
    import torch

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


def read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

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


def write_safetensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """Write atomically (see atomic_write)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


MAX_HEADER = 100_000_000  # bytes: safetensors' own limit for a header


def safetensors_entries(path: Path | str) -> tuple[dict[str, str], dict[str, dict], int]:
    """(metadata, name -> {"dtype", "shape", "data_offsets"}, where the tensors' bytes start) of a
    .safetensors file, from its header alone: pure Python, no tensor read, no torch (safetensors'
    format: an 8-byte little-endian length, that many bytes of JSON, then the tensors' bytes)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < length <= MAX_HEADER:
                raise ValueError("no safetensors header")
            header = json.loads(handle.read(length))
            size = handle.seek(0, os.SEEK_END) - 8 - length
        metadata = header.pop("__metadata__", None) or {}
        if any(entry["data_offsets"][1] > size or len(entry["shape"]) > 64 or not entry["dtype"] for entry in header.values()):
            raise ValueError("the tensors run past the end of the file")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, struct.error) as error:
        raise PluginFileError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {error}") from None
    return metadata, header, 8 + length


def safetensors_layout(path: Path | str) -> tuple[dict[str, str], dict[str, tuple[str, list[int]]]]:
    """(metadata, name -> (dtype, shape)) of a .safetensors file, from its header alone (no torch)."""
    metadata, entries, _ = safetensors_entries(path)
    return metadata, {name: (entry["dtype"], list(entry["shape"])) for name, entry in entries.items()}


def read_safetensors_header(path: Path) -> dict[str, str]:
    """The metadata of a .safetensors file, without reading its tensors (or importing torch)."""
    return safetensors_layout(path)[0]


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata, or {} for a file that cannot be read (listings that skip such files)."""
    try:
        return read_safetensors_header(path)
    except PluginFileError:
        return {}


def unwrap_state_dict(obj: object, path: Path | str) -> dict:
    """Accept `{'model': state_dict}` or a bare state dict; drop DataParallel's `module.`."""
    import torch

    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PluginFileError(f"{path}: does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in obj.items()}


def load_state_checked(module, state: dict, source: str) -> None:
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
