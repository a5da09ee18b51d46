"""A training run's folder: what it holds of a run (checkpoints, loss log, plugin), the one message
that refuses to touch a run unasked, clearing a run's files when asked, and the checkpoints:
written atomically (a crash mid-write leaves the previous one intact), the oldest pruned, the
newest readable one found for a resume."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator

import torch

from ..errors import PluginError, PluginFileError
from ..formats import atomic_write, read_torch_pickle

log = logging.getLogger("diffplugin")

STATE_FORMAT = "diff-plugin/training-state"
_CHECKPOINT = re.compile(r"step-(\d+)\.pt$")


class TrainingError(PluginError):
    """Training stopped because something went wrong (NaN loss, incompatible resume, ...)."""


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.search(Path(path).name).group(1))


class RunFolder:
    """The files of one training run of `task` in `path`."""

    def __init__(self, path: Path | str, task: str):
        self.path, self.task = Path(path), task

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def plugin_path(self) -> Path:
        return self.path / f"{self.task}.safetensors"

    def describe(self) -> str | None:
        """What the folder holds of a training run (checkpoints, loss log, plugin), or None."""
        steps = [checkpoint_step(p) for p in self.checkpoints()]
        parts = [f"checkpoints up to step {steps[-1]}"] if steps else []
        parts += [name for name in ("loss.csv", self.plugin_path.name) if (self.path / name).is_file()]
        return ", ".join(parts) or None

    def check(self, *, resume: bool, overwrite: bool, switches: tuple[str, str] = ("--resume", "--overwrite"),
              elsewhere: str = "choose another run folder") -> str | None:
        """What the folder holds; a run neither resumed nor overwritten is refused, in the one
        message, naming the front end's own `switches` (resume, overwrite) and way out."""
        held = self.describe()
        if held and not (resume or overwrite):
            raise TrainingError(f"{self.path} holds a training run ({held}): continue it with {switches[0]}, or start over "
                                f"with {switches[1]} (that run's files are replaced), or {elsewhere}")
        return held

    def clear(self) -> None:
        """Remove the files of the run this folder holds (nothing else in it)."""
        for path in [*self.checkpoints(), self.path / "loss.csv", self.path / "loss.png", self.plugin_path]:
            path.unlink(missing_ok=True)
        validation = self.path / "validation"
        for image in validation.glob("step-*.png") if validation.is_dir() else ():
            image.unlink()

    def checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted((p for p in self.checkpoint_dir.iterdir() if _CHECKPOINT.search(p.name)), key=checkpoint_step)

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def last_good_note(self) -> str:
        latest = self.latest()
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"

    def write_checkpoint(self, state: dict, step: int, keep: int) -> Path:
        """step-N.pt, written atomically; then only the `keep` newest of this run are kept (0: all)."""
        path = self.checkpoint_dir / f"step-{step:06d}.pt"
        atomic_write(path, lambda temp: torch.save({"format": STATE_FORMAT, "step": step, **state}, temp))
        if keep:
            ours = [c for c in self.checkpoints() if checkpoint_step(c) <= step]  # a later step is no earlier checkpoint of it
            for old in ours[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def remove_leftovers(self) -> None:
        """Temp files of checkpoint writes that never finished."""
        for leftover in self.checkpoint_dir.glob(".*.tmp") if self.checkpoint_dir.is_dir() else ():
            leftover.unlink(missing_ok=True)

    def readable_states(self, path: Path | None = None) -> Iterator[tuple[Path, dict]]:
        """(checkpoint, its state), newest first (or `path` alone), skipping unreadable files."""
        for candidate in [path] if path else list(reversed(self.checkpoints())):
            try:
                state = read_torch_pickle(candidate)
            except PluginFileError as error:
                log.warning("skipping unreadable checkpoint: %s", error)
                continue
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise TrainingError(f"{candidate}: not a diff-plugin training checkpoint")
            yield candidate, state
