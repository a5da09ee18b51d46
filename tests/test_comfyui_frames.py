"""Long IMAGE batches (video frames) through Restore with Task-Plugins, inside a real ComfyUI
(COMFYUI_DIR): chunks never change a frame and bound what is sampled at once, same_noise gives
every frame the noise it would get alone, the progress bar runs over the frames, and a cancel
stops between chunks.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_frames.py
"""

from __future__ import annotations

import pytest
import torch

# ruff: noqa: F811 (the fixtures below are imported from test_comfyui, then named as arguments)
from tests.test_comfyui import base, models, module, pack, photos  # noqa: F401

pytestmark = pytest.mark.comfyui

import comfy.cli_args  # importable: test_comfyui required the host
import comfy.model_management
import comfy.utils

SETTINGS = {"seed": 42, "steps": 2, "later_steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "resolution": 64, "output_size": "original"}


@pytest.fixture(scope="module")
def frames(photos):
    """Five frames: the two photos, then the first again, and so on (a frame repeated is a still scene)."""
    return torch.cat([photos, photos, photos[:1]])


@pytest.fixture(scope="module")
def derain(pack):
    plugins = module(pack, "loaders").LoadTaskPluginLibrary.execute("derain", "plugin_selector/PromptTunner.pt").args[0]
    return plugins


def restore(pack, base, plugins, image, **options):
    node = module(pack, "restore").RestoreWithTaskPlugins
    return node.execute(base["model"], plugins, base["clip_vision"], base["vae"], image, **SETTINGS, **options).args[0]


@pytest.fixture
def sampled(pack, monkeypatch):
    """The latent batch of every sampling the restore runs, as it reaches ComfyUI's sampler."""
    restore_backend = module(pack, "restore_backend")
    real, batches = restore_backend.ksample, []

    def recording(model, seed, steps, cfg, sampler_name, scheduler, conditioning, latent, callback=None):
        batches.append({"size": latent["samples"].shape[0], "batch_index": list(latent["batch_index"])})
        return real(model, seed, steps, cfg, sampler_name, scheduler, conditioning, latent, callback)

    monkeypatch.setattr(restore_backend, "ksample", recording)
    return batches


def test_chunks_bound_the_batch_and_never_change_a_frame(pack, base, derain, frames, sampled):
    whole = restore(pack, base, derain, frames, batch_size=5)
    assert [b["size"] for b in sampled] == [5]
    sampled.clear()
    chunked = restore(pack, base, derain, frames, batch_size=2)
    assert [b["size"] for b in sampled] == [2, 2, 1]
    assert [b["batch_index"] for b in sampled] == [[0, 1], [2, 3], [4]]  # each frame's noise: its place in the batch
    assert chunked.shape == whole.shape == frames.shape
    assert (chunked - whole).abs().max() <= 1 / 255  # the same 8-bit frames (a batch's arithmetic may round one level apart)
    assert (whole[0] - whole[2]).abs().max() > 4 / 255  # a still scene: each frame its own noise


def test_same_noise_gives_each_frame_its_result_alone(pack, base, derain, frames, sampled):
    together = restore(pack, base, derain, frames, batch_size=2, same_noise=True)
    assert [b["batch_index"] for b in sampled] == [[0, 0], [0, 0], [0]]
    for index in (0, 1, 4):
        alone = restore(pack, base, derain, frames[index : index + 1])
        assert (together[index] - alone[0]).abs().max() <= 1 / 255
    assert (together[0] - together[2]).abs().max() <= 1 / 255  # a still scene stays still


def test_progress_runs_over_the_frames_and_cancel_stops_between_chunks(pack, base, derain, frames, sampled, monkeypatch):
    updates = []

    def hook(value, total, preview, node_id=None):
        updates.append((value, total, preview is not None))

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", comfy.cli_args.LatentPreviewMethod.Latent2RGB)
    restore(pack, base, derain, frames, batch_size=2)
    per_frame = module(pack, "frames").STEPS_PER_FRAME
    bar = [(value, total) for value, total, _ in updates if total == 5 * per_frame]
    assert bar[-1] == (5 * per_frame, 5 * per_frame)
    assert [v for v, _ in bar] == sorted(v for v, _ in bar)  # it only moves forward
    assert {2 * per_frame, 4 * per_frame} <= {v for v, _ in bar}  # each chunk's frames counted when it ends
    assert any(has_preview for value, total, has_preview in updates if total == 5 * per_frame)

    # Cancel once the first chunk is done: no other chunk starts.
    sampled.clear()

    def cancel(value, total, preview, node_id=None):
        if total == 5 * per_frame and value >= 2 * per_frame:
            comfy.model_management.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", cancel)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        restore(pack, base, derain, frames, batch_size=2)
    assert len(sampled) == 1
    assert not comfy.model_management.processing_interrupted()
