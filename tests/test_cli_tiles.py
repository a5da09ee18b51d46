"""Tiles that suit the device, through the real `diffplugin` entry point on this CPU: without
--tile-size a photo larger than a CPU tile is sampled in the CPU's tiles (the same bytes as
asking for them) and a note says so and how to keep it whole; a larger tile size asked for gets
the faster setting named; a photo within one CPU tile gets no note."""

from __future__ import annotations

import subprocess

import pytest

from tests.cli_support import cli, write_tiny_base
from tests.photos import scene


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = write_tiny_base(tmp_path_factory.mktemp("tiles"))
    scene(4, size=(832, 256)).save(root / "wide.png")  # one side above a CPU tile (768 px)
    scene(5, size=(640, 480)).save(root / "small.png")  # within one CPU tile
    return root


def restore(base, photo, out, *extra) -> subprocess.CompletedProcess:
    result = cli("restore", base / photo, "-o", out, "--plugin", base / "derain.safetensors", "--sd", base / "sd",
                 "--clip-vision", base / "clip_vision", "--steps", "1", "--resolution", "32", "--no-progress", "--device", "cpu",
                 *extra)
    assert result.returncode == 0, result.stderr
    return result


def test_a_cpu_samples_a_large_photo_in_its_own_tiles_and_says_how_to_keep_it_whole(base, tmp_path):
    default = restore(base, "wide.png", tmp_path / "default.png")
    asked = restore(base, "wide.png", tmp_path / "asked.png", "--tile-size", "768", "--tile-overlap", "96")
    whole = restore(base, "wide.png", tmp_path / "whole.png", "--tile-size", "1536")
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "asked.png").read_bytes()
    assert (tmp_path / "default.png").read_bytes() != (tmp_path / "whole.png").read_bytes()  # 832 px: 2 tiles against 1
    note = [line for line in default.stderr.splitlines() if "tiles of 768 px" in line]
    assert len(note) == 1 and "the default on a CPU" in note[0] and "--tile-size 1536" in note[0], default.stderr
    assert "note: tiles" not in asked.stderr and "--tile-overlap 96" not in asked.stderr  # asked for: nothing to add
    advice = [line for line in whole.stderr.splitlines() if "--tile-size 768 and --tile-overlap 96" in line]
    assert len(advice) == 1 and "832x256" in advice[0], whole.stderr


def test_a_photo_within_one_cpu_tile_gets_no_note(base, tmp_path):
    result = restore(base, "small.png", tmp_path / "small.png")
    assert "tile" not in result.stderr, result.stderr


def test_the_help_says_each_device_s_tiles():
    result = cli("restore", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--tile-size" in text and "on a GPU" in text and "on a CPU" in text
