"""What --sd and --clip-vision name, checked before any model loads: a diffusers / transformers
folder (its own configs), or one file as a ComfyUI user has it (a single-file SD 1.x checkpoint,
sd_file.py; a CLIP ViT-L/14 vision .safetensors, clip_file.py). One PluginError each. What the file
system shows (not there, a folder without its parts) is checked here without torch (`base_problems`,
which the command line reports with its argument mistakes); the files are inspected by sd_file.py
and clip_file.py, imported only then."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PluginError
from ..vocabulary import CLIP_VISION_TYPES

if TYPE_CHECKING:
    from .clip_file import ClipVisionInfo
    from .sd_file import SdFileInfo


def sd_folder_problem(folder: Path, *, with_text: bool = False) -> str | None:
    """A diffusers Stable Diffusion folder: unet/, vae/, scheduler/ (and text_encoder/, tokenizer/)."""
    for sub in ("unet", "vae", "scheduler") + (("text_encoder", "tokenizer") if with_text else ()):
        if not (folder / sub).is_dir():
            return f"--sd {folder}: not a diffusers Stable Diffusion folder (no {sub}/)"
    return None


def clip_vision_folder_problem(folder: Path) -> str | None:
    """A transformers CLIPVisionModel or CLIPModel folder (its config.json says which)."""
    config = folder / "config.json"
    if not config.is_file():
        return (f"--clip-vision {folder}: not a transformers CLIP vision folder (no config.json); "
                "give e.g. a download of openai/clip-vit-large-patch14, or its .safetensors file")
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        kind = None
    if kind not in CLIP_VISION_TYPES:
        return (f"--clip-vision {folder}: config.json describes a {kind!r} model, not CLIP "
                f"({' or '.join(CLIP_VISION_TYPES)}); give e.g. a download of openai/clip-vit-large-patch14")
    return None


def sd_source_problem(path: Path | str, *, config_dir: Path | str | None = None, with_text: bool = False) -> str | None:
    """What the file system shows wrong with --sd (and --sd-config), or None: no torch."""
    path = Path(path)
    if path.is_dir():
        if config_dir is not None:
            return f"--sd-config {config_dir}: only for a single-file --sd; {path} is a folder, which has its own configs"
        return sd_folder_problem(path, with_text=with_text)
    if not path.exists():
        return f"--sd {path}: file or folder not found (a Stable Diffusion 1.x checkpoint file, or a diffusers folder)"
    if config_dir is not None and not Path(config_dir).is_dir():
        return f"--sd-config {config_dir}: folder not found (a diffusers folder of SD configs: unet/, vae/, scheduler/)"
    return None


def clip_vision_source_problem(path: Path | str, *, config: Path | str | None = None) -> str | None:
    """What the file system shows wrong with --clip-vision, or None: no torch."""
    path = Path(path)
    if path.is_dir():
        if config is not None:
            return f"{config}: a CLIP vision config is only for a single file; {path} is a folder, which has its own"
        return clip_vision_folder_problem(path)
    if not path.exists():
        return (f"--clip-vision {path}: file or folder not found (a CLIP ViT-L/14 vision .safetensors file, or a "
                "transformers folder)")
    return None


def check_sd_source(path: Path | str, *, config_dir: Path | str | None = None, with_text: bool = False) -> SdFileInfo | None:
    """--sd: a diffusers folder (its own configs), or a single-file SD 1.x checkpoint checked in full
    (family, VAE, text encoder when with_text, shapes against the configs of config_dir or the shipped
    SD 1.5 ones). Returns the file's SdFileInfo, None for a folder."""
    problem = sd_source_problem(path, config_dir=config_dir, with_text=with_text)
    if problem:
        raise PluginError(problem)
    if Path(path).is_dir():
        return None
    from .sd_file import check_sd_file

    return check_sd_file(path, config_dir=config_dir, with_text=with_text)


def check_clip_vision_source(path: Path | str, *, config: Path | str | None = None) -> ClipVisionInfo | None:
    """--clip-vision: a transformers folder, or a CLIP ViT-L/14 vision .safetensors file (config: see
    clip_file). Returns the file's ClipVisionInfo, None for a folder."""
    problem = clip_vision_source_problem(path, config=config)
    if problem:
        raise PluginError(problem)
    if Path(path).is_dir():
        return None
    from .clip_file import inspect_clip_vision_file

    return inspect_clip_vision_file(path, config=config)


def base_problems(sd: Path | str | None, clip_vision: Path | str | None, *, sd_config: Path | str | None = None,
                  with_text: bool = False) -> list[str]:
    """What the file system shows wrong with both sources (None: not given), no torch: the command
    line reports these with its argument mistakes."""
    found = [sd_source_problem(sd, config_dir=sd_config, with_text=with_text) if sd is not None else None,
             clip_vision_source_problem(clip_vision) if clip_vision is not None else None]
    return [problem for problem in found if problem]


def check_base(sd: Path | str | None, clip_vision: Path | str | None, *, sd_config: Path | str | None = None,
               with_text: bool = False) -> None:
    """Both sources of a restore or a training run, before anything loads: what is wrong with
    either, in one message."""
    problems = base_problems(sd, clip_vision, sd_config=sd_config, with_text=with_text)
    if problems:
        raise PluginError("; ".join(problems))
    errors = []
    for given, check in ((sd, lambda: check_sd_source(sd, config_dir=sd_config, with_text=with_text)),
                         (clip_vision, lambda: check_clip_vision_source(clip_vision))):
        try:
            if given is not None:
                check()
        except PluginError as error:
            errors.append(error)
    if len(errors) > 1:
        raise PluginError("; ".join(map(str, errors)))
    if errors:
        raise errors[0]
