// Draws the Plugin-Selector's scores on the node after it runs: one bar per task,
// the selected ones marked, the threshold as a line.
import { app } from "../../scripts/app.js";

const BAR_HEIGHT = 16;
const PAD = 6;

function drawScores(ctx, node, report) {
  const entries = Object.entries(report.scores);
  entries.push(["(none)", report.null]);
  const values = entries.map(([, v]) => v).concat([report.threshold]);
  const lo = Math.min(0, ...values);
  const hi = Math.max(1e-6, ...values);
  const width = node.size[0] - 2 * PAD;
  const labelWidth = 90;
  const barSpace = width - labelWidth - 50;
  const x0 = PAD + labelWidth;
  const scale = (v) => x0 + ((v - lo) / (hi - lo)) * barSpace;
  const top = node.size[1] - entries.length * (BAR_HEIGHT + 2) - PAD;
  ctx.save();
  ctx.font = "12px sans-serif";
  entries.forEach(([task, score], i) => {
    const y = top + i * (BAR_HEIGHT + 2);
    const selected = report.selected.includes(task);
    ctx.fillStyle = selected ? "#e8f5e9" : "#aaa";
    ctx.fillText((selected ? "✔ " : "   ") + task, PAD, y + 12);
    ctx.fillStyle = selected ? "#4caf50" : task === "(none)" ? "#777" : "#5c6bc0";
    const a = scale(Math.min(0, score));
    const b = scale(Math.max(0, score));
    ctx.fillRect(a, y + 2, Math.max(1, b - a), BAR_HEIGHT - 4);
    ctx.fillStyle = "#ddd";
    ctx.fillText(score.toFixed(2), x0 + barSpace + 6, y + 12);
  });
  const t = scale(report.threshold);
  ctx.strokeStyle = "#ff7043";
  ctx.beginPath();
  ctx.moveTo(t, top);
  ctx.lineTo(t, top + entries.length * (BAR_HEIGHT + 2));
  ctx.stroke();
  ctx.restore();
}

app.registerExtension({
  name: "diffplugin.PluginSelectorScores",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "PluginSelector") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const report = message?.diff_plugin_scores?.[0];
      if (!report) return;
      this.diffPluginScores = report;
      const rows = Object.keys(report.scores).length + 1;
      const needed = this.computeSize()[1] + rows * (BAR_HEIGHT + 2) + 2 * PAD;
      if (this.size[1] < needed) this.setSize([Math.max(this.size[0], 300), needed]);
      this.setDirtyCanvas(true, true);
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.diffPluginScores && !this.flags?.collapsed) drawScores(ctx, this, this.diffPluginScores);
    };
  },
});
