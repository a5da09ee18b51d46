"""What every benchmark needs: interleaved timing and peak memory measured in a fresh process."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each candidate; the candidates alternate so machine drift hits them
    alike, after one warm-up each."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> int:
    """Restart the peak-RSS mark here (Linux); returns the resident bytes now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """The highest resident bytes since the last reset_peak()."""
    return _status_bytes("VmHWM")


def _child(measure, args, queue):
    try:
        queue.put(measure(*args))
    except BaseException as error:  # the parent waits on the queue: it must hear of a failure too
        queue.put(RuntimeError(f"{type(error).__name__}: {error}"))
        raise


def in_fresh_process(measure: Callable[..., dict], *args) -> dict:
    """`measure(*args)` (a module-level function, typically building models, calling reset_peak,
    running, returning peak_rss()) in a spawned process, so no earlier allocation counts."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(measure, args, queue))
    process.start()
    result = queue.get()
    process.join()
    if isinstance(result, BaseException):
        raise RuntimeError(f"{measure.__name__}{args} failed in its process") from result
    return result


def gib(n: float) -> float:
    return n / 2**30
