"""Progress of a restore: UNet calls counted for the caller's progress callback, and, once the
calls have a steady pace, how long the whole restore will take and the memory used.

The estimate is measured, not guessed: the pace is the median of calls 2-4 (the first call's
warm-up left out), and what follows the sampling (each VAE decode and the colour fix) is timed on
a small crop of the photo by the backend's own VAE and scaled to the photo's pixels (`finish`)."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import torch

ProgressFn = Callable[[int, int], None]
SETTLED = 4  # calls timed before the estimate (the first one's warm-up is left out)


class Meter:
    """Counts UNet calls, from 0 before the first; after SETTLED calls (when there are more)
    reports how long everything will take and the memory used so far. finish(): the seconds the
    decodes and colour fix will take (timed when the estimate is made), or None. stage(label): what
    runs now ('derain 1/2', 'decoding'), for a progress bar to show."""

    def __init__(self, total: int, progress: ProgressFn | None, report: Callable[[str], None] | None, device,
                 finish: Callable[[], float] | None = None, stage: Callable[[str], None] | None = None):
        self.total, self.progress, self.report, self.device, self.finish = total, progress, report, torch.device(device), finish
        self.stage = stage or (lambda label: None)
        self.done, self._times, self._estimated = 0, [], False
        self(0)

    def __call__(self, done: int) -> None:
        if done != self.done or not self._times:
            self._times.append(time.perf_counter())
        self.done = done
        if self.progress:
            self.progress(done, self.total)
        if self.report and not self._estimated and done >= SETTLED and self.total > SETTLED:
            self._estimated = True
            self.report(self._estimate())

    def _estimate(self) -> str:
        durations = [b - a for a, b in zip(self._times, self._times[1:])][1:SETTLED]
        per_call = statistics.median(durations)
        sampling = per_call * (self.total - self.done)
        finish = self.finish() if self.finish else 0.0
        if self.device.type == "cuda":
            peak = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB of GPU memory"
        else:
            peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB of memory"
        return (f"{self.total} UNet calls at {per_call:.2f} s each; about {(sampling + finish) / 60:.1f} min left "
                f"({sampling / 60:.1f} min of sampling, {finish / 60:.1f} min of decoding and colour fix); "
                f"{peak} so far (it does not grow with the photo)")
