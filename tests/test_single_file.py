"""Single-file base models (plugin_core.base.sd_file / clip_file): an SD 1.x checkpoint in the
original (LDM) layout and a ComfyUI-style CLIP vision .safetensors load with no network into the
same modules as the diffusers / transformers folders they were made from; other families are
refused with one message before any model is built. The files are written by tests/single_files.py,
whose diffusers -> LDM mapping is independent of diffusers' LDM -> diffusers conversion that
plugin_core calls, so the round trip tests it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

from plugin_core.errors import PluginError, PluginFileError
from tests import single_files as files
from tests.single_files import Tiny, TinyClip, sd_to_ldm, vit_header, write_safetensors

# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def no_model_built(monkeypatch):
    """Fails the test if any UNet, VAE, CLIP text or vision model is constructed (even on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModel

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a {type(self).__name__} was built")

    for cls in (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPVisionModel):
        monkeypatch.setattr(cls, "__init__", refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("single_file"))


def _one_line(error: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, PluginError), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


# ---------------------------------------------------------------------- SD 1.x single files


@torch.no_grad()
def test_sd_file_gives_the_modules_of_its_diffusers_folder(tiny, offline):
    from diffusers import UniPCMultistepScheduler
    from transformers import CLIPTokenizer

    from plugin_core.base.sd_file import inspect_sd_file, load_sd_file

    info = inspect_sd_file(tiny.file)
    assert (info.in_channels, info.model_channels, info.context_width, info.levels) == (4, 32, 768, 2)
    assert info.has_vae and info.has_text and not info.missing()
    models = load_sd_file(tiny.file, config_dir=tiny.folder, with_text=True)
    assert all(not p.requires_grad for name in ("unet", "vae", "text_encoder") for p in models[name].parameters())
    assert not any(models[name].training for name in ("unet", "vae", "text_encoder"))
    torch.manual_seed(1)
    sample, context = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 768)
    for t in (999, 3):
        ours = models["unet"](sample, t, encoder_hidden_states=context).sample
        assert torch.allclose(ours, tiny.unet(sample, t, encoder_hidden_states=context).sample, atol=1e-5, rtol=0)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    ours, theirs = models["vae"].encode(pixels).latent_dist, tiny.vae.encode(pixels).latent_dist
    assert torch.allclose(ours.mean, theirs.mean, atol=1e-5) and torch.allclose(ours.std, theirs.std, atol=1e-5)
    assert torch.allclose(models["vae"].decode(ours.mean).sample, tiny.vae.decode(theirs.mean).sample, atol=1e-5)
    assert models["vae"].config.scaling_factor == tiny.vae.config.scaling_factor
    tokenizer = CLIPTokenizer.from_pretrained(tiny.folder / "tokenizer")
    ids = tokenizer(["rain", "remove the haze"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(models["tokenizer"](["rain", "remove the haze"], padding="max_length", max_length=77,
                                           return_tensors="pt").input_ids, ids)
    ours, theirs = models["text_encoder"](ids), tiny.text(ids)
    assert torch.allclose(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5)
    assert torch.allclose(ours.pooler_output, theirs.pooler_output, atol=1e-5)
    assert isinstance(models["scheduler"], UniPCMultistepScheduler)
    assert dict(models["scheduler"].config) == dict(UniPCMultistepScheduler.from_pretrained(tiny.folder / "scheduler").config)


def test_ckpt_loads_the_same_through_weights_only(tiny, offline):
    from plugin_core.base.sd_file import load_sd_file

    path = files.write_sd_file(tiny.folder, tiny.root / "model.ckpt")  # {"state_dict": ..., "global_step": 1}
    models = load_sd_file(path, config_dir=tiny.folder, dtype=torch.float16)
    assert models["unet"].dtype == torch.float16 and models["vae"].dtype == torch.float32  # SD's VAE stays float32
    for name, reference in (("unet", tiny.unet), ("vae", tiny.vae)):
        ours = models[name].state_dict()
        assert all(torch.equal(ours[k].float(), v.to(ours[k].dtype).float()) for k, v in reference.state_dict().items())


def test_half_precision_file_loads_in_the_asked_dtype(tiny, offline):
    from plugin_core.base.sd_file import load_sd_file

    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny.ldm.items()}
    models = load_sd_file(tiny.write("half.safetensors", half), config_dir=tiny.folder, with_text=True)
    for name, reference in (("unet", tiny.unet), ("vae", tiny.vae), ("text_encoder", tiny.text)):
        ours = models[name].state_dict()
        assert all(ours[k].dtype == torch.float32 and torch.equal(ours[k], v.half().float()) for k, v in reference.state_dict().items())


def test_ckpt_holding_a_python_object_is_refused(tiny, no_model_built):
    import argparse

    from plugin_core.base.sd_file import load_sd_file

    path = tiny.write("unsafe.ckpt", {"state_dict": tiny.ldm, "hyper": argparse.Namespace(lr=1)})
    with pytest.raises(PluginFileError) as error:
        load_sd_file(path, config_dir=tiny.folder)
    _one_line(error, "unsafe.ckpt", "refused", "Python objects")


def _context_1024(state: dict) -> dict:
    return {k: torch.zeros(v.shape[0], 1024) if re.search(r"attn2\.to_[kv]\.weight$", k) else v for k, v in state.items()}


def _in_channels(count: int):
    key = "model.diffusion_model.input_blocks.0.0.weight"
    return lambda state: {**state, key: torch.zeros(state[key].shape[0], count, 3, 3)}


_NOT_SD1 = {
    "sdxl": (lambda s: {**s, "conditioner.embedders.1.model.ln_final.weight": torch.zeros(8)}, ["SDXL", "conditioner.embedders"]),
    "sdxl-unet": (lambda s: {**s, "model.diffusion_model.label_emb.0.0.weight": torch.zeros(8, 16)}, ["SDXL", "label_emb"]),
    "sd2": (_context_1024, ["Stable Diffusion 2.x", "context 1024"]),
    "sd2-openclip": (lambda s: {**{k: v for k, v in s.items() if not k.startswith("cond_stage_model.")},
                                "cond_stage_model.model.ln_final.weight": torch.zeros(8)}, ["2.x", "OpenCLIP"]),
    "inpainting": (_in_channels(9), ["inpainting", "9 input channels"]),
    "pix2pix": (_in_channels(8), ["instruct-pix2pix", "8 input channels"]),
    "lora": (lambda s: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
                        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
                        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}, ["LoRA"]),
    "vae-alone": (lambda s: {k: v for k, v in s.items() if k.startswith("first_stage_model.")}, ["a VAE alone"]),
    "diffusers-layout": (None, ["diffusers layout", "down_blocks"]),
    "sd3": (lambda s: {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(8, 8)}, ["SD3"]),
}


@pytest.mark.parametrize("kind", list(_NOT_SD1))
def test_other_families_are_refused_before_any_model_is_built(tiny, kind, no_model_built):
    from plugin_core.base.sd_file import inspect_sd_file, load_sd_file
    from plugin_core.base.sources import check_sd_source

    change, needles = _NOT_SD1[kind]
    if change is None:
        path = tiny.root / "diffusion_pytorch_model.safetensors"
        shutil.copy(tiny.folder / "unet" / "diffusion_pytorch_model.safetensors", path)
    else:
        path = tiny.write(f"{kind}.safetensors", change(dict(tiny.ldm)))
    for call in (inspect_sd_file, lambda p: load_sd_file(p, config_dir=tiny.folder, with_text=True),
                 lambda p: check_sd_source(p, config_dir=tiny.folder)):
        with pytest.raises(PluginFileError) as error:
            call(path)
        _one_line(error, path.name, "Stable Diffusion 1.x", *needles)


def test_missing_vae_is_an_error_missing_text_only_for_text(tiny, offline):
    from plugin_core.base.sd_file import inspect_sd_file, load_sd_file

    no_vae = tiny.write("no_vae.safetensors", tiny.without("first_stage_model."))
    assert inspect_sd_file(no_vae).missing() == ["no VAE (first_stage_model.*)"]
    with pytest.raises(PluginFileError) as error:
        load_sd_file(no_vae, config_dir=tiny.folder)
    _one_line(error, "no_vae.safetensors", "no VAE")
    no_text = tiny.write("no_text.safetensors", tiny.without("cond_stage_model."))
    assert not inspect_sd_file(no_text).has_text
    assert set(load_sd_file(no_text, config_dir=tiny.folder)) == {"unet", "vae", "scheduler"}
    with pytest.raises(PluginFileError) as error:
        load_sd_file(no_text, config_dir=tiny.folder, with_text=True)
    _one_line(error, "no_text.safetensors", "no CLIP text encoder", "Plugin-Selector")


def test_shapes_are_checked_against_the_configs_before_building(tiny, no_model_built):
    from plugin_core.base.sd_file import load_sd_file

    with pytest.raises(PluginFileError) as error:  # the tiny weights with the shipped SD 1.5 configs
        load_sd_file(tiny.file)
    _one_line(error, "model.safetensors", "shipped SD 1.5 configs", "UNet first-level channels 32 (config: 320)", "--sd-config")


def test_every_key_is_checked_on_the_meta_device(tiny):
    from plugin_core.base.sd_file import load_sd_file

    state = dict(tiny.ldm)
    del state["model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn1.to_q.weight"]
    with pytest.raises(PluginFileError) as error:
        load_sd_file(tiny.write("truncated.safetensors", state), config_dir=tiny.folder)
    _one_line(error, "truncated.safetensors (UNet)", "missing keys", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight")


def test_shipped_configs_take_sd15_shaped_weights():
    """The shipped configs against SD 1.5's shapes (SD15_UNET, SD's VAE, CLIP-L text), on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from plugin_core.base import sd_file
    from plugin_core.base.weight_files import WeightFile
    from tests.random_models import SD15_UNET

    with init_empty_weights():
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77))
    shapes = {k: tuple(v.shape) for k, v in sd_to_ldm(unet, vae, text).items()}
    info, configs = sd_file._checked(WeightFile(Path("sd15.safetensors"), shapes), None, with_text=True)
    assert (info.model_channels, info.levels, info.context_width) == (320, 4, 768) and configs.shipped
    assert sum(v.numel() for k, v in unet.state_dict().items()) > 859_000_000


def test_shipped_tokenizer_is_clip_vit_l14s(tmp_path):
    from plugin_core.base import clip_tokenizer as bpe
    from plugin_core.base.sd_file import SD15_CONFIGS

    tokenizer = bpe.load_clip_tokenizer(SD15_CONFIGS / "tokenizer")
    assert len(tokenizer.get_vocab()) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    real = Path(os.environ.get("COMFYUI_DIR", "/nonexistent")) / "comfy" / "sd1_tokenizer"
    if (real / "vocab.json").is_file():  # ComfyUI ships openai/clip-vit-large-patch14's own two files
        built = bpe.write_tokenizer_files(SD15_CONFIGS / "tokenizer" / bpe.BPE_FILE, tmp_path)
        assert json.loads((built / "vocab.json").read_text()) == json.loads((real / "vocab.json").read_text())
        assert (built / "merges.txt").read_bytes() == (real / "merges.txt").read_bytes()


def test_truncated_file_is_refused(tiny, tmp_path, no_model_built):
    from plugin_core.base.sd_file import load_sd_file

    path = tmp_path / "cut.safetensors"
    path.write_bytes(tiny.file.read_bytes()[: tiny.file.stat().st_size // 2])
    with pytest.raises(PluginFileError) as error:
        load_sd_file(path, config_dir=tiny.folder)
    _one_line(error, "cut.safetensors", "not a readable .safetensors file")


def test_sd_source_folders_go_to_the_folder_check(tiny, tmp_path):
    from plugin_core.base.sources import check_sd_source

    assert check_sd_source(tiny.folder, with_text=True) is None
    assert check_sd_source(tiny.file, config_dir=tiny.folder).has_vae
    (tmp_path / "unet").mkdir()
    with pytest.raises(PluginError) as error:
        check_sd_source(tmp_path)
    _one_line(error, "no vae/")
    with pytest.raises(PluginError) as error:
        check_sd_source(tiny.folder, config_dir=tiny.folder)
    _one_line(error, "--sd-config", "only for a single-file")
    with pytest.raises(PluginError) as error:
        check_sd_source(tmp_path / "missing.safetensors")
    _one_line(error, "missing.safetensors", "not found")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PluginError) as error:
        check_sd_source(tmp_path / "notes.txt")
    _one_line(error, "notes.txt", "not a .safetensors or .ckpt")


# ---------------------------------------------------------------------- CLIP vision single files


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> TinyClip:
    return TinyClip(tmp_path_factory.mktemp("clip_file"))


@torch.no_grad()
@pytest.mark.parametrize("layout", ["CLIPModel", "CLIPVisionModel", "CLIPVisionModelWithProjection", "flat"])
def test_clip_vision_file_gives_the_folder_models_hidden_states(tiny_clip, layout, tmp_path, offline):
    from plugin_core.base import clip_file

    if layout == "CLIPModel":  # the config next to the file, as <name>.json
        path, config = files.write_clip_vision_file(tiny_clip.folder, tmp_path / "clip.safetensors", layout), None
    else:
        path = write_safetensors(tmp_path / f"{layout}.safetensors", tiny_clip.layout(layout))
        config = tiny_clip.folder / "config.json" if layout == "flat" else tiny_clip.folder
    info = clip_file.inspect_clip_vision_file(path, config=config)
    assert info.layout == ("CLIPVisionModel" if layout == "flat" else layout)
    assert info.shapes["hidden_size"] == 64 and info.config["num_attention_heads"] == 4
    model = clip_file.load_clip_vision_file(path, config=config)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours = model(pixel_values=pixels, output_hidden_states=True)
    theirs = tiny_clip.model(pixel_values=pixels, output_hidden_states=True)
    assert len(ours.hidden_states) == 4
    for a, b in zip(ours.hidden_states + (ours.pooler_output,), theirs.hidden_states + (theirs.pooler_output,)):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_clip_vit_l14_shapes_take_the_shipped_config(tmp_path, no_model_built):
    from plugin_core.base.clip_file import (
        inspect_clip_vision_file,
        load_clip_vision_file,
    )

    path = write_safetensors(tmp_path / "clip_vision_l.safetensors", vit_header(1024, 24, fc1=True))
    info = inspect_clip_vision_file(path)
    assert info.name == "CLIP ViT-L/14" and info.config_source == "the shipped CLIP ViT-L/14 config"
    assert (info.config["num_attention_heads"], info.config["intermediate_size"], info.config["projection_dim"]) == (16, 4096, 768)
    with pytest.raises(AssertionError, match="CLIPVisionModel was built"):  # only then: a meta model for the key check
        load_clip_vision_file(path)


def test_incomplete_clip_vision_file_is_refused_before_reading_weights(tmp_path):
    from plugin_core.base.clip_file import load_clip_vision_file

    path = write_safetensors(tmp_path / "partial.safetensors", vit_header(1024, 24, fc1=True))
    with pytest.raises(PluginFileError) as error:
        load_clip_vision_file(path)
    _one_line(error, "partial.safetensors (CLIP vision)", "missing keys")


_NOT_VIT_L = {
    "vit-h": (lambda: vit_header(1280, 32), ["CLIP ViT-H/14 vision", "width 1280, 32 layers, patch 14, 224 px"]),
    "vit-bigg": (lambda: vit_header(1664, 48), ["CLIP ViT-bigG/14"]),
    "vit-l-336": (lambda: vit_header(1024, 24, positions=577), ["CLIP ViT-L/14 vision", "336 px"]),
    "siglip": (lambda: {k: v for k, v in {**vit_header(64, 2, positions=256), "vision_model.head.probe": torch.zeros(1, 1, 64)}.items()
                        if "class_embedding" not in k}, ["SigLIP", "vision_model.head"]),
    "open_clip": (lambda: {"visual.class_embedding": torch.zeros(64), "visual.conv1.weight": torch.zeros(64, 3, 14, 14),
                           "visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(192, 64)}, ["open_clip", "accepted"]),
    "dinov2": (lambda: {"embeddings.mask_token": torch.zeros(1, 64), "encoder.layer.0.layer_scale1.lambda1": torch.zeros(64)},
               ["DINOv2", "accepted"]),
    "sd-checkpoint": (lambda: {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, ["Stable Diffusion"]),
}


@pytest.mark.parametrize("kind", list(_NOT_VIT_L))
def test_other_vision_models_are_refused_before_any_model_is_built(kind, tiny_clip, tmp_path, no_model_built):
    from plugin_core.base.clip_file import (
        inspect_clip_vision_file,
        load_clip_vision_file,
    )
    from plugin_core.base.sources import check_clip_vision_source

    make, needles = _NOT_VIT_L[kind]
    path = write_safetensors(tmp_path / f"{kind}.safetensors", make())
    shutil.copy(tiny_clip.folder / "config.json", tmp_path / "config.json")  # a config does not make them loadable
    for call in (inspect_clip_vision_file, load_clip_vision_file, check_clip_vision_source):
        with pytest.raises(PluginFileError) as error:
            call(path)
        _one_line(error, path.name, *needles)


def test_other_shapes_need_their_config(tiny_clip, tmp_path, no_model_built):
    from plugin_core.base.clip_file import inspect_clip_vision_file

    path = write_safetensors(tmp_path / "tiny.safetensors", tiny_clip.layout("CLIPVisionModel"))
    with pytest.raises(PluginFileError) as error:
        inspect_clip_vision_file(path)
    _one_line(error, "tiny.safetensors", "width 64, 3 layers, patch 14, 224 px", "not CLIP ViT-L/14", "config.json")
    other = json.loads((tiny_clip.folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**other, "hidden_size": 96, "num_hidden_layers": 2}))
    with pytest.raises(PluginFileError) as error:
        inspect_clip_vision_file(path)
    _one_line(error, "do not fit the config", "hidden_size 64 (config: 96)", "num_hidden_layers 3 (config: 2)")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))  # not CLIP: not taken
    with pytest.raises(PluginFileError) as error:
        inspect_clip_vision_file(path)
    _one_line(error, "not CLIP ViT-L/14")
    with pytest.raises(PluginFileError) as error:
        inspect_clip_vision_file(path, config=tmp_path / "config.json")
    _one_line(error, "config.json", "not a CLIP config")


def test_clip_vision_source_folders_go_to_the_folder_check(tiny_clip, tmp_path):
    from plugin_core.base.sources import check_clip_vision_source

    assert check_clip_vision_source(tiny_clip.folder) is None
    assert check_clip_vision_source(write_safetensors(tmp_path / "v.safetensors", tiny_clip.tower), config=tiny_clip.folder).layout == "CLIPVisionModel"
    with pytest.raises(PluginError) as error:
        check_clip_vision_source(tmp_path)
    _one_line(error, "no config.json")
    torch.save(tiny_clip.tower, tmp_path / "v.bin")
    with pytest.raises(PluginError) as error:
        check_clip_vision_source(tmp_path / "v.bin")
    _one_line(error, "v.bin", "not a .safetensors file")
