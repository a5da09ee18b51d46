"""Small surprises of the command line, each now said or fixed, through the real entry point
(`python -m plugin_core`): what `select`'s null score means, inputs that share a name, hidden files
and subfolders of a folder, a share of 0 on every plugin, a plugin given as a base model, a 16-bit
photo, how many pairs `synth` wrote, and a progress bar that names the plugin at work."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.cli_support import cli, write_tiny_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from plugin_core import PluginSelector, save_selector

    root = tmp_path_factory.mktemp("surprises")
    (root / "plugins").mkdir()
    write_tiny_base(root, ["derain", "dehaze"], plugins=root / "plugins")
    save_selector(PluginSelector(), root / "selector.safetensors")
    return root


def restore_args(base, *images, plugins=("derain",), progress=False):
    named = [option for task in plugins for option in ("--plugin", base / "plugins" / f"{task}.safetensors")]
    return ["restore", *images, *named, "--sd", base / "sd", "--clip-vision", base / "clip_vision", "--steps", "1",
            "--later-steps", "1", "--resolution", "32", *([] if progress else ["--no-progress"])]


def photo(path, colour=(180, 90, 40), size=(40, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def assert_user_error(result, *parts):
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    for part in parts:
        assert part in output, (part, output)


def test_select_says_what_the_null_score_means(base, tmp_path):
    result = cli("select", photo(tmp_path / "p.png"), "--prompt", "remove the rain", "--plugins", base / "plugins",
                 "--selector", base / "selector.safetensors", "--sd", base / "sd", "--clip-vision", base / "clip_vision")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("(no plugin)") for line in lines), result.stdout
    assert not any(line.split()[:1] == ["null"] for line in lines), result.stdout  # no bare 'null' row
    assert "how much the instruction asks for none of these plugins" in result.stdout
    assert "are selected" in result.stdout


def test_inputs_that_share_a_name_keep_their_suffix_and_are_named(base, tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "x.png", (200, 30, 30))
    photo(photos / "x.jpg", (30, 30, 200))
    photo(photos / "y.png")
    out = tmp_path / "out"
    result = cli(*restore_args(base, photos, "-o", out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x_jpg.png", "x_png.png", "y.png"]
    assert f"{photos / 'x.jpg'} -> {out / 'x_jpg.png'}" in result.stderr
    assert f"{photos / 'x.png'} -> {out / 'x_png.png'}" in result.stderr
    assert "y.png ->" not in result.stderr  # named as it is: nothing to say


def test_hidden_files_are_skipped_subfolders_counted_and_one_wording_for_what_is_not_restored(base, tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "a.png")
    photo(photos / ".a.png")  # e.g. macOS's ._ resource fork: hidden, no image to restore
    photo(photos / "sub" / "b.png")
    photo(photos / "other" / "c.png")
    (photos / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = cli(*restore_args(base, photos, "-o", out))
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    notes = [line for line in result.stderr.splitlines() if "subfolder" in line]
    assert len(notes) == 1 and "2 subfolders skipped" in notes[0], result.stderr
    assert "left out" not in result.stderr + result.stdout
    assert result.stderr.count("not restored") == 2 and "broken.png: cannot read this image" in result.stderr


def test_a_share_of_0_leaves_a_plugin_out_and_on_every_plugin_is_refused(base, tmp_path):
    source = photo(tmp_path / "p.png")
    for flag in ("--shares", "--weights"):
        out = tmp_path / f"out{flag}.png"
        result = cli(*restore_args(base, source, "-o", out), flag, "derain=0")
        assert_user_error(result, "every plugin (derain) the share 0", "nothing would run")
        assert not out.exists()
    result = cli(*restore_args(base, source, "-o", tmp_path / "two.png", plugins=("derain", "dehaze")), "--shares", "dehaze=0")
    assert result.returncode == 0, result.stderr
    assert "runs: derain (1 steps); left out (share 0): dehaze" in result.stdout


def test_a_plugin_given_as_a_base_model_is_named_as_a_plugin(base, tmp_path):
    plugin = base / "plugins" / "derain.safetensors"
    source = photo(tmp_path / "p.png")
    args = restore_args(base, source, "-o", tmp_path / "out.png")
    as_sd = list(args)
    as_sd[as_sd.index("--sd") + 1] = plugin
    assert_user_error(cli(*as_sd), "this is a Task-Plugin", "give it with --plugin")
    assert "diffusers layout" not in cli(*as_sd).stderr
    as_clip = list(args)
    as_clip[as_clip.index("--clip-vision") + 1] = plugin
    assert_user_error(cli(*as_clip), "this is a Task-Plugin", "give it with --plugin")
    assert not (tmp_path / "out.png").exists()


def write_png16(path, pixels: np.ndarray):
    """A 16-bit RGB PNG (PIL writes none): IHDR with bit depth 16, rows of big-endian samples."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_a_16_bit_photo_gets_a_note(base, tmp_path):
    deep = write_png16(tmp_path / "deep.png", np.random.default_rng(0).integers(0, 65536, (32, 40, 3)))
    assert Image.open(deep).size == (40, 32)
    out = tmp_path / "out.png"
    result = cli(*restore_args(base, deep, "-o", out))
    assert result.returncode == 0, result.stderr
    assert f"{deep}: a 16-bit image: read and written with 8 bits per channel" in result.stderr
    assert Image.open(out).mode == "RGB"
    plain = cli(*restore_args(base, photo(tmp_path / "plain.png"), "-o", tmp_path / "plain_out.png"))
    assert plain.returncode == 0 and "bit" not in plain.stderr, plain.stderr


def test_synth_says_how_many_pairs_it_wrote(tmp_path):
    clean = tmp_path / "clean"
    photo(clean / "a.png")
    photo(clean / "b.png", (20, 200, 90))
    photo(clean / ".hidden.png")  # not a photo of the set
    result = cli("synth", clean, "-o", tmp_path / "pairs", "--per-image", "2", "--degrade", "haze")
    assert result.returncode == 0, result.stderr
    assert "wrote 4 pairs" in result.stdout and "pairs.csv" in result.stdout
    assert len(list((tmp_path / "pairs" / "input").iterdir())) == 4


def test_the_progress_bar_names_the_plugin_at_work_and_the_decoding(base, tmp_path):
    result = cli(*restore_args(base, photo(tmp_path / "p.png"), "-o", tmp_path / "out.png", plugins=("derain", "dehaze"),
                               progress=True))
    assert result.returncode == 0, result.stderr
    for label in ("restoring: derain 1/2", "restoring: dehaze 2/2", "restoring: decoding (dehaze 2/2)"):
        assert label in result.stderr, (label, result.stderr)
