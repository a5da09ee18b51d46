"""Unpaired set metrics, as the paper's Table 1: FID and KID of restored images against a clean set.

The features are clean-fid's ("clean" mode), from networks the user has on disk:

* `clip_vit_b_32`: CLIP ViT-B/32 image embeddings (the projection, 512-d), the reference's
  CLIP-FID; read from a transformers folder (a download of openai/clip-vit-base-patch32); input
  as CLIP's own preprocessing (short side 224, PIL bicubic, centre crop, OpenAI mean/std);
* `inception_v3`: the 2048-d pool features of clean-fid's TorchScript Inception
  (inception-2015-12-05.pt, the TensorFlow FID network), input resized as clean-fid's "clean" mode.

The distances are torchmetrics' (FrechetInceptionDistance, KernelInceptionDistance with
clean-fid's settings: 100 subsets of up to 1000, cubic polynomial kernel), on these features.
clean-fid itself is not used: it imports torchvision, which a CPU-only install does not have.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import PluginError
from ..formats import atomic_write, read_safetensors
from ..images import clip_pixels
from .perceptual import MissingWeightsError
from .requirements import need

CLIP_FEATURES, INCEPTION_FEATURES = "clip_vit_b_32", "inception_v3"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
INCEPTION_SIZE = 299
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # clean-fid's kernel_distance
STATS_FORMAT = "diff-plugin/set-features"


@dataclass
class FeatureNetwork:
    """A named feature extractor: PIL images -> [N, D] float64 features."""

    name: str
    extract: Callable[[Sequence[Image.Image]], torch.Tensor]
    source: str


def clip_network(folder: Path | str, device="cpu") -> FeatureNetwork:
    """CLIP ViT-B/32's projected image embeddings from a transformers CLIPModel or
    CLIPVisionModelWithProjection folder."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise MissingWeightsError(f"--clip-model {folder}: no config.json; CLIP-FID needs a transformers CLIP ViT-B/32 "
                                  "folder (a download of openai/clip-vit-base-patch32: config.json + model.safetensors)")
    kind = json.loads(config.read_text()).get("model_type")
    if kind not in ("clip", "clip_vision_model"):
        raise PluginError(f"--clip-model {folder}: config.json describes a {kind!r} model, not CLIP; give a download of "
                          "openai/clip-vit-base-patch32")
    from transformers import CLIPVisionModelWithProjection

    try:
        model, loading = CLIPVisionModelWithProjection.from_pretrained(folder, output_loading_info=True)
    except OSError as error:
        raise MissingWeightsError(f"--clip-model {folder}: the CLIP weights do not load ({str(error).splitlines()[0]}); "
                                  "the folder needs model.safetensors (or pytorch_model.bin)") from None
    if loading.get("missing_keys"):  # transformers would fill them with random values
        raise PluginError(f"--clip-model {folder}: these weights lack {', '.join(sorted(loading['missing_keys'])[:3])}; "
                          "CLIP-FID needs the whole CLIP ViT-B/32 (vision tower and visual projection)")
    model = model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def extract(images):
        pixels = clip_pixels([i.convert("RGB") for i in images]).to(device)
        return model(pixel_values=pixels).image_embeds.double().cpu()

    return FeatureNetwork(CLIP_FEATURES, extract, str(folder))


def inception_network(path: Path | str, device="cpu") -> FeatureNetwork:
    """clean-fid's TorchScript Inception: its `layers` on 299 x 299 input scaled to [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"--inception {path}: file not found; Inception FID needs clean-fid's {INCEPTION_FILE} "
                                  f"({INCEPTION_URL}; clean-fid keeps it at /tmp/{INCEPTION_FILE})")
    try:
        network = torch.jit.load(str(path), map_location=device).eval()
        layers = network.layers
    except (RuntimeError, AttributeError, ValueError) as error:
        raise PluginError(f"--inception {path}: not clean-fid's TorchScript Inception ({str(error).splitlines()[0]})") from None

    @torch.no_grad()
    def extract(images):
        pixels = torch.stack([torch.from_numpy(clean_resize(i)).permute(2, 0, 1) for i in images]).to(device)
        return layers.forward((pixels - 128) / 128).reshape(len(images), -1).double().cpu()  # as clean-fid's InceptionV3W

    return FeatureNetwork(INCEPTION_FEATURES, extract, str(path))


def clean_resize(image: Image.Image, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize (make_resizer("PIL", False, "bicubic")): each channel in float, PIL
    bicubic (antialiased), no quantisation; written out because importing clean-fid needs torchvision."""
    channels = np.asarray(image.convert("RGB"), dtype=np.float32)
    resized = [np.asarray(Image.fromarray(channels[..., c], mode="F").resize((size, size), Image.BICUBIC)) for c in range(3)]
    return np.stack(resized, axis=-1).clip(0, 255).astype(np.float32)


def features(network: FeatureNetwork, images: Sequence[Image.Image | Path], batch: int = 16,
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """[N, D] features of images (PIL or paths, read a batch at a time)."""
    from ..images import load_image

    out = []
    for start in range(0, len(images), batch):
        out.append(network.extract([load_image(i) for i in images[start : start + batch]]))
        if progress:
            progress(min(start + batch, len(images)), len(images))
    return torch.cat(out)


def set_distances(name: str, restored: torch.Tensor, reference: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """FID and KID (mean and std over the subsets) of two feature sets, by torchmetrics; keys
    prefixed `clip_` for CLIP features. KID's subsets are drawn from `seed`."""
    if len(restored) < 2 or len(reference) < 2:
        raise PluginError(f"FID and KID need at least 2 images in each set (restored: {len(restored)}, reference: {len(reference)})")
    if restored.shape[1] != reference.shape[1]:
        raise PluginError(f"{name} features of the restored set are {restored.shape[1]}-d but the reference's are "
                          f"{reference.shape[1]}-d: the statistics were written with another network")
    # the modules themselves: torchmetrics.image exports them only beside torch-fidelity, which custom features do not need
    fid_module = need("torchmetrics.image.fid", "torchmetrics", "FID")
    kid_module = need("torchmetrics.image.kid", "torchmetrics", "KID")
    feature = _Features(restored.shape[1])
    fid = fid_module.FrechetInceptionDistance(feature=feature).double()
    with warnings.catch_warnings():  # its note that it keeps every feature: that is what KID is
        warnings.simplefilter("ignore", UserWarning)
        kid = kid_module.KernelInceptionDistance(feature=feature, subsets=KID_SUBSETS,
                                            subset_size=min(KID_SUBSET_SIZE, len(restored), len(reference)))
    for metric in (fid, kid):
        metric.update(reference, real=True)
        metric.update(restored, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    prefix = "clip_" if name == CLIP_FEATURES else ""
    return {f"{prefix}fid": float(fid.compute()), f"{prefix}kid": float(kid_mean), f"{prefix}kid_std": float(kid_std)}


class _Features(torch.nn.Identity):
    """The features themselves as torchmetrics' "feature extractor": it then does the statistics."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x.double()


# ---------------------------------------------------------------------- statistics files


def write_statistics(path: Path | str, sets: dict[str, torch.Tensor], info: dict) -> Path:
    """The features of a clean set, one tensor per network (KID needs them all, FID their mean
    and covariance), as clean-fid's make_custom_stats keeps them."""
    from safetensors.torch import save_file

    metadata = {"format": STATS_FORMAT, "info": json.dumps(info)}
    tensors = {name: value.float().contiguous() for name, value in sets.items()}
    return atomic_write(Path(path), lambda temp: save_file(tensors, temp, metadata=metadata))


def read_statistics(path: Path | str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, metadata = read_safetensors(Path(path))
    if metadata.get("format") != STATS_FORMAT:
        raise PluginError(f"--reference-stats {path}: not a statistics file written by `diffplugin make-stats`")
    return {k: v.double() for k, v in tensors.items()}, json.loads(metadata.get("info", "{}"))
