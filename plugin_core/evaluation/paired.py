"""Full-reference metrics of one restored image against its clean reference.

* PSNR on 8-bit values (data range 255, dB) and SSIM with Wang et al.'s Gaussian window (11 px,
  σ 1.5, K1 0.01, K2 0.03), both by torchmetrics, on the three RGB channels (SSIM: their mean);
* `y_channel`: on the BT.601 studio-range luma instead (Y in [16, 235], MATLAB's `rgb2ycbcr`, as
  BasicSR and most restoration papers report), computed by scikit-image, not rounded;
* LPIPS (AlexNet), when a loaded `Lpips` is passed (see perceptual.py).

SSIM convention: the mean of the SSIM map over the valid region, the 5 px border where the window
leaves the image left out, as Wang et al.'s MATLAB code, BasicSR and scikit-image do (torchmetrics
alone also averages the border it computes on a reflect-padded copy: up to 0.003 higher on photos).
Only torch and numpy are imported with this module: the trainer calls it for validation.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import PluginError
from .requirements import need

SSIM_WINDOW = 11  # Wang et al.'s Gaussian window: 11 x 11, σ 1.5
SSIM_SIGMA = 1.5


def paired_metrics(restored: Image.Image, reference: Image.Image, *, y_channel: bool = False, lpips=None) -> dict[str, float]:
    """{"psnr": dB, "ssim": ...} (and "lpips" when `lpips` is given) of `restored` against `reference`,
    two RGB images of the same size."""
    if restored.size != reference.size:
        raise PluginError(f"the restored image is {restored.width}x{restored.height} but its reference is "
                          f"{reference.width}x{reference.height}: paired metrics compare images of the same size")
    if min(restored.size) < SSIM_WINDOW:
        raise PluginError(f"the images are {restored.width}x{restored.height}: SSIM needs at least "
                          f"{SSIM_WINDOW}x{SSIM_WINDOW} pixels (its Gaussian window)")
    functional = need("torchmetrics.functional.image", "torchmetrics", "PSNR and SSIM")
    a, b = _planes(restored, y_channel), _planes(reference, y_channel)
    scores = {
        "psnr": float(functional.peak_signal_noise_ratio(a, b, data_range=255.0)),
        "ssim": _ssim(functional, a, b),
    }
    if lpips is not None:
        scores["lpips"] = lpips(restored, reference)
    return scores


def require_libraries(*, y_channel: bool = False) -> None:
    """Raise the one message paired_metrics would raise on its first call when its libraries are
    missing; for callers that check everything before a model loads (the trainer)."""
    need("torchmetrics.functional.image", "torchmetrics", "PSNR and SSIM")
    if y_channel:
        need("skimage.color", "scikit-image", "Y-channel PSNR/SSIM")


def _ssim(functional, a: torch.Tensor, b: torch.Tensor) -> float:
    # float32: torch's float64 convolutions are ~100x slower on CPU; within 1e-4 of float64 scikit-image on photos
    _, ssim_map = functional.structural_similarity_index_measure(
        a.float(), b.float(), gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, data_range=255.0, return_full_image=True)
    border = SSIM_WINDOW // 2  # the valid region only, as the field computes SSIM (see the module's docstring)
    return float(ssim_map[..., border:-border, border:-border].mean())


def _planes(image: Image.Image, y_channel: bool) -> torch.Tensor:
    """[1, C, H, W] float64 in 8-bit units: the RGB channels, or the BT.601 luma."""
    rgb = np.asarray(image.convert("RGB"))
    if y_channel:
        color = need("skimage.color", "scikit-image", "Y-channel PSNR/SSIM")
        planes = color.rgb2ycbcr(rgb)[..., :1]  # Y in [16, 235] for 8-bit input, as MATLAB
    else:
        planes = rgb.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1), dtype=np.float64))[None]
