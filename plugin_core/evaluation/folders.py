"""Folders of images as the metrics meet them: two folders matched by file name (the stem, so
`restore`'s `photo.png` meets the target `photo.jpg`), their sizes checked before anything is
measured, and the per-image paired metrics with the set's means."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError

from ..errors import PluginError
from ..images import image_files, load_image
from .paired import paired_metrics

SHOWN = 5
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height (load_image applies them)


def _listing(names: Sequence[str], more: int) -> str:
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def images_by_name(folder: Path, role: str) -> dict[str, Path]:
    """Stem -> image file of a folder; two files of one stem are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PluginError(f"{role} {folder}: folder not found")
    found: dict[str, Path] = {}
    for path in image_files(folder):
        if path.stem in found:
            raise PluginError(f"{role} {folder}: {found[path.stem].name} and {path.name} have the same name; "
                              "images are matched by name, keep one")
        found[path.stem] = path
    if not found:
        raise PluginError(f"{role} {folder}: no images")
    return found


@dataclass
class Matched:
    """Two folders matched by name: the pairs both have, and the names only one has (left out)."""

    pairs: list[tuple[str, Path, Path]]
    restored_only: list[str] = field(default_factory=list)
    reference_only: list[str] = field(default_factory=list)

    def left_out(self, restored: Path, reference: Path) -> str | None:
        """One line naming what is not measured; None when every name matched."""
        parts = [f"only in {folder}: {_listing(names[:SHOWN], len(names) - SHOWN)}"
                 for folder, names in ((restored, self.restored_only), (reference, self.reference_only)) if names]
        return "; ".join(parts) or None


def match_folders(restored: Path, reference: Path) -> Matched:
    """The (name, restored file, reference file) of every name both folders have, and the names only
    one has (a restore that skipped a broken file leaves its reference alone); no name in common is refused."""
    ours, theirs = images_by_name(restored, "PRED"), images_by_name(reference, "TARGET")
    matched = Matched([(name, ours[name], theirs[name]) for name in sorted(set(ours) & set(theirs))],
                      sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours)))
    if not matched.pairs:
        raise PluginError(f"no image of {restored} has a reference of the same name in {reference} "
                          f"({matched.left_out(restored, reference)}); images are matched by name, without the extension")
    return matched


def image_size(path: Path) -> tuple[int, int]:
    """Width, height as load_image gives the image (EXIF orientation applied), without decoding it."""
    try:
        with Image.open(path) as image:
            turned = image.getexif().get(0x0112) in _TURNED
            return (image.height, image.width) if turned else image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise PluginError(f"{path}: not a readable image ({error})") from None


def check_sizes(pairs: Sequence[tuple[str, Path | Image.Image, Path | Image.Image]], what=("restored", "reference")) -> None:
    """Every pair of the same size, or one message listing those that are not."""
    size = lambda item: item.size if isinstance(item, Image.Image) else image_size(item)  # noqa: E731
    wrong = []
    for name, a, b in pairs:
        (wa, ha), (wb, hb) = size(a), size(b)
        if (wa, ha) != (wb, hb):
            wrong.append(f"{name}: {what[0]} {wa}x{ha}, {what[1]} {wb}x{hb}")
    if wrong:
        raise PluginError(f"{len(wrong)} pair(s) differ in size ({_listing(wrong[:SHOWN], len(wrong) - SHOWN)}); "
                          "paired metrics compare images of the same size")


def measure_pairs(pairs: Sequence[tuple[str, Path | Image.Image, Path | Image.Image]], *, y_channel: bool = False,
                  lpips=None, progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """name -> paired_metrics of each pair (files are read one pair at a time)."""
    per_image = {}
    for done, (name, restored, reference) in enumerate(pairs, 1):
        per_image[name] = paired_metrics(load_image(restored), load_image(reference), y_channel=y_channel, lpips=lpips)
        if progress:
            progress(done, len(pairs))
    return per_image


def means(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    """The set's mean of every metric (PSNR too is the mean of the per-image dB, as papers report it)."""
    keys = list(next(iter(per_image.values()), {}))
    return {key: sum(scores[key] for scores in per_image.values()) / len(per_image) for key in keys}
