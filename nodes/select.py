"""PluginSelector: which plugins does the instruction ask for, for this image?"""

from __future__ import annotations

from ..plugin_core import text_problem
from ..plugin_core.selector import SELECT_THRESHOLD, SELECT_THRESHOLD_MIN
from . import bridge
from .api import io
from .plugin_types import PluginSelectorIO, PluginSet, TaskPluginsIO
from .validation import Float

CATEGORY = "Diff-Plugin"


def instruction_encoder(selector, clip):
    """The text encoder the selector was trained with: SD's CLIP-L (the CLIP input, as the
    reference) unless its file names another one (e.g. the offline sentence model)."""
    from ..plugin_core.selector import CLIP_TEXT_ENCODER, text_encoder_for
    from .text_encoder import ComfyClipTextEncoder

    reads_clip = selector.text_encoder.get("kind") == CLIP_TEXT_ENCODER["kind"]
    if reads_clip and clip is None:
        raise ValueError("this Plugin-Selector reads SD's CLIP-L text encoder: connect the SD 1.x checkpoint's CLIP")
    return text_encoder_for(selector.text_encoder, ComfyClipTextEncoder(clip) if reads_clip else None)


def select_plugins(plugins: PluginSet, selector_handle, clip, clip_vision, images, instruction: str, select_threshold: float):
    """The selection for each image (plugin_core's one policy) and the plugin set that runs them."""
    from ..plugin_core import groups_by_selection
    from ..plugin_core.selector import select

    selector = selector_handle.selector
    selections = select(selector, instruction_encoder(selector, clip), instruction, [h.plugin for h in plugins.plugins],
                        lambda layer: bridge.clip_tokens(clip_vision, images, layer), select_threshold,
                        clip_width=bridge.clip_vision_width(clip_vision))
    by_task = {handle.task: handle for handle in plugins.plugins}
    chosen = [by_task[task] for task in selections[0].tasks if any(task in s.selected for s in selections)]
    return PluginSet(chosen, selections, groups_by_selection(selections, by_task)), selections


class PluginSelector(io.ComfyNode):
    SEARCH_ALIASES = ("instruction", "remove the rain and the haze", "text instruction", "choose plugin", "which task")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PluginSelector",
            display_name="Plugin-Selector",
            category=CATEGORY,
            description="Type what to fix ('remove the rain and the haze'); the Plugin-Selector picks the Task-Plugins to run, in order.",
            inputs=[
                io.Image.Input("image", tooltip="The photo(s) to restore; each image of a batch gets its own selection."),
                io.String.Input("instruction", multiline=True, default="remove the rain",
                                tooltip="What to fix, in your own words."),
                TaskPluginsIO.Input("task_plugins", tooltip="The candidates (Load Task-Plugin Library)."),
                PluginSelectorIO.Input("selector", tooltip="Plugin-Selector weights (Load Task-Plugin Library)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision, as for Apply Task-Plugin."),
                Float("threshold", default=SELECT_THRESHOLD, min=SELECT_THRESHOLD_MIN, max=100.0, step=0.01,
                      tooltip="θ: plugins scoring above it are selected (the reference uses 0). A negative score counts as 0, "
                              "as in the reference, so θ starts at 0."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The SD 1.x checkpoint's CLIP: its pooled text embedding is what the reference selector reads "
                                      "(not needed by a selector trained on the offline sentence model)."),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="selected", tooltip="The selected plugins of each image, in order; none selected leaves that photo as it is."),
                io.String.Output(display_name="scores", tooltip="The scores as text."),
            ],
        )

    @classmethod
    def validate_inputs(cls, instruction):
        return text_problem("instruction", instruction, multiline=True) or True

    @classmethod
    def execute(cls, image, instruction, task_plugins, selector, clip_vision, threshold, clip=None) -> io.NodeOutput:
        if selector is None:
            raise ValueError("no Plugin-Selector loaded: put PromptTunner.pt or a selector .safetensors into models/diff_plugins")
        if problem := text_problem("instruction", instruction, multiline=True):  # a linked text, not seen when queued
            raise ValueError(problem)
        images = bridge.image_to_pil(image)
        selected, selections = select_plugins(task_plugins, selector, clip, clip_vision, images, instruction, threshold)
        text = "\n\n".join(s.format() if len(selections) == 1 else f"image {i + 1}:\n{s.format()}" for i, s in enumerate(selections))
        return io.NodeOutput(selected, text, ui={"diff_plugin_scores": bridge.json_safe([s.as_dict() for s in selections])})
