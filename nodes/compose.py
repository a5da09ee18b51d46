"""ComposeTaskPlugins: several Task-Plugins as one restore (plugin_core's composition): each a
weight, and one after another (the reference's chain) or together in one pass (joint: every
step each plugin's spatial branch on its own Fp, residuals summed at the weights, the UNet
reading all their prompts). For Restore with Task-Plugins, and, as one plugin, for Apply
Task-Plugin.

The Plugin-Selector's scores are not offered as weights: they say how well an instruction asks for
a plugin (a scaled cosine, trained to lie beyond +-4 of the threshold), not how much of a
degradation a photo holds, and no real weights here could show that such a mapping restores
better; type the weights you want instead."""

from __future__ import annotations

from ..plugin_core import PluginMix, RestoreSettings, printable, text_problem
from ..plugin_core.restore import COMPOSE_MODES, JOINT_CONTEXTS, parse_weights
from .api import io
from .plugin_types import ChainOnly, PluginSet, TaskPluginIO, TaskPluginsIO
from .validation import Choice

CATEGORY = "Diff-Plugin"
SETTINGS = RestoreSettings()


def weights_problem(weights) -> str | None:
    """plugin_core's rule for a weights text ('derain=1, dehaze=0.5'); None when fine or a link."""
    if not isinstance(weights, str):
        return None
    if problem := text_problem("weights", weights):
        return problem
    parsed = parse_weights(weights)
    return printable(str(parsed).replace("--weights: ", "weights: "), 300) if isinstance(parsed, str) else None


def composed_set(task_plugins: PluginSet, compose: str, joint_context: str, weights: str) -> PluginSet:
    """The same plugins (and per-image selection), with how they run."""
    parsed = parse_weights(weights)
    tasks = {handle.task for handle in task_plugins.plugins}
    unknown = [task for task, _ in parsed if task not in tasks]
    if unknown:
        raise ValueError(f"weights name {', '.join(map(repr, unknown))}, which is not among the plugins ({', '.join(sorted(tasks))})")
    composition = {"compose": compose, "joint_context": joint_context, "weights": parsed}
    RestoreSettings(**composition)  # plugin_core's checks
    return PluginSet(task_plugins.plugins, task_plugins.selections, task_plugins.groups, composition)


def one_pass(plugins: PluginSet) -> PluginMix:
    """The plugins together in one pass, as one plugin (for Apply Task-Plugin): a weight of 0 leaves one out."""
    settings = RestoreSettings(**plugins.composition)
    kept = [(handle, settings.weight(handle.task)) for handle in plugins.plugins if settings.weight(handle.task) > 0]
    if not kept:
        raise ValueError("every plugin has the weight 0: nothing to apply")
    return PluginMix([h for h, _ in kept], [w for _, w in kept], settings.joint_context)


class ComposeTaskPlugins(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ComposeTaskPlugins",
            display_name="Compose Task-Plugins",
            category=CATEGORY,
            description=(
                "Give several Task-Plugins (from the Library or the Plugin-Selector) their weights and how they run: "
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
                               "outputs averaged with the weights) or tokens (one attention over all their tokens)."),
                io.String.Input("weights", default="",
                                tooltip="Each plugin's weight, e.g. 'derain=1, dehaze=0.5' (a plugin not named weighs 1; 0 leaves "
                                        "it out): its strength, and in a joint pass its share of the prompts."),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="task_plugins", tooltip="For Restore with Task-Plugins."),
                TaskPluginIO.Output(display_name="task_plugin", tooltip="The plugins in one pass, as one plugin, for Apply Task-Plugin "
                                                                        "(compose = joint only: a chain is no one plugin)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, weights):
        return weights_problem(weights) or True

    @classmethod
    def execute(cls, task_plugins, compose, joint_context, weights) -> io.NodeOutput:
        if problem := weights_problem(weights):  # a linked text, not seen when queued
            raise ValueError(problem)
        plugins = composed_set(task_plugins, compose, joint_context, weights)
        if compose == "chain":  # no one plugin: Apply Task-Plugin says so (ChainOnly)
            return io.NodeOutput(plugins, ChainOnly(tuple(handle.task for handle in plugins.plugins)))
        return io.NodeOutput(plugins, one_pass(plugins))
