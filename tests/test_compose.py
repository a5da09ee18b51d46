"""Several plugins in one pass (the joint composition) on tiny random models: it reduces exactly to
one plugin, a weight of 0 is the result without that plugin, two plugins equal an independent loop
written here from diffusers parts (each SCB, the weighted residual sum, the context rule through
diffusers' own attention processor, one scheduler), one VAE encode and one decode whatever the
number of plugins, and the command line's --compose / --weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UniPCMultistepScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from plugin_core import BaseModels, PluginInfo, Restorer, load_plugin, save_plugin
from plugin_core.cli import main
from tests.random_models import random_task_plugins, write_tiny_clip_vision, write_tiny_sd

STEPS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    for plugin in random_task_plugins(["derain", "dehaze", "lowlight"], seed=7):
        save_plugin(plugin, root / "plugins" / f"{plugin.task}.safetensors")
    return root


@pytest.fixture(scope="module")
def restorer(tiny):
    return Restorer(BaseModels.from_pretrained(tiny / "sd", tiny / "clip_vision"))


@pytest.fixture(scope="module")
def plugins(tiny):
    return {task: load_plugin(tiny / "plugins" / f"{task}.safetensors") for task in ("derain", "dehaze", "lowlight")}


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(3)
    smooth = rng.random((6, 8, 3))
    return Image.fromarray((np.kron(smooth, np.ones((12, 12, 1))) * 255).astype(np.uint8)).resize((90, 70))


def restore(restorer, photo, chosen, **settings):
    return restorer.restore([photo], chosen, steps=STEPS, seed=3, resolution=64, **settings).latents[0]


def assert_close_rel(a, b, rtol):
    error = (a - b).abs().max() / b.abs().max()
    assert error <= rtol, f"relative error {error:.3g}"


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_joint_pass_of_one_plugin_is_that_plugin(restorer, photo, plugins, context):
    alone = restore(restorer, photo, [plugins["derain"]])
    joint = restore(restorer, photo, [plugins["derain"]], compose="joint", joint_context=context)
    assert_close_rel(joint, alone, 1e-6)


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_plugin_of_weight_zero_is_left_out(restorer, photo, plugins, context):
    alone = restore(restorer, photo, [plugins["derain"]])
    both = restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint", joint_context=context,
                   weights=(("dehaze", 0.0),))
    assert torch.equal(both, alone)
    fading = restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint", joint_context=context,
                     weights=(("dehaze", 1e-6),))
    assert_close_rel(fading, alone, 1e-3)  # a weight going to 0 fades its plugin out
    assert not torch.allclose(restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint",
                                      joint_context=context), alone)


class _Groups:
    """diffusers' own AttnProcessor2_0 on each plugin's prompt, averaged with the weights ('attention'),
    or on all the tokens with log(weight) added to their logits ('tokens')."""

    def __init__(self, groups, weights, context):
        self.groups, self.weights, self.context, self.plain = groups, weights, context, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.context == "tokens":
            bias = torch.cat([torch.full((n,), float(np.log(w))) for n, w in zip(self.groups, self.weights)])
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask=bias.view(1, 1, -1).expand(hidden_states.shape[0], 1, -1))
        parts = torch.split(encoder_hidden_states, self.groups, dim=1)
        return sum(w * self.plain(attn, hidden_states, part) for w, part in zip(self.weights, parts)) / sum(self.weights)


def independent_joint_loop(tiny, plugins, weights, image, context, seed=3, resolution=64):
    """Both SCBs on their own Fp, the residuals summed at the weights, the UNet reading both prompts
    by the context rule, one UniPC loop: written out from diffusers / transformers parts."""
    unet = UNet2DConditionModel.from_pretrained(tiny / "sd" / "unet").eval()
    vae = AutoencoderKL.from_pretrained(tiny / "sd" / "vae").eval()
    clip = CLIPVisionModel.from_pretrained(tiny / "clip_vision").eval()
    ddpm = DDPMScheduler.from_pretrained(tiny / "sd" / "scheduler")
    with torch.no_grad():
        tokens = clip(CLIPImageProcessorPil()(images=image, return_tensors="pt").pixel_values, output_hidden_states=True).hidden_states[24]
        fps = [plugin.tpb(tokens) for plugin in plugins]
        width, height = image.size
        scale = resolution / min(width, height)
        work = image.resize((int(width * scale), int(height * scale))) if scale > 1 else image
        x = VaeImageProcessor(vae_scale_factor=8).preprocess(work, height=work.height // 8 * 8, width=work.width // 8 * 8)
        z = vae.config.scaling_factor * vae.encode(x).latent_dist.mean
        noise = torch.randn((1, 4, *z.shape[-2:]), generator=torch.Generator().manual_seed(seed))
        unet.set_attn_processor({name: _Groups([fp.shape[1] for fp in fps], weights, context) if "attn2" in name else AttnProcessor2_0()
                                 for name in unet.attn_processors})
        scheduler = UniPCMultistepScheduler.from_pretrained(tiny / "sd" / "scheduler", final_sigmas_type="sigma_min")
        scheduler.set_timesteps(STEPS)
        latents = None
        for t in scheduler.timesteps.long():
            if t >= 960:
                latents = ddpm.add_noise(z, noise, t)
            residuals = [sum(w * r for w, r in zip(weights, parts)) for parts in zip(*(p.scb(z, t, fp) for p, fp in zip(plugins, fps)))]
            eps = unet(latents, t, encoder_hidden_states=torch.cat(fps, dim=1),
                       down_block_additional_residuals=residuals + [torch.zeros(1)] * 3,
                       mid_block_additional_residual=torch.zeros(1)).sample
            latents = scheduler.step(eps, t, latents).prev_sample
    return latents[0]


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_joint_pass_of_two_plugins_equals_an_independent_loop(tiny, restorer, photo, plugins, context):
    chosen, weights = [plugins["derain"], plugins["dehaze"]], [1.0, 0.5]
    expected = independent_joint_loop(tiny, chosen, weights, photo, context)
    got = restore(restorer, photo, chosen, compose="joint", joint_context=context, weights=(("dehaze", 0.5),))
    assert_close_rel(got, expected, 1e-4)


def test_tiles_and_batches_work_in_a_joint_pass(restorer, photo, plugins):
    """Tiled (per-tile Fp for each plugin), a joint pass of one plugin is still that plugin tiled;
    in a batch each photo gets the joint pass it gets alone."""
    tiles = {"tile_size": 48, "tile_overlap": 16}
    alone = restore(restorer, photo, [plugins["derain"]], **tiles)
    assert_close_rel(restore(restorer, photo, [plugins["derain"]], compose="joint", **tiles), alone, 1e-6)
    both = restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint", **tiles)
    assert both.shape == alone.shape and not torch.allclose(both, alone)
    other = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pair = [plugins["derain"], plugins["dehaze"]]
    batch = restorer.restore([photo, other], pair, steps=STEPS, seed=3, resolution=64, compose="joint",
                             weights=(("dehaze", 0.5),)).latents
    for image, latent in zip((photo, other), batch):
        single = restorer.restore([image], pair, steps=STEPS, seed=3, resolution=64, compose="joint", weights=(("dehaze", 0.5),))
        assert_close_rel(latent, single.latents[0], 1e-5)


def test_a_joint_pass_starts_from_noise_when_a_plugin_does(restorer, photo, plugins):
    """lowlight starts from pure noise: a joint pass with it does too, so the input's latent is not its start."""
    from plugin_core.models import PluginMix

    assert PluginMix([plugins["derain"], plugins["lowlight"]], [1, 1]).start_mode == "noise"
    assert PluginMix([plugins["derain"], plugins["dehaze"]], [1, 1]).start_mode == "input"
    with_noise = restore(restorer, photo, [plugins["derain"], plugins["lowlight"]], compose="joint")
    lowlight = plugins["lowlight"]
    lowlight_as_input = type(lowlight)(lowlight.config, PluginInfo(task="lowlight2", start_mode="input"))
    lowlight_as_input.load_state_dict(lowlight.state_dict())
    from_input = restore(restorer, photo, [plugins["derain"], lowlight_as_input], compose="joint")
    assert not torch.allclose(with_noise, from_input)


def test_one_vae_encode_and_one_decode_whatever_the_number_of_plugins(restorer, photo, plugins, monkeypatch):
    calls = {"encode": 0, "decode": 0}
    for name in calls:
        real = getattr(restorer, name if name == "decode" else "encode_images")

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(restorer, name if name == "decode" else "encode_images", counted)
    three = [plugins["derain"], plugins["dehaze"], plugins["lowlight"]]
    restore(restorer, photo, three, compose="joint")
    assert calls == {"encode": 1, "decode": 1}
    calls.update(encode=0, decode=0)
    restore(restorer, photo, three)  # the reference chain: one round trip per plugin
    assert calls == {"encode": 3, "decode": 3}


def test_the_command_line_composes_and_refuses_bad_weights(tiny, photo, tmp_path, capsys):
    path = tmp_path / "photo.png"
    photo.save(path)
    base = ["restore", str(path), "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"), "--steps", str(STEPS),
            "--resolution", "64", "--no-progress", "--plugin", str(tiny / "plugins" / "derain.safetensors")]
    assert main([*base, "-o", str(tmp_path / "a.png"), "--save-latent", str(tmp_path / "a.safetensors")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.png"), "--save-latent", str(tmp_path / "b.safetensors"), "--compose", "joint"]) == 0
    a, b = load_file(tmp_path / "a.safetensors")["latent.0"], load_file(tmp_path / "b.safetensors")["latent.0"]
    assert (a - b).abs().max() <= 1e-6 * a.abs().max()
    dehaze = ["--plugin", str(tiny / "plugins" / "dehaze.safetensors")]
    assert main([*base, *dehaze, "-o", str(tmp_path / "c.png"), "--compose", "joint", "--weights", "dehaze=0.5"]) == 0
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "d.png"), "--weights", "dehaze:0.5"]) == 2
    assert "--weights: 'dehaze:0.5' is not TASK=WEIGHT" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "e.png"), "--weights", "desnow=2"]) == 2
    assert "--weights names 'desnow', which is not among the plugins (derain)" in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "e.png").exists()


def test_by_instruction_in_one_pass(tiny, photo, tmp_path, capsys):
    """`--prompt ... --compose joint`: what the selector picks runs in one pass."""
    from plugin_core import PluginSelector, save_selector

    selector = PluginSelector()
    with torch.no_grad():  # every plugin's projection and the instruction's are one vector: each scores the most
        for projection in (selector.proj_v, selector.proj_t):
            projection.weight.zero_()
            projection.bias.fill_(1.0)
    save_selector(selector, tmp_path / "selector.safetensors")
    path = tmp_path / "photo.png"
    photo.save(path)
    code = main(["restore", str(path), "--prompt", "remove the rain and the haze", "--plugins", str(tiny / "plugins"),
                 "--selector", str(tmp_path / "selector.safetensors"), "--compose", "joint",
                 "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"), "--steps", "2", "--resolution", "64",
                 "--no-progress", "-o", str(tmp_path / "out.png")])
    out = capsys.readouterr().out
    assert code == 0 and "selected: dehaze, derain, lowlight" in out and (tmp_path / "out.png").is_file()
