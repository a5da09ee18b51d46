"""plugin_core: Diff-Plugin Task-Plugins, Plugin-Selector, headless restoration and training.

Standalone: never imports ComfyUI (the ComfyUI nodes in `nodes/` adapt it, through the names
exported here and by the packages' `__init__`).

* `models/` — the Task-Plugin (config, TPB, SCB, whether it fits a base, plugin files);
* `base/` — the frozen SD 1.x base on diffusers / transformers (loading, the calls made on it);
* `restore/` — the one restore engine (settings, the recipe, its diffusers backend, Restorer, folders);
* `selector/` — the Plugin-Selector (scoring, text encoders, memory, training, metrics, files);
* `training/` — training a Task-Plugin (config, run folder, log, the step loop, its backend, data);
* `synthetic/` — synthetic degradations and pairs; `evaluation/` — PSNR/SSIM/LPIPS/FID/KID;
* `tiling`, `colorfix`, `images`, `formats`, `outputs`, `options`, `vocabulary` (the settings'
  words, each written once), `errors`, and `cli`.

Names are imported lazily (lazy.py), so what does not need diffusers (images, formats, the
selector, the settings) loads without it.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .base import BaseModels
    from .colorfix import fix_colors
    from .errors import DataError, InputImageError, PluginError, PluginFileError, PluginMismatchError
    from .formats import PLUGIN_FORMAT, SELECTOR_FORMAT, read_safetensors_header
    from .images import at_size, clip_pixels, resize_for_vae, training_clip_pixels
    from .models import (
        BaseFacts,
        PluginConfig,
        PluginInfo,
        PluginMix,
        TaskPlugin,
        check_fits,
        convert_reference_plugin,
        find_plugins,
        load_plugin,
        load_reference_plugin,
        save_plugin,
    )
    from .options import printable, shown, text_problem
    from .outputs import OutputsExist, inside, normal_path
    from .restore import (
        COLOR_FIXES,
        TILE_PROMPTS,
        PluginGroup,
        Restorer,
        RestoreResult,
        RestoreSettings,
        TileSettings,
        groups_by_selection,
        prompt_tokens,
        restore_files,
        restore_groups,
        tile_advice,
        tile_defaults,
    )
    from .selector import PluginSelector, Selection, load_selector, save_selector
    from .synthetic import DEGRADATIONS, degrade
    from .tiling import TilePlan
    from .training import TrainConfig, Trainer

_EXPORTS = {
    "DataError": "errors",
    "InputImageError": "errors",
    "PluginError": "errors",
    "PluginFileError": "errors",
    "PluginMismatchError": "errors",
    "printable": "options",
    "shown": "options",
    "text_problem": "options",
    "PLUGIN_FORMAT": "formats",
    "SELECTOR_FORMAT": "formats",
    "read_safetensors_header": "formats",
    "at_size": "images",
    "clip_pixels": "images",
    "resize_for_vae": "images",
    "training_clip_pixels": "images",
    "fix_colors": "colorfix",
    "TilePlan": "tiling",
    "OutputsExist": "outputs",
    "inside": "outputs",
    "normal_path": "outputs",
    "BaseFacts": "models",
    "PluginConfig": "models",
    "PluginInfo": "models",
    "PluginMix": "models",
    "TaskPlugin": "models",
    "check_fits": "models",
    "convert_reference_plugin": "models",
    "find_plugins": "models",
    "load_plugin": "models",
    "load_reference_plugin": "models",
    "save_plugin": "models",
    "BaseModels": "base",
    "COLOR_FIXES": "restore",
    "PluginGroup": "restore",
    "RestoreResult": "restore",
    "RestoreSettings": "restore",
    "Restorer": "restore",
    "TILE_PROMPTS": "restore",
    "TileSettings": "restore",
    "groups_by_selection": "restore",
    "prompt_tokens": "restore",
    "restore_files": "restore",
    "restore_groups": "restore",
    "tile_advice": "restore",
    "tile_defaults": "restore",
    "PluginSelector": "selector",
    "Selection": "selector",
    "load_selector": "selector",
    "save_selector": "selector",
    "TrainConfig": "training",
    "Trainer": "training",
    "DEGRADATIONS": "synthetic",
    "degrade": "synthetic",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
