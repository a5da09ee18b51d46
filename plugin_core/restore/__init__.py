"""The one restore engine: the settings (settings.py), the recipe written once for every front end
(recipe.py) over a backend (backend.py: `RestoreBackend`, and `DiffusersRestoreBackend` on diffusers
models), the front door `Restorer` (restorer.py) over that backend, the VAE by bands, the
progress meter, and image files restored into image files (folders.py, processes.py). Imported
lazily: the settings need no torch, the recipe no diffusers."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .backend import DiffusersRestoreBackend, RestoreBackend
    from .folders import FolderReport, Selecting, find_inputs, restore_files
    from .processes import Processes
    from .recipe import (
        PluginGroup,
        RestoreResult,
        check_shares,
        composed,
        describe_run,
        groups_by_selection,
        plugin_inputs,
        prompt_tokens,
        restore_groups,
        run_chain,
        tile_advice,
    )
    from .restorer import Restorer
    from .settings import (
        COLOR_FIXES,
        COMPOSE_MODES,
        JOINT_CONTEXTS,
        OUTPUT_SIZES,
        RESIZE_MODES,
        STRENGTH_MAX,
        TILE_PROMPTS,
        WEIGHTS_MEANING,
        WEIGHTS_RENAMED,
        RestoreSettings,
        TileSettings,
        parse_shares,
        tile_defaults,
    )

_EXPORTS = {
    "DiffusersRestoreBackend": "backend",
    "RestoreBackend": "backend",
    "FolderReport": "folders",
    "Selecting": "folders",
    "find_inputs": "folders",
    "restore_files": "folders",
    "Processes": "processes",
    "PluginGroup": "recipe",
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
