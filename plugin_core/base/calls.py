"""The calls a restore and a training step make on the frozen diffusers / transformers base:
the UNet with Fp as its context and the SCB residuals on its first skips, the VAE posterior,
and CLIP vision hidden states. Used by restoring (restore/) and training (training/) alike."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from .. import images as imaging


def unet_skip_count(unet) -> int:
    """How many skip tensors a diffusers UNet's down path produces."""
    count = 1  # conv_in
    for block in unet.down_blocks:
        count += len(block.resnets) + (len(block.downsamplers) if getattr(block, "downsamplers", None) else 0)
    return count


def unet_with_residuals(unet, latents: torch.Tensor, timestep, visual_prompt: torch.Tensor, residuals) -> torch.Tensor:
    """The UNet with Fp as the context and the SCB residuals on its first skips."""
    zero = torch.zeros((), device=latents.device, dtype=latents.dtype)
    return unet(
        latents,
        timestep,
        encoder_hidden_states=visual_prompt,
        # diffusers zips these with its skips, so the list must cover every skip;
        # a (zero) mid residual makes it treat them as ControlNet-style skip residuals.
        down_block_additional_residuals=list(residuals) + [zero] * (unet_skip_count(unet) - len(residuals)),
        mid_block_additional_residual=zero,
    ).sample


@torch.no_grad()
def vae_posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A diffusers VAE's posterior for pixels in [-1, 1], scaled as the UNet reads latents:
    ((mean - shift) x scaling_factor, std x scaling_factor), float32."""
    posterior = vae.encode(pixels.to(next(vae.parameters()).dtype)).latent_dist
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = vae.config.scaling_factor
    return ((posterior.mean - shift) * scale).float(), (posterior.std * scale).float()


@torch.no_grad()
def clip_hidden_states(model, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """A transformers CLIPVisionModel's hidden states at `layer` (before the post layer-norm;
    the last layer is `last_hidden_state`) for preprocessed pixels."""
    if layer == model.config.num_hidden_layers:
        return model(pixel_values=pixels).last_hidden_state
    return model(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]


def clip_vision_tokens(model, images: Sequence[Image.Image], layer: int, device="cpu", dtype=torch.float32,
                       batch: int = 16) -> torch.Tensor:
    """CLIP vision tokens of images with the reference's preprocessing; [images, 1 + patches, width]."""
    return torch.cat([
        clip_hidden_states(model, imaging.clip_pixels([imaging.to_rgb(i) for i in images[start : start + batch]]).to(device, dtype), layer)
        for start in range(0, len(images), batch)
    ])
