"""The README's front-page picture (docs/images/workflows.jpg): each photo the example workflows
load, beside the same drawn scene without its degradation, which is what the workflow's restore
aims at. Both are drawn by tests/photos.py (the photo degraded by plugin_core.synthetic); the right
column is the target, not a restore: the repository carries no trained plugin to show one with.

    python scripts/front_page.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "images" / "workflows.jpg"
CELL, CAPTION, HEAD = (360, 288), 34, 40

# Each photo the workflows load: the workflows that load it, and what their restore removes.
ROWS = [
    ("demo_rain.jpg", "rain.png", "one Task-Plugin, a painted region, a large photo in tiles, training: the rain"),
    ("demo_snow_and_haze.jpg", "snow_and_haze.png", 'by instruction, "remove the snow and the haze"'),
    ("demo_rain_and_haze.jpg", "rain_and_haze.png", "rain and haze in one pass"),
    ("demo_snow_river.png", "snow_river.png", "the snow removed only on the river (its mask)"),
]


def pair(made: str) -> tuple[Image.Image, Image.Image]:
    """(the photo as the workflow loads it, the scene without its degradation where it is restored)."""
    from tests.photos import PHOTOS, RIVER, SIZES, make_photo, scene, snow_river

    if made == "snow_river.png":
        photo, mask = snow_river()
        clean = scene(29, photo.size, "landscape")
        ImageDraw.Draw(clean).polygon([(x * photo.width, y * photo.height) for x, y in RIVER], fill=(70, 120, 160))
        return photo, Image.composite(clean, photo, mask)  # outside the river the photo stays as it is
    seed = PHOTOS[made][0]
    return make_photo(made), scene(seed, SIZES[seed % len(SIZES)])


def fitted(image: Image.Image) -> Image.Image:
    cell = Image.new("RGB", CELL, (24, 24, 24))
    image = image.copy()
    image.thumbnail(CELL)
    cell.paste(image, ((CELL[0] - image.width) // 2, (CELL[1] - image.height) // 2))
    return cell


def figure() -> Image.Image:
    width = 2 * CELL[0] + 30
    canvas = Image.new("RGB", (width, HEAD + len(ROWS) * (CELL[1] + CAPTION + 10)), (16, 16, 16))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 8), "before: the photo an example workflow loads", fill=(235, 235, 235))
    draw.text((CELL[0] + 20, 8), "target: the scene without the degradation", fill=(235, 235, 235))
    draw.text((CELL[0] + 20, 22), "(drawn, not a restore)", fill=(160, 160, 160))
    y = HEAD
    for name, made, what in ROWS:
        before, target = pair(made)
        canvas.paste(fitted(before), (10, y))
        canvas.paste(fitted(target), (CELL[0] + 20, y))
        draw.text((10, y + CELL[1] + 6), f"{name}: {what}", fill=(120, 200, 255))
        y += CELL[1] + CAPTION + 10
    return canvas


def main() -> int:
    sys.path.insert(0, str(REPO))
    figure().save(OUT, quality=88)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
