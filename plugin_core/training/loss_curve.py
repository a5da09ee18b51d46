"""The training loss curve as a PNG, drawn with PIL alone (no plotting library to install)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw


def write_loss_curve(path: Path, losses: Sequence[tuple[int, float]], size=(640, 360)) -> Image.Image:
    """A loss curve PNG (raw and smoothed, log scale) drawn with PIL alone."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 56, 16, size[0] - 16, size[1] - 36
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    points = [(s, l) for s, l in losses if math.isfinite(l) and l > 0]
    if len(points) >= 2:
        steps = [s for s, _ in points]
        logs = [math.log10(l) for _, l in points]
        lo, hi = min(logs), max(logs)
        hi = hi if hi > lo else lo + 1
        x0, x1 = steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1

        def xy(step, value):
            return (left + (step - x0) / (x1 - x0) * (right - left), bottom - (value - lo) / (hi - lo) * (bottom - top))

        draw.line([xy(s, v) for s, v in zip(steps, logs)], fill=(170, 200, 235), width=1)
        smooth, ema = [], logs[0]
        for value in logs:
            ema = 0.9 * ema + 0.1 * value
            smooth.append(ema)
        draw.line([xy(s, v) for s, v in zip(steps, smooth)], fill=(20, 90, 200), width=2)
        for value in (lo, hi):
            draw.text((4, xy(x0, value)[1] - 6), f"{10 ** value:.3g}", fill="black")
        draw.text((left, bottom + 8), f"step {x0}", fill="black")
        draw.text((right - 70, bottom + 8), f"step {x1}", fill="black")
    draw.text((left + 6, top + 4), "training loss (log scale)", fill="black")
    image.save(path)
    return image
