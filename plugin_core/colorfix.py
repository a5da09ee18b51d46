"""Colour fixes (as StableSR's): the restored image keeps the input's low-frequency colour,
which the VAE round trip and the diffusion shift.

* "wavelet": the restored image's high-frequency bands over the input's low-frequency band
  (a 5-level à trous decomposition with a dilated 3x3 binomial kernel);
* "adain": each channel of the restored image moved to the input's mean and standard deviation;
* "none": as restored (the reference).

Written out here because it is ten lines of convolution on [B, 3, H, W] tensors that no
dependency of the pack provides; the tests check it with scikit-image's CIELAB colour math.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .vocabulary import COLOR_FIXES

_LEVELS = 5


def check_color_fix(name: str) -> None:
    if name not in COLOR_FIXES:
        raise ValueError(f"colour fix must be one of {', '.join(COLOR_FIXES)}, got {name!r}")


def _blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(image.shape[1], 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=image.shape[1], dilation=dilation)


def low_frequency(image: torch.Tensor, levels: int = _LEVELS) -> torch.Tensor:
    """What is left of [B, C, H, W] after removing `levels` wavelet detail bands."""
    for level in range(levels):
        image = _blur(image, 2**level)
    return image


def wavelet(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return restored - low_frequency(restored) + low_frequency(reference)


def adain(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    mean, std = restored.mean((-2, -1), keepdim=True), restored.std((-2, -1), keepdim=True)
    ref_mean, ref_std = reference.mean((-2, -1), keepdim=True), reference.std((-2, -1), keepdim=True)
    return _adain_with(restored, mean, std, ref_mean, ref_std)


def fix_tensor(restored: torch.Tensor, reference: torch.Tensor, fix: str) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1], both the same size -> the restored images with the fix, in [0, 1]."""
    check_color_fix(fix)
    if fix == "none":
        return restored
    return ({"wavelet": wavelet, "adain": adain}[fix])(restored.float(), reference.float()).clamp(0, 1)


def fix_colors(restored: Sequence[Image.Image], reference: Sequence[Image.Image], fix: str, rows: int = 512) -> list[Image.Image]:
    """The same on PIL images (each restored image and the working-size input it came from), a
    band of `rows` at a time: the wavelet's blurs reach `_REACH` rows, so a band with that margin
    on each side gives its rows exactly as the whole image would; adain's statistics are the
    whole image's. A 12 MP photo then costs no float copies of itself."""
    check_color_fix(fix)
    if fix == "none":
        return list(restored)
    out = []
    for image, ref in zip(restored, reference):
        arrays = [np.asarray(i.convert("RGB")) for i in (image, ref)]
        stats = [_channel_stats(a) for a in arrays] if fix == "adain" else None
        fixed = np.empty_like(arrays[0])
        for top in range(0, fixed.shape[0], rows):
            start, stop = max(0, top - _REACH), min(fixed.shape[0], top + rows + _REACH)
            band = [torch.from_numpy(a[start:stop].astype(np.float32) / 255).permute(2, 0, 1)[None] for a in arrays]
            if fix == "adain":
                result = _adain_with(band[0], *stats[0], *stats[1]).clamp(0, 1)
            else:
                result = fix_tensor(*band, fix)
            result = result[0, :, top - start : top - start + rows].permute(1, 2, 0).numpy()
            fixed[top : top + rows] = (result * 255).round().astype(np.uint8)
        out.append(Image.fromarray(fixed))
    return out


_REACH = sum(2**level for level in range(_LEVELS))  # rows the 5 dilated blurs see on each side


def _channel_stats(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of a uint8 [H, W, 3] image in [0, 1],
    from each channel's 256-bin histogram (exact, and no float copy of the image)."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for channel in range(3):
        counts = np.bincount(array[..., channel].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(np.sqrt((counts * (values - mean) ** 2).sum() / max(n - 1, 1)))
    return (torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1), torch.tensor(stds, dtype=torch.float32).view(1, 3, 1, 1))


def _adain_with(restored, mean, std, ref_mean, ref_std) -> torch.Tensor:
    return (restored - mean) / std.clamp_min(1e-6) * ref_std + ref_mean
