"""A Task-Plugin's weights under ComfyUI's model management, as a ControlNet's are.

* The plugin runs in the dtype the MODEL computes in (`compute_dtype`): ComfyUI casts fp8 and
  other storage types to its `manual_cast_dtype` at every layer, so the storage type says nothing
  about the arithmetic.
* Its layers become ComfyUI's castable ones (`comfy.ops.disable_weight_init`, the same classes
  the UNet is built from), so a partial load (--lowvram, --novram, a small GPU) may leave any of
  them on the offload device and cast it per call, as it does the UNet's; with everything loaded
  they run as the plain torch layers they were.
* Its ModelPatchers go with the MODEL: loaded with it (the MODEL's additional models) and
  detached with it (`UnloadWith`, an ON_DETACH callback), so they never stay on the GPU after
  the MODEL leaves.
"""

from __future__ import annotations

import copy

import comfy.model_patcher
import comfy.ops
import torch
from comfy.patcher_extension import CallbacksMP

CASTABLE = {
    torch.nn.Linear: comfy.ops.disable_weight_init.Linear,
    torch.nn.Conv2d: comfy.ops.disable_weight_init.Conv2d,
    torch.nn.GroupNorm: comfy.ops.disable_weight_init.GroupNorm,
    torch.nn.LayerNorm: comfy.ops.disable_weight_init.LayerNorm,
}


def compute_dtype(model) -> torch.dtype:
    """The dtype a MODEL computes in: its manual cast dtype (a node's or the loader's) where it
    has one, else the dtype its weights are stored in."""
    return model.get_model_object("manual_cast_dtype") or model.model_dtype()


def castable(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with each torch layer turned into ComfyUI's castable subclass of it, in place (the
    subclasses add no state: the same weights, the same results while nothing casts)."""
    for layer in module.modules():
        if type(layer) in CASTABLE:
            layer.__class__ = CASTABLE[type(layer)]
    return module


def plugin_patcher(plugin: torch.nn.Module, model) -> comfy.model_patcher.ModelPatcher:
    """A copy of `plugin` in `model`'s compute dtype with castable layers, on the model's offload
    device, wrapped for model management with the model's devices."""
    module = castable(copy.deepcopy(plugin)).to(device=model.offload_device, dtype=compute_dtype(model))
    return comfy.model_patcher.ModelPatcher(module, load_device=model.load_device, offload_device=model.offload_device)


class UnloadWith:
    """ON_DETACH callback of a patched MODEL: when ComfyUI unloads the MODEL's weights (to free
    their memory), the plugin's ModelPatchers are detached too (back on their offload device).
    Their entries in ComfyUI's loaded list stay; a later load reloads them."""

    def __init__(self, patchers):
        self.patchers = list(patchers)

    def __call__(self, model, unpatch_all=True):
        if not unpatch_all:  # a clone let go (ModelPatcher.__del__) or swapped for another: the weights stay
            return
        for patcher in self.patchers:
            if patcher.loaded_size() > 0:
                patcher.detach(unpatch_all=True)

    def __deepcopy__(self, memo):
        return self  # shared by the MODEL's clones: the same plugin weights


def unload_with(patched, key: str, patchers) -> None:
    """Load the plugin's patchers with `patched` (a MODEL clone) and detach them with it."""
    patched.set_additional_models(key, list(patchers))
    patched.remove_callbacks_with_key(CallbacksMP.ON_DETACH, key)
    patched.add_callback_with_key(CallbacksMP.ON_DETACH, key, UnloadWith(patchers))
