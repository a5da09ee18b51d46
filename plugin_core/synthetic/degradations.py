"""Synthetic degradations: a clean photo -> the same photo with rain, haze, snow, blur, low light, noise or JPEG.

A Task-Plugin learns one restoration task from pairs. When only clean photos are at hand,
this module degrades them with a physically plausible model of the task:

========================  =====================================================================
``rain``                  sparse drops smeared into thin near-vertical streaks (one shared angle,
                          +-25 degrees), screen-blended, with a veil at high intensity
``haze``                  atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)``
``snow``                  flakes of three sizes (soft blobs), some motion-blurred, plus a veil
``motion_blur``           normalised line kernel of random angle, length from intensity
``defocus_blur``          normalised disk kernel, radius from intensity
``lowlight``              ``scale * x ** gamma`` then Poisson-Gaussian sensor noise
``noise``                 additive Gaussian noise, mildly correlated across channels
``jpeg``                  JPEG re-encode through PIL, quality 70 down to 8
========================  =====================================================================

Every degradation works on a float tensor ``[3, H, W]`` in [0, 1] of any size (1x1 included),
maps an ``intensity`` in [0, 1] to its parameter range, and takes all randomness from the
``torch.Generator`` it is given, never from global RNG state. Sizes are in pixels of the
image as given, because training crops are taken at native resolution.

* ``degrade(image, kinds, seed, intensity)`` degrades one PIL image or tensor;
* ``SyntheticPairs`` (pairs.py) is a ``torch.utils.data.Dataset`` of pairs made on the fly, item ``i``
  depending only on ``(seed, i)`` (through ``seeding.mix_seed``, a well-mixed 64-bit hash);
* ``write_pairs`` (pairs.py) writes the same pairs to ``input/``, ``target/`` and the reference CSV.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import PluginError
from ..images import to_rgb
from ..seeding import generator as make_generator
from .kinds import KINDS


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _lerp(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


# ----------------------------------------------------------------------------- kernels


def _reflect_index(size: int, pad: int) -> torch.Tensor:
    """Indices of a reflect padding (no edge repeat) that also works when pad >= size,
    which `F.pad(mode="reflect")` refuses; lets large kernels run on tiny images."""
    index = torch.arange(-pad, size + pad)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


def _convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel 2-D convolution of [C, H, W] with an odd-sized [kh, kw] kernel, reflect
    padded so borders keep their brightness. Kernels here are point-symmetric, so the
    cross-correlation of conv2d equals convolution."""
    channels, height, width = image.shape
    kh, kw = kernel.shape
    padded = image[:, _reflect_index(height, kh // 2)][:, :, _reflect_index(width, kw // 2)]
    weight = kernel.to(image.dtype).expand(channels, 1, kh, kw)
    return F.conv2d(padded[None], weight, groups=channels)[0]


def _line_kernel(length: float, angle: float, taper: float = 0.0) -> torch.Tensor:
    """Anti-aliased line of `length` pixels through the centre at `angle` (radians, from
    the +x axis, y down), about one pixel wide, peak 1. `taper` dims the ends (rain
    streaks fade out at their tips)."""
    half = max(length - 1.0, 0.0) / 2
    radius = math.ceil(half) + 1
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = math.cos(angle), math.sin(angle)
    along = xs * dx + ys * dy
    across = (ys * dx - xs * dy).abs()
    weight = (1 - across).clamp(min=0) * (half + 1 - along.abs()).clamp(0, 1)
    if taper > 0 and half > 0:
        weight = weight * (1 - taper * (along.abs() / (half + 1)).clamp(max=1))
    return weight / weight.max()


def _disk_kernel(radius: float) -> torch.Tensor:
    """Anti-aliased disk (the aperture of a defocused lens), peak 1."""
    size = math.ceil(radius) + 1
    coords = torch.arange(-size, size + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return (radius + 0.5 - (xs.square() + ys.square()).sqrt()).clamp(0, 1)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Isotropic Gaussian blob, peak 1."""
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    profile = torch.exp(-coords.square() / (2 * sigma * sigma))
    return profile[:, None] * profile[None, :]


def _normalised(kernel: torch.Tensor) -> torch.Tensor:
    return kernel / kernel.sum()


def _smooth_noise(height: int, width: int, generator: torch.Generator, cells: int) -> torch.Tensor:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid_h = max(2, round(cells * min(1.0, height / max(width, 1))) + 1)
    grid_w = max(2, round(cells * min(1.0, width / max(height, 1))) + 1)
    grid = torch.rand(1, 1, grid_h, grid_w, generator=generator)
    field = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return field[0, 0].clamp(0, 1)


def _veil(image: torch.Tensor, amount: float, airlight: torch.Tensor | float) -> torch.Tensor:
    """Uniform scattering veil: contrast loss toward a bright grey."""
    return image * (1 - amount) + amount * airlight


def _grey(generator: torch.Generator, low: float, high: float, tint: float) -> torch.Tensor:
    """A grey-ish colour [3, 1, 1]: one level plus a small per-channel tint."""
    level = _uniform(generator, low, high)
    shift = (torch.rand(3, generator=generator) * 2 - 1) * tint
    return (level + shift).clamp(0, 1).view(3, 1, 1)


# ----------------------------------------------------------------------------- degradations


def _rain(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    _, height, width = image.shape
    # One wind direction for the whole frame: streaks within +-25 degrees of vertical.
    angle = math.pi / 2 + math.radians(_uniform(generator, -25, 25))
    streaks = torch.zeros(1, height, width)
    # Two depth layers: many short dim streaks far away, fewer long bright ones close by.
    layers = (
        (_lerp(0.004, 0.02, intensity), (8, 25), (0.25, 0.55), 0.0),
        (_lerp(0.0008, 0.005, intensity), (20, 55), (0.45, 0.85), 0.6),
    )
    for density, (short, long), (dim, bright), softness in layers:
        length = _uniform(generator, short, _lerp(short + 4, long, intensity))
        level = _uniform(generator, dim, bright)
        hits = torch.rand(1, height, width, generator=generator) < density
        drops = hits * (level * (0.6 + 0.4 * torch.rand(1, height, width, generator=generator)))
        if softness:
            # Near drops are out of focus: a little wider and softer.
            drops = _convolve(drops, _normalised(_gaussian_kernel(softness))) * 2.5
        layer = _convolve(drops, _line_kernel(length, angle, taper=0.5)).clamp(0, 1)
        streaks = 1 - (1 - streaks) * (1 - layer)  # screen: overlapping streaks add light
    rainy = 1 - (1 - image) * (1 - streaks)
    # Dense rain scatters light like fog: a veil that grows only at high intensity.
    return _veil(rainy, 0.2 * intensity**2, _grey(generator, 0.7, 0.9, 0.02)).clamp(0, 1)


def _haze(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    _, height, width = image.shape
    # Depth-like map: outdoor scenes recede toward the top of the frame; smooth noise
    # breaks the ramp so the haze is not a plain vertical gradient.
    exponent = _uniform(generator, 0.6, 1.6)
    mix = _uniform(generator, 0.2, 0.45)
    rows = torch.linspace(1.0, 0.0, height) if height > 1 else torch.ones(1)
    ramp = rows.pow(exponent)[:, None].expand(height, width)
    depth = (1 - mix) * ramp + mix * _smooth_noise(height, width, generator, cells=4)
    depth = 0.25 + 0.75 * depth  # nothing is at zero distance: the foreground is hazy too
    beta = _lerp(0.4, 2.6, intensity) * _uniform(generator, 0.85, 1.15)
    transmission = torch.exp(-beta * depth)[None]
    airlight = _grey(generator, 0.7, 1.0, 0.02)
    return (image * transmission + airlight * (1 - transmission)).clamp(0, 1)


def _snow(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    _, height, width = image.shape
    fall = math.pi / 2 + math.radians(_uniform(generator, -35, 35))
    alpha = torch.zeros(1, height, width)
    # (density per pixel, flake sigma in px): many small far flakes, few big near ones.
    layers = (
        (_lerp(0.002, 0.012, intensity), _uniform(generator, 0.5, 0.8)),
        (_lerp(0.0006, 0.004, intensity), _uniform(generator, 1.2, 2.0)),
        (_lerp(0.0001, 0.0008, intensity), _uniform(generator, 2.5, 4.0)),
    )
    for density, sigma in layers:
        blurred = bool(torch.rand((), generator=generator) < 0.5)
        streak = _uniform(generator, 2.0, 4.0) * sigma
        opacity = 0.7 + 0.3 * torch.rand(1, height, width, generator=generator)
        flakes = (torch.rand(1, height, width, generator=generator) < density) * opacity
        # Gaussian blob with a solid core: bright centres, soft rims.
        layer = (_convolve(flakes, _gaussian_kernel(sigma)) * 1.4).clamp(0, 1)
        if blurred:
            # Flakes falling during the exposure: a short smear along the fall direction.
            layer = (_convolve(layer, _normalised(_line_kernel(streak, fall))) * 1.5).clamp(0, 1)
        alpha = 1 - (1 - alpha) * (1 - layer)
    white = _grey(generator, 0.92, 1.0, 0.02)
    snowy = image * (1 - alpha) + white * alpha
    return _veil(snowy, _lerp(0.03, 0.2, intensity), _grey(generator, 0.75, 0.95, 0.02)).clamp(0, 1)


def _motion_blur(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    angle = _uniform(generator, 0, math.pi)
    length = _lerp(3, 31, intensity) * _uniform(generator, 0.85, 1.15)
    return _convolve(image, _normalised(_line_kernel(length, angle))).clamp(0, 1)


def _defocus_blur(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    radius = _lerp(1, 10, intensity) * _uniform(generator, 0.9, 1.1)
    return _convolve(image, _normalised(_disk_kernel(radius))).clamp(0, 1)


def _lowlight(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    jitter = _uniform(generator, -0.15, 0.15)
    gamma = _lerp(1.5, 3.5, intensity) + jitter
    scale = _lerp(0.5, 0.1, intensity) * (1 + jitter / 3)
    dark = scale * image.clamp(0, 1).pow(gamma)
    # Poisson-Gaussian sensor model: shot noise with fewer photons the darker the scene
    # (full well in photons), plus read noise.
    photons = _lerp(1500, 150, intensity) * _uniform(generator, 0.8, 1.25)
    read = _lerp(0.002, 0.012, intensity)
    shot = torch.poisson(dark * photons, generator=generator) / photons
    return (shot + read * torch.randn(image.shape, generator=generator)).clamp(0, 1)


def _noise(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    sigma = _lerp(2, 50, intensity) / 255
    # Demosaicing correlates sensor noise across channels a little; variance stays sigma^2.
    shared = _uniform(generator, 0.0, 0.3)
    own = torch.randn(image.shape, generator=generator)
    common = torch.randn((1, *image.shape[1:]), generator=generator)
    noise = math.sqrt(1 - shared) * own + math.sqrt(shared) * common
    return (image + sigma * noise).clamp(0, 1)


def _jpeg(image: torch.Tensor, intensity: float, generator: torch.Generator) -> torch.Tensor:
    # Consumes no randomness: the quality follows the intensity alone.
    quality = round(_lerp(70, 8, intensity))
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _to_tensor(decoded.convert("RGB"))


@dataclass(frozen=True)
class Degradation:
    """A named degradation: `apply(image [3,H,W] in [0,1], intensity in [0,1], generator)`."""

    name: str
    description: str
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


DEGRADATIONS: dict[str, Degradation] = {
    name: Degradation(name, KINDS[name], apply)
    for name, apply in (("rain", _rain), ("haze", _haze), ("snow", _snow), ("motion_blur", _motion_blur),
                        ("defocus_blur", _defocus_blur), ("lowlight", _lowlight), ("noise", _noise), ("jpeg", _jpeg))
}


# ----------------------------------------------------------------------------- public API


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _to_pil(image: torch.Tensor) -> Image.Image:
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _kinds(kinds: str | Sequence[str]) -> list[str]:
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    if not names:
        raise PluginError(f"no degradation given; choose from {', '.join(DEGRADATIONS)}")
    unknown = [name for name in names if name not in DEGRADATIONS]
    if unknown:
        raise PluginError(f"unknown degradation {', '.join(map(repr, unknown))}; valid kinds: {', '.join(DEGRADATIONS)}")
    return names


def _intensity_range(intensity: float | tuple[float, float]) -> tuple[float, float]:
    low, high = (intensity, intensity) if isinstance(intensity, (int, float)) else tuple(intensity)
    low, high = float(low), float(high)
    if not (0.0 <= low <= high <= 1.0):
        raise PluginError(f"intensity must lie in [0, 1] (a value or a (low, high) range), got {intensity!r}")
    return low, high


def degrade(
    image: Image.Image | torch.Tensor,
    kinds: str | Sequence[str],
    seed: int,
    intensity: float | tuple[float, float] = (0.3, 0.9),
) -> Image.Image | torch.Tensor:
    """Degrade `image` (PIL, or float tensor [3,H,W] in [0,1]); returns the same type
    (PIL RGB for PIL input, a tensor of the input's dtype and device otherwise).

    `kinds`: one name of `DEGRADATIONS` or several, applied in the given order. A tuple
    `intensity` draws one intensity per degradation uniformly in that range from the
    seeded generator. The result depends only on (image, kinds, seed, intensity).
    """
    names = _kinds(kinds)
    low, high = _intensity_range(intensity)
    if isinstance(image, Image.Image):
        work = _to_tensor(image)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
            raise PluginError(f"expected an image tensor [3, H, W], got shape {tuple(image.shape)}")
        # CPU float32 whatever came in, so results do not depend on the device.
        work = image.detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(0, 1)
    else:
        raise PluginError(f"expected a PIL image or a [3, H, W] tensor, got {type(image).__name__}")
    generator = make_generator(seed)
    for name in names:
        value = _uniform(generator, low, high) if high > low else low
        work = DEGRADATIONS[name].apply(work, value, generator).clamp(0, 1)
    if isinstance(image, Image.Image):
        return _to_pil(work)
    return work.to(image.device, image.dtype)
