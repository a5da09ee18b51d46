"""Every base model a ComfyUI user loads, and ComfyUI's memory modes, inside a real ComfyUI
(COMFYUI_DIR): the plugin computes in the dtype the MODEL computes in (fp16, bf16 and fp8
weights, the loaders' and the command-line flags' ways, and ModelComputeDtype), one patched step
stays within a stated tolerance of the fp32 run, and the plugin's weights are loaded, partially
loaded (--novram) and unloaded with the MODEL by ComfyUI's model management.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_memory.py
"""

from __future__ import annotations

import contextlib

import pytest
import torch

# ruff: noqa: F811 (the fixtures below are imported from test_comfyui, then named as arguments)
from tests.test_comfyui import apply, base, models, module, one_step, pack, photos  # noqa: F401

pytestmark = pytest.mark.comfyui

import comfy.cli_args  # importable: test_comfyui required the host
import comfy.model_management as mm
import comfy.sd

# The largest relative error (max |difference| / max |fp32|) of one patched step's prediction
# against the fp32 run, per way of loading. What the weights' storage rounds off dominates; the
# plugin adds its own share in the compute dtype. docs/nodes.md states the same figures.
TOLERANCE = {"fp16": 1e-3, "bf16": 5e-3, "fp8_e4m3fn": 2e-2, "fp8_e5m2": 4e-2}


def _patch_of(model):
    return next(p.patch for p in model.model_options["transformer_options"]["patches"]["output_block_patch"])


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


@pytest.fixture(scope="module")
def unet_file(base, tmp_path_factory):
    """The checkpoint's UNet alone, as UNETLoader reads it from models/diffusion_models."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("unet") / "unet.safetensors"
    state = base["model"].model.diffusion_model.state_dict()
    save_file({k: v.float().contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def fp16_checkpoint(base, tmp_path_factory):
    """The checkpoint's UNet saved in fp16, as most SD 1.5 checkpoints are shared."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("ckpt") / "fp16.safetensors"
    state = base["model"].model.diffusion_model.state_dict()
    save_file({f"model.diffusion_model.{k}": v.half().contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def fp32_step(pack, base, photos):
    patched, latent = apply(pack, base, photos)
    return one_step(patched, latent, 1.0)[0]["output"]


def unet_loader(path, weight_dtype: str):
    """UNETLoader's load for its weight_dtype choice (nodes.py: the same model_options)."""
    dtype = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[weight_dtype]
    return comfy.sd.load_diffusion_model(str(path), model_options={} if dtype is None else {"dtype": dtype})


def checkpoint_with_flag(path, flag: str, monkeypatch):
    """CheckpointLoaderSimple's load under a command-line flag (--bf16-unet, --fp8_e4m3fn-unet ...)."""
    monkeypatch.setattr(comfy.cli_args.args, flag, True)
    return comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)[0]


def compute_dtype_node(model, dtype: str):
    """ComfyUI's ModelComputeDtype node (comfy_extras/nodes_model_advanced.py): the same call."""
    patched = model.clone()
    patched.set_model_compute_dtype({"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    return patched


def step_in(pack, base, photos, model):
    """(the patched step's prediction, the dtype the plugin ran in, the dtype the MODEL computes in)."""
    patched, latent = apply(pack, {**base, "model": model}, photos)
    output = one_step(patched, latent, 1.0)[0]["output"]
    plugin_dtype = next(_patch_of(patched).plugin.parameters()).dtype
    return output, plugin_dtype, module(pack, "management").compute_dtype(model)


WAYS = {
    "UNETLoader fp8_e4m3fn": ("fp8_e4m3fn", lambda f, mp: unet_loader(f["unet"], "fp8_e4m3fn")),
    "UNETLoader fp8_e5m2": ("fp8_e5m2", lambda f, mp: unet_loader(f["unet"], "fp8_e5m2")),
    "checkpoint saved in fp16": ("fp16", lambda f, mp: comfy.sd.load_checkpoint_guess_config(str(f["fp16"]), output_vae=False,
                                                                                               output_clip=False)[0]),
    "--fp16-unet": ("fp16", lambda f, mp: checkpoint_with_flag(f["fp16"], "fp16_unet", mp)),
    "--bf16-unet": ("bf16", lambda f, mp: checkpoint_with_flag(f["fp16"], "bf16_unet", mp)),
    "--fp8_e4m3fn-unet": ("fp8_e4m3fn", lambda f, mp: checkpoint_with_flag(f["fp16"], "fp8_e4m3fn_unet", mp)),
    "ModelComputeDtype fp16": ("fp16", lambda f, mp: compute_dtype_node(unet_loader(f["unet"], "default"), "fp16")),
    "ModelComputeDtype bf16": ("bf16", lambda f, mp: compute_dtype_node(unet_loader(f["unet"], "default"), "bf16")),
    "fp8_e4m3fn computing in bf16": ("fp8_e4m3fn", lambda f, mp: compute_dtype_node(unet_loader(f["unet"], "fp8_e4m3fn"), "bf16")),
}


@pytest.mark.parametrize("way", list(WAYS))
def test_the_plugin_computes_in_the_models_compute_dtype_within_tolerance_of_fp32(pack, base, photos, unet_file, fp16_checkpoint,
                                                                                   fp32_step, way, monkeypatch):
    tolerance_key, load = WAYS[way]
    model = load({"unet": unet_file, "fp16": fp16_checkpoint}, monkeypatch)
    output, plugin_dtype, compute = step_in(pack, base, photos, model)
    assert plugin_dtype == compute, f"{way}: the plugin ran in {plugin_dtype}, the MODEL computes in {compute}"
    assert torch.isfinite(output).all()
    error = relative_error(output, fp32_step)
    print(f"{way}: storage {model.model_dtype()}, compute {compute}, relative error {error:.3g}")
    assert 0 < error <= TOLERANCE[tolerance_key], f"{way}: relative error {error:.3g} against the fp32 run"


# ---------------------------------------------------------------------- model management


def _plugin_entries(plugin_module):
    """ComfyUI's loaded-model entries holding the plugin's weights."""
    return [entry for entry in mm.current_loaded_models if entry.model is not None and entry.model.model is plugin_module]


def test_the_plugin_is_loaded_counted_and_unloaded_with_the_model(pack, base, photos):
    patched, latent = apply(pack, base, photos)
    plugin_module = _patch_of(patched).plugin
    assert plugin_module in [m.model for m in patched.get_nested_additional_models()]
    one_step(patched, latent, 1.0)
    entries = _plugin_entries(plugin_module)
    assert len(entries) == 1 and entries[0].model.loaded_size() == entries[0].model.model_size() > 0

    # ComfyUI frees the MODEL's memory (another model needs it): the plugin goes with it, even
    # where ComfyUI itself would have kept it loaded.
    mm.free_memory(1e30, base["model"].load_device, keep_loaded=entries)
    assert not any(entry.model is not None and entry.model.model is base["model"].model for entry in mm.current_loaded_models)
    assert entries[0].model.loaded_size() == 0
    assert _plugin_entries(plugin_module) == entries  # only the MODEL's detach unloaded it

    one_step(patched, latent, 1.0)  # and the next run loads both again
    assert entries[0].model.loaded_size() > 0
    mm.unload_all_models()


@contextlib.contextmanager
def no_vram(monkeypatch):
    """ComfyUI's --novram loading on this machine: load_models_gpu treats the CPU as the GPU of a
    --novram run (the host sets no vram mode for a CPU device), so every model loads partially and
    each of its castable layers is cast to the compute device per call."""
    real_load, real_is_cpu = mm.load_models_gpu, mm.is_device_cpu

    def load(*args, **kwargs):
        monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
        try:
            return real_load(*args, **kwargs)
        finally:
            monkeypatch.setattr(mm, "is_device_cpu", real_is_cpu)

    mm.unload_all_models()
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    monkeypatch.setattr(mm, "load_models_gpu", load)
    try:
        yield
    finally:
        mm.unload_all_models()


def test_under_novram_the_plugin_loads_partially_and_gives_the_same_step(pack, base, photos, fp32_step, monkeypatch):
    patched, latent = apply(pack, base, photos)
    plugin_module = _patch_of(patched).plugin
    with no_vram(monkeypatch):
        output = one_step(patched, latent, 1.0)[0]["output"]
        assert base["model"].model.model_lowvram and plugin_module.model_lowvram  # both loaded partially
        layers = [m for m in plugin_module.modules() if any(True for _ in m.parameters(recurse=False))]
        assert layers and all(getattr(m, "comfy_cast_weights", False) for m in layers), "a plugin layer ComfyUI cannot cast"
    assert relative_error(output, fp32_step) <= 1e-6
