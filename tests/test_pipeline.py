"""End to end on tiny random diffusers / transformers models the tests build.

The sampling rules (input start, noise start, several plugins) are checked against a
reference loop written out here from diffusers and transformers parts, not against the
pipeline under test.
"""

import shutil
import subprocess
import sys

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UniPCMultistepScheduler
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from plugin_core import BaseModels, Restorer, load_plugin
from plugin_core.cli import main
from tests.random_models import write_tiny_clip_vision, write_tiny_sd

STEPS = 4


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    plugins = root / "plugins"
    for task in ("derain", "desnow"):
        shutil.copytree(fixtures_dir / "tiny" / task, plugins / task)
    # A noise-start plugin: the reference starts lowlight from pure noise.
    shutil.copytree(fixtures_dir / "tiny" / "desnow", root / "lowlight")
    return root


@pytest.fixture(scope="session")
def restorer(tiny):
    return Restorer(BaseModels.from_pretrained(tiny / "sd", tiny / "clip_vision", with_text=True))


@pytest.fixture(scope="session")
def photo(photo_dir):
    # A rainy photo (tests/photos.py) at a size that is not a multiple of 8.
    return Image.open(photo_dir / "rain.png").convert("RGB").resize((90, 70))


def reference_loop(tiny, plugins, image, *, steps, seed, threshold=960, resolution=64, later_steps=3):
    """The reference inference written out from diffusers / transformers parts."""
    unet = UNet2DConditionModel.from_pretrained(tiny / "sd" / "unet").eval()
    vae = AutoencoderKL.from_pretrained(tiny / "sd" / "vae").eval()
    clip = CLIPVisionModel.from_pretrained(tiny / "clip_vision").eval()
    ddpm = DDPMScheduler.from_pretrained(tiny / "sd" / "scheduler")
    vae_processor = VaeImageProcessor(vae_scale_factor=8)
    with torch.no_grad():
        clip_input = CLIPImageProcessorPil()(images=image, return_tensors="pt").pixel_values
        tokens = clip(clip_input, output_hidden_states=True).hidden_states[24]
        width, height = image.size
        if width < resolution or height < resolution:
            if width < height:
                width, height = resolution, int((resolution / width) * height)
            else:
                width, height = int((resolution / height) * width), resolution
            image = image.resize((width, height))
        current = image
        for order, plugin in enumerate(plugins):
            fp = plugin.tpb(tokens)
            x = vae_processor.preprocess(current, height=height, width=width)
            z = vae.config.scaling_factor * vae.encode(x).latent_dist.mean
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn((1, 4, *z.shape[-2:]), generator=generator)
            latents = noise if plugin.start_mode == "noise" else None
            scheduler = UniPCMultistepScheduler.from_pretrained(tiny / "sd" / "scheduler", final_sigmas_type="sigma_min")
            assert scheduler.config.timestep_spacing == "linspace"
            scheduler.set_timesteps(steps if order == 0 else later_steps)
            for t in scheduler.timesteps.long():
                if plugin.start_mode == "input" and t >= threshold:
                    latents = ddpm.add_noise(z, noise, t)
                residuals = plugin.scb(z, t, fp)
                pad = [torch.zeros(1)] * 3  # the tiny UNet has 6 skips
                eps = unet(
                    latents, t, encoder_hidden_states=fp,
                    down_block_additional_residuals=residuals + pad, mid_block_additional_residual=torch.zeros(1),
                ).sample
                latents = scheduler.step(eps, t, latents).prev_sample
            decoded = vae.decode(latents / vae.config.scaling_factor).sample
            current = vae_processor.postprocess(decoded, output_type="pil")[0]
    return latents[0], current


def run_cli(tiny, photo_path, out, *extra):
    return main(
        ["restore", str(photo_path), "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"),
         "--steps", str(STEPS), "--resolution", "64", "-o", str(out), "--no-progress", *extra]
    )


def assert_close_rel(a, b, rtol=1e-4):
    assert a.shape == b.shape
    error = (a - b).abs().max() / b.abs().max()
    assert error <= rtol, f"relative error {error:.3g}"


@pytest.fixture()
def photo_path(photo, tmp_path):
    path = tmp_path / "rain.png"
    photo.save(path)
    return path


def test_cli_restore_writes_expected_size_and_is_deterministic(tiny, photo_path, tmp_path):
    plugin = tiny / "plugins" / "derain"
    assert run_cli(tiny, photo_path, tmp_path / "a.png", "--plugin", str(plugin), "--save-latent", str(tmp_path / "a.safetensors")) == 0
    assert run_cli(tiny, photo_path, tmp_path / "b.png", "--plugin", str(plugin), "--save-latent", str(tmp_path / "b.safetensors")) == 0
    assert run_cli(tiny, photo_path, tmp_path / "c.png", "--plugin", str(plugin), "--output-size", "processed", "--seed", "7") == 0
    a, b, c = (Image.open(tmp_path / f"{n}.png") for n in "abc")
    assert a.size == (90, 70)  # the input's own size by default
    assert c.size == (88, 64)  # working size: short side 70 >= 64, both sides down to multiples of 8
    assert a.tobytes() == b.tobytes()
    la, lb = load_file(tmp_path / "a.safetensors")["latent.0"], load_file(tmp_path / "b.safetensors")["latent.0"]
    assert la.shape == (4, 8, 11) and torch.equal(la, lb)
    assert a.resize((88, 64)).tobytes() != c.tobytes()  # another seed, another result


def test_console_script_runs(tiny, photo_path, tmp_path):
    out = tmp_path / "small.png"
    result = subprocess.run(
        [sys.executable, "-m", "plugin_core", "restore", str(photo_path), "--plugin", str(tiny / "plugins" / "derain"),
         "--sd", str(tiny / "sd"), "--clip-vision", str(tiny / "clip_vision"), "--steps", "2", "--resolution", "32",
         "--output-size", "processed", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (88, 64)
    assert "wrote" in result.stdout


@pytest.mark.parametrize("task_folder,threshold,steps", [
    ("plugins/derain", 960, STEPS),  # input start, t=999 only
    ("plugins/derain", 700, STEPS),  # input start, reset at 999 and 749
    ("lowlight", 960, STEPS),  # pure-noise start
])
def test_start_rules_match_reference_loop(tiny, restorer, photo, task_folder, threshold, steps):
    plugin = load_plugin(tiny / task_folder)
    assert plugin.start_mode == ("noise" if task_folder == "lowlight" else "input")
    expected, _ = reference_loop(tiny, [plugin], photo, steps=steps, seed=3, threshold=threshold)
    result = restorer.restore([photo], [plugin], steps=steps, seed=3, renoise_until=threshold, resolution=64)
    assert_close_rel(result.latents[0], expected)


def test_multi_plugin_rule_matches_reference_loop(tiny, restorer, photo):
    plugins = [load_plugin(tiny / "plugins" / "derain"), load_plugin(tiny / "lowlight")]
    expected, expected_image = reference_loop(tiny, plugins, photo, steps=STEPS, seed=5)
    result = restorer.restore([photo], plugins, steps=STEPS, seed=5, resolution=64)
    assert_close_rel(result.latents[0], expected)
    # Later plugins run 3 steps on the first plugin's uint8 output: chaining changes the result.
    alone = restorer.restore([photo], plugins[1:], steps=3, seed=5, resolution=64)
    assert not torch.allclose(alone.latents[0], result.latents[0])


def test_batch_equals_one_by_one(tiny, restorer, photo, photo_dir):
    plugin = load_plugin(tiny / "plugins" / "derain")
    other = Image.open(photo_dir / "snow.png").convert("RGB").resize((90, 70))
    odd = Image.open(photo_dir / "haze.png").convert("RGB").resize((70, 90))
    batch = restorer.restore([photo, other, odd], [plugin], steps=2, seed=1, resolution=64, output_size="processed")
    for image, latent in zip([photo, other, odd], batch.latents):
        single = restorer.restore([image], [plugin], steps=2, seed=1, resolution=64)
        assert_close_rel(latent, single.latents[0], rtol=1e-5)
    assert batch.images[2].size == (64, 88)


@pytest.mark.parametrize("mode,size", [("RGBA", (45, 33)), ("L", (33, 45)), ("RGB", (1, 1)), ("P", (17, 9)), ("I;16", (30, 30))])
def test_odd_images_are_processed(tiny, tmp_path, mode, size):
    image = Image.new(mode, size)
    if mode == "RGBA":
        image = Image.new("RGBA", size, (200, 30, 40, 0))  # fully transparent: the plugins still read its colour
    path = tmp_path / "odd.png"
    image.save(path)
    assert run_cli(tiny, path, tmp_path / "out.png", "--plugin", str(tiny / "plugins" / "derain"), "--steps", "1", "--output-size", "processed") == 0
    out = Image.open(tmp_path / "out.png")
    # The plugins read the colour (alpha dropped, not composited); the result keeps the photo's transparency.
    assert out.mode == ("RGBA" if mode == "RGBA" else "RGB") and out.width % 8 == 0 and out.height % 8 == 0 and min(out.size) >= 64


def test_unreadable_image_is_reported(tiny, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert run_cli(tiny, bad, tmp_path / "out.png", "--plugin", str(tiny / "plugins" / "derain")) == 2
    assert "broken.jpg: cannot read this image" in capsys.readouterr().err


def test_missing_and_corrupt_plugins_are_reported(tiny, photo_path, tmp_path, capsys):
    assert run_cli(tiny, photo_path, tmp_path / "o.png", "--plugin", str(tmp_path / "nope.safetensors")) == 2
    assert "nope.safetensors: file not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    assert run_cli(tiny, photo_path, tmp_path / "o.png", "--plugin", str(corrupt)) == 2
    assert "corrupt.safetensors: not a readable .safetensors file" in capsys.readouterr().err


def test_context_mismatch_is_refused_before_sampling(tiny, photo, tmp_path, fixtures_dir, monkeypatch):
    """An SD2-like UNet (context 1024) with an SD1 plugin: a clear error, no UNet call."""
    write_tiny_sd(tmp_path / "sd2", context_width=1024)
    restorer = Restorer(BaseModels.from_pretrained(tmp_path / "sd2", tiny / "clip_vision"))
    calls = []
    monkeypatch.setattr(restorer.models.unet, "forward", lambda *a, **k: calls.append(1))
    from plugin_core.errors import PluginMismatchError

    with pytest.raises(PluginMismatchError, match=r"cross-attention width 1024 \(plugin needs 768\)"):
        restorer.restore([photo], [load_plugin(fixtures_dir / "tiny" / "derain")], steps=2, resolution=64)
    assert calls == []


def test_clip_preprocessing_matches_transformers(photo):
    from plugin_core.images import clip_pixels

    for image in (photo, photo.resize((300, 120)), photo.resize((120, 301))):
        expected = CLIPImageProcessorPil()(images=image, return_tensors="pt").pixel_values
        assert torch.allclose(clip_pixels([image]), expected, atol=1e-6)


def test_text_embedding_skips_padding_exactly(restorer):
    """Running the causal text encoder only up to EOS gives the full 77-token pooled output."""
    tokenizer, encoder = restorer.models.tokenizer, restorer.models.text_encoder
    texts = ["remove the rain", " ", "please make this dark photo brighter and remove the haze"]
    full_ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        full = encoder(input_ids=full_ids).pooler_output
    assert torch.allclose(restorer.text_encoder.encode(texts), full, atol=1e-5, rtol=1e-5)


def test_select_scores_follow_reference_rule(tiny, restorer, photo, selector_file):
    from plugin_core import load_selector

    selector, _ = load_selector(selector_file)
    plugins = [load_plugin(tiny / "plugins" / t) for t in ("derain", "desnow")]
    selection = restorer.select(photo, "remove the rain", plugins, selector)
    # Recompute as demo.py does: Fp rows + the " " embedding broadcast as the null row.
    with torch.no_grad():
        tokens = restorer.backend.clip_tokens([photo], 24)
        text = restorer.models.text_encoder
        ids = restorer.models.tokenizer(["remove the rain", " "], padding="max_length", max_length=77, return_tensors="pt").input_ids
        instruction, null = text(input_ids=ids).pooler_output
        rows = torch.cat([p.tpb(tokens) for p in plugins] + [null[None, None].expand(1, 256, -1)]).amax(1)
        scores = selector.score(instruction[None], rows[None, :-1], null=rows[-1])[0, 0]
    assert selection.scores == pytest.approx(scores[:2].tolist(), rel=1e-5)
    assert selection.null_score == pytest.approx(scores[2].item(), rel=1e-5)
    positive = [t for t, s in zip(selection.tasks, selection.scores) if s > 0]
    assert selection.selected == positive or (not positive and selection.selected == [])


def test_selection_is_per_image_in_a_batch(tiny, restorer, photo, photo_dir, selector_file):
    """The one batch policy: each image of a batch gets the selection it gets alone."""
    from plugin_core import load_selector

    selector, _ = load_selector(selector_file)
    plugins = [load_plugin(tiny / "plugins" / t) for t in ("derain", "desnow")]
    other = Image.open(photo_dir / "snow.png").convert("RGB").resize((70, 90))
    batch = restorer.select_each([photo, other], "remove the snow", plugins, selector)
    for image, selection in zip([photo, other], batch):
        alone = restorer.select(image, "remove the snow", plugins, selector)
        assert selection.scores == pytest.approx(alone.scores, rel=1e-5, abs=1e-6) and selection.selected == alone.selected
    assert batch[0].scores != pytest.approx(batch[1].scores, rel=1e-3)  # two photos, two score vectors


def test_prompt_driven_restore_runs_the_selection(tiny, photo_path, tmp_path, capsys, selector_file):
    code = run_cli(
        tiny, photo_path, tmp_path / "p.png", "--prompt", "remove the rain", "--plugins", str(tiny / "plugins"),
        "--selector", str(selector_file), "--steps", "1",
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "selected:" in out and (tmp_path / "p.png").is_file()
