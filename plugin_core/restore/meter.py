"""Progress of a restore: UNet calls counted for the caller's progress callback, and, once the
calls have a steady pace, how long all of them will take and the memory used."""

from __future__ import annotations

import resource
import time
from typing import Callable

import torch

ProgressFn = Callable[[int, int], None]


class Meter:
    """Counts UNet calls, from 0 before the first; after the second call reports how long all of
    them will take and the memory the first took (tiled runs)."""

    def __init__(self, total: int, progress: ProgressFn | None, report: Callable[[str], None] | None, device):
        self.total, self.progress, self.report, self.device = total, progress, report, torch.device(device)
        self.done, self._times = 0, []
        self(0)

    def __call__(self, done: int) -> None:
        self.done = done
        self._times.append(time.perf_counter())
        if self.progress:
            self.progress(done, self.total)
        if self.report and done == 2 and self.total > 2:
            per_call = self._times[-1] - self._times[-2]
            if self.device.type == "cuda":
                peak = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB of GPU memory"
            else:
                peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB of memory"
            self.report(f"{self.total} UNet calls at {per_call:.2f} s each: about {per_call * self.total / 60:.1f} min; "
                        f"{peak} so far (it does not grow with the photo)")
