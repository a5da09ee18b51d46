"""Does a Task-Plugin fit a base? One check and one message for every front end: the command
line reads the facts off diffusers / transformers models (base.facts), the nodes off a ComfyUI
MODEL and CLIP_VISION."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PluginMismatchError


@dataclass(frozen=True)
class BaseFacts:
    """What a Task-Plugin must fit in a base model; None where a side is not known."""

    name: str  # how a message names the base, e.g. "MODEL (SD15) / CLIP_VISION pair"
    context_width: int | None  # the UNet's cross-attention width
    channels: int | None  # the UNet's first-level channels: the width of the skips the SCB feeds
    first_level_layers: int | None  # layers of the UNet's first level (each gives a skip)
    clip_width: int | None = None  # CLIP vision hidden size
    clip_layers: int | None = None  # CLIP vision encoder layers


def check_fits(plugin, facts: BaseFacts) -> None:
    """Refuse a base the plugin (or each plugin of a PluginMix) was not built for, naming every
    problem and both sides."""
    for member in getattr(plugin, "plugins", None) or []:
        check_fits(member, facts)
    if hasattr(plugin, "plugins"):
        return
    config, problems = plugin.config, []
    if facts.context_width is None:
        raise PluginMismatchError(f"Diff-Plugin patches UNet models with skip connections and cross-attention; "
                                  f"this is {facts.name}")
    if facts.context_width != config.context_width:
        problems.append(f"cross-attention width {facts.context_width} (plugin needs {config.context_width})")
    if facts.channels is not None and facts.channels != config.channels:
        problems.append(f"first-level channels {facts.channels} (plugin needs {config.channels})")
    if facts.clip_width is not None and facts.clip_width != config.clip_width:
        problems.append(f"CLIP vision width {facts.clip_width} (plugin needs {config.clip_width})")
    if facts.first_level_layers is not None and facts.first_level_layers < config.scb_layers:
        problems.append(f"{facts.first_level_layers} layers in the UNet's first level (plugin feeds "
                        f"{config.scb_layers + 1} full-resolution skips, needs {config.scb_layers})")
    if facts.clip_layers is not None and plugin.info.clip_layer > facts.clip_layers:
        problems.append(f"{facts.clip_layers} CLIP vision layers (plugin reads layer {plugin.info.clip_layer})")
    if problems:
        raise PluginMismatchError(
            f"Task-Plugin '{plugin.task}' does not fit this {facts.name}: it has " + "; ".join(problems) + ". "
            f"The plugin was made for a base with {config.describe()} "
            "(SD1.x: 768/320 with CLIP ViT-L/14 width 1024; SD2.x has context 1024, SDXL 2048)."
        )
