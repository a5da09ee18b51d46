"""The command line as a user meets it, through the real `diffplugin` entry point: nothing a
user has is written over, every mistake is one message (exit 2, no traceback) before any model
loads, Ctrl+C ends with 130, nothing is skipped in silence."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from plugin_core.cli import build_parser
from tests.random_models import write_tiny_clip_vision, write_tiny_sd

DIFFPLUGIN = Path(sys.executable).parent / "diffplugin"


def run(*args, timeout=300):
    command = [str(DIFFPLUGIN)] if DIFFPLUGIN.is_file() else [sys.executable, "-m", "plugin_core"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def start(*args):
    command = [str(DIFFPLUGIN)] if DIFFPLUGIN.is_file() else [sys.executable, "-m", "plugin_core"]
    return subprocess.Popen(command + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_user_error(result, *messages):
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    for message in messages:
        assert message in output, output


@pytest.fixture(scope="module")
def base(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("cli-base")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    shutil.copytree(fixtures_dir / "tiny" / "derain", root / "plugins" / "derain")
    # An SD folder that has the sub-folders but nothing loadable: a command that got as far as
    # loading a model would fail on it with some other error, never with the expected message.
    for sub in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        (root / "unloadable_sd" / sub).mkdir(parents=True)
    return root


@pytest.fixture()
def photo(tmp_path, photo_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / "rain.png"
    Image.open(photo_dir / "rain.png").convert("RGB").resize((72, 56)).save(path)
    return path


def restore_args(base, *extra, sd=None):
    return ["restore", *extra, "--plugin", base / "plugins" / "derain", "--sd", sd or base / "sd", "--clip-vision",
            base / "clip_vision", "--steps", "1", "--resolution", "32", "--no-progress"]


# ---------------------------------------------------------------------- files are never lost


def test_restore_never_writes_over_its_input(base, photo):
    before = photo.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = run(*restore_args(base, photo, "-o", photo.parent, *extra))
        assert_user_error(result, "this is an input", str(photo))
        result = run(*restore_args(base, photo, "-o", photo, *extra))
        assert_user_error(result, "this is an input")
    assert photo.read_bytes() == before


def test_an_existing_output_is_kept_unless_overwrite(base, photo, tmp_path):
    existing = tmp_path / "restored.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(existing)
    before = existing.read_bytes()
    assert_user_error(run(*restore_args(base, photo, "-o", existing)), "already exists", "--overwrite")
    assert existing.read_bytes() == before
    latent = tmp_path / "latent.safetensors"
    latent.write_bytes(b"mine")
    assert_user_error(run(*restore_args(base, photo, "-o", tmp_path / "new.png", "--save-latent", latent)), "already exists")
    assert latent.read_bytes() == b"mine" and not (tmp_path / "new.png").exists()
    result = run(*restore_args(base, photo, "-o", existing, "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert existing.read_bytes() != before and Image.open(existing).size == (72, 56)


def test_one_file_name_for_several_images_is_refused_before_anything_runs(base, photo, tmp_path):
    other = photo.parent / "other.png"
    shutil.copy(photo, other)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert_user_error(run(*restore_args(base, photo, other, "-o", notes, sd=base / "unloadable_sd")), "is a file, not a folder")
    assert_user_error(run(*restore_args(base, photo, other, "-o", tmp_path / "one.png", sd=base / "unloadable_sd")),
                      "names one image file, but 2 images")
    assert notes.read_text() == "my notes"


def test_a_run_folder_holding_a_run_needs_resume_or_overwrite(base, tmp_path, photo_dir):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000120.pt").write_bytes(b"an old run's checkpoint")
    (run_dir / "loss.csv").write_text("step,loss,lr,seconds\n120,0.1,1e-05,1.0\n")
    (run_dir / "t.safetensors").write_bytes(b"the old run's plugin")
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    data = tmp_path / "clean"
    data.mkdir()
    Image.open(photo_dir / "rain.png").convert("RGB").resize((40, 40)).save(data / "a.png")
    result = run("train", "--synthetic", data, "--task", "t", "--steps", "2", "--resolution", "64", "-o", run_dir,
                 "--sd", base / "unloadable_sd", "--clip-vision", base / "clip_vision", "--no-progress")
    assert_user_error(result, "holds a training run", "checkpoints up to step 120", "--resume", "--overwrite")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


# ---------------------------------------------------------------------- one message, before any model loads


@pytest.mark.parametrize("case,extra,message", [
    ("negative steps", ["--steps", "-3"], "must be at least 1, got -3"),
    ("zero steps", ["--steps", "0"], "must be at least 1, got 0"),
    ("no later steps", ["--later-steps", "0"], "must be at least 1, got 0"),
    ("resolution", ["--resolution", "60"], "must be a multiple of 8"),
    ("threshold", ["--threshold", "1001"], "must be at most 1000"),
    ("not a number", ["--select-threshold", "nan"], "must be a finite number"),
])
def test_bad_numbers_are_refused(base, photo, case, extra, message):
    assert_user_error(run(*restore_args(base, photo, sd=base / "unloadable_sd"), *extra), message)


@pytest.mark.parametrize("extra,message", [
    (["--steps", "0"], "must be at least 1, got 0"),
    (["--batch-size", "0"], "must be at least 1, got 0"),
    (["--resolution", "60"], "must be a multiple of 8"),
    (["--lr", "inf"], "must be a finite number"),
])
def test_bad_training_numbers_are_refused(base, tmp_path, extra, message):
    result = run("train", "--synthetic", tmp_path, "--task", "t", "--sd", base / "unloadable_sd", "--clip-vision",
                 base / "clip_vision", *extra)
    assert_user_error(result, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_device_the_machine_lacks_is_refused(base, photo):
    assert_user_error(run(*restore_args(base, photo, "--device", "cuda", sd=base / "unloadable_sd")), "no CUDA GPU here", "--device cpu")


def test_base_folders_that_are_not_what_they_are_given_as(base, photo):
    args = restore_args(base, photo)
    args[args.index("--clip-vision") + 1] = base / "sd"  # the SD folder given as CLIP vision
    assert_user_error(run(*args), "not a transformers CLIP vision folder")
    assert_user_error(run(*restore_args(base, photo, sd=base / "nowhere")), "--sd", "folder not found")


def test_convert_of_a_file_that_is_no_plugin(tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(())}, lora)
    assert_user_error(run("convert", lora, "-o", tmp_path / "out"), "not a Plugin-Selector file", "task folder")
    assert_user_error(run("convert", tmp_path / "absent", "-o", tmp_path / "out"), "not found")


def test_restore_steps_zero_writes_nothing(base, photo, tmp_path):
    assert_user_error(run(*restore_args(base, photo, "-o", tmp_path / "o.png"), "--steps", "0"), "must be at least 1")
    assert not (tmp_path / "o.png").exists()


def test_every_option_has_help_and_shows_its_default():
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        text = " ".join(command.format_help().split())  # unwrapped
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            has_default = action.default is not None and action.default is not False and action.default != []
            has_default = has_default and action.nargs != 0  # a switch (--no-crop) shows none: "default: True" only confuses
            if action.option_strings and has_default and "default" not in action.help:
                shown = " ".join(map(str, action.default)) if isinstance(action.default, tuple) else str(action.default)
                assert f"(default: {shown})" in text or f"(default: {action.default})" in text, (name, action.option_strings)


# ---------------------------------------------------------------------- Ctrl+C


def _wait_for(process, predicate, what, timeout=240):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline and process.poll() is None, what
        time.sleep(0.05)


@pytest.mark.parametrize("tiles", [[], ["--tile-size", "32", "--tile-overlap", "8"]], ids=["whole", "tiled"])
def test_ctrl_c_in_restore_exits_130_cleanly(base, photo, tmp_path, tiles):
    from plugin_core import TileSettings

    plan = TileSettings(32, 8).plan(72, 56) if tiles else None
    calls = 200 * (len(plan.tiles) if plan else 1)  # the bar counts UNet calls: tiles x steps
    args = restore_args(base, photo, "-o", tmp_path / "o.png", *tiles)
    args.remove("--no-progress")
    args[args.index("--steps") + 1] = "200"
    process = start(*args)
    seen = []

    def started():  # the progress bar is on stderr before the first step
        seen.append(os.read(process.stderr.fileno(), 4096).decode(errors="replace"))
        return "restoring" in "".join(seen)

    os.set_blocking(process.stderr.fileno(), True)
    _wait_for(process, started, "restore never started sampling")
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    err = "".join(seen) + err
    assert process.returncode == 130, err
    assert f"0/{calls}" in err  # the bar showed before the first step
    assert "interrupted" in err and "Traceback" not in err + out
    assert not (tmp_path / "o.png").exists()


def test_a_second_ctrl_c_in_train_aborts_cleanly(base, tmp_path, photo_dir):
    data = tmp_path / "clean"
    data.mkdir()
    Image.open(photo_dir / "rain.png").convert("RGB").resize((40, 40)).save(data / "a.png")
    run_dir = tmp_path / "run"
    process = start("train", "--synthetic", data, "--task", "t", "--steps", "100000", "--resolution", "64", "-o", run_dir,
                    "--checkpoint-every", "2", "--sd", base / "sd", "--clip-vision", base / "clip_vision", "--no-progress")
    _wait_for(process, lambda: (run_dir / "loss.csv").is_file() and len((run_dir / "loss.csv").read_text().splitlines()) >= 4,
              "training never reached step 3")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert "aborted" in err or "stopped at step" in out


# ---------------------------------------------------------------------- nothing in silence


@pytest.fixture()
def pretrained(tmp_path, fixtures_dir, selector_file):
    """A reference `pre-trained/` folder as ../shared's sd15/ is laid out, on the tiny plugins: a
    whole task folder (derain), one with its TPB only (desnow), and plugin_selector/PromptTunner.pt."""
    root = tmp_path / "pretrained"
    shutil.copytree(fixtures_dir / "tiny" / "derain", root / "derain")
    (root / "desnow").mkdir()
    shutil.copy(fixtures_dir / "tiny" / "desnow" / "tpb.pt", root / "desnow" / "tpb.pt")
    shutil.copytree(selector_file.parent, root / "plugin_selector")
    return root


def test_convert_says_what_it_skipped(pretrained, tmp_path):
    result = run("convert", pretrained, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout and "desnow" in result.stdout and "missing scb/config.json" in result.stdout
    again = run("convert", pretrained, "-o", tmp_path / "out")  # the outputs exist now
    assert_user_error(again, "already exist", "--overwrite")


def test_a_plugin_folder_names_what_it_leaves_out_and_refuses_ambiguity(base, selector_file, tmp_path, caplog):
    from plugin_core import find_plugins, load_plugin, save_plugin

    folder = tmp_path / "plugins"
    shutil.copytree(base / "plugins", folder)
    (folder / "broken.safetensors").write_bytes(b"\x00" * 20)
    with caplog.at_level("WARNING", logger="diffplugin"):
        assert list(find_plugins(folder)) == ["derain"]
    assert "broken.safetensors: left out" in caplog.text
    save_plugin(load_plugin(folder / "derain"), folder / "derain.safetensors")
    selector = selector_file
    result = run("select", tmp_path / "any.png", "--prompt", "remove the rain", "--plugins", folder, "--selector", selector,
                 "--sd", base / "unloadable_sd", "--clip-vision", base / "clip_vision")
    assert_user_error(result, "image not found")
    Image.new("RGB", (40, 40)).save(tmp_path / "any.png")
    result = run("select", tmp_path / "any.png", "--prompt", "remove the rain", "--plugins", folder, "--selector", selector,
                 "--sd", base / "unloadable_sd", "--clip-vision", base / "clip_vision")
    assert_user_error(result, "two plugins for task 'derain'", "derain.safetensors", str(folder / "derain"))


def test_resume_is_always_reported(base, tmp_path, photo_dir):
    data = tmp_path / "clean"
    data.mkdir()
    Image.open(photo_dir / "rain.png").convert("RGB").resize((40, 40)).save(data / "a.png")
    common = ["--synthetic", data, "--task", "t", "--resolution", "64", "-o", tmp_path / "run", "--sd", base / "sd",
              "--clip-vision", base / "clip_vision", "--no-progress"]
    first = run("train", *common, "--steps", "2")
    assert first.returncode == 0 and "a new run" in first.stdout, first.stdout + first.stderr
    again = run("train", *common, "--steps", "3", "--resume")
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout and "step-000002.pt at step 2" in again.stdout


# ---------------------------------------------------------------------- images


def test_an_exif_rotated_photo_comes_back_upright(base, tmp_path):
    from plugin_core.images import load_image

    stored = Image.new("RGB", (80, 48), (200, 40, 40))
    stored.paste((40, 200, 40), (0, 0, 20, 48))  # a green band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the stored image rotated 90 degrees clockwise
    path = tmp_path / "turned.jpg"
    stored.save(path, exif=exif, quality=95)
    upright = load_image(path)
    assert upright.size == (48, 80)
    top_left, bottom_left = upright.getpixel((2, 2)), upright.getpixel((2, 77))
    assert top_left[1] > 150 and bottom_left[0] > 150  # the band is now along the top
    out = tmp_path / "out.png"
    result = run(*restore_args(base, path, "-o", out))
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (48, 80)
