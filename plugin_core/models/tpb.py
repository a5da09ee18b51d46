"""Task-Prompt Branch: CLIP vision tokens -> the visual prompt Fp.

Fp replaces the text context in every cross-attention of the UNet. Parameter names
follow the reference checkpoints (`visual_projection.{0,1,3,4,6}`).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import PluginConfig


class TaskPromptBranch(nn.Module):
    def __init__(self, config: PluginConfig):
        super().__init__()
        width = config.clip_width
        layers: list[nn.Module] = []
        for _ in range(config.tpb_layers):
            layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.LeakyReLU()]
        layers.append(nn.Linear(width, config.context_width))
        self.visual_projection = nn.Sequential(*layers)

    def forward(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """clip_tokens: [B, 1 + N, clip_width] CLIP encoder output, class token first.

        The class token is dropped, as in the reference: Fp is [B, N, context_width].
        """
        if clip_tokens.ndim != 3:
            raise ValueError(f"CLIP tokens must be [batch, tokens, width], got {tuple(clip_tokens.shape)}")
        return self.visual_projection(clip_tokens[:, 1:])
