"""Tiled restoration: the blend weights, the tiled denoise against an independent loop, the
one-tile case equal to the untiled (reference) one, large images through the CLI, colour fixes."""

import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UniPCMultistepScheduler
from PIL import Image
from transformers import CLIPVisionModel

from plugin_core import BaseModels, Restorer, TileSettings, load_plugin
from plugin_core.images import clip_pixels
from plugin_core.tiling import TilePlan
from tests.random_models import write_tiny_clip_vision, write_tiny_sd


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("tiles")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    shutil.copytree(fixtures_dir / "tiny" / "derain", root / "derain")
    return root


@pytest.fixture(scope="module")
def restorer(tiny):
    return Restorer(BaseModels.from_pretrained(tiny / "sd", tiny / "clip_vision"))


@pytest.fixture(scope="module")
def photo(photo_dir):
    return Image.open(photo_dir / "rain.png").convert("RGB").resize((200, 152))


# ---------------------------------------------------------------------- weights


@pytest.mark.parametrize("height,width,tile,overlap", [
    (40, 56, 16, 4), (17, 23, 8, 3), (25, 25, 25, 5), (9, 40, 16, 6), (64, 64, 16, 0), (30, 31, 12, 11),
])
def test_blend_weights_sum_to_one_everywhere(height, width, tile, overlap):
    plan = TilePlan(height, width, tile, overlap)
    total = torch.zeros(height, width, dtype=torch.float64)
    for t, weight in zip(plan.tiles, plan.weights):
        assert t.y >= 0 and t.x >= 0 and t.y + t.h <= height and t.x + t.w <= width
        assert (weight > 0).all()
        t.crop(total).add_(weight.double())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)  # edges and corners included
    assert plan.single == (height <= tile and width <= tile)


def test_a_lone_tile_weighs_one_and_inner_pixels_are_a_tiles_own():
    plan = TilePlan(40, 40, 16, 4)
    inner = [(t, w) for t, w in zip(plan.tiles, plan.weights) if t.y == 0 and t.x == 0][0]
    assert inner[1][0, 0] == 1 and inner[1][:12, :12].eq(1).all()  # away from neighbours: its own prediction
    one = TilePlan(10, 12, 16, 4)
    assert one.single and one.weights[0].eq(1).all()


# ---------------------------------------------------------------------- sampling


def test_an_image_that_fits_one_tile_is_restored_exactly_as_untiled(tiny, restorer, photo):
    plugin = load_plugin(tiny / "derain")
    untiled = restorer.restore([photo], [plugin], steps=3, seed=4, resolution=64)
    fits = restorer.restore([photo], [plugin], steps=3, seed=4, resolution=64, tiles=TileSettings(size=256, overlap=64))
    assert torch.equal(fits.latents[0], untiled.latents[0])
    # The tiled code path itself, with one tile covering the latent, gives the same to 1e-5.
    backend = restorer.backend
    input_latent = backend.encode_pixels(torch.rand(1, 3, 152, 200) * 2 - 1)
    fp = plugin.visual_prompt(backend.clip_tokens([photo], 24))
    a = backend.sample(plugin, input_latent, fp, steps=3, seed=4)
    b = backend.sample(plugin, input_latent, fp, steps=3, seed=4, plan=TilePlan(19, 25, 32, 8))
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def _weights(height, width, tile, overlap):
    """The documented blend weights, computed independently: tiles `tile - overlap` apart, as few as
    cover the side, the last one moved in to end at the edge; 1 inside, (i + 1) / (overlap + 1)
    towards a side shared with another tile, divided by their sum."""
    def starts(size):
        count = 1 if size <= tile else 1 + -(-(size - tile) // (tile - overlap))  # ceil: tiles that cover the side
        return sorted({min(k * (tile - overlap), max(size - tile, 0)) for k in range(count)})

    boxes, raw = [], []
    for y in starts(height):
        for x in starts(width):
            h, w = min(tile, height), min(tile, width)
            wy = np.ones(h)
            wx = np.ones(w)
            for i in range(h):
                if y > 0:
                    wy[i] = min(wy[i], (i + 1) / (overlap + 1))
                if y + h < height:
                    wy[i] = min(wy[i], (h - i) / (overlap + 1))
            for i in range(w):
                if x > 0:
                    wx[i] = min(wx[i], (i + 1) / (overlap + 1))
                if x + w < width:
                    wx[i] = min(wx[i], (w - i) / (overlap + 1))
            boxes.append((y, x, h, w))
            raw.append(np.outer(wy, wx))
    total = np.zeros((height, width))
    for (y, x, h, w), r in zip(boxes, raw):
        total[y : y + h, x : x + w] += r
    return [(b, torch.tensor(r / total[b[0] : b[0] + b[2], b[1] : b[1] + b[3]], dtype=torch.float32)) for b, r in zip(boxes, raw)]


@pytest.mark.parametrize("tile_prompt,tile_batch", [("tile", 1), ("global", 3)])
def test_tiled_denoise_equals_an_independent_loop(tiny, restorer, photo, tile_prompt, tile_batch):
    """Crop, the SCB on the tile's crop of the input latent, the UNet, blend with the documented
    weights, step - written out here from diffusers parts."""
    plugin = load_plugin(tiny / "derain")
    settings = TileSettings(size=64, overlap=16, batch=tile_batch, prompt=tile_prompt)
    result = restorer.restore([photo], [plugin], steps=3, seed=2, resolution=64, tiles=settings)

    unet = UNet2DConditionModel.from_pretrained(tiny / "sd" / "unet").eval()
    vae = AutoencoderKL.from_pretrained(tiny / "sd" / "vae").eval()
    vae.enable_tiling()  # the tiled run encodes with diffusers' own tiling
    clip = CLIPVisionModel.from_pretrained(tiny / "clip_vision").eval()
    ddpm = DDPMScheduler.from_pretrained(tiny / "sd" / "scheduler")
    with torch.no_grad():
        pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
        # 200x152 px: 25 x 19 latent, encoded in two bands of latent rows (0-16 and 14-19, blended over 2)
        def encode(rows):
            return vae.config.scaling_factor * vae.encode(pixels[:, :, rows.start * 8 : rows.stop * 8]).latent_dist.mean
        first, second, ramp = encode(range(0, 16)), encode(range(14, 19)), torch.tensor([0.25, 0.75]).view(1, 1, 2, 1)
        z = torch.cat([first[:, :, :14], first[:, :, 14:] * (1 - ramp) + second[:, :, :2] * ramp, second[:, :, 2:]], dim=2)
        tiles = _weights(19, 25, 8, 2)
        if tile_prompt == "tile":
            crops = [photo.crop((x * 8, y * 8, (x + w) * 8, (y + h) * 8)) for (y, x, h, w), _ in tiles]
            fps = [plugin.tpb(clip(clip_pixels([c]), output_hidden_states=True).hidden_states[24]) for c in crops]
        else:
            fps = [plugin.tpb(clip(clip_pixels([photo]), output_hidden_states=True).hidden_states[24])] * len(tiles)
        noise = torch.randn((1, 4, 19, 25), generator=torch.Generator().manual_seed(2))
        scheduler = UniPCMultistepScheduler.from_pretrained(tiny / "sd" / "scheduler", final_sigmas_type="sigma_min")
        scheduler.set_timesteps(3)
        latents = None
        for t in scheduler.timesteps.long():
            if t >= 960:
                latents = ddpm.add_noise(z, noise, t)
            eps = torch.zeros_like(latents)
            for ((y, x, h, w), weight), fp in zip(tiles, fps):
                residuals = plugin.scb(z[..., y : y + h, x : x + w], t, fp)
                out = unet(latents[..., y : y + h, x : x + w], t, encoder_hidden_states=fp,
                           down_block_additional_residuals=residuals + [torch.zeros(1)] * 3,
                           mid_block_additional_residual=torch.zeros(1)).sample
                eps[..., y : y + h, x : x + w] += out * weight
            latents = scheduler.step(eps, t, latents).prev_sample
    error = (result.latents[0] - latents[0]).abs().max() / latents.abs().max()
    assert error <= 1e-4, f"relative error {error:.3g}"


def test_a_batch_of_images_is_tiled_like_each_alone(tiny, restorer, photo, photo_dir):
    plugin = load_plugin(tiny / "derain")
    other = Image.open(photo_dir / "snow.png").convert("RGB").resize((200, 152))
    settings = TileSettings(size=64, overlap=16, batch=2)
    both = restorer.restore([photo, other], [plugin], steps=2, seed=1, resolution=64, tiles=settings)
    for image, latent in zip([photo, other], both.latents):
        alone = restorer.restore([image], [plugin], steps=2, seed=1, resolution=64, tiles=settings)
        assert (latent - alone.latents[0]).abs().max() <= 1e-5 * latent.abs().max()


def test_progress_counts_tiles_times_steps_and_the_plan_is_reported(tiny, restorer, photo):
    plugin = load_plugin(tiny / "derain")
    seen, reports = [], []
    restorer.restore([photo], [plugin], steps=3, seed=1, resolution=64, tiles=TileSettings(size=64, overlap=16, batch=4),
                     progress=lambda done, total: seen.append((done, total)), report=reports.append)
    calls = 3 * len(TilePlan(19, 25, 8, 2).batches(4))
    assert seen[0] == (0, calls) and seen[-1] == (calls, calls) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert "12 tiles of 64x64 px (overlap 16 px)" in reports[0] and "UNet calls" in reports[1]


def test_the_cli_restores_a_large_photo_in_tiles(tiny, tmp_path, photo_dir):
    from plugin_core.cli import main

    big = tmp_path / "big.png"
    Image.open(photo_dir / "lowlight.png").convert("RGB").resize((2048, 1536)).save(big)
    out = tmp_path / "out.png"
    assert main(["restore", str(big), "--plugin", str(tiny / "derain"), "--sd", str(tiny / "sd"), "--clip-vision",
                 str(tiny / "clip_vision"), "--steps", "1", "--tile-size", "512", "--tile-overlap", "64", "-o", str(out),
                 "--no-progress", "--color-fix", "wavelet"]) == 0
    assert Image.open(out).size == (2048, 1536)


# ---------------------------------------------------------------------- colour


@pytest.mark.parametrize("fix", ["wavelet", "adain"])
def test_a_colour_fix_keeps_the_inputs_low_frequency_colour(photo_dir, fix):
    """Whatever the model does (here: a strong colour cast, changed contrast and noise), the fixed
    result blurred has the blurred input's colour: mean CIEDE2000 under a small bound (CIELAB by
    scikit-image, not by this package)."""
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.filters import gaussian

    from plugin_core.colorfix import fix_colors

    source = Image.open(photo_dir / "haze.png").convert("RGB").resize((256, 192))
    array = np.asarray(source, dtype=np.float32) / 255
    rng = np.random.default_rng(0)
    shifted = np.clip(array * [1.25, 0.8, 0.7] * 0.9 + 0.08 + rng.normal(0, 0.03, array.shape), 0, 1)
    model_output = Image.fromarray((shifted * 255).round().astype(np.uint8))
    fixed = fix_colors([model_output], [source], fix)[0]

    def blurred_lab(image):
        return rgb2lab(gaussian(np.asarray(image, dtype=np.float64) / 255, sigma=8, channel_axis=-1))

    before = deltaE_ciede2000(blurred_lab(model_output), blurred_lab(source)).mean()
    after = deltaE_ciede2000(blurred_lab(fixed), blurred_lab(source)).mean()
    assert before > 8, before  # the cast is plain to see
    assert after < (1.5 if fix == "wavelet" else 4.0), (fix, before, after)
    assert fix_colors([model_output], [source], "none")[0] is model_output


@pytest.mark.parametrize("fix", ["wavelet", "adain"])
def test_a_colour_fix_in_bands_is_the_whole_image_fix(photo_dir, fix):
    """Row bands (with the wavelet's reach as margin, adain's whole-image statistics) give the
    pixels the one-piece tensor fix gives."""
    from plugin_core.colorfix import fix_colors, fix_tensor

    source = Image.open(photo_dir / "haze.png").convert("RGB").resize((200, 150))
    array = np.asarray(source, dtype=np.float32) / 255
    model_output = Image.fromarray((np.clip(array[::-1] * 0.8 + 0.1, 0, 1) * 255).round().astype(np.uint8))
    tensors = [torch.from_numpy(np.asarray(i, dtype=np.float32) / 255).permute(2, 0, 1)[None] for i in (model_output, source)]
    whole = (fix_tensor(*tensors, fix)[0].permute(1, 2, 0).numpy() * 255).round()
    for rows in (150, 40, 7):
        banded = np.asarray(fix_colors([model_output], [source], fix, rows=rows)[0], dtype=np.float32)
        assert np.abs(banded - whole).max() <= 1, (fix, rows)  # float32 rounding of the statistics at most
        if fix == "wavelet":
            assert np.array_equal(banded, whole), rows


def test_a_tall_latent_decodes_in_bands_like_diffusers_tiled_decode(restorer):
    """Bands of latent rows through diffusers' tiled decode: the trivial case (one band) is
    vae.decode itself; several bands differ from diffusers' own tiled_decode only near band
    seams, and no more than diffusers' tiling differs from one untiled decode."""
    from plugin_core.images import to_uint8

    backend = restorer.backend
    vae = backend.models.vae
    latents = torch.randn(1, 4, 70, 20, generator=torch.Generator().manual_seed(0))
    scaled = latents * vae.config.scaling_factor
    with backend.vae_tiling(True):
        band = 2 * vae.tile_latent_min_size
        assert band < 70
        banded = np.asarray(backend.decode(scaled)[0], dtype=np.float32)
        one_band = backend._decode_bands(latents[:, :, :band], band, band // 8)[0]
        with torch.no_grad():
            assert np.array_equal(one_band, to_uint8(vae.decode(latents[:, :, :band]).sample)[0])
            diffusers_tiled = to_uint8(vae.tiled_decode(latents).sample)[0].astype(np.float32)
    with torch.no_grad():
        untiled = to_uint8(vae.decode(latents).sample)[0].astype(np.float32)
    assert banded.shape == untiled.shape == (70 * backend.vae_factor, 20 * backend.vae_factor, 3)
    ours, theirs = np.abs(banded - untiled).mean(), np.abs(diffusers_tiled - untiled).mean()
    assert ours <= 1.5 * theirs + 0.5, (ours, theirs)


def test_a_tall_photo_encodes_in_bands_like_diffusers_tiled_encode(restorer, photo):
    """The same for encoding: one band is `encode_pixels` itself; several are as close to one
    untiled encode as diffusers' tiled encode is."""
    from plugin_core.images import vae_pixels

    backend = restorer.backend
    vae = backend.models.vae
    band = 2 * vae.tile_latent_min_size * backend.vae_factor
    tall = photo.resize((160, band * 3 + 40))
    with backend.vae_tiling(True):
        banded = backend.encode_images([tall])
        top = tall.crop((0, 0, 160, band))
        assert torch.equal(backend.encode_images([top]), backend.encode_pixels(vae_pixels([top])))
        diffusers_tiled = backend.encode_pixels(vae_pixels([tall]))
    untiled = backend.encode_pixels(vae_pixels([tall]))
    assert banded.shape == untiled.shape
    ours, theirs = (banded - untiled).abs().mean(), (diffusers_tiled - untiled).abs().mean()
    assert ours <= 1.5 * theirs + 1e-3, (ours, theirs)
