"""plugin_core: Diff-Plugin Task-Plugins, Plugin-Selector, headless restoration and training.

Standalone: never imports ComfyUI (the ComfyUI nodes in `nodes/` adapt it). Names are
imported lazily, so modules that do not need diffusers (images, selector, config) load
without it.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "PluginConfig": "config",
    "PluginInfo": "config",
    "PluginError": "errors",
    "PluginFileError": "errors",
    "PluginMismatchError": "errors",
    "InputImageError": "errors",
    "PluginSelector": "selector",
    "Selection": "selector",
    "TaskPlugin": "plugin",
    "load_plugin": "checkpoints",
    "save_plugin": "checkpoints",
    "load_selector": "checkpoints",
    "save_selector": "checkpoints",
    "find_plugins": "checkpoints",
    "convert_reference_plugin": "checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
