"""One weights file read for what it holds before anything is built: a `.safetensors` by its
header (tensors read on demand, a prefix at a time), a `.ckpt` / `.pt` / `.pth` / `.bin` through
`torch.load(weights_only=True)` only (formats.read_torch_pickle: a pickle that asks for Python
objects is refused with its reason)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import PluginFileError
from ..formats import read_torch_pickle, safetensors_entries, safetensors_layout

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
Shape = tuple[int, ...]


class WeightFile:
    """Keys and shapes of a weights file; `tensors(prefix)` reads the weights under a prefix."""

    def __init__(self, path: Path, shapes: dict[str, Shape], state: dict[str, torch.Tensor] | None = None):
        self.path, self.shapes, self._state = path, shapes, state

    @classmethod
    def open(cls, path: Path | str, what: str = "a weights file") -> WeightFile:
        path = Path(path)
        if not path.is_file():
            raise PluginFileError(f"{path}: file not found ({what})")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return cls(path, _safetensors_shapes(path))
        if suffix in PICKLE_SUFFIXES:
            state = _pickle_state(read_torch_pickle(path), path)
            return cls(path, {key: tuple(value.shape) for key, value in state.items()}, state)
        raise PluginFileError(f"{path}: not a .safetensors or .ckpt file ({what})")

    @property
    def is_pickle(self) -> bool:
        return self._state is not None

    def keys(self, prefix: str = "") -> list[str]:
        return [key for key in self.shapes if key.startswith(prefix)]

    def has(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.shapes)

    def shape(self, key: str) -> Shape | None:
        return self.shapes.get(key)

    def first(self, pattern: str) -> tuple[str, Shape] | None:
        """The first key (in sorted order) matching a regular expression, with its shape."""
        found = sorted(key for key in self.shapes if re.search(pattern, key))
        return (found[0], self.shapes[found[0]]) if found else None

    def count(self, pattern: str) -> int:
        """How many distinct values the regular expression's first group takes over the keys."""
        return len({match.group(1) for key in self.shapes if (match := re.search(pattern, key))})

    def tensors(self, prefix: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The weights under `prefix`, keys unchanged, floating-point ones as `dtype` when given.

        A .safetensors file's tensors are read into memory the model owns, not mapped: aligned (a
        view into the map can sit at any offset, and BLAS rounds differently there, ~1e-6), held
        once (no mapped copy beside them), and safe from the file being overwritten meanwhile."""
        keys = self.keys(prefix)
        if self._state is not None:
            return {key: _as(self._state[key], dtype, copy=False) for key in keys}
        try:
            return _read_safetensors(self.path, keys, dtype)
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise PluginFileError(f"{self.path}: not a readable .safetensors file (truncated or corrupt?): {error}") from None

    def meta(self, prefix: str) -> dict[str, torch.Tensor]:
        """Stand-ins on the meta device (shapes only, no memory) for the weights under `prefix`."""
        return {key: torch.empty(self.shapes[key], device="meta") for key in self.keys(prefix)}

    def sample_keys(self, count: int = 3) -> str:
        keys = sorted(self.shapes)[:count]
        return ", ".join(f"'{key}'" for key in keys) + (" ..." if len(self.shapes) > count else "")


# safetensors' dtype names; a file with another dtype is read through safe_open instead
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _read_safetensors(path: Path, keys: list[str], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file read in file order straight into owned buffers: each tensor's
    bytes at its data_offsets (little-endian) after the header (formats.safetensors_entries)."""
    _, header, base = safetensors_entries(path)
    with open(path, "rb") as handle:
        if any(header[key]["dtype"] not in _DTYPES for key in keys) or sys.byteorder != "little":
            with safe_open(str(path), framework="pt", device="cpu") as mapped:
                return {key: _as(mapped.get_tensor(key), dtype, copy=True) for key in keys}
        out = {}
        for key in sorted(keys, key=lambda k: header[k]["data_offsets"][0]):
            start, end = header[key]["data_offsets"]
            buffer = torch.empty(end - start, dtype=torch.uint8)
            handle.seek(base + start)
            if end > start and handle.readinto(buffer.numpy()) != end - start:
                raise OSError(f"'{key}' is cut short")
            out[key] = _as(buffer.view(_DTYPES[header[key]["dtype"]]).reshape(header[key]["shape"]), dtype, copy=False)
    return {key: out[key] for key in keys}


def _as(tensor: torch.Tensor, dtype: torch.dtype | None, copy: bool) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor.clone() if copy else tensor


def _safetensors_shapes(path: Path) -> dict[str, Shape]:
    return {key: tuple(shape) for key, (_, shape) in safetensors_layout(path)[1].items()}


def _pickle_state(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint pickle: a bare state dict or one under "state_dict" (Lightning)."""
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    state = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)} if isinstance(obj, dict) else {}
    if not state:
        raise PluginFileError(f"{path}: holds no state dict of tensors")
    return state
