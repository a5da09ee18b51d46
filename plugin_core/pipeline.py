"""Headless restoration on diffusers / transformers components, as the reference runs it.

Per plugin: Fp = TPB(CLIP vision tokens of the original image) once; every step
`residuals = SCB(z_in, t, Fp)` and `eps = UNet(z_t, t, context=Fp, skips += residuals)`;
no classifier-free guidance. The first latent is the input latent noised to t while
`t >= threshold` ("input" start) or the seeded noise itself ("noise" start).
Several plugins run one after another on the previous (uint8) output with `later_steps`
steps each, Fp always from the original image, the generator re-seeded for each.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from . import images as imaging
from .errors import InputImageError, PluginError, PluginMismatchError
from .models import TaskPlugin
from .selector import NULL_TASK, PluginSelector, Selection, select, text_encoder_for
from .selector.text import ClipTextEncoder

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
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.models.vae
        vae_dtype = next(vae.parameters()).dtype
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        decoded = vae.decode((latents / vae.config.scaling_factor + shift).to(vae_dtype)).sample
        return imaging.to_pil(decoded)

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
    ) -> torch.Tensor:
        """The reference loop for a batch of same-size latents; returns the final latents (float32)."""
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
        for index, t in enumerate(timesteps):
            if start_mode == "input" and int(t) >= threshold:
                latents = self.noised(input_latent, noise, int(t))
            prediction = self.predict(plugin, latents, t, cond, context)
            latents = scheduler.step(prediction.float(), t, latents, return_dict=False)[0]
            if not torch.isfinite(latents).all():
                raise PluginError(
                    f"non-finite values in the latents after step {index + 1} of plugin '{plugin.task}'"
                    + (" (half-precision overflow? try --dtype float32)" if self.dtype != torch.float32 else "")
                )
            if progress:
                progress(index + 1, len(timesteps))
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
        progress: ProgressFn | None = None,
    ) -> RestoreResult:
        """Each group's images (indices into `images`) with its own plugins, in order (e.g. what
        the selector chose for them); results in the order of `images`. Same-size images of a
        group share one batch; progress counts the steps of all of them."""
        if not images:
            raise InputImageError("no images given")
        for _, plugins in groups:
            for plugin in plugins:
                self.check_plugin(plugin)
        originals = [imaging.to_rgb(image) for image in images]
        batches = []  # (image indices of one working size, plugins)
        for indices, plugins in groups:
            by_size: dict[tuple[int, int], list[int]] = {}
            for index in indices:
                size = imaging.working_size(*originals[index].size, resolution=resolution, mode=resize_mode, multiple=self.vae_factor)
                by_size.setdefault(size, []).append(index)
            batches += [(batch, list(plugins)) for batch in by_size.values()]
        chain_steps = lambda plugins: (steps + later_steps * (len(plugins) - 1)) if plugins else 0  # noqa: E731
        total = sum(chain_steps(plugins) for _, plugins in batches)
        done = 0

        def tick(step, _):
            if progress:
                progress(done + step, total)

        tick(0, total)  # the bar shows before the first step

        out_images: list[Image.Image | None] = [None] * len(originals)
        out_latents: list[torch.Tensor | None] = [None] * len(originals)
        for indices, plugins in batches:
            group = [originals[i] for i in indices]
            current = [imaging.resize_for_vae(i, resolution, resize_mode, self.vae_factor) for i in group]
            latents = self.encode(imaging.vae_pixels(current)) if not plugins else None  # no plugin: the photo as it is
            tokens: dict[int, torch.Tensor] = {}
            for order, plugin in enumerate(plugins):
                layer = plugin.info.clip_layer
                if layer not in tokens:
                    tokens[layer] = self.clip_tokens(group, layer)
                visual_prompt = plugin.visual_prompt(tokens[layer].to(next(plugin.parameters()).dtype))
                input_latent = self.encode(imaging.vae_pixels(current))
                latents = self.sample(
                    plugin,
                    input_latent,
                    visual_prompt,
                    steps=steps if order == 0 else later_steps,
                    seed=seed,
                    threshold=threshold,
                    progress=tick,
                )
                done += steps if order == 0 else later_steps
                current = self.decode(latents)
            for position, index in enumerate(indices):
                out_images[index] = current[position]
                out_latents[index] = latents[position].cpu()
        return RestoreResult(out_images, out_latents, [])

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


def _unet_skip_count(unet) -> int:
    """How many skip tensors a diffusers UNet's down path produces."""
    count = 1  # conv_in
    for block in unet.down_blocks:
        count += len(block.resnets) + (len(block.downsamplers) if getattr(block, "downsamplers", None) else 0)
    return count


__all__ = ["BaseModels", "Restorer", "RestoreResult", "NULL_TASK", "clip_hidden_states", "clip_vision_tokens", "vae_posterior"]
