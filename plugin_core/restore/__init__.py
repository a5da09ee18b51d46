"""The one restore engine: the settings (settings.py), the recipe written once for every front end
(recipe.py), its backend on diffusers models (restorer.py: `Restorer`), the VAE by bands, the
progress meter, and image files restored into image files (folders.py, processes.py). Imported
lazily: the settings need no torch, the recipe no diffusers."""

from ..lazy import lazy_exports

_EXPORTS = {
    "FolderReport": "folders",
    "Selecting": "folders",
    "find_inputs": "folders",
    "restore_files": "folders",
    "Processes": "processes",
    "PluginGroup": "recipe",
    "RestoreBackend": "recipe",
    "RestoreResult": "recipe",
    "check_shares": "recipe",
    "composed": "recipe",
    "describe_run": "recipe",
    "groups_by_selection": "recipe",
    "plugin_inputs": "recipe",
    "prompt_tokens": "recipe",
    "restore_groups": "recipe",
    "run_chain": "recipe",
    "Restorer": "restorer",
    "COLOR_FIXES": "settings",
    "COMPOSE_MODES": "settings",
    "JOINT_CONTEXTS": "settings",
    "OUTPUT_SIZES": "settings",
    "RESIZE_MODES": "settings",
    "RestoreSettings": "settings",
    "TILE_PROMPTS": "settings",
    "TileSettings": "settings",
    "STRENGTH_MAX": "settings",
    "WEIGHTS_MEANING": "settings",
    "WEIGHTS_RENAMED": "settings",
    "parse_shares": "settings",
    "tile_advice": "recipe",
    "tile_defaults": "settings",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
