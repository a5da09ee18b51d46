"""A training run's log: loss.csv (one row per step; a resumed run keeps the rows up to its step)
and Accelerate's trackers (tensorboard, wandb), written by rank 0. A validation step's row waits
for its metrics."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

COLUMNS = ["step", "loss", "lr", "seconds", "grad_norm", "samples_per_s", "val_psnr", "val_ssim"]


class TrainingLog:
    def __init__(self, folder: Path, accelerator, config, processes: int):
        self.folder, self.accelerator, self.config, self.processes = Path(folder), accelerator, config, processes
        self._handle = None
        self._pending: dict | None = None

    def open(self, step: int) -> None:
        """Start logging after `step`: the rows up to it are kept, the trackers start."""
        if self.config.report_to != "none":
            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in dataclasses.asdict(self.config).items()}
            self.accelerator.init_trackers("diff-plugin", config=values | {"processes": self.processes})
        if not self.accelerator.is_main_process:
            return
        path = self.folder / "loss.csv"
        rows = []
        if path.is_file():
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
        self._handle = path.open("w", newline="")
        self._writer = csv.DictWriter(self._handle, COLUMNS, restval="", extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(rows)

    def record(self, step: int, report, lr: float, validating: bool) -> None:
        """One step's loss, lr, grad norm, time and samples/s; `validating`: its metrics follow."""
        values = {"loss": report.loss, "lr": lr, "grad_norm": report.grad_norm,
                  "samples_per_s": self.config.global_batch(self.processes) / report.seconds}
        self.accelerator.log(values, step=step)
        if self._handle is not None:
            self._flush()
            self._pending = {"step": step, "seconds": f"{report.seconds:.4f}", **{k: f"{v:.6g}" for k, v in values.items()}}
            if not validating:
                self._flush()

    def validation(self, step: int, images: list[Image.Image], metrics: dict[str, float]) -> None:
        if metrics:
            self.accelerator.log({f"validation/{name}": value for name, value in metrics.items()}, step=step)
            if self._handle is not None and self._pending is not None:
                self._pending.update({f"val_{name}": f"{value:.6g}" for name, value in metrics.items()})
                self._flush()
        for tracker in self.accelerator.trackers if images else ():
            if tracker.name == "tensorboard":
                tracker.log_images({"validation": np.stack([np.asarray(i) for i in images])}, step, dataformats="NHWC")
            elif tracker.name == "wandb":
                tracker.log_images({"validation": images}, step)

    def close(self) -> None:
        if self._handle is not None:
            self._flush()
            self._handle.close()
            self._handle = None
        for tracker in self.accelerator.trackers:  # not end_training(): it ends the process group too
            tracker.finish()

    def _flush(self) -> None:
        if self._pending is not None:
            self._writer.writerow(self._pending)
            self._handle.flush()
            self._pending = None
