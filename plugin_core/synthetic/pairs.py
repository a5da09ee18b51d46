"""Synthetic training pairs: `SyntheticPairs` (a Dataset of (degraded, clean) pairs made on the fly,
item `i` depending only on (seed, i)) and `write_pairs` (the same pairs on disk, in the reference
CSV layout)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..errors import DataError, PluginError
from ..images import IMAGE_SUFFIXES, image_files, load_image
from ..seeding import mix_seed
from .degradations import _intensity_range, _kinds, degrade


def _clean_list(clean: str | Path | Sequence) -> list:
    if isinstance(clean, (str, Path)):
        folder = Path(clean)
        if folder.is_file():
            return [folder]
        if not folder.is_dir():
            raise DataError(f"{folder}: folder of clean images not found")
        images = image_files(folder)
        if not images:
            raise DataError(f"{folder}: no clean images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    items = list(clean)
    if not items:
        raise DataError("no clean images given")
    return items


class SyntheticPairs(torch.utils.data.Dataset):
    """(degraded input, clean target) RGB pairs made on the fly from clean images.

    Item `i` degrades clean image `i // pairs_per_image` with generator seed
    `mix_seed(seed, i)`: the same on every call, in every worker and in any access order.
    Images are read lazily; missing files are reported when the dataset is built.
    """

    def __init__(
        self,
        clean_images: Sequence[str | Path | Image.Image],
        kinds: str | Sequence[str],
        seed: int = 0,
        intensity: float | tuple[float, float] = (0.3, 0.9),
        pairs_per_image: int = 1,
    ):
        self.kinds = _kinds(kinds)
        self.intensity = _intensity_range(intensity)
        if int(pairs_per_image) < 1:
            raise PluginError(f"pairs_per_image must be at least 1, got {pairs_per_image}")
        self.clean_images = list(clean_images)
        if not self.clean_images:
            raise DataError("no clean images given for synthetic pairs")
        missing = [str(p) for p in self.clean_images if not isinstance(p, Image.Image) and not Path(p).is_file()]
        if missing:
            shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{len(missing)} clean image file(s) not found: {shown}")
        self.seed = int(seed)
        self.pairs_per_image = int(pairs_per_image)
        self.description = f"synthetic {','.join(self.kinds)}"  # recorded in a trained plugin's info

    @classmethod
    def from_folder(cls, folder: Path | str, kinds: str | Sequence[str], **settings) -> "SyntheticPairs":
        """Pairs from every image in a folder of clean photos."""
        dataset = cls(_clean_list(folder), kinds, **settings)
        dataset.description += f" from {folder}"
        return dataset

    def __len__(self) -> int:
        return len(self.clean_images) * self.pairs_per_image

    def clean(self, index: int) -> Image.Image:
        """The clean target of item `index` (RGB)."""
        return load_image(self.clean_images[self._index(index) // self.pairs_per_image])

    def _index(self, index: int) -> int:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"index {index} out of range for {length} synthetic pairs")
        return index % length

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        index = self._index(int(index))
        target = self.clean(index)
        degraded = degrade(target, self.kinds, mix_seed(self.seed, index), self.intensity)
        return degraded, target


def write_pairs(
    clean: str | Path | Sequence,
    out_dir: str | Path,
    kinds: str | Sequence[str],
    seed: int = 0,
    intensity: float | tuple[float, float] = (0.3, 0.9),
    pairs_per_image: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write `SyntheticPairs(clean, ...)` to disk; returns the CSV path. Files already there are
    refused, before anything is written, unless `overwrite` (a clean image never is), or unless
    they are exactly these pairs (a rerun of the same photos and settings: nothing is written).

    `clean`: a folder of images (images.IMAGE_SUFFIXES, sorted by name) or a list of paths
    (or PIL images). Writes out_dir/input/<name>.png, out_dir/target/<name>.png and
    out_dir/pairs.csv (`image,conditioning_image` = target, input, relative to out_dir: the
    reference Diff-Plugin format). <name> is the clean file's stem, with `_<k>` for the k-th
    pair when pairs_per_image > 1, and `_<n>` added when two clean files share a stem.
    """
    _kinds(kinds)  # argument errors before any file is looked at
    images = _clean_list(clean)
    dataset = SyntheticPairs(images, kinds, seed=seed, intensity=intensity, pairs_per_image=pairs_per_image)
    out_dir = Path(out_dir)
    per_image = dataset.pairs_per_image
    names, used = [], set()
    for index in range(len(dataset)):
        item = images[index // per_image]
        stem = f"image{index // per_image:05d}" if isinstance(item, Image.Image) else Path(item).stem
        name = f"{stem}_{index % per_image}" if per_image > 1 else stem
        # Two clean files with one stem (a.jpg and a.png, or other folders); compared
        # case-blind because Windows and macOS file systems are.
        if name.lower() in used:
            name = f"{name}_{index // per_image}"
        while name.lower() in used:
            name += "_"
        used.add(name.lower())
        names.append(name)
    from ..outputs import check_new_files

    clean_files = [Path(item) for item in images if not isinstance(item, Image.Image)]
    csv_path = out_dir / "pairs.csv"
    rows = [("image", "conditioning_image")] + [(f"target/{name}.png", f"input/{name}.png") for name in names]
    targets = [csv_path] + [out_dir / sub / f"{name}.png" for name in names for sub in ("input", "target")]
    check_new_files(targets, overwrite=True, inputs=clean_files)  # never an input, whatever is there
    if not overwrite and _already_written(out_dir, names, dataset, rows):
        return csv_path  # a rerun with the same photos and settings: the pairs there are these
    check_new_files(targets, overwrite=overwrite)
    (out_dir / "input").mkdir(parents=True, exist_ok=True)
    (out_dir / "target").mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        degraded, target = dataset[index]
        degraded.save(out_dir / "input" / f"{name}.png")
        target.save(out_dir / "target" / f"{name}.png")
    with csv_path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return csv_path


def _already_written(out_dir: Path, names: list[str], dataset: "SyntheticPairs", rows: list[tuple]) -> bool:
    """Whether out_dir holds exactly these pairs: the same CSV rows and, pixel for pixel, the same
    images (what a second run of the same photos and settings would write)."""
    csv_path = out_dir / "pairs.csv"
    if not csv_path.is_file():
        return False
    with csv_path.open(newline="") as handle:
        if [tuple(row) for row in csv.reader(handle)] != rows:
            return False
    for index, name in enumerate(names):
        for image, sub in zip(dataset[index], ("input", "target")):
            path = out_dir / sub / f"{name}.png"
            if not path.is_file():
                return False
            with Image.open(path) as held:
                if held.mode != image.mode or held.size != image.size or held.tobytes() != image.tobytes():
                    return False
    return True
