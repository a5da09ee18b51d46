"""Plugin-Selector: which Task-Plugins does an instruction ask for, for this image?

Each plugin's visual prompt Fp_i is max-pooled over tokens and projected (proj_v); the
instruction's pooled text embedding is projected (proj_t); the score is the scaled cosine
`exp(logit_scale) * cos(v_i, q)`. A null candidate stands for "no plugin": in the reference it
is the pooled text embedding of " " used as if it were a plugin prompt. Parameter names match
the reference `PromptTunner.pt`.

Selectors trained here have two optional parts beside the paper's projections: a learned null
prompt, and an `InstructionReader` (each candidate reads its own weighted average of the
instruction's token states, so "remove the rain and add a cat" reads as rain for the derain
plugin and as nothing relevant for the others). A `PluginSelector` also carries what its file
holds beside the weights: the tasks it was trained on, the text encoder it reads, the word
list of its typo normaliser and its `InstructionMemory`. `PluginSelector.score` is the one way
to score: the command line, the nodes, the trainer and the metrics all call it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PluginError, PluginMismatchError
from ..options import text_problem
from .memory import InstructionMemory, memory_columns
from .normalizer import Normalizer
from .text import CLIP_TEXT_ENCODER, InstructionFeatures

log = logging.getLogger("diffplugin")

NULL_TASK = "null"
NULL_TEXT = " "  # the reference's null candidate: the pooled embedding of this text
NO_PLUGIN = "(no plugin)"  # the null candidate as `Selection.format` shows it (`as_dict` keeps the key "null")


class InstructionReader(nn.Module):
    """Candidate-conditioned attention weights over an instruction's tokens."""

    def __init__(self, embed_width: int, text_width: int, width: int = 256):
        super().__init__()
        self.query = nn.Linear(embed_width, width)
        self.key = nn.Linear(text_width, width)

    def forward(self, candidates: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """candidates [N, C, E] unit embeddings; tokens [B, L, W], mask [B, L] -> weights [B, N, C, L]."""
        logits = torch.einsum("ncr,blr->bncl", self.query(candidates), self.key(tokens))
        return (logits / self.query.out_features**0.5).masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)


class PluginSelector(nn.Module):
    def __init__(self, prompt_width: int = 768, text_width: int = 768, embed_width: int = 768, learned_null: bool = False,
                 reader_width: int = 0, *, tasks: Sequence[str] = (), text_encoder: dict | None = None,
                 lexicon: dict[str, int] | None = None, memory: InstructionMemory | None = None, info: dict | None = None):
        super().__init__()
        self.proj_v = nn.Linear(prompt_width, embed_width)
        self.proj_t = nn.Linear(text_width, embed_width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # The null candidate's stand-in prompt. The reference has none and uses the " " text
        # embedding; a learned one also works for text encoders of another width.
        if learned_null:
            self.null_prompt = nn.Parameter(torch.zeros(prompt_width))
        else:
            self.register_parameter("null_prompt", None)
        self.reader: InstructionReader | None = InstructionReader(embed_width, text_width, reader_width) if reader_width else None
        self.tasks: list[str] = list(tasks)  # what it was trained on (the memory's columns)
        self.text_encoder: dict = dict(text_encoder or CLIP_TEXT_ENCODER)  # describe() of the encoder it reads
        self.lexicon: dict[str, int] = dict(lexicon or {})  # its typo normaliser's words (none: no normaliser)
        self.memory: InstructionMemory | None = memory
        self.info: dict = dict(info or {})
        self.check_memory()
        self._normalizers: dict[tuple, Normalizer] = {}

    @property
    def prompt_width(self) -> int:
        return self.proj_v.in_features

    @property
    def text_width(self) -> int:
        return self.proj_t.in_features

    def check_memory(self) -> None:
        if self.memory is not None and self.tasks != self.memory.tasks:
            raise ValueError(f"the selector's instruction memory is for tasks {self.memory.tasks}, not {self.tasks}")

    def normalizer_for(self, encoder) -> Normalizer | None:
        """Its typo normaliser against this encoder's vocabulary (built once per encoder)."""
        if not self.lexicon:
            return None
        key = (id(encoder), tuple(sorted(encoder.describe().items())))
        if key not in self._normalizers:
            self._normalizers[key] = Normalizer(self.lexicon, encoder.vocabulary())
        return self._normalizers[key]

    def score(self, text: Sequence[str] | InstructionFeatures | torch.Tensor, prompts: torch.Tensor, *, encoder=None,
              tasks: Sequence[str] | None = None, null: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [T, N, P + 1] of T instructions for N images' P plugins, the null candidate last.

        text: the instructions as written (read by `encoder`, the one the selector was trained
        with, after its normaliser; its instruction memory votes too), or already encoded
        (training: no normaliser, no vote): InstructionFeatures, or for selectors that read
        pooled text only, the pooled embeddings [T, text_width]. prompts: [N, P, prompt_width]
        each plugin's Fp max-pooled over tokens (`pooled_prompts`). tasks: the plugins' tasks,
        which the memory needs to add its vote to the right candidates. null: the stand-in null
        prompt for a selector without a learned one (the reference's: the pooled embedding of
        " "; by default read by `encoder`)."""
        texts = None
        if isinstance(text, torch.Tensor):
            if self.reader is not None:
                raise ValueError("this selector reads the instruction's token states: give its InstructionFeatures "
                                 "(text_encoder.features([...])) or the text, not only the pooled embedding")
            text = InstructionFeatures(text, text[:, None], torch.ones(text.shape[0], 1, dtype=torch.bool))
        elif not isinstance(text, InstructionFeatures):
            if encoder is None:
                raise ValueError("scoring written instructions needs the text encoder the selector reads")
            texts = list(text)
            text = encoder.features(texts, self.normalizer_for(encoder))
        if text.pooled.shape[-1] != self.text_width:
            raise PluginMismatchError(
                f"the text encoder gives {text.pooled.shape[-1]}-wide embeddings, the Plugin-Selector reads "
                f"{self.text_width}-wide ones (the reference's: SD 1.x CLIP-L, 768)"
            )
        if self.null_prompt is not None:
            null = self.null_prompt
        elif null is None:
            if encoder is None:
                raise ValueError(f"this selector has no learned null candidate: give the {NULL_TEXT!r} text embedding")
            null = encoder.encode([NULL_TEXT])[0]
        scores = self._scores(prompts, text, null)
        if texts is not None and self.memory is not None:
            if tasks is None or len(tasks) != prompts.shape[1]:
                raise ValueError("this Plugin-Selector has an instruction memory: give the task of each visual prompt")
            vote = self.memory.adjustment(encoder, texts, memory_columns(self.memory.tasks, tasks), self.normalizer_for(encoder))
            scores = scores + vote[:, None].to(scores)
        return scores

    def _scores(self, prompts: torch.Tensor, text: InstructionFeatures, null: torch.Tensor) -> torch.Tensor:
        """The learned scores [T, N, P + 1]: the paper's scaled cosine, or the reader's."""
        weight = self.proj_v.weight  # inputs follow its device and dtype
        plugins = F.normalize(self.proj_v(prompts.to(weight)), dim=-1, eps=0.0)
        null = F.normalize(self.proj_v(null.to(weight).reshape(-1)), dim=-1, eps=0.0)
        candidates = torch.cat([plugins, null.expand(plugins.shape[0], 1, -1)], dim=1)  # [N, P + 1, E]
        scale = self.logit_scale.exp()
        if self.reader is None:
            query = F.normalize(self.proj_t(text.pooled.to(weight)), dim=-1, eps=0.0)
            return scale * torch.einsum("be,nce->bnc", query, candidates)
        # q = proj_t(sum_l a_l x_l) = sum_l a_l proj_t(x_l) (the weights sum to 1): the tokens are
        # projected once, and cos(q, v) needs only q.v and |q|^2 = a^T (P P^T) a.
        tokens = text.tokens.to(weight)
        weights = self.reader(candidates, tokens, text.mask.to(weight.device))  # [B, N, C, L]
        projected = self.proj_t(tokens)  # [B, L, E]
        dot = torch.einsum("bncl,ble,nce->bnc", weights, projected, candidates)
        gram = torch.einsum("ble,bme->blm", projected, projected)
        norm = torch.einsum("bncl,blm,bncm->bnc", weights, gram, weights).clamp_min(0).sqrt()
        return scale * dot / norm

    def misfit(self, plugin, clip_width: int | None = None) -> str | None:
        """Why this plugin cannot be scored by this selector (or with this CLIP vision width), or None."""
        if plugin.config.context_width != self.prompt_width:
            return f"its visual prompt is {plugin.config.context_width} wide, this selector reads {self.prompt_width}-wide ones"
        if clip_width is not None and plugin.config.clip_width != clip_width:
            return f"it reads CLIP vision width {plugin.config.clip_width}, the CLIP vision model gives {clip_width}"
        return None

    def metadata(self) -> dict:
        """What its file records beside the weights."""
        return {"tasks": list(self.tasks), "text_encoder": dict(self.text_encoder), "lexicon": dict(self.lexicon),
                "info": dict(self.info)}


def pooled_prompts(plugins: Sequence, clip_tokens: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """[images, plugins, width]: each plugin's Fp, max-pooled over tokens (all the selector
    reads of Fp), for the images whose CLIP vision tokens `clip_tokens(layer)` gives (called
    once per distinct layer)."""
    tokens = {}
    columns = []
    with torch.no_grad():
        for plugin in plugins:
            layer = plugin.info.clip_layer
            if layer not in tokens:
                tokens[layer] = clip_tokens(layer)
            weight = next(plugin.parameters())
            columns.append(plugin.visual_prompt(tokens[layer].to(weight.device, weight.dtype)).float().amax(dim=1).cpu())
    return torch.stack(columns, dim=1)


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
    selected: list[str]  # plugins to run, in candidate order (the run order); empty = leave the image as it is

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
        """The scores, one a line ('*': selected), the null candidate's as '(no plugin)', and what they mean."""
        marks = []
        for task, score in zip(self.tasks, self.scores):
            marks.append(f"{'*' if task in self.selected else ' '} {task:<12} {score:8.3f}")
        marks.append(f"  {NO_PLUGIN:<12} {self.null_score:8.3f}")
        chosen = ", then ".join(self.selected) if self.selected else "nothing (image left unchanged)"
        legend = (f"(* scores above the threshold {self.threshold:g} are selected; {NO_PLUGIN}: how much the instruction "
                  "asks for none of these plugins)")
        return "\n".join(marks + [f"selected: {chosen}", legend])


def select(selector: PluginSelector, encoder, instruction: str, plugins: Sequence,
           clip_tokens: Callable[[int], torch.Tensor], threshold: float = 0.0, clip_width: int | None = None) -> list[Selection]:
    """The selection for each image (whose CLIP tokens `clip_tokens(layer)` gives): the
    command line's and the node's one policy, per image. Plugins the selector (or the CLIP
    vision model, of `clip_width`) cannot read are left out, each with a warning. The candidates, and
    so each selection, are in the order the plugins run (models.run_order: the reference's task order)."""
    from ..models.config import run_order

    if problem := text_problem("the instruction", instruction, multiline=True):
        raise PluginError(problem)
    usable = []
    for plugin in plugins:
        why = selector.misfit(plugin, clip_width)
        if why:
            log.warning("Plugin-Selector: '%s' left out: %s", plugin.task, why)
        else:
            usable.append(plugin)
    if not usable:
        raise PluginMismatchError(f"none of the plugins fits this Plugin-Selector ({', '.join(p.task for p in plugins) or 'none given'})")
    usable = run_order(usable)
    tasks = [p.task for p in usable]
    prompts = pooled_prompts(usable, clip_tokens)
    with torch.no_grad():
        scores = selector.score([instruction], prompts, encoder=encoder, tasks=tasks)[0]
    return [Selection.from_scores(tasks, row, threshold) for row in scores]
