"""Overlapping latent tiles and their blend weights (MultiDiffusion-style averaging).

A `TilePlan` covers a latent of h x w with tiles of `tile` x `tile` (smaller where the latent
is), `overlap` apart from their neighbours; the last tile of a row or column is moved inward so
that it ends at the edge, so any size works, stride or not. Each tile's weight is 1 inside and
ramps linearly over the overlap towards every side it shares with another tile (never at the
image's own border); the weights are then divided by their sum, so that at every latent pixel
the tiles' weights add up to one and a blend of their predictions is a weighted average.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """This tile of a [..., H, W] tensor."""
        return tensor[..., self.y : self.y + self.h, self.x : self.x + self.w]

    def scaled(self, factor: int) -> "Tile":
        """The same tile in pixels (factor: the VAE's)."""
        return Tile(self.y * factor, self.x * factor, self.h * factor, self.w * factor)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """1 inside; (i + 1) / (overlap + 1) towards a side shared with a neighbour."""
    index = torch.arange(length, dtype=torch.float64)
    weight = torch.ones(length, dtype=torch.float64)
    if overlap > 0 and start > 0:
        weight = torch.minimum(weight, (index + 1) / (overlap + 1))
    if overlap > 0 and start + length < size:
        weight = torch.minimum(weight, (length - index) / (overlap + 1))
    return weight


class TilePlan:
    """Tiles over an h x w latent and their blend weights, which sum to one everywhere."""

    def __init__(self, height: int, width: int, tile: int, overlap: int):
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(f"tiles need 0 <= overlap < tile, got tile {tile} and overlap {overlap}")
        self.height, self.width, self.tile, self.overlap = height, width, tile, overlap
        th, tw = min(tile, height), min(tile, width)
        self.tiles = [Tile(y, x, th, tw) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]
        raw = [torch.outer(_ramp(t.h, t.y, height, overlap), _ramp(t.w, t.x, width, overlap)) for t in self.tiles]
        total = torch.zeros(height, width, dtype=torch.float64)
        for t, weight in zip(self.tiles, raw):
            t.crop(total).add_(weight)
        self.weights = [(weight / t.crop(total)).float() for t, weight in zip(self.tiles, raw)]

    @property
    def single(self) -> bool:
        """One tile covering the whole latent: sampling is exactly the untiled one."""
        return len(self.tiles) == 1

    def batches(self, size: int) -> list[list[int]]:
        """Tile indices in groups of `size`: the tiles of one UNet call."""
        return [list(range(i, min(i + size, len(self.tiles)))) for i in range(0, len(self.tiles), size)]

    def add(self, out: torch.Tensor, index: int, prediction: torch.Tensor) -> None:
        """Add tile `index`'s weighted prediction [..., h, w] to the blend `out` [..., H, W]."""
        self.tiles[index].crop(out).add_(prediction * self.weights[index].to(prediction))

    def image_crops(self, images, factor: int = 8) -> list[list]:
        """Each tile's crop of each (working-size) PIL image: [tiles][images]."""
        boxes = [t.scaled(factor) for t in self.tiles]
        return [[image.crop((b.x, b.y, b.x + b.w, b.y + b.h)) for image in images] for b in boxes]

    def describe(self, factor: int = 8) -> str:
        return (f"{len(self.tiles)} tiles of {self.tiles[0].w * factor}x{self.tiles[0].h * factor} px "
                f"(overlap {self.overlap * factor} px)")


TILE_PROMPTS = ("tile", "global")


@dataclass(frozen=True)
class TileSettings:
    """When and how an image is tiled, in pixels. An image whose working size fits in one tile is
    not tiled (exactly the untiled, reference result); size 0 never tiles.

    Defaults: images up to 1536 px a side (2.4 MP, more than the ~1 MP photos the reference ran
    whole) stay whole; larger ones go in 1536 px tiles overlapping by 256 px, the fewest tiles for
    a phone photo (9 for 12 MP) while a tile's working memory stays bounded. prompt: Fp per tile
    ("tile", from the tile's own pixels, nearer the 512 px crops the plugins were trained on) or
    one Fp from the whole image ("global")."""

    size: int = 1536
    overlap: int = 256
    batch: int = 1  # tiles per UNet call
    prompt: str = "tile"

    def __post_init__(self):
        if self.size < 0 or self.size % 8 or self.overlap < 0 or self.overlap % 8:
            raise ValueError(f"tile size and overlap must be multiples of 8 px, got {self.size} and {self.overlap}")
        if self.size and self.overlap >= self.size:
            raise ValueError(f"the tile overlap ({self.overlap} px) must be smaller than the tile ({self.size} px)")
        if self.batch < 1:
            raise ValueError(f"tiles per UNet call must be at least 1, got {self.batch}")
        if self.prompt not in TILE_PROMPTS:
            raise ValueError(f"tile prompt must be one of {TILE_PROMPTS}, got {self.prompt!r}")

    def plan(self, width: int, height: int, factor: int = 8) -> TilePlan | None:
        """The tiles of a working size (pixels), or None when the image fits in one tile."""
        if not self.size or (width <= self.size and height <= self.size):
            return None
        return TilePlan(height // factor, width // factor, self.size // factor, self.overlap // factor)
