"""What flows on the pack's own wires, and the ComfyUI IO types that name them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..plugin_core import PluginGroup
from .api import io

TaskPluginIO = io.Custom("TASK_PLUGIN")
TaskPluginsIO = io.Custom("TASK_PLUGINS")
PluginSelectorIO = io.Custom("PLUGIN_SELECTOR")


class TaskPluginHandle:
    """A loaded Task-Plugin: float32 master weights on the CPU, plus one copy per compute
    dtype, each wrapped in a ModelPatcher so ComfyUI's model management loads and offloads
    it together with the MODEL it patches (management.py). plugin_core's recipe reads it as a plugin (its task,
    config, info and visual prompt)."""

    def __init__(self, plugin, source: str):
        self.plugin = plugin.float().eval().requires_grad_(False)
        self.source = source
        self._patchers: dict = {}

    @property
    def task(self) -> str:
        return self.plugin.task

    @property
    def config(self):
        return self.plugin.config

    @property
    def info(self):
        return self.plugin.info

    @property
    def start_mode(self) -> str:
        return self.plugin.start_mode

    def visual_prompt(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """Fp from the master weights (the TPB runs once per image, when a node executes)."""
        return self.plugin.visual_prompt(clip_tokens)

    def patcher_for(self, model):
        """The plugin in the dtype `model` computes in, wrapped for model management with the
        model's devices (management.py; made once per dtype and devices)."""
        from .management import compute_dtype, plugin_patcher

        key = (compute_dtype(model), str(model.load_device), str(model.offload_device))
        if key not in self._patchers:
            self._patchers[key] = plugin_patcher(self.plugin, model)
        return self._patchers[key].clone()

    def __repr__(self):
        return f"TaskPlugin({self.task!r} from {self.source})"


@dataclass
class PluginSet:
    """An ordered list of plugins (a library, or the selector's choice). A selector's choice is
    per image: `groups` holds (image indices, their plugins in order) for every image. How several
    run (Compose Task-Plugins sets it): plugin_core's RestoreSettings fields compose, joint_context,
    shares; by default one after another, as the reference."""

    plugins: list[TaskPluginHandle]
    selections: list | None = None  # plugin_core Selection per image
    groups: list[PluginGroup] | None = None  # None: every image runs `plugins`
    composition: dict = field(default_factory=dict)  # RestoreSettings fields: compose, joint_context, shares, regions
    tasks: list[str] = field(init=False)

    def __post_init__(self):
        self.tasks = [p.task for p in self.plugins]

    def groups_for(self, images: int) -> list[PluginGroup]:
        """The images (indices) and the plugins to run on them, covering `images` images."""
        if self.groups is None:
            return [PluginGroup(list(range(images)), list(self.plugins))]
        covered = sorted(i for group in self.groups for i in group.indices)
        if covered != list(range(images)):
            raise ValueError(f"the plugins were selected for {len(covered)} images, but {images} are given")
        return self.groups


@dataclass
class SelectorHandle:
    selector: object  # plugin_core PluginSelector (its tasks, text encoder, memory...)
    source: str


@dataclass(frozen=True)
class ChainOnly:
    """Compose Task-Plugins' task_plugin output when compose is 'chain': a chain runs the plugins
    one after another on each other's output, which no one patched MODEL can do, so Apply
    Task-Plugin refuses it, saying what to connect instead."""

    tasks: tuple[str, ...]

    def message(self) -> str:
        return (f"task_plugin: Compose Task-Plugins is set to compose = chain ({', '.join(self.tasks)} one after another), which "
                "no single patched model can run: set compose to joint on Compose Task-Plugins to apply the plugins in one "
                "pass, or connect its task_plugins output to Restore with Task-Plugins to run them as a chain")
