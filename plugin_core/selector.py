"""Plugin-Selector: which Task-Plugins does an instruction ask for, for this image?

Each plugin's visual prompt Fp_i is max-pooled over tokens and projected (proj_v); the
instruction's pooled text embedding is projected (proj_t); the score is the scaled
cosine `exp(logit_scale) * cos(v_i, q)`. A null candidate stands for "no plugin": in the
reference it is the pooled text embedding of " " used as if it were a plugin prompt.
Parameter names match the reference `PromptTunner.pt`.

Selectors trained here may add an `InstructionReader`: instead of one pooled vector per
instruction, each candidate attends over the text encoder's token states with a query
from its own embedding, so "remove the rain and add a cat" reads as rain for the derain
plugin and as nothing relevant for the others (see selector_training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NULL_TASK = "null"


class InstructionReader(nn.Module):
    """Candidate-conditioned attention pooling of instruction token states."""

    def __init__(self, embed_width: int, text_width: int, width: int = 256):
        super().__init__()
        self.query = nn.Linear(embed_width, width)
        self.key = nn.Linear(text_width, width)
        self.value = nn.Linear(text_width, text_width)

    def forward(self, candidates: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """candidates [B, C, E] unit embeddings; tokens [B, L, W]; mask [B, L] -> [B, C, W]."""
        logits = torch.einsum("bch,blh->bcl", self.query(candidates), self.key(tokens)) / self.query.out_features**0.5
        weights = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return torch.einsum("bcl,blw->bcw", weights, self.value(tokens))


class PluginSelector(nn.Module):
    def __init__(
        self,
        prompt_width: int = 768,
        text_width: int = 768,
        embed_width: int = 768,
        learned_null: bool = False,
        reader_width: int = 0,
    ):
        super().__init__()
        self.proj_v = nn.Linear(prompt_width, embed_width)
        self.proj_t = nn.Linear(text_width, embed_width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # The null candidate's stand-in prompt. The reference has none and uses the " " text
        # embedding; a learned one also works for text encoders of another width.
        self.null_prompt = nn.Parameter(torch.zeros(prompt_width)) if learned_null else None
        self.reader = InstructionReader(embed_width, text_width, reader_width) if reader_width else None

    @property
    def prompt_width(self) -> int:
        return self.proj_v.in_features

    @property
    def text_width(self) -> int:
        return self.proj_t.in_features

    def embed_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """[..., tokens, prompt_width] visual prompts -> [..., embed_width], unit length."""
        pooled = prompts.amax(dim=-2)
        return F.normalize(self.proj_v(pooled), dim=-1, eps=0.0)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """[..., text_width] pooled instruction embeddings -> [..., embed_width], unit length."""
        return F.normalize(self.proj_t(text), dim=-1, eps=0.0)

    def score_features(self, candidates: torch.Tensor, text) -> torch.Tensor:
        """candidates [B, C, E] unit embeddings; text: InstructionFeatures of B instructions -> [B, C]."""
        if self.reader is None:
            q = self.embed_text(text.pooled).unsqueeze(1)
        else:
            q = F.normalize(self.proj_t(self.reader(candidates, text.tokens, text.mask)), dim=-1, eps=0.0)
        return self.logit_scale.exp() * (candidates * q).sum(-1)

    def forward(self, text: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Scores of candidates for instructions.

        text: [T, text_width]; prompts: [T, C, tokens, prompt_width] (per instruction) or
        [C, tokens, prompt_width] (shared). Returns [T, C].
        """
        v = self.embed_prompts(prompts)
        q = self.embed_text(text)
        return self.logit_scale.exp() * (v * q.unsqueeze(-2)).sum(-1)


def score_candidates(selector: PluginSelector, text, visual_prompts: list[torch.Tensor], null_text: torch.Tensor | None) -> torch.Tensor:
    """Scores [plugins + 1] for one instruction, as the reference demo builds them.

    text: the instruction's pooled embedding [text_width], or its InstructionFeatures (needed
    by selectors with a reader); visual_prompts: each plugin's Fp [tokens, prompt_width] for
    the image; null_text: the pooled embedding of " ", the null candidate of reference
    selectors (unused by selectors with a learned null). The null row is that embedding
    broadcast over the tokens, so its max-pool is itself.
    """
    tokens = visual_prompts[0].shape[0]
    null = selector.null_prompt if selector.null_prompt is not None else null_text
    if null is None:
        raise ValueError("this selector has no learned null candidate: give the \" \" text embedding")
    rows = torch.stack([*visual_prompts, null.reshape(1, -1).expand(tokens, -1)])
    dtype = selector.proj_v.weight.dtype
    if isinstance(text, torch.Tensor):
        return selector(text.reshape(1, -1).to(dtype), rows.to(dtype))[0]
    return selector.score_features(selector.embed_prompts(rows.to(dtype))[None], text)[0]


def apply_selection_rule(scores: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """The reference rule on one score vector whose last entry is the null candidate.

    Negative scores become 0; if nothing is left above 0 the null entry is set to 1;
    the selected entries are those above `threshold`, in candidate order.
    """
    ruled = scores.detach().clone().reshape(-1)
    ruled[ruled < 0] = 0
    if not bool((ruled > 0).any()):
        ruled[-1] = 1
    selected = torch.nonzero(ruled > threshold).flatten().tolist()
    return ruled, selected


@dataclass
class Selection:
    """The selector's answer for one image and one instruction."""

    tasks: list[str]  # candidate plugins, in order
    scores: list[float]  # raw score per candidate plugin
    null_score: float
    threshold: float
    selected: list[str]  # plugins to run, in candidate order; empty = leave the image as it is

    @classmethod
    def from_scores(cls, tasks: list[str], scores: torch.Tensor, threshold: float = 0.0) -> "Selection":
        raw = scores.detach().float().cpu().reshape(-1)
        if raw.numel() != len(tasks) + 1:
            raise ValueError(f"expected {len(tasks) + 1} scores (plugins + null), got {raw.numel()}")
        _, chosen = apply_selection_rule(raw, threshold)
        return cls(
            tasks=list(tasks),
            scores=raw[:-1].tolist(),
            null_score=float(raw[-1]),
            threshold=threshold,
            selected=[tasks[i] for i in chosen if i < len(tasks)],
        )

    def as_dict(self) -> dict:
        return {
            "scores": dict(zip(self.tasks, self.scores)),
            "null": self.null_score,
            "threshold": self.threshold,
            "selected": list(self.selected),
        }

    def format(self) -> str:
        marks = []
        for task, score in zip(self.tasks, self.scores):
            marks.append(f"{'*' if task in self.selected else ' '} {task:<12} {score:8.3f}")
        marks.append(f"  {NULL_TASK:<12} {self.null_score:8.3f}")
        chosen = ", ".join(self.selected) if self.selected else "nothing (image left unchanged)"
        return "\n".join(marks + [f"selected: {chosen}"])
