"""The command line's messages say what the tool does, through the real entry point
(`python -m plugin_core`): every path that is not there comes in the one message of the argument
mistakes, before torch is imported; a mistyped command or option gets the nearest name; a mistake
is two short lines; an output that exists names the remedy of its command; a switch shows no
default; the first line of a training run says its global batch and learning rate; Ctrl+C during
training is announced once, whatever the number of data workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.cli_support import REPO, cli, write_tiny_base

STOPPING = "stopping after this step"


def without_torch(*args) -> tuple[int, str, bool]:
    """main(args) in a fresh Python: (exit status, stderr, whether torch was imported)."""
    code = ("import io, sys, contextlib\nfrom plugin_core.cli import main\nerr = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n    status = main(sys.argv[1:])\n"
            "print(status)\nprint('torch' in sys.modules)\nprint(err.getvalue(), end='')\n")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO,
                            check=False)
    assert result.returncode == 0, result.stderr
    status, imported, *message = result.stdout.splitlines()
    return int(status), "\n".join(message), imported == "True"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = write_tiny_base(tmp_path_factory.mktemp("paths"))
    (root / "clean").mkdir()
    Image.new("RGB", (40, 40), (90, 120, 200)).save(root / "clean" / "a.png")
    return root


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------- wrong paths: one message, no torch


def test_every_wrong_path_of_restore_comes_in_one_message_without_torch(tmp_path):
    status, message, imported = without_torch(
        "restore", tmp_path / "photo.jpg", "--plugin", tmp_path / "derain.safetensors", "--sd", tmp_path / "sd.safetensors",
        "--clip-vision", tmp_path / "clip.safetensors", "--region", f"derain={tmp_path / 'mask.png'}", "--steps", "0")
    assert status == 2 and not imported, message
    lines = error_lines(message)
    assert len(lines) == 2 and lines[0].startswith("diffplugin restore: error: ") and lines[1] == "see: diffplugin restore --help"
    for part in ("photo.jpg: image or folder not found", "--plugin", "derain.safetensors: file not found", "mask.png: image not found",
                 "--sd", "sd.safetensors: file or folder not found", "--clip-vision", "clip.safetensors: file or folder not found",
                 "--steps: must be at least 1"):
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("command", [
    ["select", "{t}/photo.png", "--prompt", "remove the rain", "--plugins", "{t}/plugins", "--selector", "{t}/s.safetensors",
     "--sd", "{t}/sd", "--clip-vision", "{t}/clip"],
    ["train", "--data", "{t}/pairs", "--task", "derain", "--init", "{t}/old.safetensors", "--validation-image", "{t}/v.png",
     "--sd", "{t}/sd", "--clip-vision", "{t}/clip"],
    ["evaluate", "--plugin", "{t}/derain.safetensors", "--data", "{t}/val", "--sd", "{t}/sd", "--clip-vision", "{t}/clip"],
    ["evaluate", "{t}/restored", "{t}/references"],
    ["train-selector", "--plugins", "{t}/plugins", "--images", "{t}/photos", "--clip-vision", "{t}/clip", "--sd", "{t}/sd",
     "-o", "{t}/s.safetensors"],
    ["synth", "{t}/clean", "-o", "{t}/pairs"],
    ["info", "{t}/derain.safetensors"],
], ids=lambda command: command[0])
def test_every_wrong_path_of_a_command_comes_in_one_message(tmp_path, command):
    args = [part.format(t=tmp_path) for part in command]
    expected = [part for part in args if part.startswith(str(tmp_path)) and not part.endswith("pairs" if command[0] == "synth" else "-")]
    if command[0] in ("train-selector",):
        expected.remove(str(tmp_path / "s.safetensors"))  # the output
    status, message, imported = without_torch(*args)
    assert status == 2 and not imported, message
    first = error_lines(message)[0]
    for path in expected:
        assert f"{path}: " in first, (path, first)


def test_a_missing_photo_answers_at_once(base, tmp_path):
    start = time.perf_counter()
    result = cli("restore", tmp_path / "nowhere.jpg", "--plugin", base / "derain.safetensors", "--sd", base / "sd",
                 "--clip-vision", base / "clip_vision")
    seconds = time.perf_counter() - start
    assert result.returncode == 2 and "nowhere.jpg: image or folder not found" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 1.0, seconds  # no torch: importing it alone takes longer


def test_a_base_folder_that_is_something_else_is_named_with_the_other_mistakes(base, tmp_path):
    status, message, imported = without_torch("restore", tmp_path / "p.png", "--plugin", base / "derain.safetensors",
                                              "--sd", base / "clip_vision", "--clip-vision", base / "sd")
    assert status == 2 and not imported
    assert "not a diffusers Stable Diffusion folder" in message and "not a transformers CLIP vision folder" in message
    assert "p.png: image or folder not found" in message


# ---------------------------------------------------------------------- typos and short errors


def test_a_mistyped_command_gets_the_nearest_one():
    result = cli("restor")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["diffplugin: error: 'restor' is not a command (did you mean restore?)",
                                          "see: diffplugin --help"]


def test_a_mistyped_option_gets_the_nearest_one_and_the_error_comes_first(base, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 40)).save(photo)
    for typo in (["--stpes", "3"], ["--stpes=3"]):
        result = cli("restore", photo, "--plugin", base / "derain.safetensors", "--sd", base / "sd", "--clip-vision",
                     base / "clip_vision", *typo)
        lines = error_lines(result.stderr)
        assert result.returncode == 2 and len(lines) == 2, result.stderr
        assert lines[0].startswith("diffplugin restore: error: unrecognized arguments: --stpes") and "did you mean --steps?" in lines[0]
        assert lines[1] == "see: diffplugin restore --help" and "usage:" not in result.stderr


def test_argparse_own_errors_are_two_short_lines_too():
    result = cli("restore", "--steps")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["diffplugin restore: error: argument --steps: expected one argument",
                                          "see: diffplugin restore --help"]


def test_a_switch_shows_no_default():
    text = " ".join(cli("train", "--help").stdout.split())
    for switch in ("--no-crop", "--no-flip", "--cache", "--resume", "--overwrite"):
        assert switch in text
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "(default: 42)" in text  # a value's default is still shown


# ---------------------------------------------------------------------- outputs that exist


def test_a_rerun_after_ctrl_c_is_told_about_skip_existing(base, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (40, 40), (10, 200, 30)).save(photos / f"{name}.png")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (8, 8)).save(out / "a.png")  # what the stopped run wrote
    result = cli("restore", photos, "--plugin", base / "derain.safetensors", "--sd", base / "sd", "--clip-vision",
                 base / "clip_vision", "-o", out, "--steps", "1", "--resolution", "32", "--no-progress")
    assert result.returncode == 2 and "already exists" in result.stderr, result.stderr
    assert "--skip-existing" in result.stderr and "--overwrite" in result.stderr


def test_evaluate_names_its_own_flag_for_an_existing_report(tmp_path):
    for folder in ("pred", "target"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (32, 32), (100, 100, 100)).save(tmp_path / folder / "a.png")
    report = tmp_path / "report.json"
    report.write_text("{}")
    result = cli("evaluate", tmp_path / "pred", tmp_path / "target", "--json", report, "--lpips", "off")
    assert result.returncode == 2 and "already exists" in result.stderr, result.stderr
    assert "choose another --json / --csv file name" in result.stderr and "another -o" not in result.stderr


# ---------------------------------------------------------------------- training


def train_args(base, run_dir, steps, *extra):
    return ["train", "--synthetic", base / "clean", "--task", "derain", "--steps", steps, "--resolution", "32",
            "--batch-size", "2", "-o", run_dir, "--sd", base / "sd", "--clip-vision", base / "clip_vision", "--no-progress", *extra]


def test_the_first_line_of_a_run_says_the_global_batch_and_learning_rate(base, tmp_path):
    result = cli(*train_args(base, tmp_path / "run", 1, "--accumulate", "3", "--workers", "0"))
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("a new run in") and "global batch 6, lr 6e-05" in first, first


def test_ctrl_c_in_training_is_announced_once_with_data_workers(base, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "plugin_core", *map(str, train_args(base, run_dir, 100000, "--workers", "2"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + 300
        log = run_dir / "loss.csv"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # stepping, the workers running
            assert time.time() < deadline and process.poll() is None, "training never reached step 2"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl+C: the whole process group
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert err.count(STOPPING) == 1, err
    assert "stopped at step" in out and "Traceback" not in out + err
