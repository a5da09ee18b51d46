"""TrainTaskPlugin: teach a new Task-Plugin from image pairs on the user's own MODEL, VAE
and CLIP_VISION. The recipe is plugin_core's Trainer; this module only gives it ComfyUI's
models (a TrainingBackend), progress bar and cancel button."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch

from ..plugin_core.training import TrainConfig
from . import bridge, library
from .api import io
from .dependencies import require
from .paths import allow_hint, data_location, data_roots
from .plugin_types import TaskPluginHandle, TaskPluginIO
from .training_backend import ComfyTrainingBackend
from .validation import Choice, Float, name_problem, plain_name

CATEGORY = "Diff-Plugin"
log = logging.getLogger("diffplugin")
DEFAULTS = TrainConfig()


def _dataset(data_path: str, input_images, target_images):
    from ..plugin_core.training import PairDataset

    if data_path.strip():
        # relative: inside ComfyUI's input folder, where uploads and synthetic pairs go (paths.py)
        # what a pairs CSV lists must lie in the same folders, refused before any listed file is read
        return PairDataset.from_path(data_location(data_path), within=data_roots(), hint=allow_hint())
    if input_images is None or target_images is None:
        raise ValueError("give a data_path (pairs CSV or a folder with input/ and target/) or both input_images and target_images")
    return PairDataset.from_images(bridge.image_to_pil(input_images), bridge.image_to_pil(target_images), "IMAGE batches")


class TrainTaskPlugin(io.ComfyNode):
    SEARCH_ALIASES = ("train plugin", "training", "fine-tune", "learn a task", "new task")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrainTaskPlugin",
            display_name="Train Task-Plugin",
            category=CATEGORY,
            is_output_node=True,
            description=(
                "Train a Task-Plugin for a new task from (degraded, clean) pairs on this MODEL, VAE and CLIP_VISION. "
                "Saves models/diff_plugins/<save_name>.safetensors; cancel stops cleanly and keeps the last checkpoint "
                "(run again with resume to continue)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The frozen base (an SD 1.x model; other UNet bases give plugins of their own shape)."),
                io.Vae.Input("vae", tooltip="The base's VAE."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP vision (ViT-L/14 for SD 1.x plugins)."),
                io.String.Input("data_path", default="", tooltip="A pairs CSV (image,conditioning_image) or a folder with input/ and target/ of matching names, inside ComfyUI's input/ (relative paths) or output/ folder. Leave empty to train on the IMAGE inputs."),
                io.String.Input("save_name", default="my_task", tooltip="Plugin file name (and the task name stored in it): a plain name, no folders."),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=1_000_000, tooltip="Optimisation steps."),
                io.Int.Input("batch_size", default=DEFAULTS.batch_size, min=1, max=256, tooltip="Pairs per step."),
                Float("learning_rate", default=DEFAULTS.learning_rate, min=1e-8, max=1e-2, step=1e-6, round=1e-8,
                      tooltip="Per-sample learning rate; scaled by the batch size as the reference does."),
                io.Int.Input("resolution", default=DEFAULTS.resolution, min=64, max=2048, step=8, tooltip="Training crop size."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=2**62, tooltip="Seeds data order, crops, noise and timesteps."),
                Choice("start_mode", options=["auto", "input", "noise"], default="auto",
                       tooltip="How sampling will start: from the noised input, or pure noise (auto: noise for lowlight/highlight)."),
                io.Boolean.Input("gradient_checkpointing", default=False, tooltip="Less memory, about a third more time."),
                io.Boolean.Input("cache_encodings", default=False,
                                 tooltip="Encode each pair once (VAE latents and CLIP features, centre crop, both flips): much faster on small sets, no random crops."),
                io.Int.Input("checkpoint_every", default=DEFAULTS.checkpoint_every, min=0, max=1_000_000,
                             tooltip="Write a resumable checkpoint every N steps (0: only at the end)."),
                io.Boolean.Input("resume", default=True, tooltip="Continue from this save_name's newest checkpoint if there is one."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Start over: replace this save_name's earlier run and plugin file (without it they are kept and the node stops)."),
                io.Image.Input("input_images", optional=True, tooltip="Degraded images (used when data_path is empty)."),
                io.Image.Input("target_images", optional=True, tooltip="Matching clean images (used when data_path is empty)."),
            ],
            outputs=[
                TaskPluginIO.Output(display_name="task_plugin", tooltip="The trained plugin, ready for Apply Task-Plugin."),
                io.Image.Output(display_name="loss_curve", tooltip="Training loss over the steps."),
            ],
        )

    @classmethod
    def validate_inputs(cls, save_name):
        # The one input of its own rule (validation.py); data_path is read when the node runs: an
        # earlier node of the same prompt may write it (Synthesize Degraded Pairs' save_to).
        return name_problem("save_name", save_name) or True

    @classmethod
    def execute(cls, model, vae, clip_vision, data_path, save_name, steps, batch_size, learning_rate, resolution, seed,
                start_mode, gradient_checkpointing, cache_encodings, checkpoint_every, resume, overwrite=False, input_images=None,
                target_images=None) -> io.NodeOutput:
        require("diffusers", "training a Task-Plugin")
        require("accelerate", "training a Task-Plugin")
        from ..plugin_core.training import TrainConfig, write_loss_curve

        name = plain_name("save_name", save_name, "my_task")
        # The node inputs by TrainConfig's names (checked before any data is read); no data-loading
        # processes inside ComfyUI's server.
        config = TrainConfig(task=name, steps=steps, batch_size=batch_size, learning_rate=learning_rate, resolution=resolution,
                             seed=seed, start_mode=None if start_mode == "auto" else start_mode, cache=cache_encodings,
                             gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every, workers=0)
        dataset = _dataset(data_path, input_images, target_images)
        run_dir, plugin_path = _places(name, resume, overwrite)
        result = _train(ComfyTrainingBackend(model, vae, clip_vision), dataset, config, run_dir, plugin_path, resume, overwrite)
        if result.stopped:
            log.info("Diff-Plugin training of '%s' cancelled at step %d; checkpoint %s (run again with resume to continue)",
                     name, result.steps, result.checkpoint_path)
            comfy.model_management.throw_exception_if_processing_interrupted()  # clears the flag if still set
            raise comfy.model_management.InterruptProcessingException()
        log.info("Diff-Plugin: saved the plugin '%s' to %s (run folder %s)", name, plugin_path, run_dir)
        folder_paths.filename_list_cache.pop(library.FOLDER, None)  # the new plugin shows up in the loaders
        curve = write_loss_curve(run_dir / "loss.png", result.losses)
        return io.NodeOutput(TaskPluginHandle(result.plugin.cpu(), source=str(plugin_path)), bridge.pil_to_image([curve]))


def _places(name: str, resume: bool, overwrite: bool) -> tuple[Path, Path]:
    """(the run folder, the plugin file), refused when they hold a run or a plugin not asked for."""
    from ..plugin_core.training import RunFolder

    run_dir = Path(folder_paths.get_output_directory()) / "diff-plugin-training" / name
    plugin_path = Path(library.save_folder()) / f"{name}.safetensors"
    held = RunFolder(run_dir, name).check(resume=resume, overwrite=overwrite, switches=("resume", "overwrite"),
                                          elsewhere="choose another save_name")
    if plugin_path.exists() and not overwrite and not (held and resume):
        raise ValueError(f"{plugin_path} exists and is not from this run: choose another save_name, or turn on overwrite to replace it")
    return run_dir, plugin_path


def _train(backend, dataset, config, run_dir: Path, plugin_path: Path, resume: bool, overwrite: bool):
    """plugin_core's Trainer on ComfyUI's models, with ComfyUI's progress bar and cancel button."""
    from ..plugin_core.training import Trainer

    bar = comfy.utils.ProgressBar(config.steps)
    cancelled = []

    def progress(step, total, loss, lr):
        # In the server the progress hook raises on cancel (and clears the flag): turn that
        # into a clean stop, so the trainer writes a checkpoint at this step first.
        try:
            bar.update_absolute(step, total)
        except comfy.model_management.InterruptProcessingException:
            cancelled.append(step)

    with torch.inference_mode(False), torch.enable_grad():
        backend.load()
        trainer = Trainer(backend, dataset, config, run_dir)
        try:
            return trainer.train(resume=resume, overwrite=overwrite, progress=progress, plugin_path=plugin_path,
                                 should_stop=lambda: bool(cancelled) or comfy.model_management.processing_interrupted())
        finally:
            backend.disable_gradient_checkpointing()
