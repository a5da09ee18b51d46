"""`Restorer`: the front door to restoring on diffusers / transformers models, for the command
line, evaluation, training's validation and scripts. It restores images (the recipe, recipe.py,
over a `DiffusersRestoreBackend`, backend.py, which makes every call on the base model) and
selects plugins for them (the Plugin-Selector on the backend's CLIP vision tokens and SD's text
encoder).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from .. import images as imaging
from ..base import BaseModels
from ..errors import PluginError
from ..models import TaskPlugin
from ..selector import PluginSelector, Selection, select, text_encoder_for
from ..selector.text import ClipTextEncoder
from .backend import DiffusersRestoreBackend
from .meter import ProgressFn
from .recipe import PluginGroup, RestoreResult, restore_groups
from .settings import RestoreSettings


class Restorer:
    """Runs Task-Plugins on images with a frozen SD-1.x base: restore, restore_groups, render and
    select; `backend` (a DiffusersRestoreBackend) makes every call on the base model."""

    def __init__(self, models: BaseModels, device="cpu", dtype=torch.float32):
        self.backend = DiffusersRestoreBackend(models, device, dtype)
        self._text: ClipTextEncoder | None = None

    @property
    def models(self) -> BaseModels:
        return self.backend.models

    @property
    def device(self) -> torch.device:
        return self.backend.device

    # ------------------------------------------------------------------ restoring

    def restore(self, images: Sequence[Image.Image], plugins: Sequence[TaskPlugin], settings: RestoreSettings | None = None,
                *, progress: ProgressFn | None = None, report=None, stage=None, **changes) -> RestoreResult:
        """Apply `plugins` in order to every image (the recipe). changes: RestoreSettings fields
        that differ from `settings` (tile settings as tile_size=..., etc.)."""
        return self.restore_groups(images, [PluginGroup(list(range(len(images))), list(plugins))], settings,
                                   progress=progress, report=report, stage=stage, **changes)

    def restore_groups(self, images: Sequence[Image.Image], groups: Sequence[PluginGroup], settings: RestoreSettings | None = None,
                       *, progress: ProgressFn | None = None, report=None, stage=None, **changes) -> RestoreResult:
        """Each group's images with its own plugins (e.g. what the selector chose for them);
        progress, report, stage: see recipe.restore_groups."""
        settings = (settings or RestoreSettings()).replace(**changes)
        return restore_groups(self.backend, images, groups, settings, progress=progress, report=report, stage=stage)

    def render(self, plugin: TaskPlugin, images: Sequence[Image.Image], steps: int, seed: int) -> list[Image.Image]:
        """One plugin on `images` with `steps` and `seed`, the rest the defaults (a training run's
        validation images)."""
        return self.restore(list(images), [plugin], steps=steps, seed=seed).images

    # ------------------------------------------------------------------ selecting

    @property
    def text_encoder(self) -> ClipTextEncoder:
        """SD's CLIP-L pooled text embeddings, as the reference selector reads them."""
        if self._text is None:
            if self.models.text_encoder is None or self.models.tokenizer is None:
                raise PluginError("selection needs SD's text encoder and tokenizer")
            self._text = ClipTextEncoder(self.models.text_encoder, self.models.tokenizer, self.device)
        return self._text

    def select_each(self, images: Sequence[Image.Image], instruction: str, plugins: Sequence[TaskPlugin],
                    selector: PluginSelector, select_threshold: float = 0.0) -> list[Selection]:
        """Score every plugin for each image and the instruction (CLIP vision runs once per image)."""
        if not plugins:
            raise PluginError("no plugins to select from")
        clip = self.text_encoder if self.models.text_encoder is not None else None
        encoder = text_encoder_for(selector.text_encoder, clip)
        originals = [imaging.to_rgb(image) for image in images]
        return select(selector, encoder, instruction, plugins, lambda layer: self.backend.clip_tokens(originals, layer),
                      select_threshold, clip_width=self.backend.facts.clip_width)

    def select(self, image: Image.Image, instruction: str, plugins: Sequence[TaskPlugin], selector: PluginSelector,
               select_threshold: float = 0.0) -> Selection:
        """Score every plugin for this image and instruction; CLIP vision runs once."""
        return self.select_each([image], instruction, plugins, selector, select_threshold)[0]

