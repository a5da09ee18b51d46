"""The Task-Plugin: its shapes and purpose (config), the two branches (TPB, SCB), the plugin
that holds them, whether it fits a base (fit), and its files (the reference layout and one
.safetensors per plugin). Imported lazily: the SCB is built from diffusers blocks, the rest
needs torch alone."""

from ..lazy import lazy_exports

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
    "convert_reference_folder": "reference",
    "convert_reference_plugin": "reference",
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
