"""ApplyTaskPlugin: patch a MODEL with a Task-Plugin and give the start LATENT."""

from __future__ import annotations

import logging

import comfy.utils

from ..plugin_core import RestoreSettings, TileSettings, check_fits
from ..plugin_core.restore import STRENGTH_MAX, plugin_inputs
from . import bridge
from .api import io
from .plugin_types import ChainOnly, TaskPluginIO
from .restore_backend import ComfyRestoreBackend, patch_model
from .search import RESTORE_WORDS, TASK_WORDS
from .tiles import DEFAULTS, tile_inputs, tile_settings
from .validation import Float

CATEGORY = "Diff-Plugin"

log = logging.getLogger("diffplugin")
SETTINGS = RestoreSettings()


def apply_plugin(model, handle, clip_vision, vae, originals, working, *, strength=1.0, start_percent=0.0, end_percent=1.0,
                 mask=None, tiles=None, guidance=False):
    """Everything ApplyTaskPlugin does: plugin_core's check and inputs (Fp, the input's latent), then
    the patch. originals: the input images (CLIP sees them as the reference does); working: the
    same images at the working size (the VAE encodes these); tiles: plugin_core TileSettings.
    Returns (patched MODEL, LATENT, patch). The node's own work (CLIP vision per tile, the VAE
    encode) moves ComfyUI's progress bar and stops between steps when the prompt is cancelled."""
    tiles = tiles or TileSettings(size=0)
    width, height = working[0].size
    plan = tiles.plan(width, height, bridge.VAE_FACTOR)
    clip_calls = len(plan.tiles) if plan is not None and tiles.prompt == "tile" else 1
    bar = comfy.utils.ProgressBar(clip_calls + 1)  # + the VAE encode
    backend = ComfyRestoreBackend(model, vae, clip_vision, progress=lambda: bar.update(1))
    check_fits(handle, backend.facts)
    visual_prompt, raw = plugin_inputs(backend, handle, originals, working, working, plan, tiles)
    if plan is not None:
        log.info("Diff-Plugin: %dx%d in %s, Fp per %s", width, height, plan.describe(bridge.VAE_FACTOR), tiles.prompt)
    return patch_model(model, handle, visual_prompt.float().cpu(), raw, strength=strength, start_percent=start_percent,
                       end_percent=end_percent, mask=mask, plan=plan, tile_batch=tiles.batch, guidance=guidance)


def check_mask_batch(mask, images: int) -> None:
    """One MASK for every image, or one per image (ComfyUI's sampler broadcasts a single noise
    mask, and fails deep inside on any other count)."""
    if mask is None:
        return
    masks = 1 if mask.ndim == 2 else mask.shape[0]
    if masks not in (1, images):
        raise ValueError(f"the MASK holds {masks} masks for {images} images: give one mask (used for every image) "
                         f"or one per image")


class ApplyTaskPlugin(io.ComfyNode):
    SEARCH_ALIASES = (*TASK_WORDS, *RESTORE_WORDS, "patch model")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ApplyTaskPlugin",
            display_name="Apply Task-Plugin",
            category=CATEGORY,
            description=(
                "Patch an SD 1.x MODEL with a Task-Plugin (or several in one pass, from Compose Task-Plugins): its "
                "visual prompt replaces the text context (the prompt you encode is ignored while the plugin is active) "
                "and its spatial branch feeds the UNet's last decoder stage. Sample the returned LATENT with denoise 1.0. "
                "cfg 1 is the reference; a higher cfg gives exactly the same result at the same cost (one UNet "
                "evaluation per step), unless plugin_guidance is on."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x model (checkpoint loader output, LoRAs allowed)."),
                TaskPluginIO.Input("task_plugin", tooltip="From Load Task-Plugin (or Compose Task-Plugins: several in one pass)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision (Load CLIP Vision)."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE: encodes the input image for the plugin."),
                io.Image.Input("image", tooltip="The degraded photo(s). Any size and aspect ratio."),
                strength_input(),
                Float("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                      tooltip="Sampling progress at which the plugin starts acting (not after end_percent)."),
                Float("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                      tooltip="Sampling progress after which the plugin stops acting."),
                io.Int.Input("resolution", default=SETTINGS.resolution, min=64, max=4096, step=8,
                             tooltip="The short side is raised to this when smaller (the reference uses 512); sides are rounded to multiples of 8."),
                *tile_inputs(),
                io.Mask.Input("mask", optional=True,
                              tooltip="Limit the plugin to a region: scales its residuals and sets the LATENT's noise mask so the rest "
                                      "of the photo is kept. One mask for every image, or one per image."),
                guidance_input(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched model (the input MODEL is not changed)."),
                io.Latent.Output(display_name="latent", tooltip="The start latent: the input's latent, or empty for pure-noise tasks (lowlight, highlight)."),
            ],
        )

    @classmethod
    def execute(cls, model, task_plugin, clip_vision, vae, image, strength, start_percent, end_percent, resolution,
                tile_size=DEFAULTS.size, tile_overlap=DEFAULTS.overlap, tile_batch=DEFAULTS.batch, tile_prompt=DEFAULTS.prompt,
                mask=None, plugin_guidance=False) -> io.NodeOutput:
        if isinstance(task_plugin, ChainOnly):
            raise ValueError(task_plugin.message())
        if start_percent > end_percent:
            raise ValueError(f"start_percent ({start_percent}) is after end_percent ({end_percent}): lower start_percent")
        check_mask_batch(mask, image.shape[0])
        originals = bridge.image_to_pil(image)
        working = bridge.working_images(originals, resolution)
        patched, latent, _ = apply_plugin(
            model, task_plugin, clip_vision, vae, originals, working,
            strength=strength, start_percent=start_percent, end_percent=end_percent, mask=mask,
            tiles=tile_settings(tile_size, tile_overlap, tile_batch, tile_prompt), guidance=plugin_guidance,
        )
        return io.NodeOutput(patched, latent)


def strength_input(optional: bool = False) -> io.Float.Input:
    """How strongly the plugin (or the plugins of a joint pass) acts: plugin_core's one strength."""
    return Float("strength", default=SETTINGS.strength, min=0.0, max=STRENGTH_MAX, step=0.01, optional=optional,
                 tooltip="Scales the plugins' spatial-branch (SCB) residuals, the branch that keeps the photo's detail; the "
                         "visual prompt replaces the text while strength is above 0. 1: the plugins as trained; 0: off (the plain "
                         "model). For several plugins, their parts are the shares of Compose Task-Plugins.")


def guidance_input() -> io.Boolean.Input:
    return io.Boolean.Input("plugin_guidance", default=False, optional=True,
                            tooltip="Off: at any cfg the patched model costs one UNet evaluation per step and gives exactly the "
                                    "cfg 1 result. On: the uncond side runs the model without the plugin, so cfg > 1 pushes the "
                                    "result away from the unrestored prediction (as InstructPix2Pix's image guidance).")
