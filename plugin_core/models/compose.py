"""Several Task-Plugins in one denoising pass (FDI's composability, on Diff-Plugin's two branches).

A `PluginMix` is sampled as one plugin. Each member has a **share**: only the ratios count, the
shares are normalised to sum to 1. Every step each member's SCB reads its own Fp and the residuals
are summed at the normalised shares; the UNet's cross-attention reads every member's Fp, the
prompts joined along the tokens, in one of two ways (`joint_attention`, written once for every
backend's own attention):

* "attention": one attention per plugin over its own Fp, the outputs averaged by the shares: each
  plugin's prompt is read as it was trained, alone, and the shares are the exact parts;
* "tokens": one attention over all the prompts' tokens, each plugin's logits shifted by log(share):
  the plugins' tokens compete in one softmax, the shares tilt it.

The mix's **strength** scales its summed residuals, as ComfyUI's strength scales one plugin's.
Both rules reduce exactly: one plugin is that plugin alone, a plugin mixed with itself is that
plugin, shares (1, 0.5) are shares (2, 1), a share going to 0 fades its plugin out (a share of 0
is left out before sampling: the result without it). The pass starts from pure noise when any
member is a pure-noise task (lowlight, highlight), else from the noised input latent.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from typing import Callable, Iterator, Sequence

import torch

from ..vocabulary import JOINT_CONTEXTS
from . import regions as regions_module
from .config import PluginConfig

# attend(q, k, v, bias): a backend's own attention, tokens along dim -2 of q, k and v; bias None or
# a float per key token (added to the logits of every query and head).
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def joint_attention(attend: Attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: Sequence[int],
                    shares: Sequence[float], context: str) -> torch.Tensor:
    """Cross-attention over several plugins' prompts joined along the tokens: `groups` the token
    count of each prompt, in order; `shares` their shares (all > 0; only the ratios count)."""
    total = sum(shares)
    shares = [share / total for share in shares]
    if len(groups) == 1 or (context == "tokens" and len(set(shares)) == 1):  # no tilt: the plain attention
        return attend(q, k, v, None)
    if context == "tokens":
        bias = torch.cat([torch.full((n,), math.log(s), dtype=q.dtype, device=q.device) for n, s in zip(groups, shares)])
        return attend(q, k, v, bias)
    if context != "attention":
        raise ValueError(f"joint context must be one of {JOINT_CONTEXTS}, got {context!r}")
    out, start = None, 0
    for count, share in zip(groups, shares):
        part = attend(q, k[..., start : start + count, :], v[..., start : start + count, :], None) * share
        out, start = part if out is None else out + part, start + count
    return out


class PluginMix:
    """Plugins sampled together in one pass, each at its share, the whole at `strength` (see the
    module's docstring); the recipe reads it as one plugin (task, info, config, visual prompt, SCB
    residuals)."""

    def __init__(self, plugins: Sequence, shares: Sequence[float], context: str = "attention", strength: float = 1.0,
                 regions: Sequence[torch.Tensor | None] | None = None):
        """regions: each member's region (regions.py: a mask of any size, None: everywhere), or None."""
        if not plugins or len(plugins) != len(shares) or any(not (math.isfinite(s) and s > 0) for s in shares):
            raise ValueError(f"a mix needs plugins with finite shares above 0, got {list(shares)}")
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"a mix's strength must be a finite number of at least 0, got {strength}")
        if context not in JOINT_CONTEXTS:
            raise ValueError(f"joint context must be one of {JOINT_CONTEXTS}, got {context!r}")
        widths = {p.config.context_width for p in plugins}
        if len(widths) > 1:
            raise ValueError(f"plugins of different context widths cannot be mixed: {sorted(widths)}")
        total = float(sum(shares))
        self.plugins, self.context, self.strength = list(plugins), context, float(strength)
        self.shares = [float(share) / total for share in shares]  # normalised: they sum to 1
        self.groups: list[int] | None = None  # each member's Fp token count, once the prompts are joined
        self.regions = _regions(regions, len(self.plugins), context)
        self._call_maps: torch.Tensor | None = None  # the regions of the UNet call under way (regions_for_call)

    def with_members(self, plugins: Sequence) -> "PluginMix":
        """The same mix (shares, strength, context, joined prompt) over other modules of its members,
        in order: e.g. copies in a host's compute dtype."""
        if len(plugins) != len(self.plugins):
            raise ValueError(f"{len(plugins)} modules for a mix of {len(self.plugins)} plugins")
        mix = copy.copy(self)
        mix.plugins = list(plugins)
        return mix

    @property
    def task(self) -> str:
        return "+".join(p.task for p in self.plugins)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every member's parameters (where the mix's weights live: their device and dtype)."""
        return itertools.chain.from_iterable(p.parameters() for p in self.plugins)

    @property
    def start_mode(self) -> str:
        return "noise" if any(p.start_mode == "noise" for p in self.plugins) else "input"

    @property
    def config(self) -> PluginConfig:
        return self.plugins[0].config

    def visual_prompt(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The members' Fp (each [..., tokens, C], in order) joined along the tokens."""
        if len(prompts) != len(self.plugins):
            raise ValueError(f"{len(prompts)} visual prompts for {len(self.plugins)} plugins")
        self.groups = [prompt.shape[-2] for prompt in prompts]
        return torch.cat(list(prompts), dim=-2)

    def region_maps(self, height: int, width: int, batch: int = 1) -> torch.Tensor | None:
        """The members' regions over a latent of (height, width) ([M, batch, 1, h, w]), or None (no regions)."""
        return None if self.regions is None else regions_module.member_maps(self.regions, height, width, batch)

    def coverage(self, height: int, width: int, batch: int = 1) -> torch.Tensor | None:
        """Where the mix acts at all ([batch, 1, h, w] in [0, 1]; the rest passes through), or None: everywhere."""
        maps = self.region_maps(height, width, batch)
        return None if maps is None else regions_module.coverage(maps)

    @contextlib.contextmanager
    def regions_for_call(self, maps: torch.Tensor | None):
        """While a backend's UNet call runs: its regions ([M, rows, 1, h, w] at the call's latent size),
        for cross-attentions that are not told them (diffusers' attention processors)."""
        self._call_maps = maps
        try:
            yield
        finally:
            self._call_maps = None

    def skip_residuals(self, input_latent: torch.Tensor, timestep, visual_prompt: torch.Tensor,
                       regions: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each member's SCB on its own Fp; the residuals summed at the shares (with regions: at each
        position's shares, times the coverage), times the strength. regions: the maps at this
        latent ([M, B or 1, 1, h, w]; default: the mix's regions over the whole latent)."""
        if regions is None and self.regions is not None:
            regions = self.region_maps(*input_latent.shape[-2:], input_latent.shape[0])
        scales = self.shares if regions is None else _region_scales(regions, self.shares)
        total, start = None, 0
        for plugin, scale, count in zip(self.plugins, scales, self.groups):
            residuals = plugin.skip_residuals(input_latent, timestep, visual_prompt[..., start : start + count, :])
            scale = scale * self.strength if regions is None else (scale * self.strength).to(residuals[0])
            residuals = [r * scale for r in residuals] if not (isinstance(scale, float) and scale == 1) else residuals
            total = residuals if total is None else [a + b for a, b in zip(total, residuals)]
            start += count
        return total

    def attention(self, attend: Attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  regions: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's cross-attention over the joined prompt (k and v from it), by this mix's context
        rule; with regions (the call's maps, or those of `regions_for_call`), each position's shares."""
        regions = regions if regions is not None else self._call_maps
        if self.regions is None or len(self.plugins) == 1:
            return joint_attention(attend, q, k, v, self.groups, self.shares, self.context)
        if regions is None:
            raise ValueError("a mix with regions needs the regions of each UNet call (regions_for_call)")
        weights = regions_module.token_shares(regions.to(q.device, torch.float32), self.shares, q.shape[-2])
        out, start = None, 0
        for count, weight in zip(self.groups, weights):
            part = attend(q, k[..., start : start + count, :], v[..., start : start + count, :], None)
            weight = weight.to(part.dtype) if part.ndim == 3 else weight.to(part.dtype).unsqueeze(1)
            out, start = part * weight if out is None else out + part * weight, start + count
        return out


def _regions(regions, members: int, context: str) -> list | None:
    """The members' regions as maps (regions.as_region), or None when no member has one."""
    if regions is None or all(region is None for region in regions):
        return None
    if len(regions) != members:
        raise ValueError(f"{len(regions)} regions for a mix of {members} plugins")
    if context != "attention":
        raise ValueError("regions need the 'attention' joint context (one attention per plugin, mixed per position)")
    return [None if region is None else regions_module.as_region(region) for region in regions]


def _region_scales(maps: torch.Tensor, shares: Sequence[float]) -> torch.Tensor:
    """Each member's residual scale per position: its local share times the coverage ([M, B, 1, h, w])."""
    return regions_module.local_shares(maps, shares) * regions_module.coverage(maps)
