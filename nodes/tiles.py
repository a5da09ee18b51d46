"""The tile and colour-fix inputs of the restoring nodes, one definition for all of them, with
plugin_core's defaults; the tiling itself is plugin_core's, applied through the MODEL patch
(patch.py)."""

from __future__ import annotations

from comfy_api.latest import io

from ..plugin_core import (
    COLOR_FIXES,
    TILE_PROMPTS,
    PluginError,
    RestoreSettings,
    TileSettings,
)
from .validation import Choice, check_inputs

DEFAULTS = TileSettings()


def tile_inputs() -> list:
    return [
        io.Int.Input("tile_size", default=DEFAULTS.size, min=0, max=16384, step=8,
                     tooltip="Tile size in px: a photo whose working size fits in one tile is not tiled (the reference "
                             "result); larger ones are sampled in overlapping tiles, each with its own spatial branch. 0: never tile."),
        io.Int.Input("tile_overlap", default=DEFAULTS.overlap, min=0, max=8192, step=8,
                     tooltip="Overlap of neighbouring tiles in px; their predictions are blended across it."),
        io.Int.Input("tile_batch", default=DEFAULTS.batch, min=1, max=64, tooltip="Tiles per UNet call (more use a GPU better)."),
        Choice("tile_prompt", options=list(TILE_PROMPTS), default=DEFAULTS.prompt,
               tooltip="'tile': each tile's visual prompt from its own pixels (nearer the plugins' 512 px training crops); "
                       "'global': one from the whole photo."),
    ]


def color_fix_input() -> io.Combo.Input:
    return Choice("color_fix", options=list(COLOR_FIXES), default=RestoreSettings().color_fix,
                  tooltip="Keep the photo's low-frequency colour: 'wavelet' (its low band under the result's detail) or "
                          "'adain' (its per-channel mean and std). 'none': as restored (the reference).")


def tile_settings(tile_size: int, tile_overlap: int, tile_batch: int, tile_prompt: str) -> TileSettings:
    return TileSettings(size=tile_size, overlap=tile_overlap, batch=tile_batch, prompt=tile_prompt)


def check_tiles(node_class, tile_size, tile_overlap):
    """A node's queue-time check of its tile inputs (its `validate_inputs` names only these two, so
    a problem with either is filed under both, and nothing else): their ranges, then plugin_core's
    rule between them."""
    checked = check_inputs(node_class, tile_size=tile_size, tile_overlap=tile_overlap)
    return checked if checked is not True else tile_problem(tile_size, tile_overlap) or True


def tile_problem(tile_size, tile_overlap) -> str | None:
    """plugin_core's rule for a tile size and overlap (None values are links, checked when the node runs)."""
    if None in (tile_size, tile_overlap):
        return None
    try:
        TileSettings(size=tile_size, overlap=tile_overlap)
    except PluginError as error:
        return str(error)
    return None
