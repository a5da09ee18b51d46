"""What --sd and --clip-vision name, checked before any model loads: a diffusers / transformers
folder (its own configs), or one file as a ComfyUI user has it (a single-file SD 1.x checkpoint,
sd_file.py; a CLIP ViT-L/14 vision .safetensors, clip_file.py). One PluginError each."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PluginError
from .clip_file import CLIP_VISION_TYPES, ClipVisionInfo, inspect_clip_vision_file
from .sd_file import SdFileInfo, check_sd_file


def check_sd_folder(folder: Path, *, with_text: bool = False) -> None:
    """A diffusers Stable Diffusion folder: unet/, vae/, scheduler/ (and text_encoder/, tokenizer/)."""
    for sub in ("unet", "vae", "scheduler") + (("text_encoder", "tokenizer") if with_text else ()):
        if not (folder / sub).is_dir():
            raise PluginError(f"--sd {folder}: not a diffusers Stable Diffusion folder (no {sub}/)")


def check_clip_vision_folder(folder: Path) -> None:
    """A transformers CLIPVisionModel or CLIPModel folder (its config.json says which)."""
    config = folder / "config.json"
    if not config.is_file():
        raise PluginError(f"--clip-vision {folder}: not a transformers CLIP vision folder (no config.json); "
                          "give e.g. a download of openai/clip-vit-large-patch14, or its .safetensors file")
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        kind = None
    if kind not in CLIP_VISION_TYPES:
        raise PluginError(f"--clip-vision {folder}: config.json describes a {kind!r} model, not CLIP "
                          f"({' or '.join(CLIP_VISION_TYPES)}); give e.g. a download of openai/clip-vit-large-patch14")


def check_sd_source(path: Path | str, *, config_dir: Path | str | None = None, with_text: bool = False) -> SdFileInfo | None:
    """--sd: a diffusers folder (its own configs), or a single-file SD 1.x checkpoint checked in full
    (family, VAE, text encoder when with_text, shapes against the configs of config_dir or the shipped
    SD 1.5 ones). Returns the file's SdFileInfo, None for a folder."""
    path = Path(path)
    if path.is_dir():
        if config_dir is not None:
            raise PluginError(f"--sd-config {config_dir}: only for a single-file --sd; {path} is a folder, which has its own configs")
        check_sd_folder(path, with_text=with_text)
        return None
    if not path.exists():
        raise PluginError(f"--sd {path}: file or folder not found (a Stable Diffusion 1.x checkpoint file, or a diffusers folder)")
    return check_sd_file(path, config_dir=config_dir, with_text=with_text)


def check_clip_vision_source(path: Path | str, *, config: Path | str | None = None) -> ClipVisionInfo | None:
    """--clip-vision: a transformers folder, or a CLIP ViT-L/14 vision .safetensors file (config: see
    clip_file). Returns the file's ClipVisionInfo, None for a folder."""
    path = Path(path)
    if path.is_dir():
        if config is not None:
            raise PluginError(f"{config}: a CLIP vision config is only for a single file; {path} is a folder, which has its own")
        check_clip_vision_folder(path)
        return None
    if not path.exists():
        raise PluginError(f"--clip-vision {path}: file or folder not found (a CLIP ViT-L/14 vision .safetensors file, or a "
                          "transformers folder)")
    return inspect_clip_vision_file(path, config=config)


def check_base(sd: Path | str | None, clip_vision: Path | str | None, *, sd_config: Path | str | None = None,
               with_text: bool = False) -> None:
    """Both sources of a restore or a training run, before anything loads."""
    if sd is not None:
        check_sd_source(sd, config_dir=sd_config, with_text=with_text)
    if clip_vision is not None:
        check_clip_vision_source(clip_vision)
