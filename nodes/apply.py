"""ApplyTaskPlugin: patch a MODEL with a Task-Plugin and give the start LATENT."""

from __future__ import annotations

import logging

import torch
from comfy.patcher_extension import WrappersMP
from comfy_api.latest import io

from . import bridge
from .patch import DiffPluginPatch
from .plugin_types import TaskPluginIO
from .tiles import DEFAULTS, tile_inputs, tile_settings
from .validation import check_inputs

CATEGORY = "Diff-Plugin"
ADDITIONAL_MODELS_KEY = "diff_plugin"

log = logging.getLogger("diffplugin")


def _remove_previous_plugin(model) -> bool:
    """A MODEL carries at most one Task-Plugin: a later apply replaces the earlier one."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    removed = False
    for name in ("attn2_patch", "output_block_patch"):
        kept = [p for p in patches.get(name, []) if not isinstance(getattr(p, "__self__", None), DiffPluginPatch)]
        removed |= len(kept) != len(patches.get(name, []))
        if name in patches:
            patches[name] = kept
    for wrapper in (WrappersMP.APPLY_MODEL, WrappersMP.CALC_COND_BATCH):
        removed |= bool(model.get_wrappers(wrapper, ADDITIONAL_MODELS_KEY))
        model.remove_wrappers_with_key(wrapper, ADDITIONAL_MODELS_KEY)
    model.remove_additional_models(ADDITIONAL_MODELS_KEY)
    return removed


def apply_plugin(model, handle, clip_vision, vae, originals, working, *, strength=1.0, start_percent=0.0, end_percent=1.0,
                 mask=None, tiles=None):
    """Everything ApplyTaskPlugin does, for reuse by the sequential restore node.

    originals: the input images (CLIP sees them as the reference does); working: the same
    images at the working size (the VAE encodes these); tiles: plugin_core TileSettings (None:
    never tile). Returns (patched MODEL, LATENT, patch).
    """
    plugin = handle.plugin
    facts = bridge.check_plugin_fits(plugin, model)
    plugin.check_base(
        context_width=facts["context_width"], channels=facts["channels"],
        clip_width=bridge.clip_vision_width(clip_vision), what="CLIP_VISION model",
    )
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got {start_percent} and {end_percent}")

    width, height = working[0].size
    plan = tiles.plan(width, height, bridge.VAE_FACTOR) if tiles else None
    layer = plugin.info.clip_layer
    if plan is not None and tiles.prompt == "tile":  # each tile's Fp from its own pixels
        tokens = torch.stack([bridge.clip_tokens(clip_vision, crops, layer) for crops in plan.image_crops(working, bridge.VAE_FACTOR)])
    else:
        tokens = bridge.clip_tokens(clip_vision, originals, layer)
    with torch.no_grad():  # the TPB runs once per image (or tile), here, never per step
        device = next(plugin.parameters()).device
        visual_prompt = plugin.visual_prompt(tokens.to(device)).float().cpu()
    raw, scaled = bridge.encode_input(vae, model, working, tiled=plan is not None)
    if plan is not None:
        log.info("Diff-Plugin: %dx%d in %s, Fp per %s", width, height, plan.describe(bridge.VAE_FACTOR), tiles.prompt)

    latent_mask = noise_mask = None
    if mask is not None:
        latent_mask = bridge.resize_mask(mask, raw.shape[-2:], "area")  # scales the residuals
        noise_mask = bridge.resize_mask(mask, working[0].size[::-1], "bilinear")  # keeps the rest of the photo

    patched = model.clone()
    if _remove_previous_plugin(patched):
        log.info("Diff-Plugin: '%s' replaces the Task-Plugin applied to this MODEL before", plugin.task)
    plugin_patcher = handle.patcher_for(model)
    sampling = model.get_model_object("model_sampling")
    patch = DiffPluginPatch(
        plugin_patcher.model,
        visual_prompt,
        scaled,
        sampling,
        facts["output_blocks"],
        strength=strength,
        sigma_start=sampling.percent_to_sigma(start_percent),
        sigma_end=sampling.percent_to_sigma(end_percent),
        mask=latent_mask,
        plan=plan,
        tile_batch=tiles.batch if tiles else 1,
    )
    patched.set_model_attn2_patch(patch.attn2)
    patched.set_model_output_block_patch(patch.output_block)
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, ADDITIONAL_MODELS_KEY, patch.calc_cond_batch)
    if plan is not None:
        patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, ADDITIONAL_MODELS_KEY, patch.apply_model)
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [plugin_patcher])

    latent = {"samples": raw if plugin.start_mode == "input" else torch.zeros_like(raw)}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask  # outside the mask the sampler keeps the input
    return patched, latent, patch


class ApplyTaskPlugin(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ApplyTaskPlugin",
            display_name="Apply Task-Plugin",
            category=CATEGORY,
            description=(
                "Patch an SD 1.x MODEL with a Task-Plugin: its visual prompt replaces the text context "
                "(the prompt you encode is ignored while the plugin is active) and its spatial branch feeds "
                "the UNet's last decoder stage. Sample the returned LATENT with denoise 1.0. cfg 1 is the "
                "reference; at cfg > 1 both cond and uncond carry the plugin, so the result is the same at "
                "twice the cost."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x model (checkpoint loader output, LoRAs allowed)."),
                TaskPluginIO.Input("task_plugin", tooltip="From Load Task-Plugin."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision (Load CLIP Vision)."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE: encodes the input image for the plugin."),
                io.Image.Input("image", tooltip="The degraded photo(s). Any size and aspect ratio."),
                io.Float.Input("strength", default=1.0, min=0.0, max=5.0, step=0.01,
                               tooltip="Scales the spatial residuals; 0 turns the plugin off (the plain model)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the plugin starts acting."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress after which the plugin stops acting."),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=8,
                             tooltip="The short side is raised to this when smaller (the reference uses 512); sides are rounded to multiples of 8."),
                *tile_inputs(),
                io.Mask.Input("mask", optional=True,
                              tooltip="Limit the plugin to a region: scales its residuals and sets the LATENT's noise mask so the rest of the photo is kept."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched model (the input MODEL is not changed)."),
                io.Latent.Output(display_name="latent", tooltip="The start latent: the input's latent, or empty for pure-noise tasks (lowlight, highlight)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, strength, start_percent, end_percent, resolution, tile_size, tile_overlap, tile_batch, tile_prompt):
        checked = check_inputs(cls, strength=strength, start_percent=start_percent, end_percent=end_percent, resolution=resolution,
                               tile_size=tile_size, tile_overlap=tile_overlap, tile_batch=tile_batch, tile_prompt=tile_prompt)
        if checked is True and None not in (start_percent, end_percent) and start_percent > end_percent:
            return f"start_percent {start_percent} is after end_percent {end_percent}"
        if checked is True and None not in (tile_size, tile_overlap) and tile_size and tile_overlap >= tile_size:
            return f"tile_overlap {tile_overlap} must be smaller than tile_size {tile_size}"
        return checked

    @classmethod
    def execute(cls, model, task_plugin, clip_vision, vae, image, strength, start_percent, end_percent, resolution,
                tile_size=DEFAULTS.size, tile_overlap=DEFAULTS.overlap, tile_batch=DEFAULTS.batch, tile_prompt=DEFAULTS.prompt,
                mask=None) -> io.NodeOutput:
        originals = bridge.image_to_pil(image)
        working = bridge.working_images(originals, resolution)
        patched, latent, _ = apply_plugin(
            model, task_plugin, clip_vision, vae, originals, working,
            strength=strength, start_percent=start_percent, end_percent=end_percent, mask=mask,
            tiles=tile_settings(tile_size, tile_overlap, tile_batch, tile_prompt),
        )
        return io.NodeOutput(patched, latent)
