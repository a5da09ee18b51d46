"""The frozen base on diffusers / transformers (an SD 1.x UNet, VAE and scheduler, CLIP vision,
SD's CLIP text encoder): what --sd / --clip-vision name checked (sources.py: folders, or the single
files ComfyUI users have, sd_file.py and clip_file.py), loaded (models.py), and the calls a restore
and a training step make on it (calls.py). Imported lazily: checking a source needs no diffusers."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .calls import (
        clip_hidden_states,
        clip_vision_tokens,
        joint_cross_attention,
        unet_skip_count,
        unet_with_residuals,
        vae_posterior,
    )
    from .clip_file import inspect_clip_vision_file, load_clip_vision_file
    from .models import BaseModels, load_clip_text, load_clip_vision
    from .sd_file import inspect_sd_file, load_sd_file, load_sd_text_file
    from .sources import check_base, check_clip_vision_source, check_sd_source

_EXPORTS = {
    "clip_hidden_states": "calls",
    "clip_vision_tokens": "calls",
    "joint_cross_attention": "calls",
    "unet_skip_count": "calls",
    "unet_with_residuals": "calls",
    "vae_posterior": "calls",
    "inspect_clip_vision_file": "clip_file",
    "load_clip_vision_file": "clip_file",
    "BaseModels": "models",
    "load_clip_text": "models",
    "load_clip_vision": "models",
    "inspect_sd_file": "sd_file",
    "load_sd_file": "sd_file",
    "load_sd_text_file": "sd_file",
    "check_base": "sources",
    "check_clip_vision_source": "sources",
    "check_sd_source": "sources",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
