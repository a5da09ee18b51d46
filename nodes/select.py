"""PluginSelector: which plugins does the instruction ask for, for this image?"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import bridge
from .plugin_types import PluginSelectorIO, PluginSet, TaskPluginsIO

CATEGORY = "Diff-Plugin"


def instruction_encoder(selector, clip):
    """The text encoder the selector was trained with: SD's CLIP-L (the CLIP input, as the
    reference) unless its file names another one (e.g. the offline sentence model)."""
    from ..plugin_core.text import encoder_for
    from .text_encoder import ComfyClipTextEncoder

    meta = getattr(selector, "meta", {})
    kind = (meta.get("text_encoder") or {}).get("kind", "sd-clip-l-pooled")
    if kind == "sd-clip-l-pooled" and clip is None:
        raise ValueError("this Plugin-Selector reads SD's CLIP-L text encoder: connect the SD 1.x checkpoint's CLIP")
    return encoder_for(meta, ComfyClipTextEncoder(clip) if kind == "sd-clip-l-pooled" else None)


def select_plugins(plugins: PluginSet, selector_handle, clip, clip_vision, images, instruction: str, threshold: float):
    """Scores per image and the selection (rule applied to the batch-mean scores)."""
    from ..plugin_core.selector import Selection, score_instruction

    selector = selector_handle.selector
    encoder = instruction_encoder(selector, clip)
    layers = {h.plugin.info.clip_layer for h in plugins.plugins}
    tokens = {layer: bridge.clip_tokens(clip_vision, images, layer) for layer in layers}
    per_image = []
    with torch.no_grad():
        for index in range(len(images)):
            prompts = []
            for handle in plugins.plugins:
                plugin = handle.plugin
                device = next(plugin.parameters()).device
                prompts.append(plugin.visual_prompt(tokens[plugin.info.clip_layer][index : index + 1].to(device))[0].float().cpu())
            per_image.append(score_instruction(selector, encoder, instruction, prompts, plugins.tasks))
    scores = torch.stack(per_image).mean(0)
    selection = Selection.from_scores(plugins.tasks, scores, threshold)
    chosen = [h for h in plugins.plugins if h.task in selection.selected]
    return PluginSet(chosen, selection), selection, per_image


class PluginSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PluginSelector",
            display_name="Plugin-Selector",
            category=CATEGORY,
            description="Type what to fix ('remove the rain and the haze'); the Plugin-Selector picks the Task-Plugins to run, in order.",
            inputs=[
                io.Image.Input("image", tooltip="The photo to restore (a batch uses the mean of its scores)."),
                io.String.Input("instruction", multiline=True, default="remove the rain",
                                tooltip="What to fix, in your own words."),
                TaskPluginsIO.Input("task_plugins", tooltip="The candidates (Load Task-Plugin Library)."),
                PluginSelectorIO.Input("selector", tooltip="Plugin-Selector weights (Load Task-Plugin Library)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision, as for Apply Task-Plugin."),
                io.Float.Input("threshold", default=0.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="θ: plugins scoring above it are selected (the reference uses 0)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The SD 1.x checkpoint's CLIP: its pooled text embedding is what the reference selector reads "
                                      "(not needed by a selector trained on the offline sentence model)."),
            ],
            outputs=[
                TaskPluginsIO.Output(display_name="selected", tooltip="The selected plugins in order; empty means leave the photo as it is."),
                io.String.Output(display_name="scores", tooltip="The scores as text."),
            ],
        )

    @classmethod
    def execute(cls, image, instruction, task_plugins, selector, clip_vision, threshold, clip=None) -> io.NodeOutput:
        if selector is None:
            raise ValueError("no Plugin-Selector loaded: put PromptTunner.pt or a selector .safetensors into models/diff_plugins")
        images = bridge.image_to_pil(image)
        selected, selection, per_image = select_plugins(task_plugins, selector, clip, clip_vision, images, instruction, threshold)
        report = selection.as_dict()
        report["per_image"] = [s.tolist() for s in per_image]
        return io.NodeOutput(selected, selection.format(), ui={"diff_plugin_scores": [report]})
