"""plugin_core: Diff-Plugin Task-Plugins, Plugin-Selector and headless restoration.

Standalone: never imports ComfyUI. The ComfyUI nodes in `nodes/` adapt it.
"""

from .checkpoints import (
    convert_reference_plugin,
    find_plugins,
    load_plugin,
    load_selector,
    save_plugin,
    save_selector,
)
from .config import PluginConfig, PluginInfo
from .errors import InputImageError, PluginError, PluginFileError, PluginMismatchError
from .plugin import TaskPlugin
from .selector import PluginSelector, Selection

__version__ = "0.1.0"

__all__ = [
    "InputImageError",
    "PluginConfig",
    "PluginError",
    "PluginFileError",
    "PluginInfo",
    "PluginMismatchError",
    "PluginSelector",
    "Selection",
    "TaskPlugin",
    "convert_reference_plugin",
    "find_plugins",
    "load_plugin",
    "load_selector",
    "save_plugin",
    "save_selector",
]
