"""ImageMetrics: PSNR and SSIM of restored images against their references (plugin_core's
paired_metrics), as a text table and drawn on the node (web/metrics_table.js), so settings can be
compared inside a workflow."""

from __future__ import annotations

from . import bridge
from .api import io

CATEGORY = "Diff-Plugin"


class ImageMetrics(io.ComfyNode):
    SEARCH_ALIASES = ("psnr", "ssim", "lpips", "image quality", "evaluate", "metrics")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffPluginImageMetrics",
            display_name="Image Metrics (PSNR / SSIM)",
            category=CATEGORY,
            description="Measure restored images against clean references: PSNR (8-bit, dB) and SSIM (Gaussian window, "
                        "σ 1.5), per image and their mean; the numbers are drawn on the node.",
            inputs=[
                io.Image.Input("restored", tooltip="The restored image(s)."),
                io.Image.Input("reference", tooltip="The clean reference(s), of the same size: one for all, or one per image."),
                io.Boolean.Input("y_channel", default=False,
                                 tooltip="Measure the BT.601 luma (Y of YCbCr) instead of RGB, as restoration papers report."),
            ],
            outputs=[io.String.Output(display_name="table", tooltip="The metrics as a text table.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, restored, reference, y_channel) -> io.NodeOutput:
        from ..plugin_core.evaluation import Report, means, paired_metrics

        images, references = bridge.image_to_pil(restored), bridge.image_to_pil(reference)
        if len(references) not in (1, len(images)):
            raise ValueError(f"{len(images)} restored images but {len(references)} references: give one, or one per image")
        per_image = {}
        for i, image in enumerate(images):
            scores = paired_metrics(image, references[min(i, len(references) - 1)], y_channel=y_channel)
            per_image[f"image {i + 1}"] = scores
        report = Report(means(per_image), per_image, {"channels": "Y" if y_channel else "RGB"})
        table = report.table()
        rows = [[name, s] for name, s in per_image.items()] + ([["mean", report.metrics]] if len(per_image) > 1 else [])
        drawn = {"channels": "Y (BT.601)" if y_channel else "RGB", "rows": rows}
        # an infinite PSNR (identical images) goes as the text 'inf'
        return io.NodeOutput(table, ui={"diff_plugin_metrics": [bridge.json_safe(drawn)]})
