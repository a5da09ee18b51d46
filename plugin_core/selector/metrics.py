"""Multi-label metrics of the Plugin-Selector (paper, Table 5), in the standard
multi-label-classification definitions (as in ML-GCN):

* per class c: TP_c, FP_c, FN_c from `score > θ` against the wanted set;
* CP, CR = mean over classes of TP/(TP+FP) and TP/(TP+FN); CF1 = 2·CP·CR / (CP + CR);
* OP, OR = the same ratios on TP, FP, FN summed over classes; OF1 = 2·OP·OR / (OP + OR);
* mAP = mean over classes of the average precision of ranking the samples by score;
* ZTA (zero-tolerance accuracy) = share of samples whose selected set is exactly the
  wanted set: every wanted task above θ, every other one at or below it.

Conventions where a ratio is 0/0: a class never predicted has precision 0; classes with
no wanted sample in the set are left out of CP, CR and mAP (their recall and AP are
undefined), and count only through FP in the overall figures. Tied scores share one
threshold in AP (the precision of the whole tied group counts once), so AP does not
depend on the order of equal scores.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .corpus import PAPER_ZTA, Instruction


def average_precision(scores: torch.Tensor, wanted: torch.Tensor) -> float:
    """AP of one class: the area under the precision-recall steps, thresholds at distinct scores."""
    positives = int(wanted.sum())
    if positives == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    scores, wanted = scores[order].double(), wanted[order].double()
    hits = torch.cumsum(wanted, 0)
    ranks = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Evaluate only at the last item of each run of equal scores: ties form one threshold.
    last_of_tie = torch.ones(len(scores), dtype=torch.bool)
    last_of_tie[:-1] = scores[1:] != scores[:-1]
    precision = (hits / ranks)[last_of_tie]
    recall = (hits / positives)[last_of_tie]
    previous = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def selector_metrics(scores: torch.Tensor, wanted: torch.Tensor, threshold: float = 0.0) -> dict[str, float]:
    """scores: [samples, classes] raw plugin scores; wanted: [samples, classes] bool."""
    if scores.shape != wanted.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and wanted {tuple(wanted.shape)} must both be [samples, classes]")
    wanted = wanted.bool()
    predicted = scores > threshold
    tp = (predicted & wanted).sum(0).double()
    fp = (predicted & ~wanted).sum(0).double()
    fn = (~predicted & wanted).sum(0).double()
    present = wanted.any(0)
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
    recall = tp / (tp + fn).clamp_min(1)
    cp = float(precision[present].mean()) if present.any() else 0.0
    cr = float(recall[present].mean()) if present.any() else 0.0
    op = float(tp.sum() / (tp.sum() + fp.sum())) if tp.sum() + fp.sum() > 0 else 0.0
    orr = float(tp.sum() / (tp.sum() + fn.sum())) if tp.sum() + fn.sum() > 0 else 0.0
    aps = [average_precision(scores[:, c], wanted[:, c]) for c in range(scores.shape[1]) if present[c]]
    return {
        "mAP": sum(aps) / len(aps) if aps else float("nan"),
        "CP": cp,
        "CR": cr,
        "CF1": _f1(cp, cr),
        "OP": op,
        "OR": orr,
        "OF1": _f1(op, orr),
        "ZTA": float((predicted == wanted).all(1).double().mean()),
    }


@torch.no_grad()
def evaluate(selector, text_encoder, prompts: torch.Tensor, tasks: Sequence[str],
             sets: dict[str, list[Instruction]], threshold: float = 0.0, chunk: int = 128) -> dict[str, dict[str, float]]:
    """Metrics per instruction set, over every (image, instruction) pair. prompts: [images,
    tasks, width] pooled Fp (`pooled_prompts`)."""
    index = {task: i for i, task in enumerate(tasks)}
    results = {}
    for name, items in sets.items():
        if not items:
            continue
        texts = [item.text for item in items]
        scores = torch.cat([
            selector.score(texts[start : start + chunk], prompts, encoder=text_encoder, tasks=tasks)[..., :-1].float()
            for start in range(0, len(texts), chunk)
        ])  # [instructions, images, tasks]
        wanted = torch.zeros(len(items), len(tasks), dtype=torch.bool)
        for row, item in enumerate(items):
            for task in item.tasks:
                wanted[row, index[task]] = True
        wanted = wanted[:, None].expand(-1, scores.shape[1], -1)
        results[name] = selector_metrics(scores.reshape(-1, len(tasks)), wanted.reshape(-1, len(tasks)), threshold)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """The paper's Table 5 layout: one row per instruction set, the paper's figures beside ours."""
    columns = ("mAP", "CP", "OP", "OR", "CF1", "OF1", "ZTA")
    lines = ["| set | | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    labels = {"single": "Single", "multi": "Multi", "single+unrelated": "Single + Non", "unrelated": "Non only"}
    for name, metrics in results.items():
        cells = ("—" if metrics[c] != metrics[c] else f"{metrics[c]:.3f}" for c in columns)  # NaN: undefined (no positives)
        lines.append(f"| {labels.get(name, name)} | ours | " + " | ".join(cells) + " |")
        if name in PAPER_ZTA:
            lines.append("| | paper | " + " | ".join("—" for _ in columns[:-1]) + f" | {PAPER_ZTA[name]:.3f} |")
    return "\n".join(lines)
