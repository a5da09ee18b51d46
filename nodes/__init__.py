"""The ComfyUI node pack: adapts plugin_core to ComfyUI's types, patches and sampling."""

from __future__ import annotations

from typing_extensions import override

from . import blueprints, library, replacements
from .api import ComfyExtension, io
from .apply import ApplyTaskPlugin
from .colorfix import DiffPluginColorFix
from .compose import ComposeTaskPlugins
from .loaders import LoadTaskPlugin, LoadTaskPluginLibrary
from .metrics import ImageMetrics
from .restore import RestoreWithTaskPlugins
from .search import findable
from .select import PluginSelector
from .synthetic import SynthesizeDegradedPairs
from .train import TrainTaskPlugin
from .train_selector import TrainPluginSelector
from .validation import printable_errors

NODES: list[type[io.ComfyNode]] = [findable(printable_errors(node)) for node in (
    LoadTaskPlugin,
    LoadTaskPluginLibrary,
    ApplyTaskPlugin,
    PluginSelector,
    RestoreWithTaskPlugins,
    ComposeTaskPlugins,
    DiffPluginColorFix,
    SynthesizeDegradedPairs,
    TrainTaskPlugin,
    TrainPluginSelector,
    ImageMetrics,
)]


class DiffPluginExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        await replacements.register()  # node ids given up, for saved workflows (none yet)

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> DiffPluginExtension:
    library.register_folder()
    blueprints.serve()
    return DiffPluginExtension()
