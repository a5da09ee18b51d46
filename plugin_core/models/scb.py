"""Spatial Complement Branch: the input latent, t and Fp -> three skip residuals (Fs).

A ControlNet-like branch of one resolution level, built from diffusers' own blocks:
a 3x3 conv on the input image's latent, SD's timestep embedding, one
CrossAttnDownBlock2D without downsampling, and a 1x1 conv on each of its three features.
The residuals are added to the UNet skips that the last decoder stage consumes.

Attribute names match the reference checkpoints, so its state dicts load as they are.
Unlike a ControlNet, the branch never reads the noisy latent x_t.
"""

from __future__ import annotations

import logging

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D
from torch import nn

from .config import PluginConfig

log = logging.getLogger("diffplugin")


class SpatialComplementBranch(ModelMixin):
    # ModelMixin gives diffusers' gradient checkpointing switch for the down block.
    _supports_gradient_checkpointing = True

    def __init__(self, config: PluginConfig):
        super().__init__()
        channels = config.channels
        time_width = channels * 4
        self.controlnet_cond_embedding = nn.Conv2d(config.latent_channels, channels, kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels, config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels, time_width, act_fn=config.act_fn)
        self.down_blocks = nn.ModuleList(
            [
                CrossAttnDownBlock2D(
                    in_channels=channels,
                    out_channels=channels,
                    temb_channels=time_width,
                    num_layers=config.scb_layers,
                    resnet_eps=config.norm_eps,
                    resnet_act_fn=config.act_fn,
                    resnet_groups=config.norm_num_groups,
                    num_attention_heads=config.scb_heads,
                    cross_attention_dim=config.context_width,
                    add_downsample=False,
                    use_linear_projection=config.use_linear_projection,
                    only_cross_attention=config.only_cross_attention,
                    upcast_attention=config.upcast_attention,
                    resnet_time_scale_shift=config.resnet_time_scale_shift,
                )
            ]
        )
        self.controlnet_down_blocks = nn.ModuleList(
            [nn.Conv2d(channels, channels, kernel_size=1) for _ in range(config.scb_layers + 1)]
        )

    # The UNet's first level in diffusers' names -> the SCB's (the SCB's input conv reads the
    # latent the UNet's conv_in reads, with the same shape).
    UNET_PREFIXES = {"conv_in.": "controlnet_cond_embedding.", "time_embedding.": "time_embedding.", "down_blocks.0.": "down_blocks.0."}

    @classmethod
    def from_unet(cls, config: PluginConfig, unet_state: dict[str, torch.Tensor]) -> "SpatialComplementBranch":
        """An SCB started from a UNet's first level (ControlNet-style, as diffusers'
        `ControlNetModel.from_unet`): every tensor whose name and shape match is copied.

        unet_state: the UNet's state dict in diffusers' names (conv_in.*, time_embedding.*,
        down_blocks.0.*); other keys are ignored. The output convs are not in the UNet: they
        keep their initialisation (zero them for training, `zero_output_convs`)."""
        scb = cls(config)
        own = scb.state_dict()
        copied = {}
        for name, value in unet_state.items():
            for prefix, target in cls.UNET_PREFIXES.items():
                key = target + name[len(prefix):]
                if name.startswith(prefix) and key in own and own[key].shape == value.shape:
                    copied[key] = value
        scb.load_state_dict(copied, strict=False)
        log.info("initialised %d of %d SCB tensors from the UNet's first level", len(copied), len(own))
        return scb

    def zero_output_convs(self) -> None:
        """Zero the 1x1 output convs so a fresh plugin starts as a no-op (training init)."""
        for conv in self.controlnet_down_blocks:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def time_embedding_for(self, timestep: torch.Tensor | int | float, batch: int) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=self.controlnet_cond_embedding.weight.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch)
        # The sinusoidal projection is float32; the MLP runs in the module's dtype.
        emb = self.time_proj(timesteps).to(self.controlnet_cond_embedding.weight.dtype)
        return self.time_embedding(emb)

    def forward(
        self, input_latent: torch.Tensor, timestep: torch.Tensor | int | float, context: torch.Tensor
    ) -> list[torch.Tensor]:
        """input_latent: [B, 4, h, w] scaled VAE posterior mean of the *input* image;
        timestep: scalar or [B] in 0..999; context: Fp [B, N, context_width].

        Returns the three residuals [B, channels, h, w] for the UNet's first three skips.
        """
        temb = self.time_embedding_for(timestep, input_latent.shape[0])
        hidden = self.controlnet_cond_embedding(input_latent)
        features = [hidden]
        for block in self.down_blocks:
            hidden, block_features = block(hidden_states=hidden, temb=temb, encoder_hidden_states=context)
            features += block_features
        return [conv(feature) for feature, conv in zip(features, self.controlnet_down_blocks)]
