"""plugin_core: Diff-Plugin Task-Plugins, Plugin-Selector, headless restoration and training.

Standalone: never imports ComfyUI (the ComfyUI nodes in `nodes/` adapt it).

* `models/` — the Task-Plugin (config, TPB, SCB, plugin files);
* `selector/` — the Plugin-Selector (scoring, text encoders, memory, training, metrics, files);
* `training/` — training a Task-Plugin (trainer, backends, data, synthetic degradations);
* `pipeline` (restoration), `images`, `formats`, `errors`, and `cli` (parses and dispatches).

Names are imported lazily (lazy.py), so what does not need diffusers (images, formats, the
selector) loads without it.
"""

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "PluginError": "errors",
    "PluginFileError": "errors",
    "PluginMismatchError": "errors",
    "InputImageError": "errors",
    "PluginConfig": "models",
    "PluginInfo": "models",
    "TaskPlugin": "models",
    "load_plugin": "models",
    "save_plugin": "models",
    "load_reference_plugin": "models",
    "find_plugins": "models",
    "convert_reference_plugin": "models",
    "PluginSelector": "selector",
    "Selection": "selector",
    "load_selector": "selector",
    "save_selector": "selector",
    "BaseModels": "pipeline",
    "Restorer": "pipeline",
    "RestoreResult": "pipeline",
    "TrainConfig": "training",
    "Trainer": "training",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
