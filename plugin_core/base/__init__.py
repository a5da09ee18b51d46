"""The frozen base on diffusers / transformers (an SD 1.x UNet, VAE and scheduler, CLIP vision,
SD's CLIP text encoder): what --sd / --clip-vision name checked (sources.py: folders, or the single
files ComfyUI users have, sd_file.py and clip_file.py), loaded (models.py), and the calls a restore
and a training step make on it (calls.py). Imported lazily: checking a source needs no diffusers."""

from ..lazy import lazy_exports

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
