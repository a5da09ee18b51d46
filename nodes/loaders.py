"""LoadTaskPlugin and LoadTaskPluginLibrary: plugins and the selector from models/diff_plugins."""

from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from . import library
from .dependencies import require
from .validation import check_inputs
from .plugin_types import PluginSet, PluginSelectorIO, SelectorHandle, TaskPluginHandle, TaskPluginIO, TaskPluginsIO

CATEGORY = "Diff-Plugin"
log = logging.getLogger("diffplugin")

_loaded: dict[tuple, object] = {}  # (path, mtime) -> handle: one copy however many nodes load it


def _stamp(path: str) -> float:
    if os.path.isdir(path):
        return max(os.path.getmtime(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
    return os.path.getmtime(path)


def load_plugin_handle(name: str) -> TaskPluginHandle:
    require("diffusers", "loading a Task-Plugin (its spatial branch is built from diffusers blocks)")
    from ..plugin_core import load_plugin

    path = library.resolve(name)
    key = ("plugin", path, _stamp(path))
    if key not in _loaded:
        _loaded[key] = TaskPluginHandle(load_plugin(path), source=name)
    return _loaded[key]


def load_selector_handle(name: str) -> SelectorHandle:
    from ..plugin_core.selector import load_selector  # torch only: no diffusers needed

    path = library.resolve(name)
    key = ("selector", path, _stamp(path))
    if key not in _loaded:
        _loaded[key] = SelectorHandle(load_selector(path)[0].float().eval().requires_grad_(False), name)
    return _loaded[key]


class LoadTaskPlugin(io.ComfyNode):
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
        return check_inputs(cls, plugin_name=plugin_name)

    @classmethod
    def execute(cls, plugin_name) -> io.NodeOutput:
        return io.NodeOutput(load_plugin_handle(plugin_name))


class LoadTaskPluginLibrary(io.ComfyNode):
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
                io.Combo.Input(
                    "selector_name",
                    options=library.selector_choices() or [library.NONE],
                    tooltip="Plugin-Selector weights (the reference PromptTunner.pt or a converted .safetensors).",
                ),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="task_plugins", tooltip="All loaded plugins, in task order."),
                PluginSelectorIO.Output(display_name="selector", tooltip="The Plugin-Selector."),
            ],
        )

    @classmethod
    def validate_inputs(cls, selector_name):
        return check_inputs(cls, selector_name=selector_name)

    @classmethod
    def execute(cls, tasks, selector_name) -> io.NodeOutput:
        from ..plugin_core import PluginError
        from ..plugin_core.models import one_per_task

        wanted = [t.strip() for t in tasks.split(",") if t.strip()]
        by_task: dict[str, list[str]] = {}
        for choice in library.plugin_choices():
            try:
                by_task.setdefault(library.task_of(choice), []).append(choice)
            except PluginError as error:
                log.warning("Diff-Plugin: %s left out: %s", choice, error)
        missing = [t for t in wanted if t not in by_task]
        if missing:
            raise ValueError(f"no plugin for task(s) {', '.join(missing)} in {library.folder_paths.get_folder_paths(library.FOLDER)}; "
                             f"found: {', '.join(by_task) or 'none'}")
        found = one_per_task({task: by_task[task] for task in wanted or by_task})
        chosen = []
        for task, choice in found.items():
            try:
                chosen.append(load_plugin_handle(choice))
            except PluginError as error:
                if wanted:  # asked for by name: that is the error
                    raise ValueError(f"the plugin for task '{task}' cannot be used: {error}") from None
                log.warning("Diff-Plugin: %s left out of the library: %s", choice, error)
        if not chosen:
            raise ValueError(f"no usable Task-Plugins in {library.folder_paths.get_folder_paths(library.FOLDER)}")
        selector = None if selector_name == library.NONE else load_selector_handle(selector_name)
        return io.NodeOutput(PluginSet(chosen), selector)
