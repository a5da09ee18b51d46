"""Measuring restorations, with the libraries the field uses (torchmetrics, scikit-image).

* `paired` — PSNR, SSIM (RGB or BT.601 Y) of one restored image against its reference:
  `paired_metrics`, the one entry point (also the trainer's validation);
* `perceptual` — LPIPS from AlexNet weights on disk;
* `sets` — FID / KID of a restored set against a clean one (CLIP ViT-B/32 as the paper, and
  Inception), and the statistics files of clean sets;
* `folders` — folders matched by name, sizes checked, per-image rows and means; `report` — the
  table, JSON and CSV.

Names are imported lazily: `paired_metrics` brings only torch and numpy (and torchmetrics on
its first call).
"""

from ..lazy import lazy_exports

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
