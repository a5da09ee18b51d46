"""Long IMAGE batches (video frames, a folder of photos) through plugin_core's restore recipe, a
chunk of frames at a time: the working memory is the chunk's, whatever the frame count; the
progress bar runs over the frames, and a cancel stops between chunks (and within one, at the
sampler's next step). Each frame keeps its own Fp; its starting noise is the one KSampler draws
for its position in the whole batch, so the chunk size never changes a frame, or, with
same_noise, the first position's for every frame (steadier video)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch

from ..plugin_core import PluginGroup, RestoreSettings, restore_groups
from . import bridge

STEPS_PER_FRAME = 100  # the progress bar's resolution within a frame


class FrameProgress:
    """ComfyUI's progress bar over the frames of a batch, moved by each chunk's UNet calls and
    carrying the sampler's latest preview."""

    def __init__(self, frames: int, backend):
        self.backend, self.done = backend, 0
        self.bar = comfy.utils.ProgressBar(frames * STEPS_PER_FRAME)

    def chunk(self, size: int):
        """recipe progress(done, total) for the next chunk of `size` frames."""
        start = self.done

        def progress(done: int, total: int) -> None:
            value = (start + size * done / max(total, 1)) * STEPS_PER_FRAME
            self.bar.update_absolute(round(value), preview=self.backend.preview)

        self.done += size
        return progress

    def finish(self) -> None:
        """The bar full (frames no plugin ran on report no UNet calls)."""
        self.bar.update_absolute(self.done * STEPS_PER_FRAME)


def chunks(groups: list[PluginGroup], size: int) -> list[PluginGroup]:
    """Each group's frames in runs of at most `size`, in frame order within a group."""
    return [PluginGroup(group.indices[i : i + size], list(group.plugins))
            for group in groups for i in range(0, len(group.indices), size)]


def restore_frames(backend, image: torch.Tensor, groups: list[PluginGroup], settings: RestoreSettings, *,
                   batch_size: int, same_noise: bool = False) -> torch.Tensor:
    """The IMAGE batch restored, `batch_size` frames at a time; groups: each frame's plugins."""
    frames = image.shape[0]
    progress = FrameProgress(frames, backend)
    restored = None
    for chunk in chunks(groups, batch_size):
        comfy.model_management.throw_exception_if_processing_interrupted()
        backend.noise_indices = [0] * len(chunk.indices) if same_noise else chunk.indices
        originals = bridge.image_to_pil(image[chunk.indices])
        local = [PluginGroup(list(range(len(chunk.indices))), chunk.plugins)]
        out = bridge.pil_to_image(restore_groups(backend, originals, local, settings, progress=progress.chunk(len(chunk.indices))).images)
        if restored is None:
            restored = torch.empty((frames, *out.shape[1:]), dtype=out.dtype)
        restored[chunk.indices] = out
    progress.finish()
    return restored
