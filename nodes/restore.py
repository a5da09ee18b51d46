"""RestoreWithTaskPlugins: the reference's multi-task rule with ComfyUI's own sampling.

Plugins run one after another: the first with `steps`, every later one with
`later_steps` on the previous (8-bit) output; Fp always comes from the original photo
and every run starts from the same seed. Progress bar and previews are ComfyUI's.
"""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..plugin_core.colorfix import fix_colors
from ..plugin_core.images import at_size
from . import bridge
from .apply import apply_plugin
from .tiles import DEFAULTS, color_fix_input, tile_inputs, tile_settings
from .plugin_types import TaskPluginsIO
from .validation import check_inputs

CATEGORY = "Diff-Plugin"


def _empty_conditioning(context_width: int):
    # The plugin replaces the text context, so the sampler's conditioning only has to exist.
    return [[torch.zeros(1, 77, context_width), {}]]


def sample(model, seed, steps, cfg, sampler_name, scheduler, conditioning, latent):
    """KSampler's own path (noise from the seed, previews, progress bar) at denoise 1.0.

    Not nodes.common_ksampler: this pack's own `nodes` package would shadow ComfyUI's
    `nodes` module wherever the pack folder is on sys.path.
    """
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, steps)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, conditioning, conditioning, latent_image,
        denoise=1.0, noise_mask=latent.get("noise_mask"), callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )


def restore_sequence(model, handles, clip_vision, vae, originals, *, seed, steps, later_steps, cfg, sampler_name,
                     scheduler, resolution, strength=1.0, tiles=None, color_fix="none"):
    """One chain of plugins on these images (PIL); returns the working-size images. tiles:
    plugin_core TileSettings (None: never tile; tiled images are decoded by tiles too)."""
    working = current = bridge.working_images(originals, resolution)
    conditioning = _empty_conditioning(bridge.model_facts(model)["context_width"])
    tiled = tiles is not None and tiles.plan(*working[0].size, bridge.VAE_FACTOR) is not None
    for order, handle in enumerate(handles):
        comfy.model_management.throw_exception_if_processing_interrupted()
        patched, latent, _ = apply_plugin(model, handle, clip_vision, vae, originals, current, strength=strength, tiles=tiles)
        samples = sample(patched, seed, steps if order == 0 else later_steps, cfg, sampler_name, scheduler, conditioning, latent)
        decoded = vae.decode_tiled(samples, tile_x=64, tile_y=64, overlap=8) if tiled else vae.decode(samples)
        current = bridge.image_to_pil(decoded.reshape(-1, *decoded.shape[-3:]))  # 8-bit, as the reference passes it on
    return fix_colors(current, working, color_fix)


def restore_images(model, plugin_set, clip_vision, vae, image, *, output_size="processed", **settings):
    """Every image with its own chain (the selector's choice per image), back in order:
    (images, originals). settings: restore_sequence's."""
    originals = bridge.image_to_pil(image)
    restored = list(originals)
    for indices, handles in plugin_set.groups_for(len(originals)):
        group = [originals[i] for i in indices]
        if handles:
            results = restore_sequence(model, handles, clip_vision, vae, group, **settings)
        else:  # nothing selected for these images: left as they are
            results = group if output_size == "original" else bridge.working_images(group, settings["resolution"])
        for index, result in zip(indices, results):
            restored[index] = at_size(result, originals[index].size) if output_size == "original" else result
    return restored, originals


class RestoreWithTaskPlugins(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RestoreWithTaskPlugins",
            display_name="Restore with Task-Plugins",
            category=CATEGORY,
            description=(
                "Run the given Task-Plugins one after another (e.g. the Plugin-Selector's choice), as the "
                "reference does for multi-task instructions; each image runs what was selected for it. No plugin: "
                "the photo is returned unchanged."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x model."),
                TaskPluginsIO.Input("task_plugins", tooltip="Plugins to run, in order (Plugin-Selector or Load Task-Plugin Library)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE."),
                io.Image.Input("image", tooltip="The degraded photo(s)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; every plugin run starts from it (the reference uses 42)."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Steps of the first plugin (reference: 20)."),
                io.Int.Input("later_steps", default=3, min=1, max=200, tooltip="Steps of every later plugin (reference: 3)."),
                io.Float.Input("cfg", default=1.0, min=1.0, max=30.0, step=0.1,
                               tooltip="1 is the reference (no guidance); higher values give the same result at twice the cost."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="uni_pc_bh2",
                               tooltip="Sampler (the reference uses UniPC bh2)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Noise schedule ('normal' spaces timesteps evenly, like the reference)."),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=8,
                             tooltip="The short side is raised to this when smaller; sides rounded to multiples of 8."),
                io.Combo.Input("output_size", options=["original", "processed"], default="original",
                               tooltip="'original': back to the input's size; 'processed': the working size the plugins ran at."),
                *tile_inputs(),
                color_fix_input(),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The restored photo(s).")],
        )

    @classmethod
    def validate_inputs(cls, cfg, sampler_name, scheduler, output_size, steps, later_steps, resolution, tile_size, tile_overlap,
                        tile_batch, tile_prompt, color_fix):
        checked = check_inputs(cls, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, output_size=output_size, steps=steps,
                               later_steps=later_steps, resolution=resolution, tile_size=tile_size, tile_overlap=tile_overlap,
                               tile_batch=tile_batch, tile_prompt=tile_prompt, color_fix=color_fix)
        if checked is True and None not in (tile_size, tile_overlap) and tile_size and tile_overlap >= tile_size:
            return f"tile_overlap {tile_overlap} must be smaller than tile_size {tile_size}"
        return checked

    @classmethod
    def execute(cls, model, task_plugins, clip_vision, vae, image, seed, steps, later_steps, cfg, sampler_name,
                scheduler, resolution, output_size, tile_size=DEFAULTS.size, tile_overlap=DEFAULTS.overlap,
                tile_batch=DEFAULTS.batch, tile_prompt=DEFAULTS.prompt, color_fix="none") -> io.NodeOutput:
        if not any(handles for _, handles in task_plugins.groups_for(image.shape[0])):
            return io.NodeOutput(image)
        restored, _ = restore_images(
            model, task_plugins, clip_vision, vae, image, output_size=output_size, seed=seed, steps=steps,
            later_steps=later_steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, resolution=resolution,
            tiles=tile_settings(tile_size, tile_overlap, tile_batch, tile_prompt), color_fix=color_fix,
        )
        return io.NodeOutput(bridge.pil_to_image(restored))
