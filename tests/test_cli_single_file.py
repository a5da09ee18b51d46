"""The command line on the files a ComfyUI user has: `diffplugin restore --sd model.safetensors
--clip-vision clip.safetensors` gives the latents the diffusers folders they were made from give,
and an SD 2.x checkpoint or a CLIP that is not ViT-L/14 is one message, exit status 2, before any
model loads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from plugin_core.cli import main
from tests import single_files as files
from tests.random_models import random_task_plugins, write_tiny_clip_vision, write_tiny_sd


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from plugin_core import save_plugin

    root = tmp_path_factory.mktemp("cli_single_file")
    sd, clip = write_tiny_sd(root / "sd"), write_tiny_clip_vision(root / "clip_vision")
    files.write_sd_file(sd, root / "model.safetensors", text=False)
    files.write_clip_vision_file(clip, root / "clip.safetensors")
    save_plugin(random_task_plugins(["derain"])[0], root / "derain.safetensors")
    Image.new("RGB", (40, 32), (90, 140, 200)).save(root / "photo.png")
    return root


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def restore(capsys, base, out, sd, clip, *extra):
    return cli(capsys, "restore", base / "photo.png", "-o", out, "--plugin", base / "derain.safetensors", "--sd", sd,
               "--clip-vision", clip, "--steps", "2", "--resolution", "32", "--no-progress", "--save-latent",
               out.with_suffix(".safetensors"), *extra)


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection attempt fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_single_files_restore_as_the_folders_they_were_made_from(capsys, base, tmp_path, offline):
    from safetensors.torch import load_file

    code, output = restore(capsys, base, tmp_path / "folders.png", base / "sd", base / "clip_vision")
    assert code == 0, output
    code, output = restore(capsys, base, tmp_path / "files.png", base / "model.safetensors", base / "clip.safetensors",
                           "--sd-config", base / "sd")
    assert code == 0, output
    want, got = (load_file(tmp_path / f"{name}.safetensors") for name in ("folders", "files"))
    assert want.keys() == got.keys() and want
    for key in want:
        assert torch.allclose(got[key], want[key], rtol=1e-5, atol=1e-5), key
    assert (tmp_path / "files.png").is_file()


def test_other_families_are_one_message_before_any_model_loads(capsys, base, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    def refuse(self, *args, **kwargs):
        raise AssertionError("a UNet was built")

    sd1 = load_file(base / "model.safetensors")
    sd2 = {**{k: v for k, v in sd1.items() if not k.startswith("cond_stage_model.")},
           "cond_stage_model.model.ln_final.weight": torch.zeros(8)}  # SD 2.x's OpenCLIP text encoder
    files.write_safetensors(tmp_path / "sd2.safetensors", sd2)
    big_g = files.write_safetensors(tmp_path / "big_g.safetensors", files.vit_header(1664, 48))
    monkeypatch.setattr(UNet2DConditionModel, "__init__", refuse)
    for sd, clip, needle in ((tmp_path / "sd2.safetensors", base / "clip.safetensors", "OpenCLIP"),
                             (base / "sd", big_g, "CLIP ViT-bigG/14")):
        code, output = restore(capsys, base, tmp_path / "out.png", sd, clip)
        assert code == 2 and "Traceback" not in output and needle in output, output
        assert not (tmp_path / "out.png").exists()
        # train and evaluate read --sd / --clip-vision through the same check
        for folder in ("input", "target"):
            (tmp_path / "pairs" / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32)).save(tmp_path / "pairs" / folder / "a.png")
        code, output = cli(capsys, "train", "--data", tmp_path / "pairs", "--task", "t", "--sd", sd, "--clip-vision", clip,
                           "-o", tmp_path / "run", "--steps", "1")
        assert code == 2 and "Traceback" not in output and needle in output, output
        code, output = cli(capsys, "evaluate", "--plugin", base / "derain.safetensors", "--data", tmp_path / "pairs",
                           "--sd", sd, "--clip-vision", clip, "--lpips", "off")
        assert code == 2 and "Traceback" not in output and needle in output, output
        assert not (tmp_path / "run").exists()
