"""What the trainer needs from a frozen base model (`TrainingBackend`), and that backend on
diffusers / transformers models (`DiffusersTrainingBackend`, the command line).

The ComfyUI node pack has its own training backend over ComfyUI's MODEL, VAE and CLIP_VISION
(nodes/training_backend.py); restoring's backends are restore/backend.py's. The trainer never
touches a base model directly, so the recipe lives in one place. Pixels here are tensors in
[-1, 1] (a training batch), not PIL images as a restore backend takes.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..base import clip_hidden_states, unet_with_residuals, vae_posterior
from ..images import training_clip_pixels
from ..models import BaseFacts


class TrainingBackend(Protocol):
    device: torch.device
    facts: BaseFacts  # what the plugin is built for and must fit
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: torch.Tensor  # [num_train_timesteps], float32, CPU

    def encode_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B,3,H,W] in [-1,1] -> scaled posterior (mean, std). No autograd."""

    def clip_tokens_of_pixels(self, pixels: torch.Tensor, layer: int) -> torch.Tensor:
        """Pixels [B,3,H,W] in [-1,1] -> CLIP vision hidden states at `layer`, class token first. No autograd."""

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, visual_prompt: torch.Tensor, residuals: list) -> torch.Tensor:
        """The frozen UNet with Fp as context and the SCB residuals on the first three skips."""

    def enable_gradient_checkpointing(self) -> None: ...

    def unet_state(self) -> dict[str, torch.Tensor]:
        """The UNet's weights in diffusers' names (at least conv_in, time_embedding, down_blocks.0),
        for an SCB started from its first level (SpatialComplementBranch.from_unet)."""


class DiffusersTrainingBackend:
    """`TrainingBackend` over diffusers' UNet2DConditionModel / AutoencoderKL and transformers' CLIPVisionModel."""

    def __init__(self, models, device="cpu", dtype=torch.float32):
        from diffusers import DDPMScheduler

        self.models = models
        self.device = torch.device(device)
        self.dtype = dtype
        self.facts = models.facts()
        noise = DDPMScheduler.from_config(models.scheduler.config)
        self.prediction_type = noise.config.prediction_type
        self.alphas_cumprod = noise.alphas_cumprod.float()

    def encode_distribution(self, pixels):
        return vae_posterior(self.models.vae, pixels.to(self.device))

    def clip_tokens_of_pixels(self, pixels, layer):
        x = training_clip_pixels(pixels.to(self.device, torch.float32)).to(self.dtype)
        return clip_hidden_states(self.models.clip_vision, x, layer).float()

    def predict(self, noisy, timesteps, visual_prompt, residuals):
        return unet_with_residuals(self.models.unet, noisy, timesteps, visual_prompt, residuals)

    def enable_gradient_checkpointing(self):
        self.models.unet.enable_gradient_checkpointing()

    def unet_state(self):
        return self.models.unet.state_dict()
