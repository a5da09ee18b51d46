"""Photos the tests make themselves: drawn scenes and their degraded versions.

No photo is stored in the repository. Each scene is drawn from its number alone (Python's
`random.Random(seed).random()` and numpy's legacy `RandomState(seed)`, both stable across
versions; PIL drawing), so every run, with or without ../shared, tests the same pixels:

* `landscape()`: sky, sun, two hills, a meadow and a house; the scene of the example
  workflows' thumbnails (scripts/build_example_workflows.py draws them with it);
* `scene(seed, size)`: a varied, photo-like scene: a landscape (hills, a lake, houses, trees,
  people), a street (buildings with windows, cars, pedestrians), a portrait (a face before a
  blurred background), a garden (flowers, leaves) or a night street (lit windows, lamps, a
  moon); drawn at twice the size and scaled down (soft edges), with textured ground, walls and
  foliage, film grain and a slight vignette;
* `PHOTOS`: the session's set, clean scenes and degraded ones made with plugin_core.synthetic's
  own degradations (rain, snow, haze, blur, low light, noise, JPEG, and mixes), each from a
  scene of its own; `write_photos(folder)` writes them as PNG (tests/conftest.py: `photo_dir`,
  once per session), with `snow_river()`: a snowy landscape with a river, and the river's mask.

They stand in for the authors' demo photos (CC BY-NC-SA, not ours to redistribute); being
made here, they are the repository's own (Apache-2.0, as its code).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ---------------------------------------------------------------------- the thumbnails' scene


def landscape(width: int = 400, height: int = 300) -> Image.Image:
    """Sky, sun, two hills, a meadow and a house (drawn for 400 x 300)."""
    scene = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(scene)
    for y in range(height):  # sky
        draw.line((0, y, width, y), fill=(90 + y // 4, 150 + y // 6, 230 - y // 5))
    draw.ellipse((290, 40, 350, 100), fill=(255, 220, 120))
    draw.polygon([(0, 200), (110, 120), (230, 200)], fill=(70, 120, 80))
    draw.polygon([(150, 210), (290, 110), (400, 200), (400, 210)], fill=(50, 100, 70))
    draw.rectangle((0, 200, width, height), fill=(60, 140, 70))
    draw.rectangle((60, 150, 120, 210), fill=(200, 80, 60))
    draw.polygon([(50, 150), (90, 115), (130, 150)], fill=(120, 50, 40))
    return scene


# ---------------------------------------------------------------------- varied scenes

THEMES = ("landscape", "street", "portrait", "garden", "night")
SKIN = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (173, 120, 80)]
HAIR = [(30, 20, 15), (90, 55, 30), (160, 110, 60), (200, 170, 110), (60, 60, 60), (120, 40, 20)]


class _Painter:
    """Drawing helpers over one canvas, all randomness from one seeded source."""

    def __init__(self, seed: int, width: int, height: int):
        self.random = random.Random(seed)
        self.noise = np.random.RandomState(seed % 2**32)
        self.width, self.height = width, height
        self.image = Image.new("RGB", (width, height))
        self.draw = ImageDraw.Draw(self.image)

    def u(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.random.random()

    def i(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + int(self.random.random() * (high - low + 1))

    def pick(self, items):
        return items[self.i(0, len(items) - 1)]

    def colour(self, base, spread: int = 30):
        return tuple(max(0, min(255, int(c + self.u(-spread, spread)))) for c in base)

    # textures ----------------------------------------------------------

    def smooth(self, cells_y: int, cells_x: int) -> np.ndarray:
        """Smooth noise in [0, 1] over the canvas: a random grid scaled up bicubically."""
        grid = (self.noise.rand(cells_y, cells_x) * 255).astype(np.uint8)
        up = Image.fromarray(grid).resize((self.width, self.height), Image.BICUBIC)
        return np.asarray(up, dtype=np.float32) / 255

    def texture(self, colour, strength: float = 0.25, cells: int = 24, streaks: bool = False) -> Image.Image:
        """A full-canvas texture of `colour`: mid-frequency blotches and fine grain (vertical
        streaks for grass)."""
        fine = self.noise.rand(self.height, self.width // 3 if streaks else self.width).astype(np.float32)
        if streaks:
            fine = np.asarray(Image.fromarray((fine * 255).astype(np.uint8)).resize((self.width, self.height), Image.BILINEAR),
                              dtype=np.float32) / 255
        blotches = self.smooth(max(2, cells * self.height // self.width), cells)
        gain = 1 + strength * (blotches - 0.5) * 1.6 + strength * (fine - 0.5)
        rgb = np.clip(np.asarray(colour, dtype=np.float32)[None, None] * gain[..., None], 0, 255)
        return Image.fromarray(rgb.astype(np.uint8))

    def fill(self, polygon, colour, **texture) -> None:
        """A polygon filled with a texture of `colour`."""
        mask = Image.new("L", (self.width, self.height), 0)
        ImageDraw.Draw(mask).polygon(polygon, fill=255)
        self.image.paste(self.texture(colour, **texture), (0, 0), mask)

    # scene parts -------------------------------------------------------

    def sky(self, top, bottom, horizon: int, clouds: float) -> None:
        y = np.linspace(0, 1, self.height, dtype=np.float32)[:, None, None]
        top, bottom = np.asarray(top, np.float32), np.asarray(bottom, np.float32)
        rgb = np.broadcast_to(top + (bottom - top) * np.clip(y * self.height / max(horizon, 1), 0, 1), (self.height, self.width, 3))
        cover = np.clip((self.smooth(4, 7) * 0.6 + self.smooth(9, 16) * 0.4 - (1 - clouds)) * 3, 0, 1)[..., None]
        shade = 0.8 + 0.2 * self.smooth(6, 10)[..., None]
        rgb = rgb * (1 - cover) + np.array([245, 245, 250], np.float32) * shade * cover
        self.image.paste(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)))

    def ridge(self, base: int, peak: int, colour, points: int = 9, **texture) -> None:
        xs = np.linspace(-0.05, 1.05, points) * self.width
        ys = [base - self.u(0.2, 1.0) * (base - peak) for _ in xs]
        polygon = [(0, self.height), *zip(xs.tolist(), ys), (self.width, self.height)]
        self.fill(polygon, colour, **texture)

    def house(self, x: float, ground: float, w: float, h: float, lit: bool = False) -> None:
        wall = self.pick([(200, 80, 60), (230, 220, 200), (180, 170, 150), (120, 140, 170), (220, 190, 120), (150, 90, 70)])
        self.fill([(x, ground - h), (x + w, ground - h), (x + w, ground), (x, ground)], self.colour(wall, 20), strength=0.18, cells=60)
        roof = self.colour(self.pick([(120, 50, 40), (70, 70, 80), (90, 60, 40), (40, 60, 90)]), 15)
        overhang = w * 0.08
        self.fill([(x - overhang, ground - h), (x + w / 2, ground - h - h * self.u(0.4, 0.7)), (x + w + overhang, ground - h)],
                  roof, strength=0.3, cells=80)
        door_w = w * 0.18
        door_x = x + self.u(0.15, 0.65) * w
        self.draw.rectangle((door_x, ground - h * 0.45, door_x + door_w, ground), fill=self.colour((80, 50, 30), 20))
        for row in range(2):
            for col in range(3):
                wx, wy = x + w * (0.1 + 0.3 * col), ground - h * (0.85 - 0.35 * row)
                if door_x - w * 0.12 < wx < door_x + door_w and row == 1:
                    continue
                glass = (250, 210, 110) if lit and self.u() < 0.7 else self.colour((120, 160, 190), 25)
                self.draw.rectangle((wx, wy, wx + w * 0.16, wy + h * 0.2), fill=glass, outline=(240, 240, 235), width=max(1, int(w / 60)))

    def tree(self, x: float, ground: float, h: float) -> None:
        trunk = h * 0.07
        self.draw.rectangle((x - trunk, ground - h * 0.45, x + trunk, ground), fill=self.colour((90, 60, 35), 15))
        green = self.colour(self.pick([(50, 110, 50), (70, 130, 60), (40, 90, 45), (110, 140, 50), (150, 110, 40)]), 20)
        for _ in range(7):
            r = h * self.u(0.15, 0.28)
            cx, cy = x + self.u(-0.2, 0.2) * h, ground - h * self.u(0.5, 0.85)
            leaf = self.colour(green, 18)
            self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=leaf)
            for _ in range(int(r)):  # leaves: small speckles
                a, d = self.u(0, 2 * math.pi), r * math.sqrt(self.u())
                px, py = cx + d * math.cos(a), cy + d * math.sin(a)
                s = max(1.0, r / 10)
                self.draw.ellipse((px - s, py - s, px + s, py + s), fill=self.colour(leaf, 35))

    def person(self, x: float, ground: float, h: float) -> None:
        """A standing figure: head, hair, torso, arms and legs."""
        skin, shirt = self.pick(SKIN), self.colour((self.i(20, 235), self.i(20, 235), self.i(20, 235)), 0)
        trousers = self.colour(self.pick([(40, 50, 90), (30, 30, 35), (110, 90, 70), (70, 80, 60)]), 15)
        limb = max(2, int(h * 0.07))
        hip, shoulder = ground - h * 0.47, ground - h * 0.8
        stride = h * self.u(0.02, 0.12)
        self.draw.line((x, hip, x - stride, ground), fill=trousers, width=limb)
        self.draw.line((x, hip, x + stride, ground), fill=trousers, width=limb)
        half = h * 0.12
        self.draw.polygon([(x - half, shoulder), (x + half, shoulder), (x + half * 0.85, hip + h * 0.04), (x - half * 0.85, hip + h * 0.04)],
                          fill=shirt)
        for side in (-1, 1):
            reach = side * h * self.u(0.1, 0.22)
            self.draw.line((x + side * half, shoulder + limb / 2, x + side * half + reach, shoulder + h * self.u(0.2, 0.32)),
                           fill=shirt, width=max(2, limb - 1))
        r = h * 0.09
        cy = shoulder - r * 1.15
        self.draw.ellipse((x - r, cy - r, x + r, cy + r), fill=skin)
        self.draw.chord((x - r * 1.05, cy - r * 1.1, x + r * 1.05, cy + r * 0.6), 180, 360, fill=self.pick(HAIR))

    def face(self, cx: float, cy: float, r: float) -> None:
        """A head and shoulders close up."""
        skin, hair = self.pick(SKIN), self.pick(HAIR)
        shirt = self.colour((self.i(30, 220), self.i(30, 220), self.i(30, 220)), 0)
        self.draw.ellipse((cx - 2.6 * r, cy + 1.1 * r, cx + 2.6 * r, cy + 4.5 * r), fill=shirt)
        self.draw.rectangle((cx - 0.35 * r, cy + 0.8 * r, cx + 0.35 * r, cy + 1.5 * r), fill=self.colour(skin, 8))
        self.draw.ellipse((cx - 1.15 * r, cy - 1.3 * r, cx + 1.15 * r, cy + 0.6 * r), fill=hair)
        self.draw.ellipse((cx - r * 0.85, cy - r * 1.0, cx + r * 0.85, cy + r * 1.05), fill=skin)
        self.draw.chord((cx - r * 0.95, cy - r * 1.25, cx + r * 0.95, cy + r * 0.05), 180, 360, fill=hair)
        for side in (-1, 1):
            ex, ey = cx + side * 0.36 * r, cy - 0.05 * r
            self.draw.ellipse((ex - 0.17 * r, ey - 0.09 * r, ex + 0.17 * r, ey + 0.09 * r), fill=(245, 245, 240))
            iris = self.pick([(70, 45, 25), (60, 100, 140), (80, 110, 70), (40, 30, 25)])
            self.draw.ellipse((ex - 0.08 * r, ey - 0.08 * r, ex + 0.08 * r, ey + 0.08 * r), fill=iris)
            self.draw.line((ex - 0.2 * r, ey - 0.24 * r, ex + 0.2 * r, ey - 0.28 * r), fill=hair, width=max(1, int(r * 0.06)))
        shadow = tuple(int(c * 0.8) for c in skin)
        self.draw.line((cx, cy + 0.05 * r, cx - 0.08 * r, cy + 0.38 * r, cx + 0.06 * r, cy + 0.42 * r), fill=shadow,
                       width=max(1, int(r * 0.05)))
        self.draw.arc((cx - 0.3 * r, cy + 0.35 * r, cx + 0.3 * r, cy + 0.72 * r), 20, 160, fill=(150, 60, 60), width=max(1, int(r * 0.07)))

    def car(self, x: float, ground: float, w: float) -> None:
        body = self.colour(self.pick([(180, 30, 30), (30, 60, 150), (220, 220, 220), (40, 40, 40), (200, 170, 40)]), 20)
        h = w * 0.3
        self.draw.rounded_rectangle((x, ground - h, x + w, ground - h * 0.2), radius=h * 0.2, fill=body)
        self.draw.polygon([(x + w * 0.2, ground - h), (x + w * 0.32, ground - h * 1.6), (x + w * 0.7, ground - h * 1.6),
                           (x + w * 0.82, ground - h)], fill=body)
        self.draw.polygon([(x + w * 0.27, ground - h * 1.05), (x + w * 0.35, ground - h * 1.5), (x + w * 0.68, ground - h * 1.5),
                           (x + w * 0.76, ground - h * 1.05)], fill=(150, 190, 210))
        for wx in (x + w * 0.22, x + w * 0.78):
            r = h * 0.33
            self.draw.ellipse((wx - r, ground - h * 0.2 - r, wx + r, ground - h * 0.2 + r), fill=(25, 25, 25))
            self.draw.ellipse((wx - r / 2, ground - h * 0.2 - r / 2, wx + r / 2, ground - h * 0.2 + r / 2), fill=(150, 150, 150))

    def flower(self, cx: float, cy: float, r: float) -> None:
        petal = self.colour(self.pick([(230, 60, 80), (250, 200, 40), (240, 240, 245), (160, 80, 200), (250, 130, 40)]), 20)
        for k in range(self.i(5, 8)):
            a = 2 * math.pi * k / 6 + self.u(0, 0.4)
            px, py = cx + r * math.cos(a), cy + r * math.sin(a)
            self.draw.ellipse((px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7), fill=petal, outline=self.colour(petal, 40))
        self.draw.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), fill=self.colour((230, 170, 30), 20))

    def finish(self, size, grain: float, vignette: float) -> Image.Image:
        """Scaled down to `size` (anti-aliased), a slight blur, film grain and a vignette."""
        image = self.image.resize(size, Image.LANCZOS).filter(ImageFilter.GaussianBlur(0.4))
        rgb = np.asarray(image, dtype=np.float32)
        h, w = rgb.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        falloff = 1 - vignette * (((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2) / 2
        rgb = rgb * falloff[..., None] + self.noise.normal(0, grain, rgb.shape).astype(np.float32)
        return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))


def _landscape(p: _Painter) -> None:
    horizon = int(p.height * p.u(0.4, 0.6))
    sky = p.pick([((70, 130, 210), (180, 210, 240)), ((40, 90, 170), (150, 190, 230)), ((120, 130, 150), (200, 200, 205)),
                  ((90, 80, 150), (250, 170, 110))])
    p.sky(p.colour(sky[0], 15), p.colour(sky[1], 15), horizon, p.u(0.2, 0.6))
    if p.u() < 0.6:
        r = p.width * p.u(0.03, 0.06)
        x, y = p.u(0.1, 0.9) * p.width, p.u(0.1, 0.3) * p.height
        p.draw.ellipse((x - r, y - r, x + r, y + r), fill=p.colour((255, 225, 130), 15))
    p.ridge(horizon + 5, horizon - p.height * 0.25, p.colour((100, 120, 140), 20), strength=0.15)
    p.ridge(horizon + 15, horizon - p.height * 0.12, p.colour((60, 115, 70), 20), points=7, strength=0.25)
    ground = p.colour(p.pick([(70, 140, 60), (110, 150, 60), (150, 130, 80), (90, 120, 50)]), 15)
    p.fill([(0, horizon + 10), (p.width, horizon + 10), (p.width, p.height), (0, p.height)], ground, strength=0.35, streaks=True)
    if p.u() < 0.5:  # a lake with a reflection of the sky
        top = horizon + p.height * p.u(0.08, 0.15)
        p.fill([(0, top), (p.width, top), (p.width, top + p.height * 0.15), (0, top + p.height * 0.12)],
               p.colour((80, 130, 170), 15), strength=0.2, cells=6)
        for _ in range(30):
            y, x = p.u(top, top + p.height * 0.12), p.u(0, p.width)
            p.draw.line((x, y, x + p.width * p.u(0.02, 0.08), y), fill=p.colour((170, 200, 220), 20), width=2)
    for _ in range(p.i(1, 3)):
        w = p.width * p.u(0.1, 0.18)
        p.house(p.u(0.0, 0.85) * p.width, horizon + p.height * p.u(0.12, 0.3), w, w * p.u(0.6, 0.9))
    for _ in range(p.i(2, 5)):
        p.tree(p.u(0, 1) * p.width, horizon + p.height * p.u(0.1, 0.4), p.height * p.u(0.2, 0.4))
    for _ in range(p.i(1, 3)):
        p.person(p.u(0.05, 0.95) * p.width, p.height * p.u(0.85, 0.98), p.height * p.u(0.25, 0.45))


def _street(p: _Painter, night: bool = False) -> None:
    horizon = int(p.height * 0.65)
    if night:
        p.sky(p.colour((10, 15, 40), 8), p.colour((40, 45, 80), 10), horizon, p.u(0.0, 0.2))
        r = p.width * 0.035
        x, y = p.u(0.1, 0.9) * p.width, p.height * p.u(0.08, 0.2)
        p.draw.ellipse((x - r, y - r, x + r, y + r), fill=(235, 235, 215))
    else:
        p.sky(p.colour((90, 150, 220), 20), p.colour((190, 215, 240), 15), horizon, p.u(0.1, 0.5))
    x = -p.u(0, 0.05) * p.width
    while x < p.width:  # a row of buildings with window grids
        w, h = p.width * p.u(0.12, 0.25), p.height * p.u(0.35, 0.6)
        wall = p.colour(p.pick([(170, 160, 150), (140, 90, 70), (200, 190, 170), (110, 115, 125), (190, 150, 110)]), 15)
        if night:
            wall = tuple(int(c * 0.35) for c in wall)
        p.fill([(x, horizon - h), (x + w, horizon - h), (x + w, horizon), (x, horizon)], wall, strength=0.2, cells=90)
        cols, rows = p.i(2, 5), p.i(3, 7)
        for row in range(rows):
            for col in range(cols):
                wx = x + w * (0.1 + 0.8 * col / cols)
                wy = horizon - h + h * (0.06 + 0.85 * row / rows)
                lit = night and p.u() < 0.5
                glass = p.colour((250, 210, 120), 15) if lit else p.colour((60, 70, 90) if night else (110, 150, 185), 20)
                p.draw.rectangle((wx, wy, wx + w * 0.55 / cols, wy + h * 0.5 / rows), fill=glass)
        x += w + p.u(0, 0.02) * p.width
    p.fill([(0, horizon), (p.width, horizon), (p.width, p.height), (0, p.height)],
           (45, 45, 50) if night else p.colour((105, 105, 110), 10), strength=0.3, cells=40)
    p.draw.rectangle((0, horizon, p.width, horizon + p.height * 0.04), fill=(70, 70, 72) if night else (170, 165, 155))
    y = horizon + p.height * 0.2
    for k in range(0, p.width, max(1, p.width // 8)):  # lane markings
        p.draw.rectangle((k, y, k + p.width // 16, y + p.height * 0.012), fill=(200, 200, 190) if not night else (120, 120, 110))
    if night:
        for _ in range(p.i(2, 4)):  # street lamps and their glow
            lx = p.u(0.05, 0.95) * p.width
            p.draw.line((lx, horizon + p.height * 0.05, lx, horizon - p.height * 0.3), fill=(30, 30, 30), width=max(2, p.width // 120))
            r = p.width * 0.04
            p.draw.ellipse((lx - r, horizon - p.height * 0.3 - r, lx + r, horizon - p.height * 0.3 + r), fill=(255, 230, 160))
    for _ in range(p.i(1, 3)):
        p.car(p.u(-0.05, 0.8) * p.width, horizon + p.height * p.u(0.12, 0.3), p.width * p.u(0.18, 0.28))
    for _ in range(p.i(2, 4)):
        p.person(p.u(0.05, 0.95) * p.width, horizon + p.height * p.u(0.05, 0.12), p.height * p.u(0.25, 0.35))


def _portrait(p: _Painter) -> None:
    p.sky(p.colour((p.i(60, 200), p.i(60, 200), p.i(60, 200)), 0), p.colour((p.i(60, 200), p.i(60, 200), p.i(60, 200)), 0),
          p.height, p.u(0.0, 0.3))
    background = p.image.copy()  # bokeh: soft discs, then blurred
    bokeh = ImageDraw.Draw(background)
    for _ in range(25):
        r = p.width * p.u(0.02, 0.08)
        x, y = p.u(0, p.width), p.u(0, p.height)
        bokeh.ellipse((x - r, y - r, x + r, y + r), fill=p.colour((200, 200, 170), 55))
    p.image.paste(background.filter(ImageFilter.GaussianBlur(p.width / 60)))
    p.draw = ImageDraw.Draw(p.image)
    side = min(p.width, p.height)
    p.face(p.width * p.u(0.4, 0.6), p.height * p.u(0.35, 0.45), side * p.u(0.16, 0.22))


def _garden(p: _Painter) -> None:
    p.image.paste(p.texture(p.colour((60, 110, 50), 15), strength=0.5, cells=12))
    for _ in range(40):  # leaves
        cx, cy, r = p.u(0, p.width), p.u(0, p.height), p.width * p.u(0.02, 0.06)
        a = p.u(0, math.pi)
        dx, dy = r * math.cos(a), r * math.sin(a)
        leaf = p.colour(p.pick([(50, 120, 40), (90, 150, 60), (30, 80, 35)]), 20)
        p.draw.polygon([(cx - dx, cy - dy), (cx - dy * 0.4, cy + dx * 0.4), (cx + dx, cy + dy), (cx + dy * 0.4, cy - dx * 0.4)], fill=leaf)
        p.draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=p.colour(leaf, 40), width=1)
    for _ in range(p.i(6, 14)):
        p.flower(p.u(0, p.width), p.u(0, p.height), p.width * p.u(0.015, 0.04))
    if p.u() < 0.5:
        p.person(p.u(0.2, 0.8) * p.width, p.height * 0.98, p.height * 0.7)


def scene(seed: int, size: tuple[int, int] = (320, 240), theme: str | None = None) -> Image.Image:
    """A drawn, photo-like scene that depends only on (seed, size, theme); the theme follows
    the seed unless given."""
    theme = theme or THEMES[seed % len(THEMES)]
    painter = _Painter(seed, size[0] * 2, size[1] * 2)
    {"landscape": _landscape, "street": _street, "portrait": _portrait, "garden": _garden,
     "night": lambda p: _street(p, night=True)}[theme](painter)
    return painter.finish(size, grain=painter.u(1.5, 4.0), vignette=painter.u(0.1, 0.3))


# ---------------------------------------------------------------------- the session's photos

SIZES = [(320, 240), (240, 320), (360, 240), (288, 288), (320, 256)]

# name -> (scene seed, degradations applied in order (none: a clean scene), intensity).
# tests/test_selector_training.py takes every photo here as a pseudo-label source for random
# plugins; its ZTA bounds move by about 0.005 from one set of photos to another (as they did
# with the authors' demo photos): after changing this set, run it.
PHOTOS: dict[str, tuple[int, tuple[str, ...], float]] = {
    **{f"scene_{seed:02d}.png": (seed, (), 0.0) for seed in range(20)},
    "rain.png": (20, ("rain",), 0.7),
    "snow.png": (21, ("snow",), 0.7),
    "haze.png": (22, ("haze",), 0.7),
    "lowlight.png": (23, ("lowlight",), 0.6),
    "blur.png": (24, ("motion_blur",), 0.6),
    "defocus.png": (25, ("defocus_blur",), 0.5),
    "noise.png": (26, ("noise",), 0.6),
    "jpeg.png": (36, ("jpeg",), 0.8),
    "snow_and_haze.png": (28, ("snow", "haze"), 0.6),
    "rain_and_haze.png": (30, ("rain", "haze"), 0.6),
    "lowlight_and_blur.png": (31, ("motion_blur", "lowlight"), 0.5),
    "rain_and_noise.png": (32, ("rain", "noise"), 0.5),
    "haze_and_noise.png": (33, ("haze", "noise"), 0.5),
    "defocus_and_jpeg.png": (34, ("defocus_blur", "jpeg"), 0.5),
    "snow_and_blur.png": (35, ("snow", "motion_blur"), 0.5),
}


def make_photo(name: str) -> Image.Image:
    from plugin_core.synthetic import degrade

    seed, kinds, intensity = PHOTOS[name]
    image = scene(seed, SIZES[seed % len(SIZES)])
    return degrade(image, list(kinds), seed=seed, intensity=intensity) if kinds else image


# The river of `snow_river()`: its band across the scene, as fractions of (width, height).
RIVER = [(0.0, 0.70), (0.45, 0.64), (1.0, 0.60), (1.0, 0.74), (0.5, 0.80), (0.0, 0.90)]


def snow_river(size: tuple[int, int] = (360, 240)) -> tuple[Image.Image, Image.Image]:
    """A landscape with a river across it, snow falling over all of it, and the river as a mask
    (white; 'L'): the photo of the workflow 'Remove the snow only on the river'."""
    from plugin_core.synthetic import degrade

    width, height = size
    band = [(x * width, y * height) for x, y in RIVER]
    image = scene(29, size, "landscape")
    ImageDraw.Draw(image).polygon(band, fill=(70, 120, 160))
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).polygon(band, fill=255)
    return degrade(image, ["snow"], seed=29, intensity=0.7), mask


def write_photos(folder: Path) -> Path:
    """Every photo of PHOTOS into `folder` (PNG, lossless), and snow_river's photo and mask
    (snow_river.png, river_mask.png); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        make_photo(name).save(folder / name)
    photo, mask = snow_river()
    photo.save(folder / "snow_river.png")
    mask.save(folder / "river_mask.png")
    return folder


if __name__ == "__main__":  # python -m tests.photos OUT: look at them
    import sys

    print(write_photos(Path(sys.argv[1] if len(sys.argv) > 1 else "photos")))
