"""Shapes and metadata of a Task-Plugin.

`PluginConfig` holds every dimension the modules are built from, so plugins for other
base models (SD2.x context 1024, SDXL context 2048) follow from the numbers alone.
`PluginInfo` is what a plugin is *for*: the task name, how sampling starts, the
instructions that describe it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..vocabulary import START_MODES

FORMAT_VERSION = 1

# Tasks the reference samples from pure noise instead of the noised input latent
# (demo.py switches on `inp_of_unet_is_random_noise` for exactly these).
NOISE_START_TASKS = ("lowlight", "highlight")

# The order the reference runs the plugins its selector picks (demo.py, its --tasks default). Only
# the first plugin of a chain gets every step, each later one 3, so the order changes the photo.
REFERENCE_ORDER = ("derain", "desnow", "lowlight", "dehaze", "deblur", "highlight", "face", "demoire")
RUN_ORDER_KEY = "run_order"  # a plugin's info may state its place among them: a number, e.g. 3.5 = after dehaze

# The eight released tasks with the instructions the reference demo uses for them.
DEFAULT_INSTRUCTIONS = {
    "derain": ("remove rain",),
    "desnow": ("remove snow",),
    "dehaze": ("remove haze",),
    "deblur": ("clear blur",),
    "face": ("enhance face appearance",),
    "lowlight": ("enhance brightness",),
    "highlight": ("remove highlight",),
    "demoire": ("I would like to remove the moire",),
}


@dataclass(frozen=True)
class PluginConfig:
    """Dimensions of a Task-Plugin. Defaults are the released SD1.x plugins."""

    clip_width: int = 1024  # CLIP vision hidden size (ViT-L/14)
    context_width: int = 768  # UNet cross-attention width (SD1.x)
    channels: int = 320  # UNet first-level channels: the width of the skips the SCB feeds
    latent_channels: int = 4
    tpb_layers: int = 2
    scb_layers: int = 2
    scb_heads: int = 8
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    use_linear_projection: bool = False
    only_cross_attention: bool = False
    upcast_attention: bool = False
    resnet_time_scale_shift: str = "default"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "PluginConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown plugin config fields: {', '.join(unknown)}")
        return cls(**values)

    def describe(self) -> str:
        return (
            f"context width {self.context_width}, SCB channels {self.channels}, "
            f"CLIP vision width {self.clip_width}"
        )


def default_start_mode(task: str) -> str:
    return "noise" if task in NOISE_START_TASKS else "input"


def run_place(task: str, info: "PluginInfo | None" = None) -> tuple[float, str]:
    """Where a plugin chosen for the user runs (a sort key): a reference task at its place in
    REFERENCE_ORDER (0 to 7); another at the place its info states (`extra["run_order"]`, a number
    on the same scale), else after all of them; ties by task name."""
    if task in REFERENCE_ORDER:
        return float(REFERENCE_ORDER.index(task)), task
    place = (info.extra if info is not None else {}).get(RUN_ORDER_KEY)
    stated = isinstance(place, (int, float)) and not isinstance(place, bool) and math.isfinite(place)
    return (float(place) if stated else math.inf), task


def run_order(plugins: list) -> list:
    """Plugins chosen for the user (by the Plugin-Selector), in the order they run (`run_place`).
    Plugins the user names one by one run in the order given instead."""
    return sorted(plugins, key=lambda plugin: run_place(plugin.task, getattr(plugin, "info", None)))


@dataclass
class PluginInfo:
    """What a plugin is for, stored beside its weights."""

    task: str
    start_mode: str = "input"
    instructions: tuple[str, ...] = ()
    clip_layer: int = 24  # index into CLIP vision hidden_states; 24 = last layer of ViT-L/14
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # provenance: training steps, data, source

    def __post_init__(self):
        if self.start_mode not in START_MODES:
            raise ValueError(f"start_mode must be one of {START_MODES}, got {self.start_mode!r}")
        self.instructions = tuple(self.instructions)

    @classmethod
    def for_task(cls, task: str, **overrides) -> "PluginInfo":
        values = dict(
            task=task,
            start_mode=default_start_mode(task),
            instructions=DEFAULT_INSTRUCTIONS.get(task, ()),
        )
        values.update(overrides)
        return cls(**values)
