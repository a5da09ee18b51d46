"""The selector's memory of its training instructions: a retrieval vote beside the learned score.

The learned reader (model.py) keys on the words its training instructions use; a sentence
model's embedding space already places "everything is soft and fuzzy" next to "the photo is
blurry". The memory keeps every training request (single-task and unrelated ones) as its
pooled embedding with the candidate it wants. A new instruction is split into clauses ("remove
the fog, then add a cat" -> "remove the fog", "add a cat", and the whole text); each clause's
nearest remembered requests vote (softmax of their cosines), and a candidate gets the most any
clause gives it. The selector's score for a candidate becomes

    learned score + weight * (vote - 1/2)

so a unanimous vote moves it by weight / 2 either way and a split vote leaves it to the reader.
Tasks the memory has never seen (a plugin added without retraining) get no vote. What it adds
is measured by `benchmarks/bench_selector.py --ablation` (the README's ablation table).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CLAUSE_BREAK = re.compile(r"[,;&!?]|\.(?:\s|$)|\b(?:and|then|also|plus|but)\b", re.IGNORECASE)


def clauses(text: str) -> list[str]:
    """The whole instruction, then its clauses (the pieces between commas, "and", "then", ...)."""
    parts = [part.strip() for part in _CLAUSE_BREAK.split(text)]
    return [text] + [part for part in parts if part and part != text]


class InstructionMemory(nn.Module):
    """embeddings [M, W]: unit pooled embeddings of the remembered requests (normalised text);
    wanted [M, C]: the candidates each wants, `tasks` in order and the null last."""

    def __init__(self, embeddings: torch.Tensor, wanted: torch.Tensor, tasks: Sequence[str], neighbours: int = 20,
                 temperature: float = 0.05, weight: float = 8.0):
        super().__init__()
        if embeddings.ndim != 2 or wanted.ndim != 2 or embeddings.shape[0] != wanted.shape[0] or not len(embeddings):
            raise ValueError(f"memory embeddings {tuple(embeddings.shape)} and wanted {tuple(wanted.shape)} do not pair up")
        if wanted.shape[1] != len(tasks) + 1:
            raise ValueError(f"the memory has {wanted.shape[1]} candidate columns for {len(tasks)} tasks and the null")
        self.tasks = list(tasks)
        self.register_buffer("embeddings", F.normalize(embeddings.float(), dim=-1))
        self.register_buffer("wanted", wanted.float())
        # Stored with the weights so a file is self-describing (chosen on dev folds, see above).
        self.register_buffer("settings", torch.tensor([neighbours, temperature, weight], dtype=torch.float32))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], tasks: Sequence[str]) -> "InstructionMemory":
        neighbours, temperature, weight = state["settings"].tolist()
        memory = cls(state["embeddings"], state["wanted"], tasks, int(neighbours), temperature, weight)
        memory.embeddings.copy_(state["embeddings"].float())  # stored unit-length: normalising again moves them by ulps
        return memory

    @torch.no_grad()
    def votes(self, text_encoder, texts: Sequence[str], normalizer=None) -> torch.Tensor:
        """[T, C] for each instruction: per candidate, the largest share of any clause's neighbours
        wanting it. normalizer: the selector's, applied to each clause before encoding."""
        neighbours, temperature, _ = self.settings.tolist()
        pieces = [clauses(text) for text in texts]
        flat = [clause for piece in pieces for clause in piece]
        queries = F.normalize(text_encoder.encode(flat, normalizer).to(self.embeddings), dim=-1)
        if queries.shape[-1] != self.embeddings.shape[-1]:
            raise ValueError(f"the text encoder gives {queries.shape[-1]}-wide embeddings, the memory holds "
                             f"{self.embeddings.shape[-1]}-wide ones")
        top = (queries @ self.embeddings.T).topk(min(int(neighbours), len(self.embeddings)), dim=1)
        share = top.values.div(temperature).softmax(dim=1)
        per_clause = torch.einsum("qk,qkc->qc", share, self.wanted[top.indices])
        return torch.stack([chunk.amax(0) for chunk in per_clause.split([len(p) for p in pieces])])

    def adjustment(self, text_encoder, texts: Sequence[str], columns: Sequence[int | None] | None = None,
                   normalizer=None) -> torch.Tensor:
        """[T, C'] what to add to the learned scores. columns: for each scored candidate, its
        memory column (None: a task the memory does not know, left alone); default: all of them."""
        weight = float(self.settings[2])
        shift = weight * (self.votes(text_encoder, texts, normalizer) - 0.5)
        if columns is None:
            return shift
        out = shift.new_zeros(len(texts), len(columns))
        for j, column in enumerate(columns):
            if column is not None:
                out[:, j] = shift[:, column]
        return out


def memory_columns(memory_tasks: Sequence[str], tasks: Sequence[str]) -> list[int | None]:
    """Memory columns of these plugins' tasks, then the null's."""
    index = {task: i for i, task in enumerate(memory_tasks)}
    return [index.get(task) for task in tasks] + [len(memory_tasks)]
