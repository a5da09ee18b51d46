"""ComfyUI types <-> plugin_core. The only module that knows both sides' conventions.

ComfyUI IMAGE: float [B, H, W, C] in 0..1; LATENT: {"samples": unscaled VAE latents};
MODEL: a ModelPatcher; CLIP_VISION: comfy.clip_vision.ClipVisionModel.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from PIL import Image

from ..plugin_core import BaseFacts, InputImageError, clip_pixels, resize_for_vae

log = logging.getLogger("diffplugin")


def image_to_pil(image: torch.Tensor) -> list[Image.Image]:
    """IMAGE [B,H,W,C] -> RGB PIL images (8-bit, as the reference reads files)."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise InputImageError(f"expected an IMAGE [batch, height, width, channels], got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise InputImageError("the IMAGE contains NaN or infinite values")
    array = (image[..., :3].detach().clamp(0, 1).cpu().float().numpy() * 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return [Image.fromarray(a) for a in array]


def pil_to_image(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255.0 for i in images]))


def working_images(images: list[Image.Image], resolution: int) -> list[Image.Image]:
    """The reference's working size: short side raised to `resolution`, sides to multiples of 8."""
    return [resize_for_vae(image, resolution, "min", 8) for image in images]


# ---------------------------------------------------------------------- model facts


def output_blocks(model) -> int:
    """How many output blocks the MODEL's UNet has (0 for models without skip connections)."""
    return len(getattr(model.get_model_object("diffusion_model"), "output_blocks", []))


def clip_vision_width(clip_vision) -> int:
    return clip_vision.model.vision_model.embeddings.class_embedding.shape[0]


def base_facts(model, clip_vision=None) -> BaseFacts:
    """What a plugin must fit in this MODEL (and CLIP_VISION): plugin_core's one fit check reads them."""
    base = model.model
    unet_config = getattr(base.model_config, "unet_config", {}) or {}
    num_res_blocks = unet_config.get("num_res_blocks", [0])
    name = f"MODEL ({type(base.model_config).__name__})" + (" / CLIP_VISION pair" if clip_vision is not None else "")
    vision = clip_vision.model.vision_model if clip_vision is not None else None
    return BaseFacts(
        name=name,
        context_width=unet_config.get("context_dim") if output_blocks(model) >= 3 else None,
        channels=unet_config.get("model_channels"),
        first_level_layers=num_res_blocks[0] if isinstance(num_res_blocks, (list, tuple)) else num_res_blocks,
        clip_width=clip_vision_width(clip_vision) if vision is not None else None,
        clip_layers=len(vision.encoder.layers) if vision is not None else None,
    )


# ---------------------------------------------------------------------- encoders


@torch.no_grad()
def clip_hidden_states(clip_vision, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """ComfyUI CLIP vision hidden states at `layer` (before the post layer-norm), float, for
    preprocessed pixels: `last_hidden_state` for the last layer, the intermediate output else."""
    import comfy.model_management

    model = clip_vision.model
    layers = len(model.vision_model.encoder.layers)
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = pixels.to(clip_vision.load_device)
    if layer == layers:
        return model(pixel_values=pixels, intermediate_output=None)[0].float()
    return model(pixel_values=pixels, intermediate_output=layer - 1)[1].float()


def clip_tokens(clip_vision, images: list[Image.Image], layer: int) -> torch.Tensor:
    """CLIP vision tokens of images with the reference's own preprocessing, on the CPU."""
    return clip_hidden_states(clip_vision, clip_pixels(images), layer).cpu()


VAE_FACTOR = 8  # SD's VAE: latent pixels per image pixel, per side


@torch.no_grad()
def encode(vae, images: list[Image.Image], tiled: bool = False) -> torch.Tensor:
    """The unscaled VAE latent (ComfyUI's LATENT) of same-size images: ComfyUI's VAE.encode, the
    posterior mode (= mean); tiled: ComfyUI's own tiled encode (what VAE Encode (Tiled) does)."""
    pixels = pil_to_image(images)
    if tiled:
        with torch.inference_mode():  # as nodes run (ComfyUI's tiled encode adds in place)
            return vae.encode_tiled(pixels, tile_x=512, tile_y=512, overlap=64).clone()
    return vae.encode(pixels)


def scaled_latent(model, raw: torch.Tensor) -> torch.Tensor:
    """The latent the SCB reads: the model's latent scale times the posterior mean, as the
    reference reads scaling_factor x mean (float32)."""
    return model.model.latent_format.process_in(raw.clone()).float()


def resize_mask(mask: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """MASK [B,H,W] or [H,W] -> [B,1,*size] in [0,1]."""
    if mask.ndim == 2:
        mask = mask[None]
    if not torch.isfinite(mask).all():
        raise InputImageError("the MASK contains NaN or infinite values")
    return torch.nn.functional.interpolate(mask[:, None].float().clamp(0, 1), size=size, mode=mode).clamp(0, 1)


def json_safe(value):
    """What a node sends the browser (`ui`), as JSON any parser reads: a NaN or infinite number as
    its text ('nan', 'inf', '-inf'), which JSON has no number for (Python would write NaN /
    Infinity, and the browser's JSON.parse refuses the whole message); dicts, lists and tuples
    walked through."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def make_autograd_safe(module: torch.nn.Module) -> int:
    """Swap inference tensors for plain copies with the same values.

    ComfyUI runs nodes in torch.inference_mode, so weights loaded there are inference
    tensors, which autograd refuses to save for backward (the plugin's gradients flow
    through the frozen UNet). Moving to a GPU makes plain copies anyway; on the CPU
    nothing moves, so copy them here, one tensor at a time. Values are unchanged for every
    other user of the MODEL."""
    swapped = 0
    with torch.inference_mode(False), torch.no_grad():
        for sub in module.modules():
            for name, value in list(sub._parameters.items()):
                if value is not None and value.is_inference():
                    sub._parameters[name] = torch.nn.Parameter(value.clone(), requires_grad=False)
                    swapped += 1
            for name, value in list(sub._buffers.items()):
                if value is not None and value.is_inference():
                    sub._buffers[name] = value.clone()
                    swapped += 1
    return swapped
