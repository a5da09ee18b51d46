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


def composed(pack, tasks: str, shares: str = "", compose: str = "joint", context: str = "attention", **more):
    """Compose Task-Plugins' two outputs: (the PluginSet for Restore, the joint pass as one plugin for Apply)."""
    return module(pack, "compose").ComposeTaskPlugins.execute(library(pack, tasks), compose, context, shares, **more).args


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


def test_a_share_of_zero_leaves_the_plugin_out(pack, base, photos):
    _, mix = composed(pack, "derain, dehaze", shares="dehaze=0")
    assert mix.task == "derain"
    joint, latent = apply_plugin(pack, base, photos, mix)
    alone, _ = apply(pack, base, photos, plugin="derain.safetensors")
    assert relative_error(one_step(joint, latent, 1.0)[0]["output"], one_step(alone, latent, 1.0)[0]["output"]) <= 1e-6


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_two_plugins_in_one_comfyui_step_equal_diffusers_with_the_joint_attention(pack, base, photos, diffusers_unet, context):
    """ComfyUI's step on the patched MODEL = diffusers' UNet2DConditionModel with plugin_core's
    joint cross-attention, each plugin's SCB on its own Fp, residuals summed at the normalised shares."""
    from plugin_core import PluginMix
    from plugin_core.base.calls import joint_cross_attention

    _, mix = composed(pack, "derain, dehaze", shares="derain=1, dehaze=0.5", context=context)
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

    _, mix = composed(pack, "derain, dehaze", shares="dehaze=0.5")
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
    joint, _ = composed(pack, "derain, dehaze", shares="dehaze=0.5")
    assert torch.equal(run(chain), plain)  # a chain of shares 1: the reference's one-after-another
    together = run(joint)
    assert together.shape == image.shape and not torch.equal(together, plain)


def test_compose_refuses_shares_for_plugins_it_was_not_given(pack):
    compose = module(pack, "compose").ComposeTaskPlugins
    assert compose.validate_inputs("derain=x").startswith("shares: 'derain=x' is not TASK=SHARE")  # shown under the input
    with pytest.raises(ValueError, match="weights: 'derain=x' is not TASK=SHARE"):  # the former input, checked when run
        compose.execute(library(pack, "derain"), "joint", "attention", "", weights="derain=x")
    assert compose.validate_inputs("derain=1, dehaze=0.5") is True
    with pytest.raises(ValueError, match="'desnow', which is not among the plugins"):
        compose.execute(library(pack, "derain, dehaze"), "joint", "attention", "desnow=1")
    with pytest.raises(ValueError, match="every plugin has the share 0"):
        compose.execute(library(pack, "derain"), "joint", "attention", "derain=0")


def test_only_the_shares_ratios_count_and_the_former_weights_input_still_works(pack, base, photos, caplog):
    """Shares (1, 0.5) and (2, 1) give the same step, and so does a plugin mixed with itself and the
    plugin alone; an API prompt that still names the input `weights` is read as the shares, with a note."""
    _, half = composed(pack, "derain, dehaze", shares="derain=1, dehaze=0.5")
    _, double = composed(pack, "derain, dehaze", shares="derain=2, dehaze=1")
    step = lambda mix: one_step(*apply_plugin(pack, base, photos, mix), 1.0)[0]["output"]  # noqa: E731
    want = step(half)
    assert relative_error(step(double), want) <= 1e-6
    with caplog.at_level("WARNING", logger="diffplugin"):
        _, former = composed(pack, "derain, dehaze", shares="", weights="dehaze=0.5")
    assert "'weights' is now 'shares'" in caplog.text and torch.equal(step(former), want)
    with pytest.raises(ValueError, match="give the shares in 'shares' only"):
        composed(pack, "derain, dehaze", shares="dehaze=1", weights="dehaze=0.5")
    from plugin_core import PluginMix

    derain = library(pack, "derain").plugins[0]
    alone, _ = apply(pack, base, photos, plugin="derain.safetensors")
    twice = PluginMix([derain, derain], [1.0, 1.0])
    latent = apply_plugin(pack, base, photos, twice)[1]
    got = one_step(apply_plugin(pack, base, photos, twice)[0], latent, 1.0)[0]["output"]
    assert relative_error(got, one_step(alone, latent, 1.0)[0]["output"]) <= 1e-5


def test_restores_strength_scales_the_plugins_and_zero_returns_the_photo(pack, base, photos):
    restore = module(pack, "restore").RestoreWithTaskPlugins
    settings = dict(seed=42, steps=2, later_steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", resolution=64,
                    output_size="original")
    plugins = library(pack, "derain")
    run = lambda **more: restore.execute(base["model"], plugins, base["clip_vision"], base["vae"], photos[:1], **settings, **more).args[0]  # noqa: E731
    assert torch.equal(run(strength=0.0), photos[:1])
    full, half = run(), run(strength=0.5)
    assert not torch.equal(full, half) and torch.equal(run(strength=1.0), full)


def halves(height: int = 64, width: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Two MASKs of the photos' size: the left half, the right half."""
    left = torch.zeros(1, height, width)
    left[..., : width // 2] = 1.0
    return left, 1.0 - left


def test_each_plugin_in_its_region_equals_diffusers_with_the_regions(pack, base, photos, diffusers_unet):
    """Compose's region_1 / region_2: one ComfyUI step (tiles of the pack, cfg chunks and all) equals
    diffusers' UNet with plugin_core's joint attention reading the same regions per position, and the
    start LATENT keeps the photo where no region covers (its noise mask)."""
    from plugin_core import PluginMix
    from plugin_core.base.calls import joint_cross_attention

    left, right = halves()
    right[..., 32:, :] = 0.0  # the bottom right: no plugin's
    _, mix = composed(pack, "derain, dehaze", shares="dehaze=0.5", region_tasks="dehaze, derain", region_1=right, region_2=left)
    assert [r is not None for r in mix.regions] == [True, True] and torch.equal(mix.regions[0][0, 0], left[0])  # derain's
    patched, latent = apply_plugin(pack, base, photos, mix)
    assert torch.equal(latent["noise_mask"][0, 0, 32:, 40:], torch.zeros(32, 40)) and latent["noise_mask"][:, :, :32].min() == 1
    call = one_step(patched, latent, 1.0)[0]
    patch = _patch_of(patched)
    members = PluginMix([m.float() for m in patch.plugin.plugins], [1.0, 0.5], regions=[left, right])
    members.groups = patch.plugin.groups
    sampling = base["model"].get_model_object("model_sampling")
    x, sigma = call["input"].float(), call["timestep"].float()
    eps = (x - call["output"].float()) / sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        t = sampling.timestep(sigma)
        residuals = members.skip_residuals(patch.input_latent, t, patch.visual_prompt)
        xc = sampling.calculate_input(sigma.view(-1, 1, 1, 1), x)
        maps = members.region_maps(*x.shape[-2:], x.shape[0])
        with joint_cross_attention(diffusers_unet, members), members.regions_for_call(maps):
            want = diffusers_unet(xc, t, encoder_hidden_states=patch.visual_prompt, down_block_additional_residuals=residuals,
                                  mid_block_additional_residual=torch.zeros(())).sample
    assert relative_error(eps, want) <= 1e-4
    _, everywhere = composed(pack, "derain, dehaze", shares="dehaze=0.5", region_1=torch.ones(1, 64, 80))
    _, plain = composed(pack, "derain, dehaze", shares="dehaze=0.5")
    step = lambda m, **more: one_step(apply_plugin(pack, base, photos, m, **more)[0], latent, 1.0)[0]["output"]  # noqa: E731
    assert relative_error(step(everywhere), step(plain)) <= 1e-6
    tiles = {"tile_size": 48, "tile_overlap": 16, "tile_batch": 2}
    assert relative_error(step(everywhere, **tiles), step(plain, **tiles)) <= 1e-6  # each tile crops the regions


def test_compose_checks_its_regions(pack):
    left, _ = halves()
    with pytest.raises(ValueError, match="region_2 is connected, but there are only 1 plugins"):
        composed(pack, "derain, dehaze", region_tasks="dehaze", region_2=left)
    with pytest.raises(ValueError, match="two regions for one plugin"):
        composed(pack, "derain, dehaze", region_tasks="dehaze, dehaze", region_1=left, region_2=left)
    with pytest.raises(ValueError, match="region_tasks name 'desnow'"):
        composed(pack, "derain, dehaze", region_tasks="desnow", region_1=left)
    with pytest.raises(ValueError, match="regions need joint_context = attention"):
        composed(pack, "derain, dehaze", context="tokens", region_1=left)
    with pytest.raises(ValueError, match="region_1 holds 2 masks"):
        composed(pack, "derain, dehaze", region_1=torch.cat([left, left]))
    plugins, _ = composed(pack, "derain, dehaze", compose="chain", region_1=left)  # a chain: that plugin in its region
    assert [task for task, _ in plugins.composition["regions"]] == ["derain"]
