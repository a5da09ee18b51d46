"""LPIPS (Zhang et al. 2018, AlexNet, v0.1), computed by torchmetrics.

Its linear layers ship inside torchmetrics; the AlexNet backbone is torchvision's ImageNet file,
which torchvision would download into torch's hub cache. Nothing is downloaded here: the file is
read from `--lpips-weights PATH` or that cache, and a missing one is named with where to put it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import PluginError
from .requirements import need

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


class MissingWeightsError(PluginError):
    """A metric's network weights are not on disk."""


def cached_alexnet() -> Path:
    """Where torchvision keeps (and would download) the AlexNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_problem(weights: Path | None = None) -> str | None:
    """Why LPIPS cannot run here (torchvision missing, the AlexNet file absent), or None."""
    path = Path(weights) if weights else cached_alexnet()
    if not path.is_file():
        where = f"--lpips-weights {path}: file not found" if weights else f"{ALEXNET_FILE} is not in torch's hub cache ({path.parent})"
        return (f"LPIPS needs torchvision's AlexNet weights: {where}; download {ALEXNET_URL} on a machine with internet "
                f"and put it at {cached_alexnet()}, or pass --lpips-weights PATH")
    try:
        import torchvision  # noqa: F401  (torchmetrics builds the AlexNet with it)
    except ImportError as error:
        return (f"LPIPS needs torchvision, which does not import here ({error}); install the torchvision build that "
                "matches your torch (https://pytorch.org/get-started/locally/)")
    return None


class Lpips:
    """LPIPS of two same-size RGB PIL images (0: identical); loads once, then call it per pair."""

    def __init__(self, weights: Path | None = None, device="cpu"):
        problem = lpips_problem(weights)
        if problem:
            raise MissingWeightsError(problem)
        image = need("torchmetrics.image", "torchmetrics", "LPIPS")
        with _hub_holding(Path(weights) if weights else cached_alexnet()):
            metric = image.LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
        self.device = torch.device(device)
        self.metric = metric.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, restored: Image.Image, reference: Image.Image) -> float:
        pixels = [torch.from_numpy(np.asarray(i.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None] for i in (restored, reference)]
        self.metric.reset()
        return float(self.metric(*(p.to(self.device) for p in pixels)))


@contextlib.contextmanager
def _hub_holding(weights: Path):
    """torch's hub folder pointed, for the construction only, at a folder whose checkpoints/ holds
    `weights` under torchvision's file name: torchvision then loads that file and downloads nothing."""
    previous = getattr(torch.hub, "_hub_dir", None)  # restored as it was: unset still follows $TORCH_HOME
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "checkpoints").mkdir()
        os.symlink(weights.resolve(), Path(folder) / "checkpoints" / ALEXNET_FILE)
        torch.hub.set_dir(folder)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous
