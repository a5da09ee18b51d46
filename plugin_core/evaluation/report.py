"""What an evaluation gives back: a table to read, and JSON / CSV files to keep.

JSON: {"metrics": {name: set value}, "per_image": {image: {name: value}}, "settings": {...}};
an infinite PSNR (identical images) is written as the string "inf". CSV: one row per image, then
the row "mean"."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import atomic_write

LOWER_IS_BETTER = ("lpips", "fid", "kid", "clip_fid", "clip_kid")
DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "fid": 2, "clip_fid": 2, "kid": 4, "clip_kid": 4, "kid_std": 4, "clip_kid_std": 4}


def _plain(value):
    return value if not isinstance(value, float) or math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def _shown(key: str, value: float) -> str:
    return f"{value:.{DIGITS.get(key, 4)}f}" if math.isfinite(value) else str(value)


@dataclass
class Report:
    metrics: dict[str, float]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "metrics": {k: _plain(v) for k, v in self.metrics.items()},
            "per_image": {name: {k: _plain(v) for k, v in scores.items()} for name, scores in self.per_image.items()},
            "settings": self.settings,
        }

    def write_json(self, path: Path) -> Path:
        return atomic_write(Path(path), lambda temp: Path(temp).write_text(json.dumps(self.as_dict(), indent=1) + "\n"))

    def write_csv(self, path: Path) -> Path:
        keys = list(next(iter(self.per_image.values()), {}))

        def write(temp):
            with open(temp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", *keys])
                for name, scores in self.per_image.items():
                    writer.writerow([name, *(_plain(scores[k]) for k in keys)])
                writer.writerow(["mean", *(_plain(self.metrics[k]) for k in keys)])

        return atomic_write(Path(path), write)

    def table(self, per_image: bool = True) -> str:
        """Per-image rows (when asked and there are any), the mean row, then the set metrics."""
        keys = list(next(iter(self.per_image.values()), {}))
        lines = []
        if keys:
            width = max([len("mean"), *(len(n) for n in self.per_image)]) if per_image else len("mean")
            header = "  ".join(f"{k + (' ↓' if k in LOWER_IS_BETTER else ' ↑'):>9}" for k in keys)
            lines.append(f"{'image':<{width}}  {header}")
            rows = list(self.per_image.items()) if per_image and len(self.per_image) > 1 else []
            for name, scores in rows + [("mean", self.metrics)]:
                lines.append(f"{name:<{width}}  " + "  ".join(f"{_shown(k, scores[k]):>9}" for k in keys))
        for key, value in self.metrics.items():
            if key not in keys:
                lines.append(f"{key}{' ↓' if key in LOWER_IS_BETTER else ''}: {_shown(key, value)}")
        return "\n".join(lines)
