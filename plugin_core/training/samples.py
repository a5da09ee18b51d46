"""Which training sample goes where, and what is random about it, as pure functions of the seed.

Sample number `k` is a position in the run's stream of samples: step `s` holds the global batch
`k = s*G ... s*G + G - 1` (G = batch x processes x accumulation). Its pair is position k of
the seeded epoch permutations, and its crop, flip, posterior sample, noise and timestep come
from generators seeded by (seed, k). Nothing depends on the process or the data worker that
handles `k`, so 2 processes x batch b train exactly what 1 process x batch 2b does, any
number of workers gives the same batches, and a resumed run needs nothing but its step.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import torch

from ..seeding import generator
from .datasets import Augment

# Streams of the run's seed: never reuse one for another purpose.
ORDER, AUGMENT, NOISE = 2, 3, 4


@dataclass(frozen=True)
class Layout:
    """Where sample numbers go: `batch` per micro-batch, `accumulation` micro-batches per step,
    `processes` ranks each taking its own slice of every micro-batch round."""

    batch: int
    accumulation: int = 1
    processes: int = 1

    @property
    def per_step(self) -> int:
        return self.batch * self.accumulation * self.processes

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The sample numbers of `rank`'s micro-batches of `step`. Round m of the step covers
        m*b*P ... (m+1)*b*P - 1 and rank r takes its r-th slice of b, so with one process this
        is the plain order and with accumulation 1 the ranks split the step's batch."""
        first, b, p = step * self.per_step, self.batch, self.processes
        return [list(range(first + m * b * p + rank * b, first + m * b * p + (rank + 1) * b)) for m in range(self.accumulation)]


class StepBatches(torch.utils.data.Sampler):
    """The DataLoader's batch sampler: `rank`'s micro-batches from step `start` to `stop`."""

    def __init__(self, keys_of_step, start: int, stop: int):
        self.keys_of_step, self.start, self.stop = keys_of_step, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from self.keys_of_step(step)

    def __len__(self) -> int:
        return sum(len(self.keys_of_step(step)) for step in range(self.start, self.stop))


class TrainingSamples(torch.utils.data.Dataset):
    """Sample number k -> its pair's pixels after crop and flip (run in the DataLoader's workers):
    {"key": k, "source": [3,R,R], "target": [3,R,R]} in [-1, 1]. With `cached` only the pair
    index and the flip are drawn ({"key", "index", "flip"}): the encodings are looked up."""

    def __init__(self, pairs, resolution: int, seed: int, *, random_crop=True, random_flip=True, cached=False):
        self.pairs, self.seed, self.cached, self.random_flip = pairs, seed, cached, random_flip
        self.augment = Augment(resolution, random_crop=random_crop and not cached, random_flip=random_flip)
        self._order: tuple[int, torch.Tensor] | None = None  # the current epoch's permutation

    def __len__(self) -> int:  # the stream is endless; this is one epoch
        return len(self.pairs)

    def pair_index(self, key: int) -> int:
        epoch, position = divmod(key, len(self.pairs))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self.pairs), generator=generator(self.seed, ORDER, epoch)))
        return int(self._order[1][position])

    def __getitem__(self, key: int) -> dict:
        index, random = self.pair_index(key), generator(self.seed, AUGMENT, key)
        if self.cached:
            flip = self.random_flip and bool(torch.rand((), generator=random) < 0.5)
            return {"key": key, "index": index, "flip": flip}
        source, target = self.augment(*self.pairs[index], random)
        return {"key": key, "source": source, "target": target}


def leave_interrupts_to_the_run(worker_id: int) -> None:
    """A DataLoader worker's start: Ctrl+C reaches the whole process group, and a forked worker has
    the training process's handler, which would announce the stop once per worker. The training
    process alone answers it (and ends its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def sample_noise(keys, latent_shape, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(posterior sample noise, diffusion noise, timesteps) of each sample number, on the CPU."""
    posterior, noise, timesteps = [], [], []
    for key in keys:
        random = generator(seed, NOISE, int(key))
        posterior.append(torch.randn(latent_shape, generator=random))
        noise.append(torch.randn(latent_shape, generator=random))
        timesteps.append(torch.randint(0, steps, (), generator=random))
    return torch.stack(posterior), torch.stack(noise), torch.stack(timesteps)
