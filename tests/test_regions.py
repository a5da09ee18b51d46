"""A region for each plugin of a joint pass, on tiny random models: a region over the whole photo is
no region, a plugin whose region is empty is that plugin absent, outside every region the photo's
latent passes through, two plugins on two regions equal an independent loop written here (each
position's shares, the coverage, the per-position attention mix, the input kept outside), tiles
keep it, and the command line's --region is checked like every input before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UniPCMultistepScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image
from transformers import CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from plugin_core.cli import main
from tests.test_compose import STEPS, assert_close_rel, photo, plugins, restore, restorer, tiny  # noqa: F401

WIDTH, HEIGHT = 96, 64  # the photo: its latent is 12 x 8, halves on a latent column boundary


@pytest.fixture(scope="module")
def wide(photo):  # noqa: F811
    return photo.resize((WIDTH, HEIGHT))


def halves() -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.zeros(1, 1, HEIGHT, WIDTH)
    left[..., : WIDTH // 2] = 1.0
    return left, 1.0 - left


def test_a_region_over_the_whole_photo_is_no_region(restorer, wide, plugins):  # noqa: F811
    pair = [plugins["derain"], plugins["dehaze"]]
    plain = restore(restorer, wide, pair, compose="joint", shares=(("dehaze", 0.5),))
    everywhere = restore(restorer, wide, pair, compose="joint", shares=(("dehaze", 0.5),),
                         regions=(("derain", torch.ones(1, 1, HEIGHT, WIDTH)),))
    assert_close_rel(everywhere, plain, 1e-6)


def test_an_empty_region_is_the_plugin_absent(restorer, wide, plugins):  # noqa: F811
    alone = restore(restorer, wide, [plugins["derain"]])
    with_empty = restore(restorer, wide, [plugins["derain"], plugins["dehaze"]], compose="joint",
                         regions=(("dehaze", torch.zeros(1, 1, HEIGHT, WIDTH)),))
    assert_close_rel(with_empty, alone, 1e-5)


def test_outside_every_region_the_photo_passes_through(restorer, wide, plugins):  # noqa: F811
    left, _ = halves()
    unrestored = restore(restorer, wide, [])  # the photo's own latent
    for chosen, compose in (([plugins["derain"]], "chain"), ([plugins["derain"], plugins["dehaze"]], "joint")):
        regions = tuple((p.task, left) for p in chosen)
        got = restore(restorer, wide, chosen, compose=compose, regions=regions)
        assert torch.equal(got[..., WIDTH // 16 :], unrestored[..., WIDTH // 16 :])  # the right half: the input
        assert not torch.allclose(got[..., : WIDTH // 16], unrestored[..., : WIDTH // 16])  # the left half: restored


class _RegionGroups:
    """diffusers' own AttnProcessor2_0 on each plugin's prompt, mixed per position by the plugins'
    shares there: the maps at this attention's resolution, found from the latent's by halving."""

    def __init__(self, groups, shares, maps):
        self.groups, self.shares, self.maps, self.plain = groups, shares, maps, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        height, width = self.maps.shape[-2:]
        while height * width > hidden_states.shape[1]:
            height, width = (height + 1) // 2, (width + 1) // 2
        maps = F.adaptive_avg_pool2d(self.maps[:, 0], (height, width))  # [plugins, 1, h, w]
        weighted = torch.stack([s * m for s, m in zip(self.shares, maps)])
        local = torch.where(weighted.sum(0) > 0, weighted / weighted.sum(0).clamp_min(1e-30),
                            torch.tensor(self.shares).view(-1, 1, 1, 1).expand_as(weighted))
        parts = torch.split(encoder_hidden_states, self.groups, dim=1)
        return sum(a.reshape(1, -1, 1) * self.plain(attn, hidden_states, part) for a, part in zip(local, parts))


def independent_region_loop(tiny, plugins, shares, regions, image, seed=3):  # noqa: F811
    """Two plugins, each on its region (masks at the photo's size), written out from diffusers parts:
    per latent position the covering plugins' shares scale their SCB residuals (times the coverage)
    and mix their cross-attentions; before each step and at the end the input's latent replaces the
    latents where nothing covers (the noised input during the loop)."""
    unet = UNet2DConditionModel.from_pretrained(tiny / "sd" / "unet").eval()
    vae = AutoencoderKL.from_pretrained(tiny / "sd" / "vae").eval()
    clip = CLIPVisionModel.from_pretrained(tiny / "clip_vision").eval()
    ddpm = DDPMScheduler.from_pretrained(tiny / "sd" / "scheduler")
    shares = [s / sum(shares) for s in shares]
    with torch.no_grad():
        tokens = clip(CLIPImageProcessorPil()(images=image, return_tensors="pt").pixel_values, output_hidden_states=True).hidden_states[24]
        fps = [plugin.tpb(tokens) for plugin in plugins]
        x = VaeImageProcessor(vae_scale_factor=8).preprocess(image, height=image.height, width=image.width)
        z = vae.config.scaling_factor * vae.encode(x).latent_dist.mean
        maps = torch.stack([F.adaptive_avg_pool2d(r, z.shape[-2:]) for r in regions])  # [plugins, 1, 1, h, w]
        weighted = torch.stack([s * m for s, m in zip(shares, maps)])
        local = torch.where(weighted.sum(0) > 0, weighted / weighted.sum(0).clamp_min(1e-30),
                            torch.tensor(shares).view(-1, 1, 1, 1, 1).expand_as(weighted))
        covered = maps.amax(0)
        noise = torch.randn((1, 4, *z.shape[-2:]), generator=torch.Generator().manual_seed(seed))
        unet.set_attn_processor({name: _RegionGroups([fp.shape[1] for fp in fps], shares, maps) if "attn2" in name
                                 else AttnProcessor2_0() for name in unet.attn_processors})
        scheduler = UniPCMultistepScheduler.from_pretrained(tiny / "sd" / "scheduler", final_sigmas_type="sigma_min")
        scheduler.set_timesteps(STEPS)
        latents = None
        for t in scheduler.timesteps.long():
            if t >= 960:
                latents = ddpm.add_noise(z, noise, t)
            latents = covered * latents + (1 - covered) * ddpm.add_noise(z, noise, t)
            residuals = [sum(a * covered * r for a, r in zip(local, parts)) for parts in zip(*(p.scb(z, t, fp) for p, fp in zip(plugins, fps)))]
            eps = unet(latents, t, encoder_hidden_states=torch.cat(fps, dim=1),
                       down_block_additional_residuals=residuals + [torch.zeros(1)] * 3,
                       mid_block_additional_residual=torch.zeros(1)).sample
            latents = scheduler.step(eps, t, latents).prev_sample
    return (covered * latents + (1 - covered) * z)[0]


def test_two_plugins_on_two_regions_equal_an_independent_loop(tiny, restorer, wide, plugins):  # noqa: F811
    left, right = halves()
    soft = F.avg_pool2d(F.pad(left, (8, 8, 8, 8), mode="replicate"), 17, stride=1)  # a soft edge
    right = torch.zeros_like(right)
    right[..., : HEIGHT // 2, WIDTH // 4 :] = 1.0  # overlapping the left region, and leaving the bottom right bare
    chosen = [plugins["derain"], plugins["dehaze"]]
    expected = independent_region_loop(tiny, chosen, [1.0, 0.5], [soft, right], wide)
    got = restore(restorer, wide, chosen, compose="joint", shares=(("dehaze", 0.5),), regions=(("derain", soft), ("dehaze", right)))
    assert_close_rel(got, expected, 1e-4)


def test_regions_keep_to_their_place_in_tiles(restorer, wide, plugins):  # noqa: F811
    """In tiles each call crops the regions with its latent: regions over the whole photo are still no
    regions, and outside a region the photo still passes through."""
    tiles = {"tile_size": 48, "tile_overlap": 16}
    pair = [plugins["derain"], plugins["dehaze"]]
    everywhere = tuple((p.task, torch.ones(1, 1, HEIGHT, WIDTH)) for p in pair)
    plain = restore(restorer, wide, pair, compose="joint", **tiles)
    assert_close_rel(restore(restorer, wide, pair, compose="joint", regions=everywhere, **tiles), plain, 1e-6)
    left, right = halves()
    got = restore(restorer, wide, pair, compose="joint", regions=(("derain", left), ("dehaze", left)), **tiles)
    unrestored = restore(restorer, wide, [], **tiles)
    assert torch.equal(got[..., WIDTH // 16 :], unrestored[..., WIDTH // 16 :])
    both = restore(restorer, wide, pair, compose="joint", regions=(("derain", left), ("dehaze", right)), **tiles)
    assert torch.isfinite(both).all() and not torch.allclose(both, plain)


def test_regions_need_the_attention_context(plugins):  # noqa: F811
    from plugin_core.models import PluginMix

    with pytest.raises(ValueError, match="regions need the 'attention' joint context"):
        PluginMix([plugins["derain"], plugins["dehaze"]], [1, 1], "tokens", regions=[torch.ones(4, 4), None])


def test_the_command_line_checks_each_region_before_any_model_loads(tiny, wide, tmp_path, capsys):  # noqa: F811
    photo_file = tmp_path / "photo.png"
    wide.save(photo_file)
    Image.fromarray((halves()[0][0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "left.png")
    Image.new("L", (WIDTH, HEIGHT)).save(tmp_path / "black.png")
    Image.new("L", (WIDTH + 8, HEIGHT), 255).save(tmp_path / "wider.png")
    Image.new("F", (WIDTH, HEIGHT), 1.0).save(tmp_path / "float.tiff")
    base = ["restore", str(photo_file), "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"), "--steps", str(STEPS),
            "--resolution", "64", "--no-progress", "--compose", "joint", "-o", str(tmp_path / "out.png"),
            "--plugin", str(tiny / "plugins" / "derain.safetensors"), "--plugin", str(tiny / "plugins" / "dehaze.safetensors")]
    refused = {
        "dehaze:left.png": "--region: 'dehaze:left.png' is not TASK=MASK",
        f"dehaze={tmp_path / 'missing.png'}": "missing.png: image not found",
        f"dehaze={tmp_path / 'black.png'}": "the region is empty (all black)",
        f"dehaze={tmp_path / 'wider.png'}": f"a region must have its photo's size: {tmp_path / 'wider.png'} is 104x64, {photo_file} 96x64",
        f"dehaze={tmp_path / 'float.tiff'}": "a region must be an 8-bit image",
        f"desnow={tmp_path / 'left.png'}": "--region names 'desnow', which is not among the plugins (dehaze, derain)",
    }
    for region, message in refused.items():
        assert main([*base, "--region", region]) == 2, region
        assert message in capsys.readouterr().err, region
    assert not (tmp_path / "out.png").exists()
    assert main([*base, "--region", f"dehaze={tmp_path / 'left.png'}", "--shares", "dehaze=0.5"]) == 0
    assert "runs: derain+dehaze in one pass of 4 steps (shares derain 0.667, dehaze 0.333 in its region)" in capsys.readouterr().out
    assert (tmp_path / "out.png").is_file()
