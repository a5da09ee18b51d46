"""The Task-Plugin: its shapes and purpose (config), the two branches (TPB, SCB), the plugin
that holds them, and its files (the reference layout and one .safetensors per plugin)."""

from .config import DEFAULT_INSTRUCTIONS, NOISE_START_TASKS, PluginConfig, PluginInfo, default_start_mode
from .files import (
    convert_reference_folder,
    convert_reference_plugin,
    describe_plugin,
    find_plugins,
    is_reference_task_folder,
    load_plugin,
    load_reference_plugin,
    save_plugin,
)
from .plugin import TaskPlugin
from .scb import SpatialComplementBranch
from .tpb import TaskPromptBranch

__all__ = [
    "DEFAULT_INSTRUCTIONS", "NOISE_START_TASKS", "PluginConfig", "PluginInfo", "SpatialComplementBranch",
    "TaskPlugin", "TaskPromptBranch", "convert_reference_folder", "convert_reference_plugin", "default_start_mode",
    "describe_plugin", "find_plugins", "is_reference_task_folder", "load_plugin", "load_reference_plugin", "save_plugin",
]
