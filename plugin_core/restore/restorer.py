"""The restore recipe on diffusers / transformers models, as the reference runs it.

`Restorer` is the recipe's backend for the command line, evaluation and scripts: CLIP vision
tokens, the VAE (by bands under tiling) and the reference's denoising loop. Per plugin: Fp =
TPB(CLIP vision tokens) once; every step `residuals = SCB(z_in, t, Fp)` and `eps = UNet(z_t, t,
context=Fp, skips += residuals)`; no classifier-free guidance. The first latent is the input latent
noised to t while `t >= renoise_until` ("input" start) or the seeded noise itself ("noise" start).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from PIL import Image

from .. import images as imaging
from ..base import (
    BaseModels,
    clip_vision_tokens,
    joint_cross_attention,
    unet_with_residuals,
    vae_posterior,
)
from ..errors import PluginError
from ..models import TaskPlugin
from ..models.fit import BaseFacts
from ..selector import PluginSelector, Selection, select, text_encoder_for
from ..selector.text import ClipTextEncoder
from ..tiling import TilePlan
from .meter import ProgressFn
from .recipe import PluginGroup, RestoreResult, restore_groups
from .settings import RestoreSettings
from .vae_bands import decode_in_bands, encode_in_bands


class Restorer:
    """Runs Task-Plugins on images with a frozen SD-1.x base (the recipe's diffusers backend)."""

    def __init__(self, models: BaseModels, device="cpu", dtype=torch.float32):
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        if self.device.type == "cpu" and dtype == torch.float16:
            raise PluginError("float16 is not supported on the CPU; use bfloat16 or float32")
        self.vae_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
        self.facts: BaseFacts = models.facts()
        self._text: ClipTextEncoder | None = None

    # ------------------------------------------------------------------ restoring

    def restore(self, images: Sequence[Image.Image], plugins: Sequence[TaskPlugin], settings: RestoreSettings | None = None,
                *, progress: ProgressFn | None = None, report=None, stage=None, **changes) -> RestoreResult:
        """Apply `plugins` in order to every image (the recipe). changes: RestoreSettings fields
        that differ from `settings` (tile settings as tile_size=..., etc.)."""
        return self.restore_groups(images, [PluginGroup(list(range(len(images))), list(plugins))], settings,
                                   progress=progress, report=report, stage=stage, **changes)

    def restore_groups(self, images: Sequence[Image.Image], groups: Sequence[PluginGroup], settings: RestoreSettings | None = None,
                       *, progress: ProgressFn | None = None, report=None, stage=None, **changes) -> RestoreResult:
        """Each group's images with its own plugins (e.g. what the selector chose for them);
        progress, report, stage: see recipe.restore_groups."""
        settings = (settings or RestoreSettings()).replace(**changes)
        return restore_groups(self, images, groups, settings, progress=progress, report=report, stage=stage)

    def render(self, plugin: TaskPlugin, images: Sequence[Image.Image], steps: int, seed: int) -> list[Image.Image]:
        """One plugin on `images` with `steps` and `seed`, the rest the defaults (a training run's
        validation images)."""
        return self.restore(list(images), [plugin], steps=steps, seed=seed).images

    # ------------------------------------------------------------------ the recipe's backend

    def clip_tokens(self, images: Sequence[Image.Image], layer: int) -> torch.Tensor:
        """CLIP vision hidden states at `layer` (before post-LN), class token first."""
        return clip_vision_tokens(self.models.clip_vision, images, layer, self.device, self.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean of the VAE: the latent the SCB reads."""
        return vae_posterior(self.models.vae, pixels.to(self.device))[0]

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], tiled: bool = False) -> torch.Tensor:
        """`encode` of same-size images; under VAE tiling (`tiled`, or switched on by the caller) a
        band of rows at a time, so no float copy of a large photo is held."""
        with self._vae_tiling(tiled):
            band = 2 * getattr(self.models.vae, "tile_latent_min_size", 0)
            if not getattr(self.models.vae, "use_tiling", False) or images[0].height // self.vae_factor <= band:
                return self.encode(imaging.vae_pixels(list(images)))
            return encode_in_bands(self.encode, list(images), band, self.vae_factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool = False) -> list[Image.Image]:
        vae = self.models.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents / vae.config.scaling_factor + shift).to(next(vae.parameters()).dtype)
        with self._vae_tiling(tiled):
            band = 2 * getattr(vae, "tile_latent_min_size", 0)
            if not getattr(vae, "use_tiling", False) or latents.shape[-2] <= band:
                return imaging.to_pil(vae.decode(latents).sample)
            return [Image.fromarray(array) for array in self._decode_bands(latents, band, max(1, band // 8))]

    def _decode_bands(self, latents: torch.Tensor, band: int, overlap: int):
        return decode_in_bands(self.models.vae, latents, band, overlap, self.vae_factor)

    @contextlib.contextmanager
    def _vae_tiling(self, enabled: bool):
        """diffusers' own tiled VAE while `enabled`: no full-resolution activation is held."""
        vae = self.models.vae
        switch = enabled and hasattr(vae, "enable_tiling") and not getattr(vae, "use_tiling", False)
        if switch:
            vae.enable_tiling()
        try:
            yield
        finally:
            if switch:
                vae.disable_tiling()

    # ------------------------------------------------------------------ sampling

    def _scheduler(self):
        from diffusers import UniPCMultistepScheduler

        # As diffusers 0.17 ran UniPC for the reference: timesteps linspace(0, 999) whatever
        # spacing the SD folder names, and the last step ends at alpha_bar(0), not sigma 0.
        return UniPCMultistepScheduler.from_config(
            self.models.scheduler.config, timestep_spacing="linspace", final_sigmas_type="sigma_min"
        )

    def noised(self, latent: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """DDPM forward process: sqrt(a_t) z + sqrt(1 - a_t) eps, as the reference's add_noise."""
        alpha_bar = self.models.scheduler.alphas_cumprod[int(timestep)].to(torch.float32)
        return alpha_bar.sqrt() * latent + (1 - alpha_bar).sqrt() * noise

    @torch.no_grad()
    def sample(self, plugin: TaskPlugin, input_latent: torch.Tensor, visual_prompt: torch.Tensor, *, steps: int, seed: int,
               renoise_until: int = 960, start_mode: str | None = None, progress: ProgressFn | None = None,
               plan: TilePlan | None = None, tile_batch: int = 1) -> torch.Tensor:
        """The reference loop for a batch of same-size latents; returns the final latents (float32).

        plan: tiles over the latent (then visual_prompt is one Fp for all, [B, N, C], or one per
        tile, [tiles, B, N, C]); each step every tile gets its own UNet call, `tile_batch` tiles
        at a time, and the scheduler steps the blend. progress(done, total) counts UNet calls."""
        start_mode = start_mode or plugin.start_mode
        batch, _, height, width = input_latent.shape
        # The reference draws one (1, 4, h, w) normal from a freshly seeded CPU generator per
        # image: every image of a batch gets that same draw, as if run on its own.
        noise = torch.randn((1, 4, height, width), generator=torch.Generator().manual_seed(seed))
        noise = noise.to(self.device).expand(batch, -1, -1, -1)
        latents = noise.clone() if start_mode == "noise" else input_latent.clone()
        scheduler = self._scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps.long()
        calls = 1 if plan is None else len(plan.batches(tile_batch))
        covered = plugin.coverage(height, width, batch) if hasattr(plugin, "coverage") else None
        covered = None if covered is None else covered.to(self.device)
        with joint_cross_attention(self.models.unet, plugin if hasattr(plugin, "plugins") else None):  # a PluginMix's prompts
            for index, t in enumerate(timesteps):
                if start_mode == "input" and int(t) >= renoise_until:
                    latents = self.noised(input_latent, noise, int(t))
                if covered is not None:  # outside the plugins' regions the input passes through (ComfyUI's noise mask)
                    latents = covered * latents + (1 - covered) * self.noised(input_latent, noise, int(t))
                tick = (lambda call: progress(index * calls + call, len(timesteps) * calls)) if progress else None
                prediction = self.predict(plugin, latents, t, input_latent, visual_prompt, plan, tile_batch, tick)
                latents = scheduler.step(prediction.float(), t, latents, return_dict=False)[0]
                if not torch.isfinite(latents).all():
                    raise PluginError(
                        f"non-finite values in the latents after step {index + 1} of plugin '{plugin.task}'"
                        + (" (half-precision overflow? try --dtype float32)" if self.dtype != torch.float32 else ""))
                if tick:
                    tick(calls)
        return latents if covered is None else covered * latents + (1 - covered) * input_latent

    @torch.no_grad()
    def predict(self, plugin: TaskPlugin, latents, timestep, input_latent, visual_prompt, plan: TilePlan | None = None,
                tile_batch: int = 1, tick=None, regions: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising call: the SCB residuals for this timestep, then the UNet. With a plan, one
        call per batch of tiles, each tile with its crop of x_t, of the input latent and of the
        plugins' regions, and its Fp; the predictions blended (float32)."""
        context, input_latent = visual_prompt.to(self.dtype), input_latent.to(self.dtype)
        regions = regions if regions is not None else _regions_of(plugin, input_latent)
        if plan is None:
            residuals = plugin.skip_residuals(input_latent, timestep, context, regions) if regions is not None \
                else plugin.skip_residuals(input_latent, timestep, context)
            with plugin.regions_for_call(regions) if regions is not None else contextlib.nullcontext():
                return unet_with_residuals(self.models.unet, latents.to(self.dtype), timestep, context, residuals)

        def call(batch: list[int]) -> torch.Tensor:
            prompt = torch.cat([context[i] if context.ndim == 4 else context for i in batch])
            crop = None if regions is None else torch.stack([plan.crop(member, batch) for member in regions])
            return self.predict(plugin, plan.crop(latents, batch), timestep, plan.crop(input_latent, batch), prompt,
                                regions=crop).float()

        return plan.predict(latents, tile_batch, call, dtype=torch.float32, tick=tick)

    # ------------------------------------------------------------------ selecting

    @property
    def text_encoder(self) -> ClipTextEncoder:
        """SD's CLIP-L pooled text embeddings, as the reference selector reads them."""
        if self._text is None:
            if self.models.text_encoder is None or self.models.tokenizer is None:
                raise PluginError("selection needs SD's text encoder and tokenizer")
            self._text = ClipTextEncoder(self.models.text_encoder, self.models.tokenizer, self.device)
        return self._text

    def select_each(self, images: Sequence[Image.Image], instruction: str, plugins: Sequence[TaskPlugin],
                    selector: PluginSelector, select_threshold: float = 0.0) -> list[Selection]:
        """Score every plugin for each image and the instruction (CLIP vision runs once per image)."""
        if not plugins:
            raise PluginError("no plugins to select from")
        clip = self.text_encoder if self.models.text_encoder is not None else None
        encoder = text_encoder_for(selector.text_encoder, clip)
        originals = [imaging.to_rgb(image) for image in images]
        return select(selector, encoder, instruction, plugins, lambda layer: self.clip_tokens(originals, layer),
                      select_threshold, clip_width=self.facts.clip_width)

    def select(self, image: Image.Image, instruction: str, plugins: Sequence[TaskPlugin], selector: PluginSelector,
               select_threshold: float = 0.0) -> Selection:
        """Score every plugin for this image and instruction; CLIP vision runs once."""
        return self.select_each([image], instruction, plugins, selector, select_threshold)[0]


def _regions_of(plugin, latent: torch.Tensor) -> torch.Tensor | None:
    """A PluginMix's regions over the whole latent ([M, B, 1, h, w] on its device), or None."""
    maps = plugin.region_maps(*latent.shape[-2:], latent.shape[0]) if hasattr(plugin, "region_maps") else None
    return None if maps is None else maps.to(latent.device)
