"""The tile and colour-fix inputs of the restoring nodes, one definition for all of them, with
plugin_core's defaults; the tiling itself is plugin_core's, applied through the MODEL patch
(patch.py)."""

from __future__ import annotations

from ..plugin_core import (
    COLOR_FIXES,
    TILE_PROMPTS,
    PluginError,
    RestoreSettings,
    TileSettings,
)
from .api import io
from .search import advanced
from .validation import Choice

DEFAULTS = TileSettings()


def tile_inputs() -> list:
    """The tile inputs, folded away as advanced: the defaults suit most photos."""
    return [advanced(input) for input in [
        io.Int.Input("tile_size", default=DEFAULTS.size, min=0, max=16384, step=8,
                     tooltip="Tile size in px: a photo whose working size fits in one tile is not tiled (the reference "
                             "result); larger ones are sampled in overlapping tiles, each with its own spatial branch. 0: never tile."),
        io.Int.Input("tile_overlap", default=DEFAULTS.overlap, min=0, max=8192, step=8,
                     tooltip="Overlap of neighbouring tiles in px; their predictions are blended across it."),
        io.Int.Input("tile_batch", default=DEFAULTS.batch, min=1, max=64, tooltip="Tiles per UNet call (more use a GPU better)."),
        Choice("tile_prompt", options=list(TILE_PROMPTS), default=DEFAULTS.prompt,
               tooltip="'tile': each tile's visual prompt from its own pixels (nearer the plugins' 512 px training crops); "
                       "'global': one from the whole photo."),
    ]]


def color_fix_input() -> io.Combo.Input:
    return Choice("color_fix", options=list(COLOR_FIXES), default=RestoreSettings().color_fix,
                  tooltip="Keep the photo's low-frequency colour: 'wavelet' (its low band under the result's detail) or "
                          "'adain' (its per-channel mean and std). 'none': as restored (the reference).")


def tile_settings(tile_size: int, tile_overlap: int, tile_batch: int, tile_prompt: str) -> TileSettings:
    """plugin_core's TileSettings of a node's tile inputs, checked first thing when the node runs:
    their ranges are the host's to check when queued, but the multiple of 8 and the rule between
    size and overlap are not, and a queue-time rule between two inputs is filed under both
    (validation.py). plugin_core's message names the input to change, by the node's input names."""
    try:
        return TileSettings(size=tile_size, overlap=tile_overlap, batch=tile_batch, prompt=tile_prompt)
    except PluginError as error:
        raise ValueError(str(error)) from None  # a plain ValueError: the host shows its type's full module path
