"""The command line as a newcomer meets it, through the real entry point (`python -m plugin_core`):
the list of commands, --version, every mistake of a command in one message, a broken photo named
before any model loads, an output name that is no image, a photo's transparency kept, `info`
without diffusers, and a time estimate that says what it counts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.cli_support import REPO, cli, write_tiny_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = write_tiny_base(tmp_path_factory.mktemp("newcomer"))
    (root / "unloadable_sd").mkdir()  # passes the folder check, fails as soon as a model would load
    for sub in ("unet", "vae", "scheduler"):
        (root / "unloadable_sd" / sub).mkdir()
    return root


def restore_args(base, *images, sd=None):
    return ["restore", *images, "--plugin", base / "derain.safetensors", "--sd", sd or base / "sd", "--clip-vision",
            base / "clip_vision", "--steps", "2", "--resolution", "32", "--no-progress"]


def test_the_command_alone_lists_the_commands_and_version_answers():
    result = cli()
    assert result.returncode == 0
    for command in ("restore", "select", "convert", "info", "synth", "train", "train-selector", "eval-selector", "evaluate",
                    "make-stats"):
        assert command in result.stdout
    version = cli("--version")
    from plugin_core import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"diffplugin {__version__}"


def test_every_mistake_of_a_command_is_reported_at_once():
    result = cli("restore", "photo.jpg", "--steps", "0", "--resolution", "60", "--tile-prompt", "sideways", "--sd", "x")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr  # one message, naming all of them:
    for part in ("--steps: must be at least 1, got 0", "--resolution: must be a multiple of 8", "--tile-prompt: must be one of",
                 "missing --clip-vision", "give either --plugin"):
        assert part in errors[0] or (part == "give either --plugin" and "missing" in errors[0]), (part, errors[0])
    assert "Traceback" not in result.stderr


def test_a_truncated_photo_named_on_the_command_line_stops_before_any_model_loads(base, tmp_path):
    photo = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 48), (200, 100, 50)).save(photo, quality=95)
    photo.write_bytes(photo.read_bytes()[:300])  # a JPEG cut short: its header reads, its pixels do not
    result = cli(*restore_args(base, photo, "-o", tmp_path / "out", sd=base / "unloadable_sd"))
    assert result.returncode == 2 and "cut.jpg: cannot read this image" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_name_that_is_no_image_is_refused_and_nothing_is_made(base, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 40)).save(photo)
    result = cli(*restore_args(base, photo, "-o", tmp_path / "out.txt", sd=base / "unloadable_sd"))
    assert result.returncode == 2 and "'.txt' is not an image format" in result.stderr, result.stderr
    assert not (tmp_path / "out.txt").exists()


def test_a_photos_transparency_is_kept(base, tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    rgba[:, :24, 3] = 0  # the left half transparent
    photo = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(photo)
    result = cli(*restore_args(base, photo, "-o", tmp_path / "out.png"))
    assert result.returncode == 0, result.stderr
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGBA" and out.size == (48, 40)
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])  # at the photo's size: its alpha exactly
    result = cli(*restore_args(base, photo, "-o", tmp_path / "out.jpg"))
    assert result.returncode == 0 and "transparency is dropped: JPEG has none" in result.stderr + result.stdout


def test_info_works_without_diffusers(base, tmp_path):
    """`info` on a plugin and on a selector, in a Python where diffusers (and transformers) cannot be imported."""
    from plugin_core import PluginSelector, save_selector

    save_selector(PluginSelector(), tmp_path / "selector.safetensors")
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        for name in ("diffusers", "transformers", "accelerate"):
            sys.modules[name] = None  # `import diffusers` raises ImportError
    """))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(blocker), REPO])}
    plugin = cli("info", base / "derain.safetensors", env=env)
    assert plugin.returncode == 0 and "task: derain" in plugin.stdout and "parameters: TPB" in plugin.stdout, plugin.stderr
    selector = cli("info", tmp_path / "selector.safetensors", env=env)
    assert selector.returncode == 0 and "Plugin-Selector" in selector.stdout, selector.stderr
    probe = subprocess.run([sys.executable, "-c", "import diffusers"], capture_output=True, env=env)
    assert probe.returncode != 0  # the block holds: the two runs above really had no diffusers


def test_the_time_estimate_counts_sampling_decoding_and_the_colour_fix(base, tmp_path):
    """The estimate comes once the pace has settled and names all that is left."""
    from plugin_core import BaseModels, Restorer, load_plugin

    restorer = Restorer(BaseModels.from_pretrained(base / "sd", base / "clip_vision"))
    plugin = load_plugin(base / "derain.safetensors")
    reports = []
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    restorer.restore([photo], [plugin], steps=6, resolution=32, color_fix="wavelet", report=reports.append)
    estimate = next(line for line in reports if "UNet calls" in line)
    assert "6 UNet calls" in estimate and "min of sampling" in estimate and "decoding and colour fix" in estimate
