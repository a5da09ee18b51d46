"""ComposeTaskPlugins: several Task-Plugins as one restore (plugin_core's composition): each a
share, and one after another (the reference's chain) or together in one pass (joint: every step
each plugin's spatial branch on its own Fp, residuals summed at the normalised shares, the UNet
reading all their prompts). For Restore with Task-Plugins, and, as one plugin, for Apply
Task-Plugin. How strongly the whole acts is the strength of those nodes.

The Plugin-Selector's scores are not offered as shares: they say how well an instruction asks for
a plugin (a scaled cosine, trained to lie beyond +-4 of the threshold), not how much of a
degradation a photo holds, and no real weights here could show that such a mapping restores
better; type the shares you want instead."""

from __future__ import annotations

import logging

import torch

from ..plugin_core import RestoreSettings, printable, text_problem
from ..plugin_core.restore import COMPOSE_MODES, JOINT_CONTEXTS, WEIGHTS_RENAMED, composed, parse_shares
from .api import io
from .plugin_types import ChainOnly, PluginSet, TaskPluginIO, TaskPluginsIO
from .validation import Choice

CATEGORY = "Diff-Plugin"
SETTINGS = RestoreSettings()
REGIONS = 4  # region_1 ... region_4
ORDINALS = ("first", "second", "third", "fourth")


def shares_problem(shares, name: str = "shares") -> str | None:
    """plugin_core's rule for a shares text ('derain=2, dehaze=1'); None when fine or a link."""
    if not isinstance(shares, str):
        return None
    if problem := text_problem(name, shares):
        return problem
    parsed = parse_shares(shares)
    return printable(str(parsed).replace("--shares: ", f"{name}: "), 300) if isinstance(parsed, str) else None


def shares_text(shares: str, weights: str | None) -> str:
    """The shares, or, from a prompt that still names the former input `weights`, those (with a note)."""
    if not weights:
        return shares
    if shares:
        raise ValueError("give the shares in 'shares' only ('weights' is its former name)")
    logging.getLogger("diffplugin").warning("Compose Task-Plugins: %s", WEIGHTS_RENAMED)
    return weights


def regions_of(task_plugins: PluginSet, region_tasks: str, masks: list) -> tuple:
    """(task, its region) for each connected region_N: the N-th plugin of region_tasks (or of the set)."""
    if problem := text_problem("region_tasks", region_tasks):
        raise ValueError(problem)
    named = [task.strip() for task in region_tasks.split(",") if task.strip()] or list(task_plugins.tasks)
    regions = []
    for number, mask in enumerate(masks, 1):
        if mask is None:
            continue
        if number > len(named):
            raise ValueError(f"region_{number} is connected, but there are only {len(named)} plugins to give regions to "
                             f"({', '.join(named)}): name its plugin in region_tasks")
        if mask.ndim == 3 and mask.shape[0] != 1:
            raise ValueError(f"region_{number} holds {mask.shape[0]} masks: give one (it serves every image)")
        if not torch.isfinite(mask).all():
            raise ValueError(f"region_{number} contains NaN or infinite values")
        regions.append((named[number - 1], mask.reshape(mask.shape[-2:]).float().clamp(0, 1)))
    tasks = [task for task, _ in regions]
    if len(set(tasks)) < len(tasks):
        raise ValueError(f"two regions for one plugin ({', '.join(tasks)}): give each plugin one region")
    return tuple(regions)


def composed_set(task_plugins: PluginSet, compose: str, joint_context: str, shares: str, regions: tuple = ()) -> PluginSet:
    """The same plugins (and per-image selection), with how they run."""
    parsed = parse_shares(shares)
    tasks = {handle.task for handle in task_plugins.plugins}
    for name, named in (("shares", parsed), ("region_tasks", regions)):
        unknown = [task for task, _ in named if task not in tasks]
        if unknown:
            raise ValueError(f"{name} name {', '.join(map(repr, unknown))}, which is not among the plugins ({', '.join(sorted(tasks))})")
    if regions and compose == "joint" and joint_context != "attention":
        raise ValueError("regions need joint_context = attention (one attention per plugin, mixed per position)")
    composition = {"compose": compose, "joint_context": joint_context, "shares": parsed, "regions": regions}
    RestoreSettings(**composition)  # plugin_core's checks
    return PluginSet(task_plugins.plugins, task_plugins.selections, task_plugins.groups, composition)


def one_pass(plugins: PluginSet):
    """The plugins together in one pass, as one plugin (for Apply Task-Plugin, whose strength is the
    patch's): plugin_core's composition, a share of 0 leaving one out."""
    runs = composed(plugins.plugins, RestoreSettings(**plugins.composition))
    if not runs:
        raise ValueError("every plugin has the share 0: nothing to apply")
    return runs[0]


class ComposeTaskPlugins(io.ComfyNode):
    SEARCH_ALIASES = ("combine plugins", "several tasks", "multi-task", "joint pass", "region per plugin", "shares")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ComposeTaskPlugins",
            display_name="Compose Task-Plugins",
            category=CATEGORY,
            description=(
                "Give several Task-Plugins (from the Library or the Plugin-Selector) their shares and how they run: "
                "one after another (chain, the reference) or together in one pass (joint: one VAE round trip, every "
                "plugin at every step). The task_plugins output is for Restore with Task-Plugins; the task_plugin output "
                "is the joint pass as one plugin, for Apply Task-Plugin."
            ),
            inputs=[
                TaskPluginsIO.Input("task_plugins", tooltip="The plugins (Load Task-Plugin Library or the Plugin-Selector)."),
                Choice("compose", options=list(COMPOSE_MODES), default="joint",
                       tooltip="chain: one after another on the previous output (the first with steps, each later one with "
                               "later_steps); joint: all together in one pass of steps."),
                Choice("joint_context", options=list(JOINT_CONTEXTS), default=SETTINGS.joint_context,
                       tooltip="How the UNet reads the plugins' prompts in a joint pass: attention (one attention per plugin, "
                               "outputs averaged by their shares) or tokens (one attention over all their tokens)."),
                io.String.Input("shares", default="", optional=True,
                                tooltip="Each plugin's share of a joint pass, e.g. 'derain=2, dehaze=1': only the ratios count (a "
                                        "plugin not named has 1; 0 leaves it out, in a chain too). How strongly the plugins act "
                                        "is the strength of Apply / Restore. (Optional only so that prompts naming the former "
                                        "input, weights, still run.)"),
                *[io.Mask.Input(f"region_{number}", optional=True,
                                tooltip=f"Where the {ORDINALS[number - 1]} plugin of region_tasks acts (white: there; grey: a soft "
                                        "edge), e.g. the river for desnow; the rest of the photo is kept. One mask for every image. "
                                        "Not connected: that plugin acts everywhere.") for number in range(1, REGIONS + 1)],
                io.String.Input("region_tasks", default="", optional=True,
                                tooltip="Which plugin each region_N is for, in order, e.g. 'desnow, dehaze' (empty: the plugins in "
                                        "their order). Regions need joint_context attention."),
                io.String.Input("weights", optional=True, force_input=True,
                                tooltip="The former name of shares, read as shares (with a note) for prompts that still use it."),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="task_plugins", tooltip="For Restore with Task-Plugins."),
                TaskPluginIO.Output(display_name="task_plugin", tooltip="The plugins in one pass, as one plugin, for Apply Task-Plugin "
                                                                        "(compose = joint only: a chain is no one plugin)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, shares=""):
        return shares_problem(shares) or True  # the host files a message under every input named here: shares alone

    @classmethod
    def execute(cls, task_plugins, compose, joint_context, shares="", weights=None, region_tasks="", **masks) -> io.NodeOutput:
        if problem := shares_problem(shares) or shares_problem(weights, "weights"):  # linked, or the former input
            raise ValueError(problem)
        shares = shares_text(shares, weights)
        regions = regions_of(task_plugins, region_tasks, [masks.get(f"region_{n}") for n in range(1, REGIONS + 1)])
        plugins = composed_set(task_plugins, compose, joint_context, shares, regions)
        if compose == "chain":  # no one plugin: Apply Task-Plugin says so (ChainOnly)
            return io.NodeOutput(plugins, ChainOnly(tuple(handle.task for handle in plugins.plugins)))
        return io.NodeOutput(plugins, one_pass(plugins))
