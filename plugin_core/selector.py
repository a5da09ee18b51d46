"""Plugin-Selector: which Task-Plugins does an instruction ask for, for this image?

Each plugin's visual prompt Fp_i is max-pooled over tokens and projected (proj_v); the
instruction's pooled text embedding is projected (proj_t); the score is the scaled
cosine `exp(logit_scale) * cos(v_i, q)`. A null candidate stands for "no plugin": in the
reference it is the pooled text embedding of " " used as if it were a plugin prompt.
Parameter names match the reference `PromptTunner.pt`.

Selectors trained here add an `InstructionReader`: instead of one pooled vector per
instruction, each candidate reads its own weighted average of the text encoder's token
states (attention with a query from the candidate's embedding), then proj_t as before, so
"remove the rain and add a cat" reads as rain for the derain plugin and as nothing relevant
for the others (see selector_training). A `SelectorEnsemble` averages the scores of several
such selectors trained from different seeds. A selector trained here also carries an
`InstructionMemory` of its training requests (selector_memory), whose retrieval vote is added to
its scores where the instruction's text is at hand (`score_instruction`, evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PluginMismatchError
from .selector_memory import memory_columns

NULL_TASK = "null"


class InstructionReader(nn.Module):
    """Candidate-conditioned attention weights over an instruction's tokens."""

    def __init__(self, embed_width: int, text_width: int, width: int = 256):
        super().__init__()
        self.query = nn.Linear(embed_width, width)
        self.key = nn.Linear(text_width, width)

    def forward(self, candidates: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, paired: bool = False) -> torch.Tensor:
        """tokens [B, L, W], mask [B, L]; candidates [N, C, E] unit embeddings -> weights
        [B, N, C, L], or with `paired` candidates [B, C, E] (one set per text) -> [B, C, L]."""
        q, k = self.query(candidates), self.key(tokens)
        if paired:
            logits, mask = torch.einsum("bcr,blr->bcl", q, k), mask[:, None, :]
        else:
            logits, mask = torch.einsum("ncr,blr->bncl", q, k), mask[:, None, None, :]
        return (logits / self.query.out_features**0.5).masked_fill(~mask, float("-inf")).softmax(-1)


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
        self.memory = None  # an InstructionMemory, set by training (selector_memory)

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

    def candidates(self, pooled: torch.Tensor) -> torch.Tensor:
        """[..., P, prompt_width] max-pooled plugin prompts -> [..., P + 1, E] unit embeddings,
        the learned null candidate last."""
        v = F.normalize(self.proj_v(pooled), dim=-1, eps=0.0)
        null = F.normalize(self.proj_v(self.null_prompt), dim=-1, eps=0.0)
        return torch.cat([v, null.expand(*v.shape[:-2], 1, -1)], dim=-2)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """[..., text_width] pooled instruction embeddings -> [..., embed_width], unit length."""
        return F.normalize(self.proj_t(text), dim=-1, eps=0.0)

    def score_grid(self, candidates: torch.Tensor, text) -> torch.Tensor:
        """Every instruction against every candidate set: candidates [N, C, E] unit embeddings
        (e.g. N images' plugins); text: InstructionFeatures of B instructions -> [B, N, C]."""
        scale = self.logit_scale.exp()
        if self.reader is None:
            return scale * torch.einsum("be,nce->bnc", self.embed_text(text.pooled.to(candidates.dtype)), candidates)
        # q = proj_t(sum_l a_l x_l) = sum_l a_l proj_t(x_l) (the weights sum to 1): the tokens are
        # projected once, and cos(q, v) needs only q.v and |q|^2 = a^T (P P^T) a.
        tokens = text.tokens.to(self.proj_t.weight.dtype)
        weights = self.reader(candidates, tokens, text.mask)  # [B, N, C, L]
        projected = self.proj_t(tokens)  # [B, L, E]
        dot = torch.einsum("bncl,ble,nce->bnc", weights, projected, candidates)
        gram = torch.einsum("ble,bme->blm", projected, projected)
        norm = torch.einsum("bncl,blm,bncm->bnc", weights, gram, weights).clamp_min(0).sqrt()
        return scale * dot / norm

    def score_features(self, candidates: torch.Tensor, text) -> torch.Tensor:
        """candidates [B, C, E] unit embeddings, one set per instruction; text: InstructionFeatures
        of B instructions -> [B, C]."""
        scale = self.logit_scale.exp()
        if self.reader is None:
            return scale * (candidates * self.embed_text(text.pooled.to(candidates.dtype)).unsqueeze(1)).sum(-1)
        tokens = text.tokens.to(self.proj_t.weight.dtype)
        weights = self.reader(candidates, tokens, text.mask, paired=True)  # [B, C, L]
        projected = self.proj_t(tokens)
        dot = torch.einsum("bcl,ble,bce->bc", weights, projected, candidates)
        gram = torch.einsum("ble,bme->blm", projected, projected)
        norm = torch.einsum("bcl,blm,bcm->bc", weights, gram, weights).clamp_min(0).sqrt()
        return scale * dot / norm

    def forward(self, text: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Scores of candidates for instructions (the reference's pooled-text computation).

        text: [T, text_width]; prompts: [T, C, tokens, prompt_width] (per instruction) or
        [C, tokens, prompt_width] (shared). Returns [T, C].
        """
        v = self.embed_prompts(prompts)
        q = self.embed_text(text)
        return self.logit_scale.exp() * (v * q.unsqueeze(-2)).sum(-1)


class SelectorEnsemble(nn.Module):
    """Several selectors (trained from different seeds) over the same candidates: the score is
    the mean of theirs. A candidate's embedding is the members' embeddings side by side."""

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one selector")
        first = members[0]
        for m in members[1:]:
            if (m.prompt_width, m.text_width, m.null_prompt is None, m.reader is None) != (
                first.prompt_width, first.text_width, first.null_prompt is None, first.reader is None
            ):
                raise ValueError("the selectors of an ensemble must read the same prompts and text the same way")
        self.members = nn.ModuleList(members)
        self.memory = None  # one InstructionMemory for the whole ensemble

    prompt_width = property(lambda self: self.members[0].prompt_width)
    text_width = property(lambda self: self.members[0].text_width)
    reader = property(lambda self: self.members[0].reader)  # None: the members read pooled text only
    null_prompt = property(lambda self: self.members[0].null_prompt)  # None: the " " text is the null candidate
    proj_v = property(lambda self: self.members[0].proj_v)  # where callers look for the dtype and device

    @property
    def logit_scale(self) -> torch.Tensor:
        """The members' mean score scale, as a log (for display; each member scores with its own)."""
        return torch.stack([m.logit_scale for m in self.members]).exp().mean().log()

    def _split(self, candidates: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return candidates.split([m.proj_v.out_features for m in self.members], dim=-1)

    def embed_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.embed_prompts(prompts) for m in self.members], dim=-1)

    def candidates(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.candidates(pooled) for m in self.members], dim=-1)

    def score_grid(self, candidates: torch.Tensor, text) -> torch.Tensor:
        return torch.stack([m.score_grid(c, text) for m, c in zip(self.members, self._split(candidates))]).mean(0)

    def score_features(self, candidates: torch.Tensor, text) -> torch.Tensor:
        return torch.stack([m.score_features(c, text) for m, c in zip(self.members, self._split(candidates))]).mean(0)

    def forward(self, text: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(text, prompts) for m in self.members]).mean(0)


def selector_members(selector) -> list[PluginSelector]:
    """The selectors an ensemble averages (a single selector: itself)."""
    return list(selector.members) if isinstance(selector, SelectorEnsemble) else [selector]


def score_candidates(selector, text, visual_prompts: list[torch.Tensor], null_text: torch.Tensor | None) -> torch.Tensor:
    """Scores [plugins + 1] for one instruction, as the reference demo builds them.

    text: the instruction's pooled embedding [text_width], or its InstructionFeatures (needed
    by selectors with a reader); visual_prompts: each plugin's Fp [tokens, prompt_width] for
    the image; null_text: the pooled embedding of " ", the null candidate of reference
    selectors (unused by selectors with a learned null). The null row is that embedding
    broadcast over the tokens, so its max-pool is itself.
    """
    if isinstance(selector, SelectorEnsemble):  # each member with its own null candidate
        return torch.stack([score_candidates(m, text, visual_prompts, null_text) for m in selector.members]).mean(0)
    tokens = visual_prompts[0].shape[0]
    null = selector.null_prompt if selector.null_prompt is not None else null_text
    if null is None:
        raise ValueError("this selector has no learned null candidate: give the \" \" text embedding")
    dtype = selector.proj_v.weight.dtype
    rows = torch.stack([*visual_prompts, null.reshape(1, -1).expand(tokens, -1)]).to(dtype)
    if isinstance(text, torch.Tensor):
        if selector.reader is not None:
            raise ValueError("this selector reads the instruction's token states: give its InstructionFeatures "
                             "(text_encoder.features([instruction])), not only the pooled embedding")
        return selector(text.reshape(1, -1).to(dtype), rows)[0]
    return selector.score_features(selector.embed_prompts(rows)[None], text)[0]


def score_instruction(selector, text_encoder, instruction: str, visual_prompts: list[torch.Tensor],
                      tasks: Sequence[str] | None = None) -> torch.Tensor:
    """Scores [plugins + 1] (null last) of one instruction, read by the encoder the selector was
    trained with (the command line's transformers CLIP-L, ComfyUI's CLIP, or a sentence model).

    tasks: the plugins' tasks, in the order of visual_prompts; a selector with a memory needs
    them to add its vote to the right candidates."""
    features = text_encoder.features([instruction, " "])
    if features.pooled.shape[-1] != selector.text_width:
        raise PluginMismatchError(
            f"the text encoder gives {features.pooled.shape[-1]}-wide embeddings, the Plugin-Selector reads "
            f"{selector.text_width}-wide ones (the reference's: SD 1.x CLIP-L, 768)"
        )
    text = features[0:1] if selector.reader is not None else features.pooled[0]
    scores = score_candidates(selector, text, visual_prompts, features.pooled[1])
    memory = getattr(selector, "memory", None)
    if memory is not None:
        if tasks is None or len(tasks) != len(visual_prompts):
            raise ValueError("this Plugin-Selector has an instruction memory: give the task of each visual prompt")
        columns = memory_columns(memory.tasks, tasks)
        scores = scores + memory.adjustment(text_encoder, [instruction], columns)[0].to(scores)
    return scores


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
