"""What the trainer needs from a frozen base model, behind one small interface.

`DiffusersBackend` runs diffusers / transformers models (the command line); the ComfyUI
node pack provides its own backend over ComfyUI's MODEL, VAE and CLIP_VISION. The trainer
never touches a base model directly, so the recipe lives in one place.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .images import CLIP_MEAN, CLIP_SIZE, CLIP_STD
from .plugin import TaskPlugin


class TrainingBackend(Protocol):
    device: torch.device
    context_width: int
    channels: int
    clip_width: int
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: torch.Tensor  # [num_train_timesteps], float32, CPU

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B,3,H,W] in [-1,1] -> scaled posterior (mean, std). No autograd."""

    def clip_tokens(self, pixels: torch.Tensor, layer: int) -> torch.Tensor:
        """Pixels in [-1,1] -> CLIP vision hidden states at `layer`, class token first. No autograd."""

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, visual_prompt: torch.Tensor, residuals: list) -> torch.Tensor:
        """The frozen UNet with Fp as context and the SCB residuals on the first three skips."""

    def enable_gradient_checkpointing(self) -> None: ...

    def first_level_state(self) -> dict[str, torch.Tensor]:
        """UNet weights in SCB naming (conv_in, time embedding, first down block) for initialising an SCB."""

    def render(self, plugin: TaskPlugin, images: Sequence[Image.Image], steps: int, seed: int) -> list[Image.Image]:
        """Restore images with the plugin (validation previews)."""


def training_clip_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """The reference training's CLIP input: [-1,1] -> [0,1], bilinear squash to 224, OpenAI mean/std."""
    x = (pixels + 1.0) / 2.0
    x = F.interpolate(x, size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class DiffusersBackend:
    """Backend over diffusers' UNet2DConditionModel / AutoencoderKL and transformers' CLIPVisionModel."""

    def __init__(self, models, device="cpu", dtype=torch.float32):
        from diffusers import DDPMScheduler

        from .pipeline import Restorer

        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        self.restorer = Restorer(models, device=device, dtype=dtype)
        unet_config = models.unet.config
        self.context_width = unet_config.cross_attention_dim
        self.channels = unet_config.block_out_channels[0]
        self.clip_width = models.clip_vision.config.hidden_size
        noise = DDPMScheduler.from_config(models.scheduler.config)
        self.prediction_type = noise.config.prediction_type
        self.alphas_cumprod = noise.alphas_cumprod.float()

    @torch.no_grad()
    def encode(self, pixels):
        vae = self.models.vae
        vae_dtype = next(vae.parameters()).dtype
        posterior = vae.encode(pixels.to(self.device, vae_dtype)).latent_dist
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        scale = vae.config.scaling_factor
        return ((posterior.mean - shift) * scale).float(), (posterior.std * scale).float()

    @torch.no_grad()
    def clip_tokens(self, pixels, layer):
        model = self.models.clip_vision
        x = training_clip_pixels(pixels.to(self.device, torch.float32)).to(self.dtype)
        last = layer == model.config.num_hidden_layers
        output = model(pixel_values=x, output_hidden_states=not last)
        return (output.last_hidden_state if last else output.hidden_states[layer]).float()

    def predict(self, noisy, timesteps, visual_prompt, residuals):
        return self.restorer.unet_with_residuals(noisy, timesteps, visual_prompt, residuals)

    def enable_gradient_checkpointing(self):
        self.models.unet.enable_gradient_checkpointing()

    def first_level_state(self):
        unet = self.models.unet
        state = {f"controlnet_cond_embedding.{k}": v for k, v in unet.conv_in.state_dict().items()}
        state.update({f"time_embedding.{k}": v for k, v in unet.time_embedding.state_dict().items()})
        state.update({f"down_blocks.0.{k}": v for k, v in unet.down_blocks[0].state_dict().items()})
        return state

    def render(self, plugin, images, steps, seed):
        return self.restorer.restore(list(images), [plugin], steps=steps, seed=seed).images
