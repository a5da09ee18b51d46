"""Measuring restorations, with the libraries the field uses (torchmetrics, scikit-image).

* `paired` — PSNR, SSIM (RGB or BT.601 Y) of one restored image against its reference:
  `paired_metrics`, the one entry point (also the trainer's validation);
* `perceptual` — LPIPS from AlexNet weights on disk;
* `sets` — FID / KID of a restored set against a clean one (CLIP ViT-B/32 as the paper, and
  Inception), and the statistics files of clean sets;
* `folders` — folders matched by name, sizes checked, per-image rows and means; `report` — the
  table, JSON and CSV;
* `plan` — what an evaluation reads, restores and writes, checked before any model loads, and
  restore-and-measure's restoring (through `restore.folders.restore_files`).

Names are imported lazily: `paired_metrics` brings only torch and numpy (and torchmetrics on
its first call).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .folders import match_folders, means, measure_pairs
    from .paired import paired_metrics, require_libraries
    from .perceptual import Lpips, MissingWeightsError, lpips_problem
    from .report import Report
    from .sets import clip_network, inception_network, set_distances

_EXPORTS = {
    "paired_metrics": "paired",
    "require_libraries": "paired",
    "Lpips": "perceptual",
    "MissingWeightsError": "perceptual",
    "lpips_problem": "perceptual",
    "clip_network": "sets",
    "inception_network": "sets",
    "set_distances": "sets",
    "match_folders": "folders",
    "means": "folders",
    "measure_pairs": "folders",
    "Report": "report",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
