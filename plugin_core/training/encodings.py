"""What a training step feeds the plugin from a micro-batch of pairs: the input's latent (the
SCB's input), the target's posterior (mean and std: the latent to noise) and the input's CLIP
vision tokens (the TPB's input), through the frozen base; or, with `cache`, each pair (and its
mirror image) encoded once, a share per process, gathered to all of them."""

from __future__ import annotations

import torch

from .datasets import Augment


class Encodings:
    def __init__(self, backend, dataset, config, clip_layer: int, rank: int = 0, processes: int = 1):
        self.backend, self.dataset, self.config, self.clip_layer = backend, dataset, config, clip_layer
        self.rank, self.processes, self.device = rank, processes, backend.device
        self._cache: dict[tuple[int, bool], tuple] | None = None

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input latent mean, target posterior mean and std, CLIP tokens) of a micro-batch."""
        if self.config.cache:
            self.fill_cache()
            parts = [self._cache[int(i), bool(f)] for i, f in zip(batch["index"], batch["flip"])]
            return tuple(torch.stack(p).to(self.device) for p in zip(*parts))
        source, target = batch["source"].to(self.device), batch["target"].to(self.device)
        # All inputs and targets of the micro-batch through the VAE in one batch.
        mean, std = self.backend.encode_distribution(torch.cat([source, target]))
        tokens = self.backend.clip_tokens_of_pixels(source, self.clip_layer)
        count = source.shape[0]
        return mean[:count], mean[count:], std[count:], tokens

    def fill_cache(self) -> None:
        if self._cache is not None:
            return
        flips = (False, True) if self.config.random_flip else (False,)
        items = [(index, flip) for index in range(len(self.dataset)) for flip in flips]
        centre = Augment(self.config.resolution, random_crop=False, random_flip=False)
        mine = {}
        for index, flip in items[self.rank :: self.processes]:
            pixels = torch.stack(centre(*self.dataset[index], None))
            pixels = (pixels.flip(-1) if flip else pixels).to(self.device)
            mean, std = self.backend.encode_distribution(pixels)
            tokens = self.backend.clip_tokens_of_pixels(pixels[:1], self.clip_layer)
            mine[index, flip] = tuple(t.cpu() for t in (mean[0], mean[1], std[1], tokens[0]))
        if self.processes > 1:
            from accelerate.utils import gather_object

            shares = gather_object([mine])
            mine = {key: value for share in shares for key, value in share.items()}
        self._cache = mine
