"""Several plugins in one pass (the joint composition) on tiny random models: it reduces exactly to
one plugin, a share of 0 is the result without that plugin, a plugin mixed with itself is that
plugin, only the shares' ratios count and the plugins' order does not, two plugins equal an
independent loop written here from diffusers parts (each SCB, the residuals summed at the
normalised shares and the strength, the context rule through diffusers' own attention processor,
one scheduler), one VAE encode and one decode whatever the number of plugins, the command line's
--compose / --shares / --strength, and the reference's order for the plugins a selector picks."""

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
def test_a_plugin_of_share_zero_is_left_out(restorer, photo, plugins, context):
    alone = restore(restorer, photo, [plugins["derain"]])
    both = restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint", joint_context=context,
                   shares=(("dehaze", 0.0),))
    assert torch.equal(both, alone)
    fading = restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint", joint_context=context,
                     shares=(("dehaze", 1e-6),))
    assert_close_rel(fading, alone, 1e-3)  # a share going to 0 fades its plugin out
    assert not torch.allclose(restore(restorer, photo, [plugins["derain"], plugins["dehaze"]], compose="joint",
                                      joint_context=context), alone)


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_plugin_mixed_with_itself_is_that_plugin(restorer, photo, plugins, context):
    alone = restore(restorer, photo, [plugins["derain"]])
    twice = restore(restorer, photo, [plugins["derain"], plugins["derain"]], compose="joint", joint_context=context)
    assert_close_rel(twice, alone, 1e-5)


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_only_the_shares_ratios_count_and_the_order_does_not(restorer, photo, plugins, context):
    pair = [plugins["derain"], plugins["dehaze"]]
    half = restore(restorer, photo, pair, compose="joint", joint_context=context, shares=(("derain", 1.0), ("dehaze", 0.5)))
    double = restore(restorer, photo, pair, compose="joint", joint_context=context, shares=(("derain", 2.0), ("dehaze", 1.0)))
    assert_close_rel(double, half, 1e-6)
    turned = restore(restorer, photo, pair[::-1], compose="joint", joint_context=context, shares=(("derain", 2.0), ("dehaze", 1.0)))
    assert_close_rel(turned, half, 1e-5)
    even = restore(restorer, photo, pair, compose="joint", joint_context=context)
    assert not torch.allclose(even, half, rtol=0, atol=1e-4 * half.abs().max())  # the ratio itself does count


def test_strength_scales_the_residuals_and_zero_leaves_the_photo(tiny, restorer, photo, plugins):
    """strength 0.5 on one plugin: its SCB residuals halved (the independent loop); strength 0: no
    plugin runs, the photo's own latent; and a chain takes the strength for every plugin."""
    derain = plugins["derain"]
    expected = independent_joint_loop(tiny, [derain], [1.0], photo, "attention", strength=0.5)
    assert_close_rel(restore(restorer, photo, [derain], strength=0.5), expected, 1e-4)
    assert torch.equal(restore(restorer, photo, [derain], strength=0.0), restore(restorer, photo, []))
    chain = restore(restorer, photo, [derain, plugins["dehaze"]], strength=0.5)
    assert not torch.allclose(chain, restore(restorer, photo, [derain, plugins["dehaze"]]))


def test_the_former_weights_are_read_as_shares_with_a_warning(restorer, photo, plugins):
    pair = [plugins["derain"], plugins["dehaze"]]
    shares = restore(restorer, photo, pair, compose="joint", shares=(("dehaze", 0.5),))
    with pytest.warns(DeprecationWarning, match="'weights' is now 'shares'"):
        weights = restore(restorer, photo, pair, compose="joint", weights=(("dehaze", 0.5),))
    assert torch.equal(weights, shares)


class _Groups:
    """diffusers' own AttnProcessor2_0 on each plugin's prompt, averaged by the normalised shares
    ('attention'), or on all the tokens with log(share) added to their logits ('tokens')."""

    def __init__(self, groups, weights, context):
        self.groups, self.weights, self.context, self.plain = groups, weights, context, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.context == "tokens":
            bias = torch.cat([torch.full((n,), float(np.log(w))) for n, w in zip(self.groups, self.weights)])
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask=bias.view(1, 1, -1).expand(hidden_states.shape[0], 1, -1))
        parts = torch.split(encoder_hidden_states, self.groups, dim=1)
        return sum(w * self.plain(attn, hidden_states, part) for w, part in zip(self.weights, parts)) / sum(self.weights)


def independent_joint_loop(tiny, plugins, shares, image, context, seed=3, resolution=64, strength=1.0):
    """Both SCBs on their own Fp, the residuals summed at the normalised shares times the strength,
    the UNet reading both prompts by the context rule, one UniPC loop: written out from diffusers /
    transformers parts."""
    weights = [share / sum(shares) for share in shares]
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
            residuals = [strength * sum(w * r for w, r in zip(weights, parts))
                         for parts in zip(*(p.scb(z, t, fp) for p, fp in zip(plugins, fps)))]
            eps = unet(latents, t, encoder_hidden_states=torch.cat(fps, dim=1),
                       down_block_additional_residuals=residuals + [torch.zeros(1)] * 3,
                       mid_block_additional_residual=torch.zeros(1)).sample
            latents = scheduler.step(eps, t, latents).prev_sample
    return latents[0]


@pytest.mark.parametrize("context", ["attention", "tokens"])
def test_a_joint_pass_of_two_plugins_equals_an_independent_loop(tiny, restorer, photo, plugins, context):
    chosen, shares = [plugins["derain"], plugins["dehaze"]], [1.0, 0.5]
    expected = independent_joint_loop(tiny, chosen, shares, photo, context, strength=0.8)
    got = restore(restorer, photo, chosen, compose="joint", joint_context=context, shares=(("dehaze", 0.5),), strength=0.8)
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
                             shares=(("dehaze", 0.5),)).latents
    for image, latent in zip((photo, other), batch):
        single = restorer.restore([image], pair, steps=STEPS, seed=3, resolution=64, compose="joint", shares=(("dehaze", 0.5),))
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
        real = getattr(restorer.backend, name if name == "decode" else "encode_images")

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(restorer.backend, name if name == "decode" else "encode_images", counted)
    three = [plugins["derain"], plugins["dehaze"], plugins["lowlight"]]
    restore(restorer, photo, three, compose="joint")
    assert calls == {"encode": 1, "decode": 1}
    calls.update(encode=0, decode=0)
    restore(restorer, photo, three)  # the reference chain: one round trip per plugin
    assert calls == {"encode": 3, "decode": 3}


def test_the_command_line_composes_and_refuses_bad_shares(tiny, photo, tmp_path, capsys):
    path = tmp_path / "photo.png"
    photo.save(path)
    base = ["restore", str(path), "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"), "--steps", str(STEPS),
            "--resolution", "64", "--no-progress", "--plugin", str(tiny / "plugins" / "derain.safetensors")]
    assert main([*base, "-o", str(tmp_path / "a.png"), "--save-latent", str(tmp_path / "a.safetensors")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.png"), "--save-latent", str(tmp_path / "b.safetensors"), "--compose", "joint"]) == 0
    a, b = load_file(tmp_path / "a.safetensors")["latent.0"], load_file(tmp_path / "b.safetensors")["latent.0"]
    assert (a - b).abs().max() <= 1e-6 * a.abs().max()
    dehaze = ["--plugin", str(tiny / "plugins" / "dehaze.safetensors")]
    joint = ["--compose", "joint", "--save-latent"]
    assert main([*base, *dehaze, "-o", str(tmp_path / "c.png"), *joint, str(tmp_path / "c.safetensors"), "--shares", "dehaze=0.5"]) == 0
    assert "runs: derain+dehaze in one pass of 4 steps (shares derain 0.667, dehaze 0.333)" in capsys.readouterr().out
    # the former spelling: read as --shares, with a note
    assert main([*base, *dehaze, "-o", str(tmp_path / "w.png"), *joint, str(tmp_path / "w.safetensors"), "--weights", "dehaze=0.5"]) == 0
    assert "note: --weights is now called --shares: a plugin's share of a joint pass" in capsys.readouterr().err
    assert torch.equal(load_file(tmp_path / "w.safetensors")["latent.0"], load_file(tmp_path / "c.safetensors")["latent.0"])
    assert main([*base, "-o", str(tmp_path / "d.png"), "--shares", "dehaze:0.5"]) == 2
    assert "--shares: 'dehaze:0.5' is not TASK=SHARE" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "e.png"), "--shares", "desnow=2"]) == 2
    assert "--shares names 'desnow', which is not among the plugins (derain)" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "f.png"), "--strength", "-1"]) == 2
    assert "--strength: must be at least 0" in capsys.readouterr().err
    assert not any((tmp_path / f"{name}.png").exists() for name in "def")


@pytest.fixture(scope="module")
def select_all(tiny, tmp_path_factory):
    """A Plugin-Selector that selects every plugin (every projection is one vector)."""
    from plugin_core import PluginSelector, save_selector

    selector = PluginSelector()
    with torch.no_grad():
        for projection in (selector.proj_v, selector.proj_t):
            projection.weight.zero_()
            projection.bias.fill_(1.0)
    path = tmp_path_factory.mktemp("selector") / "selector.safetensors"
    save_selector(selector, path)
    return path


def cli_restore(tiny, photo, tmp_path, name, *options):
    path = tmp_path / "photo.png"
    photo.save(path)
    code = main(["restore", str(path), *options, "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"),
                 "--steps", "2", "--resolution", "64", "--no-progress", "-o", str(tmp_path / f"{name}.png"),
                 "--save-latent", str(tmp_path / f"{name}.safetensors")])
    assert code == 0
    return load_file(tmp_path / f"{name}.safetensors")["latent.0"]


def test_by_instruction_in_one_pass(tiny, photo, select_all, tmp_path, capsys):
    """`--prompt ... --compose joint`: what the selector picks runs in one pass."""
    cli_restore(tiny, photo, tmp_path, "out", "--prompt", "remove the rain and the haze", "--plugins", str(tiny / "plugins"),
                "--selector", str(select_all), "--compose", "joint")
    out = capsys.readouterr().out
    assert "selected: derain, then lowlight, then dehaze" in out and "runs: derain+lowlight+dehaze in one pass of 2 steps" in out


def test_a_selection_runs_in_the_references_task_order(tiny, photo, select_all, tmp_path, capsys):
    """The plugins a selector picks run as the reference runs them (derain, desnow, lowlight, dehaze,
    ...), not in the folder's alphabetical order: the same latent as the three named in that order."""
    selected = cli_restore(tiny, photo, tmp_path, "selected", "--prompt", "remove the rain and the haze", "--plugins",
                           str(tiny / "plugins"), "--selector", str(select_all))
    assert "runs: derain (2 steps), then lowlight (3 steps), then dehaze (3 steps)" in capsys.readouterr().out
    named = [option for task in ("derain", "lowlight", "dehaze") for option in ("--plugin", str(tiny / "plugins" / f"{task}.safetensors"))]
    assert torch.equal(cli_restore(tiny, photo, tmp_path, "named", *named), selected)
    alphabetical = [named[i] for i in (4, 5, 0, 1, 2, 3)]  # dehaze, derain, lowlight: named one by one, run as given
    assert not torch.equal(cli_restore(tiny, photo, tmp_path, "alphabetical", *alphabetical), selected)
    assert "runs: dehaze (2 steps), then derain (3 steps), then lowlight (3 steps)" in capsys.readouterr().out


def test_the_run_order_puts_other_tasks_where_their_metadata_says_then_by_name():
    from types import SimpleNamespace

    from plugin_core.models import REFERENCE_ORDER, run_order

    def plugin(task, **extra):
        return SimpleNamespace(task=task, info=PluginInfo(task=task, extra=extra))

    given = [plugin("zzz"), plugin("demoire"), plugin("desmoke", run_order=3.5), plugin("aaa"), plugin("derain"),
             plugin("dehaze"), plugin("lowlight"), plugin("first", run_order=-1), plugin("bad", run_order="x")]
    assert [p.task for p in run_order(given)] == ["first", "derain", "lowlight", "dehaze", "desmoke", "demoire", "aaa",
                                                   "bad", "zzz"]
    assert [p.task for p in run_order([plugin(task) for task in sorted(REFERENCE_ORDER)])] == list(REFERENCE_ORDER)
