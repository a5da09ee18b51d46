"""Draw the Comfy Registry's icon and banner for this pack (docs/publishing.md).

    python scripts/registry_art.py            # writes docs/images/registry-icon.png and registry-banner.png

The registry's specification (https://docs.comfy.org/registry/specifications, [tool.comfy] Icon and
Banner) asks for an SVG, PNG, JPG or GIF; the icon square and at most 400 x 400 px, the banner 21:9.
Both show the same photo tile: a landscape split down the middle, rainy on the left, restored (clear)
on the right, with a before/after slider between them; the banner adds the pack's name. Drawn with
Pillow only (2x supersampled, then reduced), written as small palette PNGs. The registry reads them
from the raw URLs in pyproject.toml's [tool.comfy] Icon and Banner, which name the repository of
[project.urls] Repository (tests/test_registry.py checks both, and the sizes).
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parent.parent
ICON = REPO / "docs" / "images" / "registry-icon.png"
BANNER = REPO / "docs" / "images" / "registry-banner.png"
ICON_SIZE = (400, 400)  # square, the specification's maximum
BANNER_SIZE = (1260, 540)  # 21:9
SCALE = 2  # drawn at twice the size, then reduced: smooth edges without an anti-aliasing pass

BACKGROUND = (22, 26, 38)
CLEAR = {"sky": ((56, 132, 222), (178, 220, 250)), "far": (96, 168, 112), "near": (52, 128, 74), "water": (88, 160, 226)}
RAINY = {"sky": ((70, 76, 88), (138, 144, 152)), "far": (82, 100, 92), "near": (58, 74, 66), "water": (104, 114, 124)}


def gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A vertical gradient from `top` to `bottom`."""
    column = Image.new("RGB", (1, 256))
    column.putdata([tuple(round(a + (b - a) * i / 255) for a, b in zip(top, bottom)) for i in range(256)])
    return column.resize(size, Image.BILINEAR)


def hills(width: int, base: float, amplitude: float, waves: tuple[float, float], phase: float) -> list[tuple[float, float]]:
    """The outline of a range of hills: a sum of two sines along the width, closed along the bottom."""
    def height(x: float) -> float:
        return math.sin(x / width * waves[0] * math.pi + phase) * 0.6 + math.sin(x / width * waves[1] * math.pi + 2 * phase) * 0.4

    points = [(x, base - amplitude * height(x)) for x in range(0, width + 8, 8)]
    return points + [(width, 10 * width), (0, 10 * width)]


def scene(size: tuple[int, int], palette: dict, rainy: bool) -> Image.Image:
    """The landscape: sky, sun or clouds, two ranges of hills, a lake; rain streaks when rainy."""
    width, height = size
    image = gradient(size, *palette["sky"])
    draw = ImageDraw.Draw(image)
    horizon = height * 0.62
    if rainy:
        clouds = ((0.22, 0.20, 0.16), (0.40, 0.16, 0.19), (0.62, 0.22, 0.17), (0.84, 0.17, 0.2), (0.52, 0.30, 0.14))
        for cx, cy, r in clouds:
            box = [(cx - r * 1.3) * width, (cy - r * 0.6) * height, (cx + r * 1.3) * width, (cy + r * 0.6) * height]
            draw.ellipse(box, fill=(92, 98, 110))
    else:
        sun = (0.74 * width, 0.24 * height, 0.09 * min(width, height) * 1.6)
        glow = Image.new("L", size, 0)
        x, y, r = sun
        ImageDraw.Draw(glow).ellipse([x - 2 * r, y - 2 * r, x + 2 * r, y + 2 * r], fill=90)
        glow = glow.filter(ImageFilter.GaussianBlur(sun[2]))
        image.paste((255, 236, 170), mask=glow)
        draw.ellipse([sun[0] - sun[2], sun[1] - sun[2], sun[0] + sun[2], sun[1] + sun[2]], fill=(255, 214, 92))
    draw.polygon(hills(width, horizon - 0.04 * height, 0.07 * height, (3.0, 7.0), 0.6), fill=palette["far"])
    draw.rectangle([0, horizon + 0.10 * height, width, height], fill=palette["water"])
    draw.polygon(hills(width, horizon + 0.12 * height, 0.05 * height, (2.0, 5.0), 2.1), fill=palette["near"])
    if rainy:
        rain = Image.new("L", size, 0)
        streaks = ImageDraw.Draw(rain)
        generator = random.Random(29)  # the same streaks on every run
        length = 0.07 * height
        for _ in range(int(width * height / 900)):
            x, y = generator.uniform(-0.1, 1.1) * width, generator.uniform(-0.1, 1.0) * height
            shade = generator.randint(110, 200)
            streaks.line([x, y, x - 0.35 * length, y + length], fill=shade, width=max(1, round(width / 260)))
        image.paste((214, 222, 232), mask=rain)
    return image


def rounded_mask(size: tuple[int, int], radius: int) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, size[0] - 1, size[1] - 1], radius, fill=255)
    return mask


def tile(side: int) -> Image.Image:
    """The before/after photo tile, `side` px square, RGBA with rounded corners."""
    size = (side, side)
    before, after = scene(size, RAINY, rainy=True), scene(size, CLEAR, rainy=False)
    split = Image.new("L", size, 0)
    ImageDraw.Draw(split).rectangle([side // 2, 0, side, side], fill=255)
    image = Image.composite(after, before, split)
    draw = ImageDraw.Draw(image)
    line = max(2, side // 90)
    draw.rectangle([side // 2 - line // 2, 0, side // 2 + line // 2, side], fill=(255, 255, 255))
    knob = side * 0.085
    centre = (side / 2, side / 2)
    draw.ellipse([centre[0] - knob, centre[1] - knob, centre[0] + knob, centre[1] + knob], fill=(255, 255, 255))
    arrow = knob * 0.45
    for direction in (-1, 1):  # the slider's two arrows, pointing out
        tip = centre[0] + direction * knob * 0.75
        back = tip - direction * arrow
        draw.polygon([(tip, centre[1]), (back, centre[1] - arrow), (back, centre[1] + arrow)], fill=(40, 46, 62))
    result = image.convert("RGBA")
    result.putalpha(rounded_mask(size, side // 9))
    return result


def font(size: int, bold: bool) -> ImageFont.ImageFont:
    """DejaVu Sans where the system has it (most Linux systems); Pillow's own font otherwise."""
    names = ("DejaVuSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf") if bold else ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf")
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF"):
        path = Path(folder) / names[0]
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def shadow(image: Image.Image, blur: int) -> Image.Image:
    """A soft dark shadow of an RGBA image's shape."""
    alpha = image.getchannel("A").filter(ImageFilter.GaussianBlur(blur))
    dark = Image.new("RGBA", image.size, (0, 0, 0, 0))
    dark.putalpha(ImageChops.multiply(alpha, Image.new("L", image.size, 150)))
    return dark


def icon() -> Image.Image:
    side = ICON_SIZE[0] * SCALE
    return tile(side).resize(ICON_SIZE, Image.LANCZOS)


def banner() -> Image.Image:
    width, height = BANNER_SIZE[0] * SCALE, BANNER_SIZE[1] * SCALE
    canvas = Image.new("RGBA", (width, height), BACKGROUND + (255,))
    margin = round(height * 0.12)
    side = height - 2 * margin
    photo = tile(side)
    offset = SCALE * 6
    canvas.alpha_composite(shadow(photo, SCALE * 10), (margin + offset, margin + offset))
    canvas.alpha_composite(photo, (margin, margin))
    draw = ImageDraw.Draw(canvas)
    left = margin * 2 + side
    title = font(round(height * 0.19), bold=True)
    draw.text((left, height * 0.30), "Diff-Plugin", font=title, fill=(255, 255, 255), anchor="ls")
    body = font(round(height * 0.058), bold=False)
    lines = ("Restore rain, haze, snow, blur, moire,", "glare, low light and faces", "on any SD 1.x checkpoint, in ComfyUI")
    for index, text in enumerate(lines):
        draw.text((left, height * (0.45 + 0.095 * index)), text, font=body, fill=(200, 208, 224), anchor="ls")
    small = font(round(height * 0.045), bold=True)
    tagline = "CVPR 2024  ·  Task-Plugins  ·  train your own"
    draw.text((left, height * 0.82), tagline, font=small, fill=(255, 196, 84), anchor="ls")
    return canvas.resize(BANNER_SIZE, Image.LANCZOS)


def save(image: Image.Image, path: Path, colors: int) -> None:
    """A palette PNG (a few tens of KiB), transparency kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    save(icon(), ICON, 256)
    save(banner(), BANNER, 256)
    for path in (ICON, BANNER):
        with Image.open(path) as image:
            print(f"{path.relative_to(REPO)}: {image.width} x {image.height}, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
