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
from typing import Callable

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

    def crop(self, tensor: torch.Tensor, batch: list[int]) -> torch.Tensor:
        """The crops of `tensor` [rows, ..., H, W] by the tiles of `batch`, stacked tile-major."""
        return torch.cat([self.tiles[i].crop(tensor) for i in batch])

    def predict(self, like: torch.Tensor, tile_batch: int, call: Callable[[list[int]], torch.Tensor], *,
                dtype: torch.dtype | None = None, tick: Callable[[int], None] | None = None) -> torch.Tensor:
        """One prediction over the whole latent by tiles: `call(batch)` predicts the tiles of `batch`
        (`tile_batch` at a time, their rows stacked tile-major, as `crop` gives them), and the
        predictions are blended with the weights into a tensor shaped as `like` (of `dtype`, else
        like's). tick(calls done) after each call."""
        rows = like.shape[0]
        out = torch.zeros(like.shape, dtype=dtype or like.dtype, device=like.device)
        for number, batch in enumerate(self.batches(tile_batch), 1):
            prediction = call(batch)
            for k, i in enumerate(batch):
                self.add(out, i, prediction[k * rows : (k + 1) * rows])
            if tick:
                tick(number)
        return out

    def image_crops(self, images, factor: int = 8) -> list[list]:
        """Each tile's crop of each (working-size) PIL image: [tiles][images]."""
        boxes = [t.scaled(factor) for t in self.tiles]
        return [[image.crop((b.x, b.y, b.x + b.w, b.y + b.h)) for image in images] for b in boxes]

    def describe(self, factor: int = 8) -> str:
        return (f"{len(self.tiles)} tiles of {self.tiles[0].w * factor}x{self.tiles[0].h * factor} px "
                f"(overlap {self.overlap * factor} px)")
