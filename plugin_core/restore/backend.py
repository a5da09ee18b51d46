"""What the restore recipe needs from a frozen base model (`RestoreBackend`), and that backend on
diffusers / transformers models (`DiffusersRestoreBackend`), as the reference runs it.

The ComfyUI node pack has its own restore backend over ComfyUI's MODEL, VAE and CLIP_VISION
(nodes/restore_backend.py); training's backends are training/backend.py's. The recipe
(recipe.py) calls a backend only through `RestoreBackend`; `Restorer` (restorer.py) is the front
door over a `DiffusersRestoreBackend`.

The diffusers loop, per plugin: Fp = TPB(CLIP vision tokens) once; every step `residuals =
SCB(z_in, t, Fp)` and `eps = UNet(z_t, t, context=Fp, skips += residuals)`; no classifier-free
guidance. The first latent is the input latent noised to t while `t >= renoise_until` ("input"
start) or the seeded noise itself ("noise" start).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

import torch
from PIL import Image

from .. import images as imaging
from ..base import BaseModels, clip_vision_tokens, joint_cross_attention, unet_with_residuals, vae_posterior
from ..errors import PluginError
from ..models import TaskPlugin
from ..models.fit import BaseFacts
from ..tiling import TilePlan
from .meter import ProgressFn
from .settings import RestoreSettings
from .vae_bands import decode_in_bands, encode_in_bands


class RestoreBackend(Protocol):
    """What the recipe needs from a base model. Latents are the backend's own (what its
    `encode_images` gives, its `sample` starts from and its `decode` takes); the recipe only
    passes them on."""

    vae_factor: int  # image pixels per latent pixel, per side
    device: torch.device

    @property
    def facts(self) -> BaseFacts: ...

    def clip_tokens(self, images: Sequence[Image.Image], layer: int) -> torch.Tensor:
        """CLIP vision hidden states at `layer` of PIL images, with the reference's preprocessing,
        [B, 1 + N, width] (class token first)."""

    def encode_images(self, images: Sequence[Image.Image], tiled: bool = False):
        """The backend's latents of same-size PIL working images (diffusers: the scaled posterior
        mean the SCB reads; ComfyUI: the LATENT's samples)."""

    def sample(self, plugin, input_latent, visual_prompt: torch.Tensor, *, steps: int, seed: int, renoise_until: int,
               plan, tile_batch: int, progress: ProgressFn | None):
        """The denoising loop of one plugin; returns the final latents."""

    def decode(self, latents, tiled: bool = False) -> list[Image.Image]:
        """8-bit PIL images of the backend's latents."""


class DiffusersRestoreBackend:
    """`RestoreBackend` on diffusers / transformers models (a frozen SD-1.x base): CLIP vision
    tokens, the VAE (by bands under tiling) and the reference's UniPC denoising loop."""

    def __init__(self, models: BaseModels, device="cpu", dtype=torch.float32):
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        if self.device.type == "cpu" and dtype == torch.float16:
            raise PluginError("float16 is not supported on the CPU; use bfloat16 or float32")
        self.vae_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
        self.facts: BaseFacts = models.facts()

    # ------------------------------------------------------------------ CLIP vision and the VAE

    def clip_tokens(self, images: Sequence[Image.Image], layer: int) -> torch.Tensor:
        """CLIP vision hidden states at `layer` (before post-LN) of PIL images, class token first."""
        return clip_vision_tokens(self.models.clip_vision, images, layer, self.device, self.dtype)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean of the VAE for pixels [B, 3, H, W] in [-1, 1]: the latent the SCB reads."""
        return vae_posterior(self.models.vae, pixels.to(self.device))[0]

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], tiled: bool = False) -> torch.Tensor:
        """`encode_pixels` of same-size PIL images; under VAE tiling (`tiled`, or switched on by the
        caller) a band of rows at a time, so no float copy of a large photo is held."""
        with self.vae_tiling(tiled):
            band = 2 * getattr(self.models.vae, "tile_latent_min_size", 0)
            if not getattr(self.models.vae, "use_tiling", False) or images[0].height // self.vae_factor <= band:
                return self.encode_pixels(imaging.vae_pixels(list(images)))
            return encode_in_bands(self.encode_pixels, list(images), band, self.vae_factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool = False) -> list[Image.Image]:
        """8-bit PIL images of scaled latents (by bands of rows under VAE tiling)."""
        vae = self.models.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents / vae.config.scaling_factor + shift).to(next(vae.parameters()).dtype)
        with self.vae_tiling(tiled):
            band = 2 * getattr(vae, "tile_latent_min_size", 0)
            if not getattr(vae, "use_tiling", False) or latents.shape[-2] <= band:
                return imaging.to_pil(vae.decode(latents).sample)
            return [Image.fromarray(array) for array in self._decode_bands(latents, band, max(1, band // 8))]

    def _decode_bands(self, latents: torch.Tensor, band: int, overlap: int):
        return decode_in_bands(self.models.vae, latents, band, overlap, self.vae_factor)

    @contextlib.contextmanager
    def vae_tiling(self, enabled: bool):
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

    def scheduler(self):
        """A fresh UniPC scheduler, as the reference ran it."""
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
               renoise_until: int = RestoreSettings.renoise_until, start_mode: str | None = None,
               progress: ProgressFn | None = None, plan: TilePlan | None = None, tile_batch: int = 1) -> torch.Tensor:
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
        scheduler = self.scheduler()
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
                prediction = self.predict_with_plugin(plugin, latents, t, input_latent, visual_prompt, plan, tile_batch, tick)
                latents = scheduler.step(prediction.float(), t, latents, return_dict=False)[0]
                if not torch.isfinite(latents).all():
                    raise PluginError(
                        f"non-finite values in the latents after step {index + 1} of plugin '{plugin.task}'"
                        + (" (half-precision overflow? try --dtype float32)" if self.dtype != torch.float32 else ""))
                if tick:
                    tick(calls)
        return latents if covered is None else covered * latents + (1 - covered) * input_latent

    @torch.no_grad()
    def predict_with_plugin(self, plugin: TaskPlugin, latents, timestep, input_latent, visual_prompt,
                            plan: TilePlan | None = None, tile_batch: int = 1, tick=None,
                            regions: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising call: the plugin's SCB residuals for this timestep, then the UNet. With a
        plan, one call per batch of tiles, each tile with its crop of x_t, of the input latent and
        of the plugins' regions, and its Fp; the predictions blended (float32)."""
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
            return self.predict_with_plugin(plugin, plan.crop(latents, batch), timestep, plan.crop(input_latent, batch), prompt,
                                            regions=crop).float()

        return plan.predict(latents, tile_batch, call, dtype=torch.float32, tick=tick)


def _regions_of(plugin, latent: torch.Tensor) -> torch.Tensor | None:
    """A PluginMix's regions over the whole latent ([M, B, 1, h, w] on its device), or None."""
    maps = plugin.region_maps(*latent.shape[-2:], latent.shape[0]) if hasattr(plugin, "region_maps") else None
    return None if maps is None else maps.to(latent.device)
