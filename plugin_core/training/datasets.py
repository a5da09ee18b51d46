"""Training pairs (degraded input, clean target) from the places users keep them.

* the reference CSV: header `image,conditioning_image` = (target, input), paths relative
  to a data root (the CSV's folder by default);
* a folder with `input/` and `target/` holding files of matching names;
* images in memory (ComfyUI IMAGE batches) or the synthetic generator.

Every problem is found when the dataset is built and named in the error: an empty
folder, unmatched names, missing CSV paths, files that are not images.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..images import check_image_file, image_files, load_image
from ..outputs import inside


class PairDataset(torch.utils.data.Dataset):
    """(input, target) RGB image pairs."""

    def __init__(self, pairs: Sequence[tuple], description: str):
        if not pairs:
            raise DataError(f"no training pairs in {description}")
        self.pairs = list(pairs)
        self.description = description

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        source, target = self.pairs[index]
        return load_image(source), load_image(target)

    @classmethod
    def from_csv(cls, csv_path: Path | str, root: Path | str | None = None, within: Sequence | None = None,
                 hint: str = "") -> "PairDataset":
        """The pairs a CSV lists; with `within` (folders) a listed file outside them is refused before
        any listed file is looked at (`hint`: what the refusal adds, e.g. how to allow a folder)."""
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DataError(f"{csv_path}: CSV file not found")
        root = Path(root) if root is not None else csv_path.parent
        with csv_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "conditioning_image"} <= set(reader.fieldnames):
                raise DataError(f"{csv_path}: needs the header 'image,conditioning_image' (target, input)")
            rows = list(reader)
        pairs = [(root / row["conditioning_image"], root / row["image"]) for row in rows]
        outside = [f"line {line}: {path}" for line, pair in enumerate(pairs, start=2) for path in pair
                   if within is not None and not inside(path, within)]
        if outside:
            raise DataError(f"{csv_path}: {len(outside)} listed file(s) lie outside the folders data may come from "
                            f"({', '.join(map(str, within))}): {'; '.join(outside[:5])}{hint}")
        missing = []
        for line, (source, target) in enumerate(pairs, start=2):
            for path in (source, target):
                if not path.is_file():
                    missing.append(f"line {line}: {path}")
        if missing:
            shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{csv_path}: {len(missing)} listed file(s) do not exist: {shown}")
        for source, target in pairs:
            check_image_file(source, error=DataError)
            check_image_file(target, error=DataError)
        return cls(pairs, f"CSV {csv_path}")

    @classmethod
    def from_folder(cls, folder: Path | str) -> "PairDataset":
        folder = Path(folder)
        inputs, targets = folder / "input", folder / "target"
        for sub in (inputs, targets):
            if not sub.is_dir():
                raise DataError(f"{folder}: needs the sub-folders input/ and target/ (missing {sub.name}/)")
        listing = {
            sub: {p.stem: p for p in image_files(sub)} for sub in (inputs, targets)
        }
        if not listing[inputs] and not listing[targets]:
            raise DataError(f"{folder}: input/ and target/ hold no images")
        unmatched_in = sorted(set(listing[inputs]) - set(listing[targets]))
        unmatched_out = sorted(set(listing[targets]) - set(listing[inputs]))
        if unmatched_in or unmatched_out:
            parts = []
            if unmatched_in:
                parts.append(f"in input/ only: {', '.join(unmatched_in[:5])}")
            if unmatched_out:
                parts.append(f"in target/ only: {', '.join(unmatched_out[:5])}")
            raise DataError(f"{folder}: file names do not match ({'; '.join(parts)})")
        pairs = [(listing[inputs][name], listing[targets][name]) for name in sorted(listing[inputs])]
        for source, target in pairs:
            check_image_file(source, error=DataError)
            check_image_file(target, error=DataError)
        return cls(pairs, f"folder {folder}")

    @classmethod
    def from_images(cls, inputs: Sequence[Image.Image], targets: Sequence[Image.Image], description="images") -> "PairDataset":
        if len(inputs) != len(targets):
            raise DataError(f"{len(inputs)} input images but {len(targets)} targets")
        return cls(list(zip(inputs, targets)), description)

    @classmethod
    def from_path(cls, path: Path | str, within: Sequence | None = None, hint: str = "") -> "PairDataset":
        """A CSV file or an input/ + target/ folder (`within`, `hint`: see from_csv)."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            return cls.from_csv(path, within=within, hint=hint)
        if path.is_dir():
            if (path / "input").is_dir() or (path / "target").is_dir():
                return cls.from_folder(path)
            csvs = sorted(path.glob("*.csv"))
            if len(csvs) == 1:
                return cls.from_csv(csvs[0], within=within, hint=hint)
            raise DataError(f"{path}: expected input/ and target/ sub-folders or one pairs CSV")
        raise DataError(f"{path}: not found")


@dataclass
class Augment:
    """Reference-style augmentation: a random crop to the training size, a horizontal flip.

    Any size and aspect ratio: an image whose short side is below `size` is first scaled
    up (bicubic) so the crop fits. The same crop and flip apply to input and target.
    Without augmentation the centre crop is taken.
    """

    size: int = 512
    random_crop: bool = True
    random_flip: bool = True

    def __call__(self, source: Image.Image, target: Image.Image, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if target.size != source.size:
            target = target.resize(source.size, resample=Image.BICUBIC)
        width, height = source.size
        scale = self.size / min(width, height)
        if scale > 1:
            width, height = max(self.size, round(width * scale)), max(self.size, round(height * scale))
            source = source.resize((width, height), resample=Image.BICUBIC)
            target = target.resize((width, height), resample=Image.BICUBIC)
        if self.random_crop:
            left = int(torch.randint(0, width - self.size + 1, (), generator=generator))
            top = int(torch.randint(0, height - self.size + 1, (), generator=generator))
        else:
            left, top = (width - self.size) // 2, (height - self.size) // 2
        flip = self.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        box = (left, top, left + self.size, top + self.size)
        return tuple(_to_tensor(image.crop(box), flip) for image in (source, target))


def _to_tensor(image: Image.Image, flip: bool) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
