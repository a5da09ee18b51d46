"""The `diff_plugins` model folder: registration, listing, and a listing choice back to its path."""

from __future__ import annotations

import logging
import os

import folder_paths

from ..plugin_core import (
    PLUGIN_FORMAT,
    SELECTOR_FORMAT,
    PluginFileError,
    printable,
    read_safetensors_header,
)

FOLDER = "diff_plugins"
EXTENSIONS = {".safetensors", ".pt"}
NONE = "none"

log = logging.getLogger("diffplugin")


def register_folder() -> None:
    """models/diff_plugins, after any folders extra_model_paths.yaml gave under `diff_plugins`
    (registered before custom nodes load): the first folder is where new plugins are saved, as
    for ComfyUI's own model kinds."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0]
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, EXTENSIONS)


def save_folder() -> str:
    """Where a new plugin or selector goes: the first `diff_plugins` folder."""
    return folder_paths.get_folder_paths(FOLDER)[0]


_reported: set[tuple] = set()  # files already logged as left out (path or name, mtime)


def _report_once(key: tuple, message: str, *args) -> None:
    if key not in _reported:
        _reported.add(key)
        log.warning(message, *(printable(a) for a in args))


def _files() -> list[str]:
    """The folder's files, less those whose names are not valid UTF-8: they cannot be shown,
    chosen or sent over JSON (left out, with one log line each, the name escaped)."""
    try:
        names = folder_paths.get_filename_list(FOLDER)
    except KeyError:  # registration failed earlier; nothing to list
        return []
    readable = []
    for name in names:
        try:
            name.encode("utf-8")
            readable.append(name)
        except UnicodeEncodeError:
            _report_once(("name", name), "Diff-Plugin: %s is left out of the plugin lists: its file name is not valid UTF-8 "
                                         "(rename it)", name)
    return readable


def _kind(name: str) -> str | None:
    """The format a .safetensors file declares; None (with one log line per file) if unreadable."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        return None
    try:
        return read_safetensors_header(path).get("format")
    except PluginFileError as error:
        _report_once((path, os.path.getmtime(path)), "Diff-Plugin: %s is left out of the plugin lists: %s", name,
                     str(error).removeprefix(f"{path}: "))
        return None


def task_of(choice: str) -> str:
    """The task a listed plugin is for, read without loading it (a folder's name, or the file's metadata)."""
    if choice.endswith("/"):
        return choice.rstrip("/").rsplit("/", 1)[-1]
    path = folder_paths.get_full_path(FOLDER, choice)
    return (read_safetensors_header(path).get("task") if path else None) or os.path.splitext(os.path.basename(choice))[0]


def plugin_choices() -> list[str]:
    """Plugin files (.safetensors with plugin metadata), and reference task folders as 'task/'."""
    files = [f.replace(os.sep, "/") for f in _files()]
    folders = sorted({os.path.dirname(f) + "/" for f in files if os.path.basename(f) == "tpb.pt"})
    plugins = [
        f for f in files
        if f.endswith(".safetensors") and not f.startswith(tuple(folders)) and _kind(f) == PLUGIN_FORMAT
    ]
    return plugins + folders


def selector_choices() -> list[str]:
    files = _files()
    return [f for f in files if os.path.basename(f) == "PromptTunner.pt"] + [
        f for f in files if f.endswith(".safetensors") and _kind(f) == SELECTOR_FORMAT
    ]


def resolve(name: str) -> str:
    """A choice back to a path: a file, or a reference task folder ('task/')."""
    if name.endswith("/"):
        for base in folder_paths.get_folder_paths(FOLDER):
            candidate = os.path.join(base, name.rstrip("/"))
            if os.path.isdir(candidate):
                return candidate
        raise FileNotFoundError(f"Diff-Plugin task folder '{name}' not found in {folder_paths.get_folder_paths(FOLDER)}")
    return folder_paths.get_full_path_or_raise(FOLDER, name)
