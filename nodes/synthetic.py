"""SynthesizeDegradedPairs: (degraded, clean) training pairs from clean photos, for
TrainTaskPlugin. The degradation models are plugin_core's (plugin_core.synthetic); this node only maps
IMAGE batches in and out and, on request, writes the pairs to ComfyUI's input folder in
the reference CSV layout (the same files `diffplugin synth` writes)."""

from __future__ import annotations

from ..plugin_core import OutputsExist, printable, shown
from . import bridge
from .api import io
from .paths import input_subfolder, save_to_problem
from .validation import Choice, Float

CATEGORY = "Diff-Plugin"


class SynthesizeDegradedPairs(io.ComfyNode):
    SEARCH_ALIASES = ("synthetic rain", "add rain", "add haze", "degrade image", "training pairs", "dataset")

    @classmethod
    def define_schema(cls):
        from ..plugin_core.synthetic import DEGRADATIONS

        return io.Schema(
            node_id="SynthesizeDegradedPairs",
            display_name="Synthesize Degraded Pairs",
            category=CATEGORY,
            description=(
                "Degrade clean photos with a physical model of a task (rain streaks, haze, snow, blur, low light, "
                "noise, JPEG) to make (input, target) training pairs for Train Task-Plugin. Deterministic per seed."
            ),
            inputs=[
                io.Image.Input("clean_images", tooltip="Clean photos (a batch); each becomes pairs_per_image pairs."),
                Choice("degradation", options=list(DEGRADATIONS), default="rain",
                       tooltip="; ".join(f"{name}: {spec.description}" for name, spec in DEGRADATIONS.items())),
                Choice("second_degradation", options=["none", *DEGRADATIONS], default="none",
                       tooltip="Optionally a second degradation applied after the first (e.g. rain then haze)."),
                Float("intensity_min", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Lowest intensity drawn per pair (0 = barely visible, 1 = the strongest the model makes)."),
                Float("intensity_max", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip="Highest intensity drawn per pair."),
                io.Int.Input("pairs_per_image", default=4, min=1, max=64,
                             tooltip="Differently seeded degradations of each clean photo."),
                io.Int.Input("seed", default=0, min=0, max=2**62, tooltip="Pair k of the batch depends only on (seed, k)."),
                io.String.Input("save_to", default="",
                                tooltip="Optional folder under ComfyUI's input/ to also write the pairs to "
                                        "(input/, target/, pairs.csv): Train Task-Plugin's data_path can read it later. "
                                        "A rerun with the same photos and settings finds its own pairs there and keeps them."),
                io.Boolean.Input("overwrite", default=False, optional=True,
                                 tooltip="Replace other pairs already in save_to (without it the node stops and writes nothing)."),
            ],
            outputs=[
                io.Image.Output(display_name="input_images", tooltip="The degraded photos (training inputs)."),
                io.Image.Output(display_name="target_images", tooltip="The matching clean photos (training targets)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, save_to):
        # The one input of its own rule (validation.py); intensity_min against intensity_max is
        # checked first thing when the node runs.
        return save_to_problem(save_to) or True

    @classmethod
    def execute(cls, clean_images, degradation, second_degradation, intensity_min, intensity_max, pairs_per_image, seed,
                save_to, overwrite=False) -> io.NodeOutput:
        from ..plugin_core.synthetic import SyntheticPairs, write_pairs

        if intensity_min > intensity_max:
            raise ValueError(f"intensity_min ({intensity_min}) is above intensity_max ({intensity_max}): lower intensity_min")
        kinds = [degradation] + ([second_degradation] if second_degradation != "none" else [])
        clean = bridge.image_to_pil(clean_images)
        pairs = SyntheticPairs(clean, kinds, seed=seed, intensity=(intensity_min, intensity_max), pairs_per_image=pairs_per_image)
        if save_to.strip():
            folder = input_subfolder(save_to)
            try:
                write_pairs(clean, folder, kinds, seed=seed, intensity=(intensity_min, intensity_max),
                            pairs_per_image=pairs_per_image, overwrite=overwrite)
            except OutputsExist as error:
                raise ValueError(f"save_to '{shown(save_to)}' already holds other pairs ({len(error.paths)} files, e.g. "
                                 f"{printable(error.paths[0].relative_to(folder))}), made from other photos or settings: "
                                 "choose another save_to folder, or turn on overwrite to replace them") from None
        inputs, targets = zip(*(pairs[i] for i in range(len(pairs))))
        return io.NodeOutput(bridge.pil_to_image(list(inputs)), bridge.pil_to_image(list(targets)))
