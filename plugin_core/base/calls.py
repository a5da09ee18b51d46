"""The calls a restore and a training step make on the frozen diffusers / transformers base:
the UNet with Fp as its context and the SCB residuals on its first skips, the VAE posterior,
and CLIP vision hidden states. Used by restoring (restore/) and training (training/) alike."""

from __future__ import annotations

import contextlib
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


class _JointCrossAttention:
    """diffusers' AttnProcessor2_0 for a cross-attention (SD's attn2) whose context is a PluginMix's
    joined prompt: the attention itself is the mix's (models/compose.py), the rest is diffusers'."""

    def __init__(self, mix):
        self.mix = mix

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3 or attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("a joint pass of several plugins needs SD's plain cross-attention layers")
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        def attend(q, k, v, bias):
            mask = None if bias is None else bias.view(1, 1, 1, -1)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)

        out = self.mix.attention(attend, query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def joint_cross_attention(unet, mix):
    """While active, the UNet's cross-attentions read a PluginMix's joined prompt by the mix's rule
    (nothing changes for `mix` None)."""
    if mix is None:
        yield
        return
    processors = unet.attn_processors
    unet.set_attn_processor({name: _JointCrossAttention(mix) if name.endswith("attn2.processor") else processor
                             for name, processor in processors.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(processors)
