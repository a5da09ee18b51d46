"""Several Task-Plugins in one denoising pass (FDI's composability, on Diff-Plugin's two branches).

A `PluginMix` is sampled as one plugin: every step each member's SCB reads its own Fp and the
residuals are summed at the members' weights (a weight acts as that plugin's strength); the UNet's
cross-attention reads every member's Fp, the prompts joined along the tokens, in one of two ways
(`joint_attention`, written once for every backend's own attention):

* "attention": one attention per plugin over its own Fp, the outputs averaged with the weights
  (normalised): each plugin's prompt is read as it was trained, alone, and the weights are the
  exact shares;
* "tokens": one attention over all the prompts' tokens, each plugin's logits shifted by log(weight):
  the plugins' tokens compete in one softmax, the weights tilt it.

Both reduce exactly: one plugin of weight 1 is the plugin alone, a weight going to 0 fades its
plugin out (a weight of 0 is left out before sampling: the result without it). The pass starts
from pure noise when any member is a pure-noise task (lowlight, highlight), else from the noised
input latent.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator, Sequence

import torch

from ..restore.settings import JOINT_CONTEXTS
from .config import PluginConfig

# attend(q, k, v, bias): a backend's own attention, tokens along dim -2 of q, k and v; bias None or
# a float per key token (added to the logits of every query and head).
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def joint_attention(attend: Attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: Sequence[int],
                    weights: Sequence[float], context: str) -> torch.Tensor:
    """Cross-attention over several plugins' prompts joined along the tokens: `groups` the token
    count of each prompt, in order; `weights` their weights (all > 0)."""
    if context == "tokens":
        if all(w == 1 for w in weights):
            return attend(q, k, v, None)
        bias = torch.cat([torch.full((n,), math.log(w), dtype=q.dtype, device=q.device) for n, w in zip(groups, weights)])
        return attend(q, k, v, bias)
    if context != "attention":
        raise ValueError(f"joint context must be one of {JOINT_CONTEXTS}, got {context!r}")
    out, start = None, 0
    for count, weight in zip(groups, weights):
        part = attend(q, k[..., start : start + count, :], v[..., start : start + count, :], None) * weight
        out, start = part if out is None else out + part, start + count
    return out / sum(weights)


class PluginMix:
    """Plugins sampled together in one pass, each at its weight (see the module's docstring); the
    recipe reads it as one plugin (task, info, config, visual prompt, SCB residuals)."""

    def __init__(self, plugins: Sequence, weights: Sequence[float], context: str = "attention"):
        if not plugins or len(plugins) != len(weights) or any(not w > 0 for w in weights):
            raise ValueError(f"a mix needs plugins with weights above 0, got {list(weights)}")
        if context not in JOINT_CONTEXTS:
            raise ValueError(f"joint context must be one of {JOINT_CONTEXTS}, got {context!r}")
        widths = {p.config.context_width for p in plugins}
        if len(widths) > 1:
            raise ValueError(f"plugins of different context widths cannot be mixed: {sorted(widths)}")
        self.plugins, self.weights, self.context = list(plugins), [float(w) for w in weights], context
        self.groups: list[int] | None = None  # each member's Fp token count, once the prompts are joined

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

    def skip_residuals(self, input_latent: torch.Tensor, timestep, visual_prompt: torch.Tensor) -> list[torch.Tensor]:
        """Each member's SCB on its own Fp; the residuals summed at the weights."""
        total, start = None, 0
        for plugin, weight, count in zip(self.plugins, self.weights, self.groups):
            residuals = plugin.skip_residuals(input_latent, timestep, visual_prompt[..., start : start + count, :])
            residuals = [r * weight for r in residuals] if weight != 1 else residuals
            total = residuals if total is None else [a + b for a, b in zip(total, residuals)]
            start += count
        return total

    def attention(self, attend: Attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The UNet's cross-attention over the joined prompt (k and v from it), by this mix's context rule."""
        return joint_attention(attend, q, k, v, self.groups, self.weights, self.context)
