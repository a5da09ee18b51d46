"""A single-file Stable Diffusion 1.x checkpoint in the original (LDM / CompVis) layout,
`.safetensors` or `.ckpt` (the latter only through torch.load(weights_only=True)), loaded with
no network.

Keys: the UNet under `model.diffusion_model.`, the VAE under `first_stage_model.`, SD's CLIP-L
text encoder under `cond_stage_model.transformer.`. The configs come from a diffusers folder
layout of configs (unet/config.json, vae/config.json, scheduler/scheduler_config.json,
text_encoder/config.json, tokenizer/): the shipped SD 1.5 ones (configs/sd15) unless
`config_dir` names another (a fine-tune with other shapes; the tests' tiny models).

Everything is checked before a model is built: the file is inspected from the safetensors header
(a .ckpt is read whole), other families are refused with what was found (SDXL, SD 2.x, inpainting
and instruct-pix2pix UNets, files without a UNet: a VAE or a LoRA alone, diffusers-layout files),
the shapes are compared with the configs, and the converted key set with each model on the meta
device (no memory). SD 1.x v-prediction fine-tunes cannot be told from their weights.

Loading: the UNet and the VAE through diffusers' own single-file loading (`from_single_file` on the
file's LDM weights, with `config=` the local config folder and `local_files_only=True`, so nothing
is fetched); the text encoder by its one-prefix key mapping here into transformers' CLIPTextModel
built from text_encoder/config.json, as diffusers' text-encoder single-file path is not public API.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PluginFileError
from ..formats import load_state_checked
from ..models.files import holds_plugin
from .clip_tokenizer import load_clip_tokenizer, tokenizer_problem
from .weight_files import WeightFile

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
SD15_CONFIGS = Path(__file__).resolve().parent / "configs" / "sd15"
NEEDS = ("the Task-Plugins need a Stable Diffusion 1.x checkpoint (a UNet with 4 input channels and "
         "cross-attention context 768, CLIP ViT-L/14 text encoder)")
_ATTN2 = r"^model\.diffusion_model\..*attn2\.to_k\.weight$"


@dataclass(frozen=True)
class SdFileInfo:
    """What a single-file SD 1.x checkpoint holds, read from its keys and shapes."""

    path: Path
    in_channels: int
    model_channels: int  # the UNet's first-level width
    context_width: int  # cross-attention context
    levels: int  # UNet resolution levels
    has_vae: bool
    has_text: bool

    def missing(self) -> list[str]:
        """The parts the file does not hold (the VAE is needed to restore; the text encoder for --prompt / the selector)."""
        return ([] if self.has_vae else [f"no VAE ({VAE}*)"]) + ([] if self.has_text else [f"no CLIP text encoder ({TEXT}*)"])

    def describe(self) -> str:
        parts = [f"SD 1.x UNet ({self.model_channels} channels, {self.levels} levels, context {self.context_width})"]
        return f"{self.path.name}: " + ", ".join(parts + self.missing())


@dataclass(frozen=True)
class _Configs:
    folder: Path
    unet: dict
    vae: dict
    text: dict | None
    shipped: bool

    @property
    def source(self) -> str:
        return "the shipped SD 1.5 configs" if self.shipped else f"the configs in {self.folder}"


def inspect_sd_file(path: Path | str) -> SdFileInfo:
    """Read a single-file checkpoint's keys and shapes (the safetensors header; a .ckpt through
    torch.load(weights_only=True)); refuse what is not an SD 1.x checkpoint, naming what was found."""
    return _inspect(WeightFile.open(path, "a Stable Diffusion 1.x checkpoint"))


def check_sd_file(path: Path | str, *, config_dir: Path | str | None = None, with_text: bool = False) -> SdFileInfo:
    """Everything load_sd_file checks, with no model built: the family, the parts needed (the VAE;
    the text encoder when with_text), the shapes against the configs and every key against each model."""
    weights = WeightFile.open(path, "a Stable Diffusion 1.x checkpoint")
    info, _ = _checked(weights, config_dir, with_text)
    return info


def load_sd_file(
    path: Path | str, *, config_dir: Path | str | None = None, with_text: bool = False, device="cpu", dtype=torch.float32
) -> dict:
    """The frozen SD 1.x parts of a single-file checkpoint: {"unet", "vae", "scheduler"} (diffusers),
    with "text_encoder" and "tokenizer" (transformers) when with_text. The VAE stays float32 in
    float16 runs, as BaseModels.from_pretrained does. Nothing is fetched."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler

    weights = WeightFile.open(path, "a Stable Diffusion 1.x checkpoint")
    _, configs = _checked(weights, config_dir, with_text)
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    models = {
        "unet": _from_single_file(UNet2DConditionModel, weights.tensors(UNET, dtype), configs.folder, "unet", device, dtype),
        "vae": _from_single_file(AutoencoderKL, weights.tensors(VAE, vae_dtype), configs.folder, "vae", device, vae_dtype),
        "scheduler": UniPCMultistepScheduler.from_pretrained(configs.folder / "scheduler", local_files_only=True),
    }
    if with_text:
        models["text_encoder"] = _load_text(weights, configs, device, dtype)
        models["tokenizer"] = load_clip_tokenizer(configs.folder / "tokenizer")
    return models


def load_sd_text_file(path: Path | str, *, config_dir: Path | str | None = None, device="cpu", dtype=torch.float32):
    """SD's CLIP text encoder (transformers, frozen) and tokenizer from a single-file checkpoint:
    what the Plugin-Selector reads, without building the UNet and the VAE."""
    weights = WeightFile.open(path, "a Stable Diffusion 1.x checkpoint")
    _, configs = _checked(weights, config_dir, with_text=True)
    return _load_text(weights, configs, device, dtype), load_clip_tokenizer(configs.folder / "tokenizer")


# ---------------------------------------------------------------------- what the file is


def _inspect(weights: WeightFile) -> SdFileInfo:
    problem = _not_sd1(weights)
    if problem:
        raise PluginFileError(f"{weights.path}: {problem}; {NEEDS}")
    conv_in = weights.shape(UNET + "input_blocks.0.0.weight")
    return SdFileInfo(
        path=weights.path,
        in_channels=conv_in[1],
        model_channels=conv_in[0],
        context_width=weights.first(_ATTN2)[1][1],
        levels=weights.count(r"^model\.diffusion_model\.input_blocks\.(\d+)\.0\.op\.weight$") + 1,
        has_vae=all(weights.shape(f"{VAE}{part}.conv_in.weight") for part in ("encoder", "decoder")),
        has_text=weights.shape(_text_prefix(weights) + "embeddings.token_embedding.weight") is not None,
    )


def _not_sd1(weights: WeightFile) -> str | None:
    """What the file is instead of an SD 1.x checkpoint, or None."""
    if not weights.has(UNET):
        return _without_unet(weights)
    if weights.has("conditioner.embedders."):
        return "an SDXL checkpoint (text encoders under conditioner.embedders.*)"
    conv_in = weights.shape(UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        for marker, name in (("joint_blocks.", "an SD3 transformer"), ("double_blocks.", "a Flux transformer")):
            if weights.has(UNET + marker):
                return f"{name} (model.diffusion_model.{marker}*), not a UNet"
        return f"a model.diffusion_model that is not an SD UNet (no input_blocks.0.0.weight; keys like {weights.sample_keys()})"
    attn2 = weights.first(_ATTN2)
    if attn2 is None:
        return "a UNet without cross-attention (no attn2 weights)"
    context = attn2[1][1]
    if context == 1024 or weights.has("cond_stage_model.model."):
        text = ", an OpenCLIP text encoder under cond_stage_model.model.*" if weights.has("cond_stage_model.model.") else ""
        return f"a Stable Diffusion 2.x checkpoint (cross-attention context {context}{text}; SD 2.x 768 px models are v-prediction)"
    if weights.has(UNET + "label_emb."):
        return f"an SDXL-type UNet (size conditioning in label_emb, cross-attention context {context})"
    if conv_in[1] == 9:
        return "an inpainting UNet (9 input channels: latent, mask, masked image)"
    if conv_in[1] == 8:
        return "an instruct-pix2pix UNet (8 input channels: latent and image latent)"
    if conv_in[1] != 4:
        return f"a UNet with {conv_in[1]} input channels"
    return None


def _without_unet(weights: WeightFile) -> str:
    keys = list(weights.shapes)
    if holds_plugin(keys):
        return "this is a Task-Plugin (tpb.*, scb.*), not a Stable Diffusion checkpoint: give it with --plugin"
    diffusers = sorted(key for key in keys if any(part in key for part in ("down_blocks.", "up_blocks.", "mid_block.")))
    if diffusers:
        return (f"weights in the diffusers layout (keys like '{diffusers[0]}'), not a single-file checkpoint in the "
                "original layout: give the diffusers folder they belong to (unet/, vae/, ...) instead")
    lora = [key for key in keys if "lora" in key.lower()]
    if lora:
        return f"a LoRA ({len(lora)} LoRA weights like '{lora[0]}'), not a checkpoint"
    if weights.has("control_model."):
        return "a ControlNet (control_model.*), not a checkpoint"
    vae = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", VAE)
    if all(key.startswith(vae) for key in keys):
        return "a VAE alone (no UNet under model.diffusion_model.*)"
    if all(key.startswith(("cond_stage_model.", "text_model.", "conditioner.")) for key in keys):
        return "a text encoder alone (no UNet under model.diffusion_model.*)"
    return f"no Stable Diffusion UNet (no model.diffusion_model.* weights; keys like {weights.sample_keys()})"


def _text_prefix(weights: WeightFile) -> str:
    """Where the CLIP text model's embeddings/encoder sit: under text_model. (transformers >= 4.x) or not (older files)."""
    return TEXT + "text_model." if weights.has(TEXT + "text_model.") else TEXT


# ---------------------------------------------------------------------- the checks before building


def _checked(weights: WeightFile, config_dir, with_text: bool) -> tuple[SdFileInfo, _Configs]:
    info = _inspect(weights)
    if not info.has_vae:
        raise PluginFileError(f"{weights.path}: holds no VAE ({VAE}*), which a restore needs; "
                              "use a checkpoint with its VAE baked in, or its diffusers folder")
    if with_text and not info.has_text:
        raise PluginFileError(f"{weights.path}: holds no CLIP text encoder ({TEXT}*), which --prompt and the "
                              "Plugin-Selector need; use a full checkpoint, or its diffusers folder")
    configs = _read_configs(config_dir, with_text)
    _check_fit(info, weights, configs, with_text)
    _check_structure(weights, configs, with_text)
    return info, configs


def _read_configs(config_dir, with_text: bool) -> _Configs:
    folder = Path(config_dir) if config_dir is not None else SD15_CONFIGS
    if not folder.is_dir():
        raise PluginFileError(f"{folder}: config folder not found (a diffusers folder of SD configs: unet/, vae/, scheduler/)")
    names = ["unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"] + (["text_encoder/config.json"] if with_text else [])
    loaded = {}
    for name in names:
        try:
            loaded[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PluginFileError(f"{folder}: not a diffusers config folder (no {name})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PluginFileError(f"{folder / name}: not a readable JSON config: {error}") from None
    problem = tokenizer_problem(folder / "tokenizer") if with_text else None
    if problem:
        raise PluginFileError(problem)
    return _Configs(folder, loaded["unet/config.json"], loaded["vae/config.json"], loaded.get("text_encoder/config.json"),
                    shipped=config_dir is None)


def _check_fit(info: SdFileInfo, weights: WeightFile, configs: _Configs, with_text: bool) -> None:
    """The headline shapes against the configs, in one message naming each difference."""
    unet, vae = configs.unet, configs.vae
    pairs = [
        ("UNet input channels", info.in_channels, unet.get("in_channels", 4)),
        ("UNet first-level channels", info.model_channels, unet["block_out_channels"][0]),
        ("UNet levels", info.levels, len(unet["block_out_channels"])),
        ("cross-attention context", info.context_width, unet.get("cross_attention_dim", 1280)),
        ("VAE first-level channels", weights.shape(VAE + "encoder.conv_in.weight")[0], vae["block_out_channels"][0]),
        ("VAE latent channels", weights.shape(VAE + "decoder.conv_in.weight")[1], vae.get("latent_channels", 4)),
    ]
    if with_text:
        vocab, width = weights.shape(_text_prefix(weights) + "embeddings.token_embedding.weight")
        layers = weights.count(r"^cond_stage_model\.transformer\.(?:text_model\.)?encoder\.layers\.(\d+)\.")
        text = configs.text
        pairs += [("text encoder width", width, text.get("hidden_size")), ("text vocabulary", vocab, text.get("vocab_size")),
                  ("text encoder layers", layers, text.get("num_hidden_layers"))]
    differences = [f"{name} {have} (config: {want})" for name, have, want in pairs if have != want]
    if differences:
        hint = ("for a fine-tune of other shapes give --sd-config, a diffusers folder of its configs "
                "(unet/, vae/, scheduler/, text_encoder/, tokenizer/)" if configs.shipped
                else "give the config folder these weights were made with")
        raise PluginFileError(f"{weights.path}: its weights do not fit {configs.source}: {', '.join(differences)}; {hint}")


def _check_structure(weights: WeightFile, configs: _Configs, with_text: bool) -> None:
    """Every converted key and shape against each model built on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(configs.unet)
        vae = AutoencoderKL.from_config(configs.vae)
    load_state_checked(unet, convert_ldm_unet_checkpoint(weights.meta(UNET), config=configs.unet), f"{weights.path} (UNet)")
    load_state_checked(vae, convert_ldm_vae_checkpoint(weights.meta(VAE), config=configs.vae), f"{weights.path} (VAE)")
    if with_text:
        text = _empty_text_model(configs)
        load_state_checked(text, _text_state(weights.meta(TEXT), text), f"{weights.path} (text encoder)")


# ---------------------------------------------------------------------- building


def _from_single_file(cls, ldm_state: dict, folder: Path, subfolder: str, device, dtype):
    """diffusers' single-file loading of one part, on its LDM weights, configs from the local folder only."""
    with _quiet_empty_fp32_warning():
        model = cls.from_single_file(ldm_state, config=str(folder), subfolder=subfolder, local_files_only=True,
                                     torch_dtype=dtype, device=torch.device(device))
    return model.to(device).eval().requires_grad_(False)


@contextlib.contextmanager
def _quiet_empty_fp32_warning():
    """from_single_file casts with .to(dtype), which makes diffusers warn about the modules to keep in
    float32 even when there are none ("...: []"); that one line says nothing, so it is left out."""
    logger = logging.getLogger("diffusers.models.modeling_utils")

    def keep(record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _empty_text_model(configs: _Configs):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig.from_pretrained(configs.folder / "text_encoder", local_files_only=True)
    with init_empty_weights():
        return CLIPTextModel(config)


def _text_state(ldm_state: dict, model) -> dict:
    """cond_stage_model.transformer.[text_model.]X -> the installed CLIPTextModel's key for X (with or
    without text_model., as the transformers version names them); position_ids only where it is a weight."""
    expected = set(model.state_dict())
    nested = any(key.startswith("text_model.") for key in expected)
    state = {}
    for key, value in ldm_state.items():
        name = key[len(TEXT):].removeprefix("text_model.")
        name = f"text_model.{name}" if nested else name
        if name in expected or not name.endswith("position_ids"):
            state[name] = value
    return state


def _load_text(weights: WeightFile, configs: _Configs, device, dtype):
    model = _empty_text_model(configs)
    model.load_state_dict(_text_state(weights.tensors(TEXT, dtype), model), strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


__all__ = ["SD15_CONFIGS", "SdFileInfo", "check_sd_file", "inspect_sd_file", "load_sd_file", "load_sd_text_file"]
