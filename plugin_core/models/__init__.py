"""The Task-Plugin: its shapes and purpose (config), the two branches (TPB, SCB), the plugin
that holds them, whether it fits a base (fit), and its files (the reference layout and one
.safetensors per plugin). Imported lazily: the SCB is built from diffusers blocks, the rest
needs torch alone."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .compose import JOINT_CONTEXTS, PluginMix, joint_attention
    from .config import (
        DEFAULT_INSTRUCTIONS,
        NOISE_START_TASKS,
        REFERENCE_ORDER,
        PluginConfig,
        PluginInfo,
        default_start_mode,
        run_order,
        run_place,
    )
    from .files import (
        convert_reference_folder,
        convert_reference_plugin,
        describe_plugin,
        find_plugins,
        load_plugin,
        one_per_task,
        save_plugin,
        scan_plugins,
    )
    from .fit import BaseFacts, check_fits
    from .plugin import TaskPlugin
    from .reference import is_partial_task_folder, is_reference_task_folder, load_reference_plugin, reference_folder_problem
    from .scb import SpatialComplementBranch
    from .tpb import TaskPromptBranch

_EXPORTS = {
    "DEFAULT_INSTRUCTIONS": "config",
    "NOISE_START_TASKS": "config",
    "PluginConfig": "config",
    "PluginInfo": "config",
    "REFERENCE_ORDER": "config",
    "run_order": "config",
    "run_place": "config",
    "default_start_mode": "config",
    "JOINT_CONTEXTS": "compose",
    "PluginMix": "compose",
    "joint_attention": "compose",
    "BaseFacts": "fit",
    "check_fits": "fit",
    "describe_plugin": "files",
    "find_plugins": "files",
    "load_plugin": "files",
    "one_per_task": "files",
    "save_plugin": "files",
    "scan_plugins": "files",
    "convert_reference_folder": "files",
    "convert_reference_plugin": "files",
    "is_partial_task_folder": "reference",
    "is_reference_task_folder": "reference",
    "load_reference_plugin": "reference",
    "reference_folder_problem": "reference",
    "TaskPlugin": "plugin",
    "SpatialComplementBranch": "scb",
    "TaskPromptBranch": "tpb",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
