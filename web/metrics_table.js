// Draws the Image Metrics node's numbers on the node after it runs: one row per image (and the
// mean for a batch), a column per metric. Like the selector's scores, the table is a widget of its
// own (the node makes room for it), neither saved with the workflow nor sent with the prompt.
import { app } from "../../scripts/app.js";

const ROW_HEIGHT = 18;
const PAD = 6;
const NAME_WIDTH = 80;
const WIDGET_NAME = "diff_plugin_metrics";
const DIGITS = { psnr: 2, ssim: 4, lpips: 4 };

function columnsOf(report) {
  return report.rows.length ? Object.keys(report.rows[0][1]) : [];
}

function shown(key, value) {
  return typeof value === "number" ? value.toFixed(DIGITS[key] ?? 4) : String(value);
}

function metricsWidget() {
  return {
    name: WIDGET_NAME,
    type: "diffplugin_metrics",
    value: null,
    serialize: false, // not in widgets_values
    options: { serialize: false }, // not in the prompt
    computeSize(width) {
      return [width, this.value ? (this.value.rows.length + 1) * ROW_HEIGHT + 2 * PAD : 0];
    },
    draw(ctx, node, width, y) {
      const report = this.value;
      if (!report) return;
      const columns = columnsOf(report);
      const step = Math.max(56, (width - NAME_WIDTH - 2 * PAD) / Math.max(1, columns.length));
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textBaseline = "middle";
      const row = (i) => y + PAD + i * ROW_HEIGHT + ROW_HEIGHT / 2;
      ctx.fillStyle = "#aaa";
      ctx.fillText(report.channels, PAD, row(0));
      columns.forEach((key, c) => ctx.fillText(key.toUpperCase(), PAD + NAME_WIDTH + c * step, row(0)));
      report.rows.forEach(([name, scores], r) => {
        ctx.fillStyle = name === "mean" ? "#e8f5e9" : "#ddd";
        ctx.fillText(name, PAD, row(r + 1));
        columns.forEach((key, c) => ctx.fillText(shown(key, scores[key]), PAD + NAME_WIDTH + c * step, row(r + 1)));
      });
      ctx.restore();
    },
  };
}

app.registerExtension({
  name: "diffplugin.ImageMetricsTable",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "DiffPluginImageMetrics") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const report = message?.diff_plugin_metrics?.[0];
      if (!report) return;
      let widget = this.widgets?.find((w) => w.name === WIDGET_NAME);
      if (!widget) widget = this.addCustomWidget(metricsWidget());
      widget.value = report;
      const [width, height] = this.computeSize();
      this.setSize([Math.max(this.size[0], width, 280), Math.max(this.size[1], height)]);
      this.setDirtyCanvas(true, true);
    };
  },
});
