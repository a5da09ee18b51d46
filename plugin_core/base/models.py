"""The frozen base on diffusers / transformers: an SD 1.x UNet, VAE and scheduler, CLIP vision,
and optionally SD's CLIP text encoder (for the Plugin-Selector), loaded from what --sd and
--clip-vision name: diffusers / transformers folders, or the single files a ComfyUI user has
(sources.py checks either before anything loads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.fit import BaseFacts
from .sources import check_clip_vision_source, check_sd_source


@dataclass
class BaseModels:
    """The frozen parts of a restore or a training run."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    clip_vision: torch.nn.Module
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None

    @classmethod
    def from_pretrained(cls, sd: Path | str, clip_vision: Path | str, *, sd_config: Path | str | None = None,
                        with_text: bool = False, device="cpu", dtype=torch.float32) -> "BaseModels":
        """sd: a diffusers SD 1.x folder or a single-file checkpoint (its configs: the shipped SD 1.5
        ones, or the diffusers config folder `sd_config`); clip_vision: a transformers folder or a
        CLIP ViT-L/14 vision .safetensors. The VAE stays float32 in half-precision runs (SD's VAE
        overflows in fp16)."""
        if Path(sd).is_dir():
            check_sd_source(sd, config_dir=sd_config, with_text=with_text)
            parts = _sd_folder(Path(sd), with_text, device, dtype)
        else:
            from .sd_file import load_sd_file  # checks the file in full itself

            parts = load_sd_file(sd, config_dir=sd_config, with_text=with_text, device=device, dtype=dtype)
        return cls(**parts, clip_vision=load_clip_vision(clip_vision, device, dtype))

    def facts(self) -> BaseFacts:
        """What a plugin must fit in these models (models.check_fits)."""
        unet, clip = self.unet.config, getattr(self.clip_vision, "config", None)
        layers = unet.layers_per_block
        return BaseFacts(
            name="Stable Diffusion UNet / CLIP vision pair", context_width=unet.cross_attention_dim,
            channels=unet.block_out_channels[0], first_level_layers=layers if isinstance(layers, int) else layers[0],
            clip_width=clip.hidden_size if clip else None, clip_layers=clip.num_hidden_layers if clip else None,
        )


def _sd_folder(folder: Path, with_text: bool, device, dtype) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler

    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    parts = {
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).to(device).eval().requires_grad_(False),
        "vae": AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=vae_dtype).to(device).eval().requires_grad_(False),
        "scheduler": UniPCMultistepScheduler.from_pretrained(folder / "scheduler"),
    }
    if with_text:
        parts["text_encoder"], parts["tokenizer"] = load_clip_text(folder, device, dtype)
    return parts


def load_clip_vision(path: Path | str, device="cpu", dtype=torch.float32) -> torch.nn.Module:
    """transformers' CLIPVisionModel, frozen: from a CLIPVisionModel or CLIPModel folder, or a
    CLIP ViT-L/14 vision .safetensors file (clip_file.py)."""
    if Path(path).is_file():
        from .clip_file import load_clip_vision_file  # checks the file in full itself

        return load_clip_vision_file(path, device, dtype)
    from transformers import CLIPVisionModel

    check_clip_vision_source(path)
    return CLIPVisionModel.from_pretrained(path, torch_dtype=dtype).to(device).eval().requires_grad_(False)


def load_clip_text(sd: Path | str, device="cpu", dtype=torch.float32, *, sd_config: Path | str | None = None) -> tuple:
    """SD's CLIP-L text encoder (frozen) and tokenizer, from a diffusers SD folder or a single-file checkpoint."""
    if Path(sd).is_file():
        from .sd_file import load_sd_text_file

        return load_sd_text_file(sd, config_dir=sd_config, device=device, dtype=dtype)
    from transformers import CLIPTextModel, CLIPTokenizer

    check_sd_source(sd, with_text=True)
    model = CLIPTextModel.from_pretrained(Path(sd) / "text_encoder", torch_dtype=dtype).to(device)
    return model.eval().requires_grad_(False), CLIPTokenizer.from_pretrained(Path(sd) / "tokenizer")
