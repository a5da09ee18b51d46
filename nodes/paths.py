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

from .validation import text_problem

DATA_PATHS_ENV = "DIFF_PLUGIN_DATA_PATHS"


def _normal(path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # another drive (Windows)
        return False


def data_roots() -> list[str]:
    """ComfyUI's input and output folders, then the folders DIFF_PLUGIN_DATA_PATHS allows."""
    extra = [p for p in os.environ.get(DATA_PATHS_ENV, "").split(os.pathsep) if p.strip()]
    return [_normal(p) for p in (folder_paths.get_input_directory(), folder_paths.get_output_directory(), *extra)]


def input_subfolder(name: str) -> Path:
    """A folder under ComfyUI's input directory; refuses names that climb out of it."""
    if problem := text_problem("the folder name", name):
        raise ValueError(problem)
    root = _normal(folder_paths.get_input_directory())
    folder = _normal(os.path.join(root, name.strip()))
    if not _inside(folder, root):
        raise ValueError(f"'{name}' is outside ComfyUI's input folder {root}")
    return Path(folder)


def data_path_problem(value) -> str | None:
    """Why a data_path may not be read (None: it may, or it is empty or a link): a relative path
    is inside ComfyUI's input folder; an absolute one must lie in a folder of `data_roots`."""
    if not isinstance(value, str) or not value.strip():
        return None
    if problem := text_problem("data_path", value):
        return problem
    path = _resolve(value)
    if any(_inside(path, root) for root in data_roots()):
        return None
    return outside_message(f"data_path '{value}'")


def outside_message(what: str) -> str:
    input_dir, output_dir = data_roots()[:2]
    return (f"{what} is outside ComfyUI's input and output folders ({input_dir}, {output_dir}): put the data there, or "
            f"have the server's owner allow its folder in the environment variable {DATA_PATHS_ENV} (folders separated "
            f"by '{os.pathsep}', set before ComfyUI starts)")


def _resolve(value: str) -> str:
    expanded = os.path.expanduser(value.strip())
    return _normal(expanded if os.path.isabs(expanded) else os.path.join(folder_paths.get_input_directory(), expanded))


def data_location(value: str) -> Path:
    """The path a data_path names (relative: inside ComfyUI's input folder), or ValueError when
    it may not be read."""
    if problem := data_path_problem(value):
        raise ValueError(problem)
    return Path(_resolve(value))


def check_files_inside(paths) -> None:
    """ValueError naming the first of `paths` (files a pairs CSV lists) outside `data_roots`."""
    roots = data_roots()
    for path in paths:
        if not any(_inside(_normal(path), root) for root in roots):
            raise ValueError(outside_message(f"the pairs list the file '{os.fsdecode(path)}', which"))
