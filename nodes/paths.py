"""Where the pack may read training data on the server, and write pairs: inside ComfyUI's input
and output folders, as ComfyUI's own loaders and its /view route keep to (paths are compared as
ComfyUI compares them, after normalising '..', without following links: a link the server's owner
put inside those folders is theirs to make).

Anyone who can queue a prompt can type a path, so an absolute path elsewhere is refused unless
the server's owner allows its folder: the environment variable DIFF_PLUGIN_DATA_PATHS, set
before ComfyUI starts, lists more folders training data may come from, separated by the
system's path separator (':' on Linux and macOS, ';' on Windows), e.g.
`DIFF_PLUGIN_DATA_PATHS=/data/pairs:/mnt/datasets python main.py`."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..plugin_core import inside, normal_path, shown, text_problem
from .validation import NAME_BYTES

DATA_PATHS_ENV = "DIFF_PLUGIN_DATA_PATHS"


def data_roots() -> list[str]:
    """ComfyUI's input and output folders, then the folders DIFF_PLUGIN_DATA_PATHS allows."""
    extra = [p for p in os.environ.get(DATA_PATHS_ENV, "").split(os.pathsep) if p.strip()]
    return [normal_path(p) for p in (folder_paths.get_input_directory(), folder_paths.get_output_directory(), *extra)]


def _path_problem(name: str, value: str) -> str | None:
    """What a typed path must be, wherever it points: text, and no part longer than a file name may be."""
    if problem := text_problem(name, value):
        return problem
    if any(len(part.encode()) > NAME_BYTES for part in Path(value.strip()).parts):
        return f"{name} has a file or folder name longer than {NAME_BYTES} bytes, which file systems refuse"
    return None


def _under_input(value: str) -> str:
    return normal_path(os.path.join(folder_paths.get_input_directory(), value.strip()))


def save_to_problem(value, name: str = "save_to") -> str | None:
    """Why a folder name under ComfyUI's input directory may not be written (None: it may, or it is
    empty or a link): not text, a part too long for a file system, or a path that climbs out."""
    if not isinstance(value, str) or not value.strip():
        return None
    if problem := _path_problem(name, value):
        return problem
    root = normal_path(folder_paths.get_input_directory())
    if not inside(_under_input(value), [root]):
        return f"{name} '{shown(value)}' is outside ComfyUI's input folder {root}: give a folder inside it"
    return None


def input_subfolder(name: str) -> Path:
    """A folder under ComfyUI's input directory (the rule of `save_to_problem`, raised)."""
    if problem := save_to_problem(name):
        raise ValueError(problem)
    return Path(_under_input(name))


def data_path_problem(value) -> str | None:
    """Why a data_path may not be read (None: it may, or it is empty or a link): a relative path
    is inside ComfyUI's input folder; an absolute one must lie in a folder of `data_roots`."""
    if not isinstance(value, str) or not value.strip():
        return None
    if problem := _path_problem("data_path", value):
        return problem
    path = _resolve(value)
    if inside(path, data_roots()):
        return None
    return outside_message(f"data_path '{shown(value)}'")


def allow_hint() -> str:
    return (f": put the data there, or have the server's owner allow its folder in the environment variable "
            f"{DATA_PATHS_ENV} (folders separated by '{os.pathsep}', set before ComfyUI starts)")


def outside_message(what: str) -> str:
    input_dir, output_dir = data_roots()[:2]
    return f"{what} is outside ComfyUI's input and output folders ({input_dir}, {output_dir})" + allow_hint()


def _resolve(value: str) -> str:
    expanded = os.path.expanduser(value.strip())
    return normal_path(expanded if os.path.isabs(expanded) else os.path.join(folder_paths.get_input_directory(), expanded))


def data_location(value: str) -> Path:
    """The path a data_path names (relative: inside ComfyUI's input folder), or ValueError when
    it may not be read."""
    if problem := data_path_problem(value):
        raise ValueError(problem)
    return Path(_resolve(value))
