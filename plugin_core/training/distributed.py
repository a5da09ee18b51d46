"""The training engine: HF Accelerate, as diffusers' own training scripts use it.

One process or many (`accelerate launch`, `torchrun`): Accelerate reads the launcher's
environment, sets up the process group (gloo on CPUs, NCCL on GPUs), wraps the plugin in DDP,
runs autocast and the fp16 loss scaler, and skips the all-reduce on accumulation micro-batches.
"""

from __future__ import annotations

import importlib.util

import torch

from ..errors import PluginError
from ..launch import launched_processes

_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_to(report_to: str) -> None:
    """Refuse a tracker whose package is missing, before any model loads."""
    packages = _TRACKER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise PluginError(f"--report-to {report_to} needs the {packages[0]} package: pip install {packages[0]}")


def make_accelerator(*, device: torch.device | str, mixed_precision: str = "no", accumulation: int = 1,
                     report_to: str = "none", project_dir=None):
    """An Accelerator for one training run. Models stay where the caller put them (the base
    models are loaded on `accelerator.device` by the command line, on ComfyUI's device by the
    node), so device placement is off; `device` only says whether this is a CPU run."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    check_report_to(report_to)
    settings = dict(cpu=torch.device(device).type == "cpu", mixed_precision=mixed_precision,
                    gradient_accumulation_steps=accumulation, device_placement=False,
                    log_with=None if report_to == "none" else report_to, project_dir=project_dir)
    try:
        return Accelerator(**settings)
    except ValueError as error:
        # Accelerate's state is per process and refuses a new precision or device; in one
        # process (a ComfyUI server training again, a test) a new run may change them.
        if "already been initialized" not in str(error) or launched_processes() > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**settings)
