"""LoadTaskPlugin and LoadTaskPluginLibrary: plugins and the selector from models/diff_plugins."""

from __future__ import annotations

import logging
import os

from ..plugin_core import printable, shown, text_problem
from . import library
from .api import io
from .dependencies import require
from .plugin_types import (
    PluginSelectorIO,
    PluginSet,
    SelectorHandle,
    TaskPluginHandle,
    TaskPluginIO,
    TaskPluginsIO,
)
from .validation import Choice, choice_problem

CATEGORY = "Diff-Plugin"
log = logging.getLogger("diffplugin")

# (kind, path) -> (stamp, handle): one copy however many nodes load it, and only the newest: a
# file rewritten or replaced gives a new stamp, and its old copy is dropped when the new one loads.
_loaded: dict[tuple[str, str], tuple[tuple, object]] = {}


def stamp(path: str) -> tuple:
    """What changes when a plugin file (or a reference folder's file) is rewritten or replaced:
    modification time in ns, size and inode of each file."""
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
        return tuple((os.path.relpath(f, path), *stamp(f)) for f in files)
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


def _cached(kind: str, path: str, load):
    now = stamp(path)
    for key in [k for k in _loaded if k[0] == kind and not os.path.exists(k[1])]:
        del _loaded[key]  # deleted files
    held = _loaded.get((kind, path))
    if held is None or held[0] != now:
        _loaded.pop((kind, path), None)  # the old copy goes before the new one is read
        _loaded[(kind, path)] = (now, load(path))
    return _loaded[(kind, path)][1]


def load_plugin_handle(name: str) -> TaskPluginHandle:
    require("diffusers", "loading a Task-Plugin (its spatial branch is built from diffusers blocks)")
    from ..plugin_core import load_plugin

    return _cached("plugin", library.resolve(name), lambda path: TaskPluginHandle(load_plugin(path), source=name))


def load_selector_handle(name: str) -> SelectorHandle:
    from ..plugin_core.selector import load_selector  # torch only: no diffusers needed

    return _cached("selector", library.resolve(name),
                   lambda path: SelectorHandle(load_selector(path)[0].float().eval().requires_grad_(False), name))


def _fingerprint(name: str):
    """The stamp of a listed plugin or selector (None when it is not there: the queue-time check
    refuses that name), so ComfyUI runs a loader again when its file changed."""
    try:
        return stamp(library.resolve(name))
    except (OSError, ValueError):
        return None


class LoadTaskPlugin(io.ComfyNode):
    SEARCH_ALIASES = ("task plugin", "diff-plugin", "load plugin", "derain plugin", "dehaze plugin", "desnow plugin")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadTaskPlugin",
            display_name="Load Task-Plugin",
            category=CATEGORY,
            description="Load one Diff-Plugin Task-Plugin (derain, desnow, dehaze, ...) from models/diff_plugins.",
            inputs=[
                io.Combo.Input(
                    "plugin_name",
                    options=library.plugin_choices(),
                    tooltip="A plugin .safetensors file, or a reference task folder (tpb.pt + scb/) shown as 'task/'.",
                ),
            ],
            outputs=[TaskPluginIO.Output(display_name="task_plugin", tooltip="The Task-Plugin, for Apply Task-Plugin.")],
        )

    @classmethod
    def validate_inputs(cls, plugin_name):
        return choice_problem(cls, "plugin_name", plugin_name) or True

    @classmethod
    def fingerprint_inputs(cls, plugin_name):
        return _fingerprint(plugin_name)

    @classmethod
    def execute(cls, plugin_name) -> io.NodeOutput:
        return io.NodeOutput(load_plugin_handle(plugin_name))


class LoadTaskPluginLibrary(io.ComfyNode):
    SEARCH_ALIASES = ("plugin library", "all task plugins", "selector weights", "diff-plugin")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadTaskPluginLibrary",
            display_name="Load Task-Plugin Library",
            category=CATEGORY,
            description="Load every Task-Plugin in models/diff_plugins (or the listed tasks) and the Plugin-Selector.",
            inputs=[
                io.String.Input(
                    "tasks",
                    default="",
                    tooltip="Comma-separated task names to load (e.g. 'derain, dehaze'); empty loads every plugin found.",
                ),
                Choice(
                    "selector_name",
                    options=[*library.selector_choices(), library.NONE],
                    tooltip="Plugin-Selector weights (selector.safetensors as `diffplugin convert` writes it, or the release's "
                            "plugin_selector/PromptTunner.pt); 'none' when no Plugin-Selector follows.",
                ),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="task_plugins", tooltip="All loaded plugins, in task order."),
                PluginSelectorIO.Output(display_name="selector", tooltip="The Plugin-Selector."),
            ],
        )

    @classmethod
    def validate_inputs(cls, tasks):
        # The one input of its own rule (validation.py); selector_name is the host's to check.
        return text_problem("tasks", tasks) or True

    @classmethod
    def fingerprint_inputs(cls, tasks, selector_name):
        """Every listed plugin's stamp and the selector's: a plugin added, replaced or removed, or
        the selector changed, runs the library again."""
        plugins = tuple((choice, _fingerprint(choice)) for choice in library.plugin_choices())
        return plugins, (None if selector_name == library.NONE else _fingerprint(selector_name))

    @classmethod
    def execute(cls, tasks, selector_name) -> io.NodeOutput:
        from ..plugin_core import PluginError
        from ..plugin_core.models import one_per_task

        if problem := text_problem("tasks", tasks):  # a linked text, not seen when queued
            raise ValueError(problem)
        wanted = [t.strip() for t in tasks.split(",") if t.strip()]
        by_task: dict[str, list[str]] = {}
        for choice in library.plugin_choices():
            try:
                by_task.setdefault(library.task_of(choice), []).append(choice)
            except PluginError as error:
                log.warning("Diff-Plugin: %s left out: %s", choice, printable(error))
        missing = [t for t in wanted if t not in by_task]
        if missing:
            raise ValueError(f"tasks: no plugin for {shown(', '.join(missing))} in "
                             f"{library.folder_paths.get_folder_paths(library.FOLDER)}; found: {', '.join(by_task) or 'none'}")
        found = one_per_task({task: by_task[task] for task in wanted or by_task})
        chosen = []
        for task, choice in found.items():
            try:
                chosen.append(load_plugin_handle(choice))
            except PluginError as error:
                if wanted:  # asked for by name: that is the error
                    raise ValueError(f"the plugin for task '{task}' cannot be used: {error}") from None
                log.warning("Diff-Plugin: %s left out of the library: %s", choice, printable(error))
        if not chosen:
            raise ValueError(f"no usable Task-Plugins in {library.folder_paths.get_folder_paths(library.FOLDER)}")
        selector = None if selector_name == library.NONE else load_selector_handle(selector_name)
        return io.NodeOutput(PluginSet(chosen), selector)
