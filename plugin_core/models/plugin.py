"""TaskPlugin: one TPB + one SCB + what the plugin is for."""

from __future__ import annotations

import torch
from torch import nn

from .config import PluginConfig, PluginInfo
from .scb import SpatialComplementBranch
from .tpb import TaskPromptBranch


class TaskPlugin(nn.Module):
    def __init__(self, config: PluginConfig, info: PluginInfo):
        super().__init__()
        self.config = config
        self.info = info
        self.tpb = TaskPromptBranch(config)
        self.scb = SpatialComplementBranch(config)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def start_mode(self) -> str:
        return self.info.start_mode

    def visual_prompt(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """Fp from CLIP vision tokens [..., 1 + N, width] (class token first; leading dims such as
        [tiles, images] are kept), moved to the TPB's device and dtype. Run once per image (or tile),
        never per step."""
        weight = self.tpb.visual_projection[0].weight
        clip_tokens = clip_tokens.to(weight.device, weight.dtype)
        if clip_tokens.ndim > 3:
            return self.tpb(clip_tokens.flatten(0, -3)).unflatten(0, clip_tokens.shape[:-2])
        return self.tpb(clip_tokens)

    def skip_residuals(self, input_latent: torch.Tensor, timestep, visual_prompt: torch.Tensor) -> list[torch.Tensor]:
        """The three SCB residuals for one timestep. Run once per UNet call."""
        return self.scb(input_latent, timestep, visual_prompt)

    def forward(self, clip_tokens: torch.Tensor, input_latent: torch.Tensor, timestep) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One training forward: (Fp, the SCB residuals). What DDP wraps; sampling calls the two
        branches apart, Fp once per image and the residuals once per step."""
        visual_prompt = self.visual_prompt(clip_tokens)
        return visual_prompt, self.skip_residuals(input_latent, timestep, visual_prompt)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, start_mode={self.start_mode!r}"
