"""RestoreWithTaskPlugins: plugin_core's restore recipe (the reference's multi-task rule) with
ComfyUI's own sampling: plugins run one after another, the first with `steps`, every later one
with `later_steps` on the previous (8-bit) output; Fp always comes from the original photo and
every run starts from the same seed. A long IMAGE batch runs a chunk of frames at a time
(frames.py). Progress bar and previews are ComfyUI's."""

from __future__ import annotations

import logging

import comfy.samplers
import torch

from ..plugin_core import RestoreSettings, tile_advice
from ..plugin_core.restore import OUTPUT_SIZES
from .api import io
from .apply import guidance_input, strength_input
from .frames import restore_frames
from .plugin_types import TaskPluginsIO
from .restore_backend import ComfyRestoreBackend, Sampling
from .search import RESTORE_WORDS, TASK_WORDS, advanced
from .tiles import DEFAULTS, color_fix_input, tile_inputs, tile_settings
from .validation import Choice, Float

CATEGORY = "Diff-Plugin"
SETTINGS, SAMPLING = RestoreSettings(), Sampling()
BATCH_SIZE = 4  # frames restored together by default


def restore_images(model, plugin_set, clip_vision, vae, image, settings: RestoreSettings, sampling: Sampling, *,
                   batch_size: int = BATCH_SIZE, same_noise: bool = False) -> torch.Tensor:
    """Every image with its own chain (the selector's choice per image), `batch_size` at a time
    (frames.py), back in order as one IMAGE."""
    backend = ComfyRestoreBackend(model, vae, clip_vision, sampling)
    return restore_frames(backend, image, plugin_set.groups_for(image.shape[0]), settings, batch_size=batch_size,
                          same_noise=same_noise)


class RestoreWithTaskPlugins(io.ComfyNode):
    SEARCH_ALIASES = (*TASK_WORDS, *RESTORE_WORDS)

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RestoreWithTaskPlugins",
            display_name="Restore with Task-Plugins",
            category=CATEGORY,
            description=(
                "Run the given Task-Plugins one after another (e.g. the Plugin-Selector's choice), as the "
                "reference does for multi-task instructions, or as Compose Task-Plugins says (together in one pass, "
                "shares); each image runs what was selected for it. No plugin: the photo is returned unchanged."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD 1.x model."),
                TaskPluginsIO.Input("task_plugins", tooltip="Plugins to run, in order (Plugin-Selector or Load Task-Plugin Library)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE."),
                io.Image.Input("image", tooltip="The degraded photo(s)."),
                advanced(io.Int.Input("seed", default=SETTINGS.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                      tooltip=f"Noise seed; every plugin run starts from it (the reference uses {SETTINGS.seed}).")),
                io.Int.Input("steps", default=SETTINGS.steps, min=1, max=200,
                             tooltip=f"Steps of the first plugin (reference: {SETTINGS.steps})."),
                io.Int.Input("later_steps", default=SETTINGS.later_steps, min=1, max=200,
                             tooltip=f"Steps of every later plugin (reference: {SETTINGS.later_steps})."),
                Float("cfg", default=SAMPLING.cfg, min=1.0, max=30.0, step=0.1,
                      tooltip="1 is the reference; a higher cfg gives the same result at the same cost unless plugin_guidance is on."),
                Choice("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default=SAMPLING.sampler_name,
                       tooltip="Sampler (the reference uses UniPC bh2)."),
                Choice("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default=SAMPLING.scheduler,
                       tooltip="Noise schedule ('normal' spaces timesteps evenly, like the reference)."),
                io.Int.Input("resolution", default=SETTINGS.resolution, min=64, max=4096, step=8,
                             tooltip="The short side is raised to this when smaller; sides rounded to multiples of 8."),
                Choice("output_size", options=list(OUTPUT_SIZES), default=SETTINGS.output_size,
                       tooltip="'original': back to the input's size; 'processed': the working size the plugins ran at."),
                *tile_inputs(),
                advanced(color_fix_input()),
                guidance_input(),
                io.Int.Input("batch_size", default=BATCH_SIZE, min=1, max=4096, optional=True,
                             tooltip="Frames restored together: a longer IMAGE batch (video frames) runs in chunks of this "
                                     "many, so memory does not grow with the frame count. It never changes a frame's result."),
                advanced(io.Boolean.Input("same_noise", default=False, optional=True,
                                          tooltip="Off: each frame starts from its own noise, as KSampler gives a batch. On: every "
                                                  "frame starts from the same noise (as each photo alone would), for steadier video.")),
                strength_input(optional=True),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The restored photo(s).")],
        )

    @classmethod
    def execute(cls, model, task_plugins, clip_vision, vae, image, seed, steps, later_steps, cfg, sampler_name,
                scheduler, resolution, output_size, tile_size=DEFAULTS.size, tile_overlap=DEFAULTS.overlap,
                tile_batch=DEFAULTS.batch, tile_prompt=DEFAULTS.prompt, color_fix=SETTINGS.color_fix,
                plugin_guidance=False, batch_size=BATCH_SIZE, same_noise=False, strength=SETTINGS.strength) -> io.NodeOutput:
        tiles = tile_settings(tile_size, tile_overlap, tile_batch, tile_prompt)  # first: even when nothing runs
        if strength == 0 or not any(group.plugins for group in task_plugins.groups_for(image.shape[0])):
            return io.NodeOutput(image)  # nothing runs (plugin_core's composed): the IMAGE itself, not a round trip
        settings = RestoreSettings(steps=steps, later_steps=later_steps, seed=seed, resolution=resolution, output_size=output_size,
                                   color_fix=color_fix, tiles=tiles, strength=strength, **task_plugins.composition)
        sampling = Sampling(cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, guidance=plugin_guidance)
        if advice := tile_advice(settings, image.shape[2], image.shape[1], model.load_device, names=("tile_size", "tile_overlap")):
            logging.getLogger("diffplugin").warning("Diff-Plugin: ComfyUI runs on the CPU: %s", advice)
        return io.NodeOutput(restore_images(model, task_plugins, clip_vision, vae, image, settings, sampling, batch_size=batch_size,
                                            same_noise=same_noise))
