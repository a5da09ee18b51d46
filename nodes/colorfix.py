"""DiffPluginColorFix: the restored image keeps the photo's low-frequency colour (plugin_core's
colour fixes), for graphs that decode themselves (Apply Task-Plugin -> KSampler -> VAE Decode)."""

from __future__ import annotations

from ..plugin_core import at_size, fix_colors
from . import bridge
from .api import io
from .tiles import color_fix_input

CATEGORY = "Diff-Plugin"


class DiffPluginColorFix(io.ComfyNode):
    SEARCH_ALIASES = ("color fix", "colour fix", "color correction", "wavelet color fix", "adain")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffPluginColorFix",
            display_name="Diff-Plugin Colour Fix",
            category=CATEGORY,
            description="Give the restored image the photo's low-frequency colour, which the VAE round trip and "
                        "the diffusion shift (wavelet or AdaIN, as StableSR).",
            inputs=[
                io.Image.Input("image", tooltip="The restored image(s)."),
                io.Image.Input("reference", tooltip="The photo(s) it was restored from (any size: brought to the image's)."),
                color_fix_input(),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The restored image(s) with the photo's colour.")],
        )

    @classmethod
    def execute(cls, image, reference, color_fix) -> io.NodeOutput:
        restored, references = bridge.image_to_pil(image), bridge.image_to_pil(reference)
        if len(references) not in (1, len(restored)):
            raise ValueError(f"{len(restored)} images but {len(references)} references: give one, or one per image")
        references = [at_size(references[min(i, len(references) - 1)], r.size) for i, r in enumerate(restored)]
        return io.NodeOutput(bridge.pil_to_image(fix_colors(restored, references, color_fix)))
