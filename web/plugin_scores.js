// Draws the Plugin-Selector's scores on the node after it runs: one bar per task, the
// selected ones marked, the threshold θ as a line; for a batch, one block per image. The bars live in a widget of their own,
// so the node's layout makes room for them (nothing is drawn over the instruction box), and
// the widget is neither saved with the workflow nor sent with the prompt.
import { app } from "../../scripts/app.js";

const BAR_HEIGHT = 16;
const PAD = 6;
const LABEL_WIDTH = 96;
const VALUE_WIDTH = 48;
const WIDGET_NAME = "diff_plugin_scores";

// A score the server could not send as a number ("inf", "nan": JSON has none) is drawn as text with no bar.
const barValue = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
const valueText = (v) => (typeof v === "number" ? v.toFixed(2) : String(v));

function rowsOf(report) {
  return [...Object.entries(report.scores), ["(none)", report.null]];
}

// Rows of a block: a title row for each image of a batch, then its scores.
function blockRows(reports, index) {
  return rowsOf(reports[index]).length + (reports.length > 1 ? 1 : 0);
}

function heightOf(reports) {
  return reports.reduce((sum, _, i) => sum + blockRows(reports, i) * (BAR_HEIGHT + 2), 0) + 2 * PAD;
}

function drawScores(ctx, width, top, report) {
  const rows = rowsOf(report);
  const values = rows.map(([, v]) => barValue(v)).concat([barValue(report.threshold)]);
  const lo = Math.min(0, ...values);
  const hi = Math.max(1e-6, ...values);
  const x0 = PAD + LABEL_WIDTH;
  const barSpace = Math.max(20, width - x0 - VALUE_WIDTH - PAD);
  const scale = (v) => x0 + ((v - lo) / (hi - lo)) * barSpace;
  ctx.save();
  ctx.font = "12px sans-serif";
  ctx.textBaseline = "middle";
  rows.forEach(([task, score], i) => {
    const y = top + PAD + i * (BAR_HEIGHT + 2);
    const selected = report.selected.includes(task);
    ctx.fillStyle = selected ? "#e8f5e9" : "#aaa";
    ctx.fillText((selected ? "✔ " : "   ") + task, PAD, y + BAR_HEIGHT / 2);
    ctx.fillStyle = selected ? "#4caf50" : task === "(none)" ? "#777" : "#5c6bc0";
    const a = scale(Math.min(0, barValue(score)));
    const b = scale(Math.max(0, barValue(score)));
    ctx.fillRect(a, y + 2, Math.max(1, b - a), BAR_HEIGHT - 4);
    ctx.fillStyle = "#ddd";
    ctx.fillText(valueText(score), x0 + barSpace + 6, y + BAR_HEIGHT / 2);
  });
  const t = scale(barValue(report.threshold));
  ctx.strokeStyle = "#ff7043";
  ctx.beginPath();
  ctx.moveTo(t, top + PAD);
  ctx.lineTo(t, top + PAD + rows.length * (BAR_HEIGHT + 2));
  ctx.stroke();
  ctx.restore();
}

function scoresWidget() {
  return {
    name: WIDGET_NAME,
    type: "diffplugin_scores",
    value: null,
    serialize: false, // not in widgets_values
    options: { serialize: false }, // not in the prompt
    computeSize(width) {
      return [width, this.value ? heightOf(this.value) : 0];
    },
    draw(ctx, node, width, y) {
      if (!this.value) return;
      let top = y;
      this.value.forEach((report, i) => {
        if (this.value.length > 1) {
          ctx.save();
          ctx.font = "12px sans-serif";
          ctx.textBaseline = "middle";
          ctx.fillStyle = "#ccc";
          ctx.fillText(`image ${i + 1}`, PAD, top + PAD + BAR_HEIGHT / 2);
          ctx.restore();
          top += BAR_HEIGHT + 2;
        }
        drawScores(ctx, width, top, report);
        top += rowsOf(report).length * (BAR_HEIGHT + 2);
      });
    },
  };
}

app.registerExtension({
  name: "diffplugin.PluginSelectorScores",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "PluginSelector") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const reports = message?.diff_plugin_scores;
      if (!reports?.length) return;
      let widget = this.widgets?.find((w) => w.name === WIDGET_NAME);
      if (!widget) widget = this.addCustomWidget(scoresWidget());
      widget.value = reports;
      this.diffPluginScores = reports;
      const [width, height] = this.computeSize();
      this.setSize([Math.max(this.size[0], width, 300), Math.max(this.size[1], height)]);
      this.setDirtyCanvas(true, true);
    };
  },
});
