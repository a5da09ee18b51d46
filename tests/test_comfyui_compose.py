"""Several Task-Plugins in one pass, and cfg, inside a real ComfyUI (COMFYUI_DIR): a joint pass of
one plugin is that plugin alone, a weight of 0 leaves a plugin out, two plugins in ComfyUI's
denoising step equal the same step through diffusers' UNet and plugin_core's joint attention,
cfg > 1 costs one UNet evaluation per step and gives the cfg 1 result, and plugin_guidance runs
the uncond side on the plain model.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_compose.py
"""

from __future__ import annotations

import pytest
import torch

# ruff: noqa: F811 (the fixtures below are imported from test_comfyui, then named as arguments)
from tests.test_comfyui import apply, base, diffusers_unet, models, module, one_step, pack, photos  # noqa: F401

pytestmark = pytest.mark.comfyui


def library(pack, tasks: str):
    return module(pack, "loaders").LoadTaskPluginLibrary.execute(tasks, "plugin_selector/PromptTunner.pt").args[0]


def composed(pack, tasks: str, weights: str = "", compose: str = "joint", context: str = "attention"):
    """Compose Task-Plugins' two outputs: (the PluginSet for Restore, the joint pass as one plugin for Apply)."""
    return module(pack, "compose").ComposeTaskPlugins.execute(library(pack, tasks), compose, context, weights).args


def apply_plugin(pack, base, photos, plugin, **options):
    values = dict(strength=1.0, start_percent=0.0, end_percent=1.0, resolution=64) | options
    return module(pack, "apply").ApplyTaskPlugin.execute(base["model"], plugin, base["clip_vision"], base["vae"], photos, **values).args


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


def _patch_of(model):
    return next(p.patch for p in model.model_options["transformer_options"]["patches"]["output_block_patch"])


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_joint_pass_of_one_plugin_is_the_plugin_alone(pack, base, photos, context):
    _, mix = composed(pack, "derain", context=context)
    joint, latent = apply_plugin(pack, base, photos, mix)
    alone, _ = apply(pack, base, photos, plugin="derain.safetensors")
    got, want = one_step(joint, latent, 1.0, steps=2), one_step(alone, latent, 1.0, steps=2)
    assert not torch.equal(want[0]["output"], one_step(base["model"], latent, 1.0)[0]["output"])  # the plugin acts
    for a, b in zip(got, want):
        assert relative_error(a["output"], b["output"]) <= 1e-6


def test_a_weight_of_zero_leaves_the_plugin_out(pack, base, photos):
    _, mix = composed(pack, "derain, dehaze", weights="dehaze=0")
    assert mix.task == "derain"
    joint, latent = apply_plugin(pack, base, photos, mix)
    alone, _ = apply(pack, base, photos, plugin="derain.safetensors")
    assert relative_error(one_step(joint, latent, 1.0)[0]["output"], one_step(alone, latent, 1.0)[0]["output"]) <= 1e-6


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_two_plugins_in_one_comfyui_step_equal_diffusers_with_the_joint_attention(pack, base, photos, diffusers_unet, context):
    """ComfyUI's step on the patched MODEL = diffusers' UNet2DConditionModel with plugin_core's
    joint cross-attention, each plugin's SCB on its own Fp, residuals summed at the weights."""
    from plugin_core import PluginMix
    from plugin_core.base.calls import joint_cross_attention

    _, mix = composed(pack, "derain, dehaze", weights="derain=1, dehaze=0.5", context=context)
    patched, latent = apply_plugin(pack, base, photos, mix)
    call = one_step(patched, latent, 1.0)[0]
    patch = _patch_of(patched)
    members = PluginMix([m.float() for m in patch.plugin.plugins], [1.0, 0.5], context)
    members.groups = patch.plugin.groups
    assert members.groups == [256, 256] and patch.visual_prompt.shape[-2] == 512  # both prompts (CLIP patch tokens), joined
    sampling = base["model"].get_model_object("model_sampling")
    x, sigma = call["input"].float(), call["timestep"].float()
    eps = (x - call["output"].float()) / sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        t = sampling.timestep(sigma)
        residuals = members.skip_residuals(patch.input_latent, t, patch.visual_prompt)
        xc = sampling.calculate_input(sigma.view(-1, 1, 1, 1), x)
        with joint_cross_attention(diffusers_unet, members):
            want = diffusers_unet(xc, t, encoder_hidden_states=patch.visual_prompt, down_block_additional_residuals=residuals,
                                  mid_block_additional_residual=torch.zeros(())).sample
        alone, _ = apply(pack, base, photos, plugin="derain.safetensors")
        derain_only = one_step(alone, latent, 1.0)[0]["output"]
    assert relative_error(eps, want) <= 1e-4
    assert relative_error(call["output"], derain_only) > 1e-3  # the second plugin counts


def test_strength_mask_tiles_and_batches_work_in_a_joint_pass(pack, base, photos):
    """As for one plugin: strength 0 or an empty mask is the plain model; tiles as large as the
    latent give the untiled step; 2 x 2 tiles carry both prompts per tile; a batch of two photos."""
    from comfy.patcher_extension import WrappersMP

    from plugin_core.tiling import TilePlan

    _, mix = composed(pack, "derain, dehaze", weights="dehaze=0.5")
    joint, latent = apply_plugin(pack, base, photos, mix)
    start = {"samples": latent["samples"]}
    assert start["samples"].shape[0] == 2 and not torch.equal(photos[0], photos[1])
    plain = one_step(base["model"], start, 1.0)[0]["output"]
    for off in ({"strength": 0.0}, {"mask": torch.zeros(1, 64, 80)}):
        assert torch.equal(one_step(apply_plugin(pack, base, photos, mix, **off)[0], start, 1.0)[0]["output"], plain)
    untiled = one_step(joint, start, 1.0)[0]["output"]
    patch, tiled = _patch_of(joint), joint.clone()
    tiled.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "diff_plugin", patch.apply_model)
    patch.plan = TilePlan(*start["samples"].shape[-2:], max(start["samples"].shape[-2:]), 0)
    try:
        assert relative_error(one_step(tiled, start, 1.0)[0]["output"], untiled) <= 1e-5
    finally:
        patch.plan = None
    in_tiles, _ = apply_plugin(pack, base, photos, mix, tile_size=48, tile_overlap=16, tile_batch=2)
    tiled_patch = _patch_of(in_tiles)
    assert len(tiled_patch.plan.tiles) == 4 and tiled_patch.visual_prompt.shape[-2] == 512  # per tile: both prompts
    out = one_step(in_tiles, start, 1.0)[0]["output"]
    assert out.shape == untiled.shape and torch.isfinite(out).all() and relative_error(out, plain) > 1e-3


def test_cfg_above_one_costs_one_unet_evaluation_and_gives_the_cfg_one_result(pack, base, photos):
    for plugin in ("derain.safetensors", None):
        if plugin:
            patched, latent = apply(pack, base, photos, plugin=plugin)
        else:
            patched, latent = apply_plugin(pack, base, photos, composed(pack, "derain, dehaze")[1])
        one, seven = one_step(patched, latent, 1.0, steps=3), one_step(patched, latent, 7.0, steps=3)
        assert len(seven) == 3 and all(c["cond_or_uncond"] == [0] for c in seven)
        for a, b in zip(one, seven):  # each step's input: the previous steps' cfg results
            assert torch.equal(a["input"], b["input"]) and torch.equal(a["output"], b["output"])


def test_plugin_guidance_runs_the_uncond_side_without_the_plugin(pack, base, photos):
    patched, latent = apply(pack, base, photos, plugin="derain.safetensors", plugin_guidance=True)
    calls = one_step(patched, latent, 4.0, steps=2)
    assert [c["cond_or_uncond"] for c in calls] == [[0], [1]] * 2  # per step: the plugin's call, then the plain model's
    uncond = calls[1]
    conds = {k: v for k, v in uncond["c"].items() if k != "transformer_options"}
    with torch.no_grad():
        want = base["model"].model.apply_model(uncond["input"], uncond["timestep"], **conds)
    assert torch.equal(uncond["output"], want)
    assert not torch.equal(uncond["output"], calls[0]["output"])
    unguided = one_step(apply(pack, base, photos, plugin="derain.safetensors")[0], latent, 4.0, steps=2)
    assert torch.equal(calls[0]["output"], unguided[0]["output"])  # the plugin's own prediction is unchanged
    assert not torch.equal(calls[2]["input"], unguided[1]["input"])  # and the guided step moved elsewhere


def test_restore_runs_a_composed_set_and_chain_is_the_reference_order(pack, base, photos):
    restore = module(pack, "restore").RestoreWithTaskPlugins
    image = photos[:1]
    settings = dict(seed=42, steps=2, later_steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", resolution=64,
                    output_size="original")

    def run(plugins):
        return restore.execute(base["model"], plugins, base["clip_vision"], base["vae"], image, **settings).args[0]

    plain = run(library(pack, "derain, dehaze"))
    chain, _ = composed(pack, "derain, dehaze", compose="chain")
    joint, _ = composed(pack, "derain, dehaze", weights="dehaze=0.5")
    assert torch.equal(run(chain), plain)  # chain at weight 1: the reference's one-after-another
    together = run(joint)
    assert together.shape == image.shape and not torch.equal(together, plain)


def test_compose_refuses_weights_for_plugins_it_was_not_given(pack):
    compose = module(pack, "compose").ComposeTaskPlugins
    assert compose.validate_inputs("derain=x").startswith("weights: 'derain=x' is not TASK=WEIGHT")  # shown under the input
    assert compose.validate_inputs("derain=1, dehaze=0.5") is True
    with pytest.raises(ValueError, match="'desnow', which is not among the plugins"):
        compose.execute(library(pack, "derain, dehaze"), "joint", "attention", "desnow=1")
    with pytest.raises(ValueError, match="every plugin has the weight 0"):
        compose.execute(library(pack, "derain"), "joint", "attention", "derain=0")
