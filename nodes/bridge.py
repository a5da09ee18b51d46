"""ComfyUI types <-> plugin_core. The only module that knows both sides' conventions.

ComfyUI IMAGE: float [B, H, W, C] in 0..1; LATENT: {"samples": unscaled VAE latents};
MODEL: a ModelPatcher; CLIP_VISION: comfy.clip_vision.ClipVisionModel.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from ..plugin_core import images as imaging
from ..plugin_core.errors import InputImageError, PluginMismatchError

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
    return [imaging.resize_for_vae(image, resolution, "min", 8) for image in images]


# ---------------------------------------------------------------------- model facts


def model_facts(model) -> dict:
    """What the plugin must fit: cross-attention width, first-level channels, output blocks."""
    base = model.model
    unet_config = getattr(base.model_config, "unet_config", {}) or {}
    diffusion = model.get_model_object("diffusion_model")
    num_res_blocks = unet_config.get("num_res_blocks", [0])
    return {
        "name": type(base.model_config).__name__,
        "context_width": unet_config.get("context_dim"),
        "channels": unet_config.get("model_channels"),
        "first_level_layers": num_res_blocks[0] if isinstance(num_res_blocks, (list, tuple)) else num_res_blocks,
        "output_blocks": len(getattr(diffusion, "output_blocks", [])),
    }


def check_plugin_fits(plugin, model) -> dict:
    facts = model_facts(model)
    if facts["output_blocks"] < 3 or facts["context_width"] is None:
        raise PluginMismatchError(f"Diff-Plugin patches UNet models with skip connections; this MODEL is {facts['name']}")
    plugin.check_base(context_width=facts["context_width"], channels=facts["channels"], what=f"MODEL ({facts['name']})")
    if facts["first_level_layers"] < plugin.config.scb_layers:
        raise PluginMismatchError(
            f"Task-Plugin '{plugin.task}' needs {plugin.config.scb_layers} layers in the UNet's first level; "
            f"this MODEL ({facts['name']}) has {facts['first_level_layers']}"
        )
    return facts


# ---------------------------------------------------------------------- encoders


@torch.no_grad()
def clip_hidden_states(clip_vision, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """ComfyUI CLIP vision hidden states at `layer` (before the post layer-norm), float, for
    preprocessed pixels: `last_hidden_state` for the last layer, the intermediate output else."""
    import comfy.model_management

    model = clip_vision.model
    layers = len(model.vision_model.encoder.layers)
    if layer > layers:
        raise PluginMismatchError(f"the plugin reads CLIP vision layer {layer}, this CLIP vision model has {layers}")
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = pixels.to(clip_vision.load_device)
    if layer == layers:
        return model(pixel_values=pixels, intermediate_output=None)[0].float()
    return model(pixel_values=pixels, intermediate_output=layer - 1)[1].float()


def clip_tokens(clip_vision, images: list[Image.Image], layer: int) -> torch.Tensor:
    """CLIP vision tokens of images with the reference's own preprocessing, on the CPU."""
    return clip_hidden_states(clip_vision, imaging.clip_pixels(images), layer).cpu()


def clip_vision_width(clip_vision) -> int:
    return clip_vision.model.vision_model.embeddings.class_embedding.shape[0]


VAE_FACTOR = 8  # SD's VAE: latent pixels per image pixel, per side


@torch.no_grad()
def encode_input(vae, model, images: list[Image.Image], tiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(unscaled VAE latent for the LATENT output, scaled latent the SCB reads).

    ComfyUI's VAE.encode returns the posterior mode (= mean); the SCB reads it times the
    model's latent scale, as the reference reads scaling_factor x mean. tiled: ComfyUI's own
    tiled encode (what VAE Encode (Tiled) does), for images too large to encode whole.
    """
    pixels = pil_to_image(images)
    if tiled:
        with torch.inference_mode():  # as nodes run (ComfyUI's tiled encode adds in place)
            raw = vae.encode_tiled(pixels, tile_x=512, tile_y=512, overlap=64).clone()
    else:
        raw = vae.encode(pixels)
    scaled = model.model.latent_format.process_in(raw.clone())
    return raw, scaled.float()


def resize_mask(mask: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """MASK [B,H,W] or [H,W] -> [B,1,*size] in [0,1]."""
    if mask.ndim == 2:
        mask = mask[None]
    if not torch.isfinite(mask).all():
        raise InputImageError("the MASK contains NaN or infinite values")
    return torch.nn.functional.interpolate(mask[:, None].float().clamp(0, 1), size=size, mode=mode).clamp(0, 1)


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
