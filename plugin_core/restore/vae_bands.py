"""A diffusers VAE over horizontal bands of a large image, so that no full-resolution float copy
of it (nor the VAE's activations for all of it) is ever held: encoding reads a band of rows at a
time, decoding writes each band straight into 8-bit pixels. Rows shared by two bands are blended
with a linear ramp (`blend_rows`). A band covering the whole image is exactly the whole-image call."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import images as imaging


def blend_rows(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """The rows two bands share: `previous` (the earlier band's last rows) fading into `current`
    (the later band's first rows) along a linear ramp; [..., rows, W] each."""
    rows = previous.shape[-2]
    ramp = ((torch.arange(rows, dtype=current.dtype, device=current.device) + 0.5) / rows).view(1, 1, rows, 1)
    return previous * (1 - ramp) + current * ramp


def encode_in_bands(encode: Callable[[torch.Tensor], torch.Tensor], images: list[Image.Image], band: int,
                    factor: int) -> torch.Tensor:
    """`encode` (pixels -> scaled latent) of same-size images by bands of `band` latent rows, the
    latent rows two bands share blended."""
    height, overlap = images[0].height // factor, max(1, band // 8)
    arrays, top, out = [np.asarray(image) for image in images], 0, None
    while True:
        bottom = min(top + band, height)
        latent = encode(imaging.vae_pixels([Image.fromarray(a[top * factor : bottom * factor]) for a in arrays]))
        if out is None:
            out = latent.new_empty(*latent.shape[:2], height, latent.shape[-1])
        else:
            latent[:, :, :overlap] = blend_rows(out[:, :, top : top + overlap], latent[:, :, :overlap])
        out[:, :, top:bottom] = latent
        if bottom == height:
            return out
        top = bottom - overlap


def decode_in_bands(vae, latents: torch.Tensor, band: int, overlap: int, factor: int) -> np.ndarray:
    """diffusers' tiled decode one band of latent rows at a time, straight into uint8 [B, H, W, 3]
    (its tiled_decode holds every decoded tile of the image in float, ~45 bytes a pixel); the
    `overlap` rows shared by two bands are blended."""
    height = latents.shape[-2]
    out = np.empty((latents.shape[0], height * factor, latents.shape[-1] * factor, 3), dtype=np.uint8)
    carry, top = None, 0
    while True:
        bottom = min(top + band, height)
        pixels = vae.decode(latents[:, :, top:bottom]).sample.float()
        if carry is not None:
            pixels[:, :, : carry.shape[2]] = blend_rows(carry, pixels[:, :, : carry.shape[2]])
        if bottom == height:
            out[:, top * factor :] = imaging.to_uint8(pixels)
            return out
        keep = overlap * factor
        out[:, top * factor : (bottom - overlap) * factor] = imaging.to_uint8(pixels[:, :, :-keep])
        carry, top = pixels[:, :, -keep:].clone(), bottom - overlap
