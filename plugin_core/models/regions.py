"""A region for each plugin of a joint pass: what the paper names as its limitation ("remove only the
snow on the river while keeping those in the sky") made possible.

A region is a map in [0, 1] per plugin: 1 inside, 0 outside, between them a soft edge; a plugin
without one covers the whole photo. The maps come at any size (the photo's) and are resized, by
area, to the latent of each call and to each attention resolution. At every position p the
plugins whose regions cover it share it by their shares there:

    a_i(p) = s_i m_i(p) / sum_j s_j m_j(p)        (where no region covers p: a_i = s_i)

* the SCB residuals are sum_i a_i(p) c(p) r_i(p), with c(p) = max_i m_i(p) the coverage, so a soft
  edge fades the residuals as one plugin's mask does;
* the cross-attention is sum_i a_i(p) attention_i(p) (the 'attention' joint context);
* where c(p) < 1 the photo passes through: the sampler keeps the input there (ComfyUI's noise mask,
  and the same rule in plugin_core's loop), as it does for one plugin's mask.

Without regions, a_i = s_i and c = 1 everywhere: exactly the mix without regions. Maps are
stacked [members, batch, 1, height, width].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def as_region(mask: torch.Tensor) -> torch.Tensor:
    """A mask ([H, W], [B, H, W] or [B, 1, H, W], values in [0, 1]) as a region map [B, 1, H, W] float32."""
    mask = torch.as_tensor(mask).detach().float()
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or min(mask.shape[-2:]) < 1:
        raise ValueError(f"a region must be a mask [H, W], [B, H, W] or [B, 1, H, W], got the shape {list(mask.shape)}")
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError("a region's values must lie in [0, 1] (1 inside, 0 outside)")
    return mask


def member_maps(regions: Sequence[torch.Tensor | None], height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Every member's region at (height, width), by area, over `batch` images (a region of one
    image serves every image): [members, batch, 1, height, width]; no region: ones."""
    maps = []
    for region in regions:
        if region is None:
            maps.append(torch.ones(batch, 1, height, width))
            continue
        resized = region if tuple(region.shape[-2:]) == (height, width) else F.interpolate(region, size=(height, width), mode="area")
        if resized.shape[0] not in (1, batch):
            raise ValueError(f"a region holds {resized.shape[0]} masks for {batch} images: give one, or one per image")
        maps.append(resized.expand(batch, -1, -1, -1))
    return torch.stack(maps)


def local_shares(maps: torch.Tensor, shares: Sequence[float]) -> torch.Tensor:
    """a_i(p): each member's share at each position, among the members covering it ([M, B, 1, h, w])."""
    weights = torch.tensor(list(shares), dtype=maps.dtype, device=maps.device).view(-1, 1, 1, 1, 1)
    weighted = maps * weights
    total = weighted.sum(0, keepdim=True)
    return torch.where(total > 0, weighted / total.clamp_min(torch.finfo(maps.dtype).tiny), weights.expand_as(maps))


def coverage(maps: torch.Tensor) -> torch.Tensor:
    """c(p) = max_i m_i(p): where the plugins act at all ([B, 1, h, w])."""
    return maps.amax(0)


def level_size(height: int, width: int, tokens: int) -> tuple[int, int]:
    """The (h, w) of a UNet level with `tokens` positions, from the latent's (each level halves,
    rounding up, as SD's stride-2 downsamplers do)."""
    h, w = height, width
    while h * w > tokens:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != tokens:
        raise ValueError(f"no UNet level of a {width}x{height} latent has {tokens} positions")
    return h, w


def token_shares(maps: torch.Tensor, shares: Sequence[float], tokens: int) -> torch.Tensor:
    """a_i(p) at an attention resolution of `tokens` positions, from the call's maps at its latent
    size: [M, B, tokens, 1]."""
    members, batch, _, height, width = maps.shape
    h, w = level_size(height, width, tokens)
    flat = maps.flatten(0, 1)
    if (h, w) != (height, width):
        flat = F.interpolate(flat, size=(h, w), mode="area")
    return local_shares(flat.view(members, batch, 1, h, w), shares).view(members, batch, tokens, 1)
