"""plugin_core's restore recipe on ComfyUI's MODEL, VAE and CLIP_VISION: `ComfyRestoreBackend`,
the plugin_core.restore.RestoreBackend the recipe calls (CLIP vision tokens, the VAE, sampling
with ComfyUI's own KSampler path on a patched MODEL), and `patch_model`, the one place a MODEL
gets a Task-Plugin (Apply Task-Plugin uses it too). Training's backend: training_backend.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview
import torch
from comfy.patcher_extension import WrappersMP

from . import bridge
from .guidance import PluginGuidance
from .management import unload_with
from .patch import DiffPluginPatch, attention_blocks, remove_plugin_patches

ADDITIONAL_MODELS_KEY = "diff_plugin"


@dataclass(frozen=True)
class Sampling:
    """How ComfyUI samples a plugin's run (KSampler's settings; denoise is always 1.0)."""

    cfg: float = 1.0
    sampler_name: str = "uni_pc_bh2"  # the reference's UniPC bh2
    scheduler: str = "normal"  # evenly spaced timesteps, as the reference
    strength: float = 1.0
    guidance: bool = False  # plugin guidance (guidance.py)


def patch_model(model, plugin, visual_prompt: torch.Tensor, raw: torch.Tensor, *, strength=1.0, start_percent=0.0,
                end_percent=1.0, mask=None, plan=None, tile_batch: int = 1, guidance: bool = False):
    """A clone of `model` carrying the plugin (a TaskPluginHandle, or a PluginMix of them: several in
    one pass): Fp as the cross-attention context, the SCB residuals on the last decoder stage's
    skips, cfg as guidance.py says; and the start LATENT. The input MODEL is never changed; a MODEL
    carries one Task-Plugin (or mix), so an earlier one on it is replaced. visual_prompt: Fp per
    image ([N, tokens, context]) or per tile; raw: the images' VAE latent."""
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got {start_percent} and {end_percent}")
    latent_mask = noise_mask = None
    pixels = [s * bridge.VAE_FACTOR for s in raw.shape[-2:]]
    if mask is not None:
        latent_mask = bridge.resize_mask(mask, raw.shape[-2:], "area")  # scales the residuals
        noise_mask = bridge.resize_mask(mask, pixels, "bilinear")  # keeps the rest
    covered = plugin.coverage(*pixels, raw.shape[0]) if hasattr(plugin, "coverage") else None
    if covered is not None:  # plugins with regions: the rest of the photo passes through, as for a mask
        noise_mask = covered if noise_mask is None else noise_mask * covered
    patched = model.clone()
    if remove_plugin_patches(patched, ADDITIONAL_MODELS_KEY):
        logging.getLogger("diffplugin").info("Diff-Plugin: '%s' replaces the Task-Plugin applied to this MODEL before", plugin.task)
    module, patchers = _managed(plugin, model)
    sampling = model.get_model_object("model_sampling")
    patch = DiffPluginPatch(module, visual_prompt, bridge.scaled_latent(model, raw), sampling,
                            bridge.output_blocks(model), strength=strength, sigma_start=sampling.percent_to_sigma(start_percent),
                            sigma_end=sampling.percent_to_sigma(end_percent), mask=latent_mask, plan=plan, tile_batch=tile_batch)
    patched.set_model_attn2_patch(patch.context_patch)
    patched.set_model_output_block_patch(patch.skip_patch)
    for block, index in attention_blocks(model) if patch.attention_patch is not None else ():
        patched.set_model_attn2_replace(patch.attention_patch, block, index)
    previous = patched.model_options.get("sampler_calc_cond_batch_function")
    patched.set_model_sampler_calc_cond_batch_function(PluginGuidance(patch, guidance, previous))
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, ADDITIONAL_MODELS_KEY, patch.calc_cond_batch)
    if plan is not None:
        patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, ADDITIONAL_MODELS_KEY, patch.apply_model)
    unload_with(patched, ADDITIONAL_MODELS_KEY, patchers)
    # A pure-noise task starts from an empty latent, unless a mask or region keeps part of the photo:
    # then the sampler needs the photo's latent, which it keeps there (and noises fully inside).
    latent = {"samples": raw if plugin.start_mode == "input" or noise_mask is not None else torch.zeros_like(raw)}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask  # outside the mask the sampler keeps the input
    return patched, latent, patch


def _managed(plugin, model):
    """(the plugin module the patch runs, in the MODEL's compute dtype and managed with it; their
    ModelPatchers): one plugin's copy, or the PluginMix over its members' copies."""
    if not hasattr(plugin, "plugins"):
        patcher = plugin.patcher_for(model)
        return patcher.model, [patcher]
    patchers = [member.patcher_for(model) for member in plugin.plugins]
    return plugin.with_members([p.model for p in patchers]), patchers


def ksample(model, seed, steps, cfg, sampler_name, scheduler, conditioning, latent, callback=None):
    """KSampler's own path (noise from the seed and the LATENT's batch_index, previews, progress
    bar: latent_preview's, or `callback(step, x0, x, total_steps)`) at denoise 1.0.

    Not nodes.common_ksampler: this pack's own `nodes` package would shadow ComfyUI's
    `nodes` module wherever the pack folder is on sys.path.
    """
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = callback or latent_preview.prepare_callback(model, steps)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, conditioning, conditioning, latent_image,
        denoise=1.0, noise_mask=latent.get("noise_mask"), callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )


class ComfyRestoreBackend:
    """plugin_core.restore.RestoreBackend over ComfyUI's MODEL, VAE and CLIP_VISION. Latents are ComfyUI's
    (unscaled) LATENT samples; each plugin's run is ComfyUI's sampler on the patched MODEL, which
    noises the input's latent at its first step itself (the reference's renoise rule is the
    diffusers loop's). Every CLIP vision call and VAE encode first stops if the prompt was
    cancelled, and calls `progress()` when done (Apply Task-Plugin's progress bar).

    noise_indices: the frames of a longer IMAGE batch the images of the next samplings are (their
    noise is drawn as KSampler draws it for those positions of the whole batch); None: 0, 1, ...
    A sampling given the recipe's progress(done, total) reports its UNet calls there and leaves
    the sampler's latest preview in `preview`; else it moves ComfyUI's own step bar."""

    vae_factor = bridge.VAE_FACTOR

    def __init__(self, model, vae, clip_vision, sampling: Sampling = Sampling(), progress=None):
        self.model, self.vae, self.clip_vision, self.sampling = model, vae, clip_vision, sampling
        self.device = model.load_device
        self.facts = bridge.base_facts(model, clip_vision)
        self.progress = progress
        self.noise_indices: list[int] | None = None
        self.preview = None

    def _step(self, work, *args):
        comfy.model_management.throw_exception_if_processing_interrupted()
        result = work(*args)
        if self.progress is not None:
            self.progress()
        return result

    def clip_tokens(self, images, layer: int) -> torch.Tensor:
        return self._step(bridge.clip_tokens, self.clip_vision, list(images), layer)

    def encode_images(self, images, tiled: bool = False) -> torch.Tensor:
        return self._step(bridge.encode, self.vae, list(images), tiled)

    def sample(self, plugin, input_latent, visual_prompt, *, steps, seed, renoise_until=None, plan=None, tile_batch=1,
               progress=None) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        patched, latent, _ = patch_model(self.model, plugin, visual_prompt.float().cpu(), input_latent, plan=plan,
                                         strength=self.sampling.strength, tile_batch=tile_batch, guidance=self.sampling.guidance)
        # The plugin replaces the text context, so the sampler's conditioning only has to exist.
        conditioning = [[torch.zeros(1, 77, self.facts.context_width), {}]]
        latent["batch_index"] = self._noise_indices(input_latent.shape[0])
        calls = 1 if plan is None else len(plan.batches(tile_batch))
        callback = None if progress is None else self._step_callback(patched, calls, progress)
        s = self.sampling
        return ksample(patched, seed, steps, s.cfg, s.sampler_name, s.scheduler, conditioning, latent, callback)

    def _noise_indices(self, images: int) -> list[int]:
        if self.noise_indices is None:
            return list(range(images))
        if len(self.noise_indices) != images:
            raise ValueError(f"noise positions for {len(self.noise_indices)} frames, but {images} are sampled")
        return list(self.noise_indices)

    def _step_callback(self, model, calls: int, progress):
        """The sampler's step callback: the preview of x0 kept in `preview`, UNet calls to `progress`."""
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

        def callback(step, x0, x, total_steps):
            self.preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            progress((step + 1) * calls, total_steps * calls)

        return callback

    def decode(self, latents: torch.Tensor, tiled: bool = False):
        decoded = self.vae.decode_tiled(latents, tile_x=64, tile_y=64, overlap=8) if tiled else self.vae.decode(latents)
        return bridge.image_to_pil(decoded.reshape(-1, *decoded.shape[-3:]))  # 8-bit, as the reference passes it on
