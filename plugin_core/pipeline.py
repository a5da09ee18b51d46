"""Headless restoration on diffusers / transformers components, as the reference runs it.

Per plugin: Fp = TPB(CLIP vision tokens of the original image) once; every step
`residuals = SCB(z_in, t, Fp)` and `eps = UNet(z_t, t, context=Fp, skips += residuals)`;
no classifier-free guidance. The first latent is the input latent noised to t while
`t >= threshold` ("input" start) or the seeded noise itself ("noise" start).
Several plugins run one after another on the previous (uint8) output with `later_steps`
steps each, Fp always from the original image, the generator re-seeded for each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import images as imaging
from .colorfix import check_color_fix, fix_colors
from .errors import InputImageError, PluginError, PluginMismatchError
from .models import TaskPlugin
from .selector import NULL_TASK, PluginSelector, Selection, select, text_encoder_for
from .selector.text import ClipTextEncoder
from .tiling import TilePlan, TileSettings

log = logging.getLogger("diffplugin")

ProgressFn = Callable[[int, int], None]


@dataclass
class BaseModels:
    """The frozen parts: an SD-1.x UNet, VAE and scheduler, CLIP vision, and optionally
    SD's CLIP text encoder (for the Plugin-Selector)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    clip_vision: torch.nn.Module
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None

    @classmethod
    def from_pretrained(
        cls, sd_dir: Path | str, clip_vision: Path | str, *, with_text: bool = False, device="cpu", dtype=torch.float32
    ) -> "BaseModels":
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler

        sd_dir = Path(sd_dir)
        check_base_folders(sd_dir, clip_vision, with_text=with_text)
        # The VAE stays float32 in half-precision runs: SD's VAE overflows in fp16.
        vae_dtype = torch.float32 if dtype == torch.float16 else dtype
        models = cls(
            unet=UNet2DConditionModel.from_pretrained(sd_dir / "unet", torch_dtype=dtype).to(device).eval().requires_grad_(False),
            vae=AutoencoderKL.from_pretrained(sd_dir / "vae", torch_dtype=vae_dtype).to(device).eval().requires_grad_(False),
            scheduler=UniPCMultistepScheduler.from_pretrained(sd_dir / "scheduler"),
            clip_vision=load_clip_vision(clip_vision, device, dtype),
        )
        if with_text:
            models.text_encoder, models.tokenizer = load_clip_text(sd_dir, device, dtype)
        return models


CLIP_VISION_TYPES = ("clip_vision_model", "clip")  # transformers' CLIPVisionModel and CLIPModel folders


def check_base_folders(sd_dir: Path | str | None, clip_vision: Path | str | None, *, with_text: bool = False) -> None:
    """Refuse folders that are not what they are given as, before anything loads."""
    if sd_dir is not None:
        sd_dir = Path(sd_dir)
        if not sd_dir.is_dir():
            raise PluginError(f"--sd {sd_dir}: folder not found (a diffusers Stable Diffusion 1.x folder)")
        for sub in ("unet", "vae", "scheduler") + (("text_encoder", "tokenizer") if with_text else ()):
            if not (sd_dir / sub).is_dir():
                raise PluginError(f"--sd {sd_dir}: not a diffusers Stable Diffusion folder (no {sub}/)")
    if clip_vision is not None:
        config = Path(clip_vision) / "config.json"
        if not config.is_file():
            raise PluginError(f"--clip-vision {clip_vision}: not a transformers CLIP vision folder (no config.json); "
                              "give e.g. a download of openai/clip-vit-large-patch14")
        try:
            kind = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind not in CLIP_VISION_TYPES:
            raise PluginError(f"--clip-vision {clip_vision}: config.json describes a {kind!r} model, not CLIP "
                              f"({' or '.join(CLIP_VISION_TYPES)}); give e.g. a download of openai/clip-vit-large-patch14")


def load_clip_vision(path: Path | str, device="cpu", dtype=torch.float32) -> torch.nn.Module:
    """transformers' CLIPVisionModel (from a CLIPVisionModel or CLIPModel folder), frozen."""
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(path, torch_dtype=dtype).to(device).eval().requires_grad_(False)


def load_clip_text(sd_dir: Path | str, device="cpu", dtype=torch.float32) -> tuple[torch.nn.Module, object]:
    """SD's CLIP-L text encoder and tokenizer from a diffusers SD folder, frozen."""
    from transformers import CLIPTextModel, CLIPTokenizer

    model = CLIPTextModel.from_pretrained(Path(sd_dir) / "text_encoder", torch_dtype=dtype).to(device)
    return model.eval().requires_grad_(False), CLIPTokenizer.from_pretrained(Path(sd_dir) / "tokenizer")


@dataclass
class RestoreResult:
    images: list[Image.Image]  # at working size (multiples of 8, short side >= resolution)
    latents: list[torch.Tensor]  # final latent of the last plugin, [4, h, w] each
    applied: list[str] = field(default_factory=list)  # task names, in order


class Restorer:
    """Runs Task-Plugins on images with a frozen SD-1.x base."""

    def __init__(self, models: BaseModels, device="cpu", dtype=torch.float32):
        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        if self.device.type == "cpu" and dtype == torch.float16:
            raise PluginError("float16 is not supported on the CPU; use bfloat16 or float32")
        unet_config = models.unet.config
        self.vae_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
        self.skip_count = _unet_skip_count(models.unet)
        self._text: ClipTextEncoder | None = None
        self._unet_context = unet_config.cross_attention_dim
        self._unet_channels = unet_config.block_out_channels[0]
        layers = unet_config.layers_per_block
        self._first_level_layers = layers if isinstance(layers, int) else layers[0]

    # ------------------------------------------------------------------ checks

    def check_plugin(self, plugin: TaskPlugin) -> None:
        """Refuse a plugin that does not fit the base, before any sampling."""
        plugin.check_base(
            context_width=self._unet_context,
            channels=self._unet_channels,
            clip_width=self.models.clip_vision.config.hidden_size,
            what="Stable Diffusion UNet / CLIP vision pair",
        )
        if self._first_level_layers < plugin.config.scb_layers:
            raise PluginMismatchError(
                f"Task-Plugin '{plugin.task}' feeds {plugin.config.scb_layers + 1} full-resolution skips, "
                f"but this UNet's first level has only {self._first_level_layers} layers"
            )
        layers = self.models.clip_vision.config.num_hidden_layers
        if plugin.info.clip_layer > layers:
            raise PluginMismatchError(
                f"Task-Plugin '{plugin.task}' reads CLIP vision layer {plugin.info.clip_layer}, "
                f"but this CLIP vision model has {layers} layers"
            )

    # ------------------------------------------------------------------ encoders

    def clip_tokens(self, images: list[Image.Image], layer: int) -> torch.Tensor:
        """CLIP vision hidden states at `layer` (before post-LN), class token first."""
        return clip_vision_tokens(self.models.clip_vision, images, layer, self.device, self.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean of the VAE: the latent the SCB reads."""
        return vae_posterior(self.models.vae, pixels.to(self.device))[0]

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """`encode` of same-size images; under VAE tiling a band of rows at a time (latent rows
        shared by two bands blended with a linear ramp), so no float copy of a large photo is held."""
        band = 2 * getattr(self.models.vae, "tile_latent_min_size", 0)
        f, height = self.vae_factor, images[0].height // self.vae_factor
        if not getattr(self.models.vae, "use_tiling", False) or height <= band:
            return self.encode(imaging.vae_pixels(images))
        overlap, arrays, top, out = max(1, band // 8), [np.asarray(image) for image in images], 0, None
        while True:
            bottom = min(top + band, height)
            latent = self.encode(imaging.vae_pixels([Image.fromarray(a[top * f : bottom * f]) for a in arrays]))
            if out is None:
                out = latent.new_empty(*latent.shape[:2], height, latent.shape[-1])
            else:
                ramp = ((torch.arange(overlap, dtype=latent.dtype, device=latent.device) + 0.5) / overlap).view(1, 1, -1, 1)
                latent[:, :, :overlap] = out[:, :, top : top + overlap] * (1 - ramp) + latent[:, :, :overlap] * ramp
            out[:, :, top:bottom] = latent
            if bottom == height:
                return out
            top = bottom - overlap

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.models.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents / vae.config.scaling_factor + shift).to(next(vae.parameters()).dtype)
        band = 2 * getattr(vae, "tile_latent_min_size", 0)
        if not getattr(vae, "use_tiling", False) or latents.shape[-2] <= band:
            return imaging.to_pil(vae.decode(latents).sample)
        return [Image.fromarray(array) for array in self._decode_bands(latents, band, max(1, band // 8))]

    def _decode_bands(self, latents: torch.Tensor, band: int, overlap: int) -> np.ndarray:
        """diffusers' tiled decode one band of latent rows at a time, straight into uint8 (its
        tiled_decode holds every decoded tile of the image in float, ~45 bytes a pixel); the
        `overlap` rows shared by two bands are blended with a linear ramp."""
        f, height = self.vae_factor, latents.shape[-2]
        out = np.empty((latents.shape[0], height * f, latents.shape[-1] * f, 3), dtype=np.uint8)
        carry, top = None, 0
        while True:
            bottom = min(top + band, height)
            pixels = self.models.vae.decode(latents[:, :, top:bottom]).sample.float()
            if carry is not None:
                n = carry.shape[2]
                ramp = ((torch.arange(n, dtype=torch.float32, device=pixels.device) + 0.5) / n).view(1, 1, n, 1)
                pixels[:, :, :n] = carry * (1 - ramp) + pixels[:, :, :n] * ramp
            if bottom == height:
                out[:, top * f :] = imaging.to_uint8(pixels)
                return out
            keep = overlap * f
            out[:, top * f : (bottom - overlap) * f] = imaging.to_uint8(pixels[:, :, :-keep])
            carry, top = pixels[:, :, -keep:].clone(), bottom - overlap

    @property
    def text_encoder(self) -> ClipTextEncoder:
        """SD's CLIP-L pooled text embeddings, as the reference selector reads them."""
        if self._text is None:
            if self.models.text_encoder is None or self.models.tokenizer is None:
                raise PluginError("selection needs SD's text encoder and tokenizer")
            self._text = ClipTextEncoder(self.models.text_encoder, self.models.tokenizer, self.device)
        return self._text

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
    def sample(
        self,
        plugin: TaskPlugin,
        input_latent: torch.Tensor,
        visual_prompt: torch.Tensor,
        *,
        steps: int,
        seed: int,
        threshold: int = 960,
        start_mode: str | None = None,
        progress: ProgressFn | None = None,
        plan: TilePlan | None = None,
        tile_batch: int = 1,
    ) -> torch.Tensor:
        """The reference loop for a batch of same-size latents; returns the final latents (float32).

        plan: tiles over the latent (then visual_prompt is one Fp for all, [B, N, C], or one per
        tile, [tiles, B, N, C]); each step every tile gets its own UNet call, `tile_batch` tiles
        at a time, and the scheduler steps the blend. progress(done, total) counts UNet calls."""
        start_mode = start_mode or plugin.start_mode
        batch, _, height, width = input_latent.shape
        # The reference draws one (1, 4, h, w) normal from a freshly seeded CPU generator per
        # image: every image of a batch gets that same draw, as if run on its own.
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, 4, height, width), generator=generator).to(self.device).expand(batch, -1, -1, -1)
        latents = noise.clone() if start_mode == "noise" else input_latent.clone()
        scheduler = self._scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps.long()
        context = visual_prompt.to(self.dtype)
        cond = input_latent.to(self.dtype)
        calls = 1 if plan is None else len(plan.batches(tile_batch))
        for index, t in enumerate(timesteps):
            if start_mode == "input" and int(t) >= threshold:
                latents = self.noised(input_latent, noise, int(t))
            if plan is None:
                prediction = self.predict(plugin, latents, t, cond, context)
            else:
                tick = (lambda call: progress(index * calls + call, len(timesteps) * calls)) if progress else None
                prediction = self.predict_tiles(plugin, latents, t, cond, context, plan, tile_batch, tick)
            latents = scheduler.step(prediction.float(), t, latents, return_dict=False)[0]
            if not torch.isfinite(latents).all():
                raise PluginError(
                    f"non-finite values in the latents after step {index + 1} of plugin '{plugin.task}'"
                    + (" (half-precision overflow? try --dtype float32)" if self.dtype != torch.float32 else "")
                )
            if progress:
                progress((index + 1) * calls, len(timesteps) * calls)
        return latents

    def unet_with_residuals(self, latents, timestep, visual_prompt, residuals) -> torch.Tensor:
        """The UNet with Fp as the context and the SCB residuals on its first skips."""
        zero = torch.zeros((), device=latents.device, dtype=latents.dtype)
        return self.models.unet(
            latents,
            timestep,
            encoder_hidden_states=visual_prompt,
            # diffusers zips these with its skips, so the list must cover every skip;
            # a (zero) mid residual makes it treat them as ControlNet-style skip residuals.
            down_block_additional_residuals=list(residuals) + [zero] * (self.skip_count - len(residuals)),
            mid_block_additional_residual=zero,
        ).sample

    @torch.no_grad()
    def predict(self, plugin: TaskPlugin, latents, timestep, input_latent, visual_prompt) -> torch.Tensor:
        """One denoising call: SCB residuals for this timestep, then the UNet."""
        residuals = plugin.skip_residuals(input_latent, timestep, visual_prompt)
        return self.unet_with_residuals(latents.to(self.dtype), timestep, visual_prompt, residuals)

    @torch.no_grad()
    def predict_tiles(self, plugin: TaskPlugin, latents, timestep, input_latent, visual_prompt, plan: TilePlan,
                      tile_batch: int = 1, tick: Callable[[int], None] | None = None) -> torch.Tensor:
        """One denoising step by tiles: each tile's UNet call reads its crop of x_t, SCB residuals
        from its crop of the input latent and its Fp; the blend of their predictions (float32)."""
        images = latents.shape[0]
        per_tile = visual_prompt.ndim == 4
        out = torch.zeros(latents.shape, dtype=torch.float32, device=latents.device)
        for call, batch in enumerate(plan.batches(tile_batch), 1):
            crop = lambda tensor: torch.cat([plan.tiles[i].crop(tensor) for i in batch])  # noqa: E731
            context = torch.cat([visual_prompt[i] if per_tile else visual_prompt for i in batch])
            prediction = self.predict(plugin, crop(latents), timestep, crop(input_latent), context).float()
            for k, i in enumerate(batch):
                plan.add(out, i, prediction[k * images : (k + 1) * images])
            if tick:
                tick(call)
        return out

    # ------------------------------------------------------------------ public

    def restore(self, images: Sequence[Image.Image], plugins: Sequence[TaskPlugin], **settings) -> RestoreResult:
        """Apply `plugins` in order to every image. Same-size images share one batch.
        settings: restore_groups' (steps, later_steps, seed, threshold, resolution, resize_mode, progress)."""
        result = self.restore_groups(images, [(list(range(len(images))), plugins)], **settings)
        result.applied = [p.task for p in plugins]
        return result

    def restore_groups(
        self,
        images: Sequence[Image.Image],
        groups: Sequence[tuple[list[int], Sequence[TaskPlugin]]],
        *,
        steps: int = 20,
        later_steps: int = 3,
        seed: int = 42,
        threshold: int = 960,
        resolution: int = 512,
        resize_mode: str = "min",
        tiles: TileSettings | None = None,
        color_fix: str = "none",
        progress: ProgressFn | None = None,
        report: Callable[[str], None] | None = None,
    ) -> RestoreResult:
        """Each group's images (indices into `images`) with its own plugins, in order (e.g. what
        the selector chose for them); results in the order of `images`. Same-size images of a
        group share one batch. tiles: when and how a large image is tiled (None: never);
        color_fix: `colorfix.FIXES`. progress(done, total) counts UNet calls (tiles x steps) of all
        of them, from 0 before the first; report(text): the plan and, after the first calls, the
        time and memory it will take."""
        if not images:
            raise InputImageError("no images given")
        check_color_fix(color_fix)
        for _, plugins in groups:
            for plugin in plugins:
                self.check_plugin(plugin)
        originals = [imaging.to_rgb(image) for image in images]
        batches = []  # (image indices of one working size, plugins, tile plan)
        for indices, plugins in groups:
            by_size: dict[tuple[int, int], list[int]] = {}
            for index in indices:
                size = imaging.working_size(*originals[index].size, resolution=resolution, mode=resize_mode, multiple=self.vae_factor)
                by_size.setdefault(size, []).append(index)
            for (width, height), batch in by_size.items():
                plan = tiles.plan(width, height, self.vae_factor) if tiles else None
                batches.append((batch, list(plugins), plan))
                if plan is not None and plugins and report:
                    report(f"{width}x{height}: {plan.describe(self.vae_factor)}, Fp per {tiles.prompt}")
        calls = lambda plugins, plan: (steps + later_steps * (len(plugins) - 1)) * (len(plan.batches(tiles.batch)) if plan else 1) if plugins else 0  # noqa: E731
        meter = _Meter(sum(calls(plugins, plan) for _, plugins, plan in batches), progress, report, self.device)
        out_images: list[Image.Image | None] = [None] * len(originals)
        out_latents: list[torch.Tensor | None] = [None] * len(originals)
        for indices, plugins, plan in batches:
            working = [imaging.resize_for_vae(originals[i], resolution, resize_mode, self.vae_factor) for i in indices]
            with self._vae_tiling(plan is not None):
                current, latents = self._run_chain([originals[i] for i in indices], working, plugins, plan, tiles, meter,
                                                   steps=steps, later_steps=later_steps, seed=seed, threshold=threshold)
            current = fix_colors(current, working, color_fix)
            for position, index in enumerate(indices):
                out_images[index] = current[position]
                out_latents[index] = latents[position].cpu()
        return RestoreResult(out_images, out_latents, [])

    def _run_chain(self, originals, working, plugins, plan, tiles, meter, *, steps, later_steps, seed, threshold):
        """One same-size batch through its plugins: (images, final latents)."""
        current = working
        latents = self.encode_images(current) if not plugins else None  # no plugin: the photo as it is
        tokens: dict[int, torch.Tensor] = {}
        for order, plugin in enumerate(plugins):
            layer = plugin.info.clip_layer
            if layer not in tokens:
                tokens[layer] = self._tokens(originals, working, layer, plan if tiles and tiles.prompt == "tile" else None)
            visual_prompt = plugin.visual_prompt(tokens[layer].to(next(plugin.parameters()).dtype))
            input_latent = self.encode_images(current)
            start = meter.done
            latents = self.sample(
                plugin, input_latent, visual_prompt, steps=steps if order == 0 else later_steps, seed=seed,
                threshold=threshold, progress=lambda done, _, start=start: meter(start + done), plan=plan,
                tile_batch=tiles.batch if tiles else 1,
            )
            current = self.decode(latents)
        return current, latents

    def _tokens(self, originals, working, layer: int, plan: TilePlan | None) -> torch.Tensor:
        """CLIP vision tokens of the original images ([B, 1 + N, W]); with a plan, of each tile
        of the working-size images ([tiles, B, 1 + N, W]): the scale the plugins were trained on."""
        if plan is None:
            return self.clip_tokens(originals, layer)
        return torch.stack([self.clip_tokens(crops, layer) for crops in plan.image_crops(working, self.vae_factor)])

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

    def select_each(
        self,
        images: Sequence[Image.Image],
        instruction: str,
        plugins: Sequence[TaskPlugin],
        selector: PluginSelector,
        threshold: float = 0.0,
    ) -> list[Selection]:
        """Score every plugin for each image and the instruction (CLIP vision runs once per image)."""
        if not plugins:
            raise PluginError("no plugins to select from")
        clip = self.text_encoder if self.models.text_encoder is not None else None
        encoder = text_encoder_for(selector.text_encoder, clip)
        originals = [imaging.to_rgb(image) for image in images]
        return select(selector, encoder, instruction, plugins, lambda layer: self.clip_tokens(originals, layer), threshold,
                      clip_width=self.models.clip_vision.config.hidden_size)

    def select(self, image: Image.Image, instruction: str, plugins: Sequence[TaskPlugin], selector: PluginSelector,
               threshold: float = 0.0) -> Selection:
        """Score every plugin for this image and instruction; CLIP vision runs once."""
        return self.select_each([image], instruction, plugins, selector, threshold)[0]


@torch.no_grad()
def clip_hidden_states(model, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """A transformers CLIPVisionModel's hidden states at `layer` (before the post layer-norm;
    the last layer is `last_hidden_state`) for preprocessed pixels."""
    if layer == model.config.num_hidden_layers:
        return model(pixel_values=pixels).last_hidden_state
    return model(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]


def clip_vision_tokens(model, images: Sequence[Image.Image], layer: int, device="cpu", dtype=torch.float32, batch: int = 16) -> torch.Tensor:
    """CLIP vision tokens of images with the reference's preprocessing; [images, 1 + patches, width]."""
    return torch.cat([
        clip_hidden_states(model, imaging.clip_pixels([imaging.to_rgb(i) for i in images[start : start + batch]]).to(device, dtype), layer)
        for start in range(0, len(images), batch)
    ])


@torch.no_grad()
def vae_posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A diffusers VAE's posterior for pixels in [-1, 1], scaled as the UNet reads latents:
    ((mean - shift) x scaling_factor, std x scaling_factor), float32."""
    posterior = vae.encode(pixels.to(next(vae.parameters()).dtype)).latent_dist
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = vae.config.scaling_factor
    return ((posterior.mean - shift) * scale).float(), (posterior.std * scale).float()


class _Meter:
    """Counts UNet calls for the progress callback, from 0 before the first; after the second call
    reports how long all of them will take and the memory the first took (tiled runs)."""

    def __init__(self, total: int, progress: ProgressFn | None, report: Callable[[str], None] | None, device):
        self.total, self.progress, self.report, self.device = total, progress, report, torch.device(device)
        self.done, self._times = 0, []
        self(0)

    def __call__(self, done: int) -> None:
        self.done = done
        self._times.append(time.perf_counter())
        if self.progress:
            self.progress(done, self.total)
        if self.report and done == 2 and self.total > 2:
            per_call = self._times[-1] - self._times[-2]
            if self.device.type == "cuda":
                peak = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB of GPU memory"
            else:
                peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB of memory"
            self.report(f"{self.total} UNet calls at {per_call:.2f} s each: about {per_call * self.total / 60:.1f} min; "
                        f"{peak} so far (it does not grow with the photo)")


def _unet_skip_count(unet) -> int:
    """How many skip tensors a diffusers UNet's down path produces."""
    count = 1  # conv_in
    for block in unet.down_blocks:
        count += len(block.resnets) + (len(block.downsamplers) if getattr(block, "downsamplers", None) else 0)
    return count


__all__ = ["BaseModels", "Restorer", "RestoreResult", "NULL_TASK", "clip_hidden_states", "clip_vision_tokens", "vae_posterior"]
