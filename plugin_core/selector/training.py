"""Training the Plugin-Selector (the authors never released this part).

Pseudo-labels, as the paper's eq. 6: each plugin's visual prompt Fp for an image,
max-pooled over tokens and projected by proj_v, is the embedding an instruction asking
for that plugin must match (after proj_t). Per sample (an image and an instruction):

* contrastive term (eq. 6): for every wanted candidate, a softmax over it and up to
  `negatives` (7) unwanted candidates, with the learnable temperature exp(logit_scale);
  an instruction that asks for no plugin wants the null candidate;
* boundary term: the selection rule keeps every plugin scoring above θ = 0, which a
  ranking loss alone does not enforce; a logistic loss on each score (wanted > 0, others
  < 0) anchors that boundary. `boundary_weight=0` gives the pure eq. 6 objective.

Requests are combined, as the paper augments its texts (corpus.py): a selector with an
InstructionReader is trained on instructions joined at the token level (the encoder's token
states of two or three instructions side by side, a new combination every step, nothing more
to encode); one that reads pooled text only gets written combinations. The weights are an
exponential average over the steps. The trained selector then remembers its training requests
(memory.py): their nearest neighbours' vote is added to its scores. Each of these extras was
kept because removing it cost at least half a ZTA point (`benchmarks/bench_selector.py
--ablation`, the README's table).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import EMBED_WIDTH, READER_WIDTH, SelectorTrainConfig
from .corpus import (
    SETS,
    Instruction,
    instruction_sets,
    load_corpus,
    training_instructions,
)
from .memory import InstructionMemory
from .metrics import evaluate
from .model import NULL_TEXT, PluginSelector, pooled_prompts
from .normalizer import Normalizer
from .text import InstructionFeatures


class InstructionBank:
    """Encoded training instructions and the candidates each one wants (plugins, null last)."""

    def __init__(self, instructions: Sequence[Instruction], tasks: Sequence[str], text_encoder, normalizer=None):
        index = {task: i for i, task in enumerate(tasks)}
        self.instructions = list(instructions)
        self.features = text_encoder.features([i.text for i in self.instructions], normalizer)
        self.lengths = self.features.mask.sum(1).tolist()
        self.wanted = torch.zeros(len(self.instructions), len(tasks) + 1, dtype=torch.bool)
        for row, item in enumerate(self.instructions):
            unknown = [t for t in item.tasks if t not in index]
            if unknown:
                raise ValueError(f"instruction {item.text!r} wants unknown task(s) {unknown}")
            for task in item.tasks:
                self.wanted[row, index[task]] = True
            if not item.tasks:
                self.wanted[row, -1] = True  # the null candidate

    def __len__(self) -> int:
        return len(self.instructions)

    def batch(self, groups: Sequence[Sequence[int]]) -> tuple[InstructionFeatures, torch.Tensor]:
        """One instruction per group: the group's instructions joined at the token level (the
        first one's start token, everyone's words in order, the last one's end token), wanting
        every plugin any of them wants (the null candidate only if none wants a plugin)."""
        features = self.features
        pieces = []
        for group in groups:
            rows = []
            for k, row in enumerate(group):
                start = 0 if k == 0 else 1
                stop = self.lengths[row] - (0 if k == len(group) - 1 else 1)
                rows.append(features.tokens[row, start:stop])
            pieces.append(rows[0] if len(rows) == 1 else torch.cat(rows))
        length = max(p.shape[0] for p in pieces)
        tokens = features.tokens.new_zeros(len(groups), length, features.tokens.shape[-1])
        mask = torch.zeros(len(groups), length, dtype=torch.bool)
        for i, piece in enumerate(pieces):
            tokens[i, : piece.shape[0]] = piece
            mask[i, : piece.shape[0]] = True
        pooled = torch.stack([
            features.pooled[group[0]] if len(group) == 1 else tokens[i, : pieces[i].shape[0]].mean(0)
            for i, group in enumerate(groups)
        ])  # only read by selectors without a reader, which are never given joined instructions
        wanted = torch.stack([self.wanted[list(group)].any(0) for group in groups])
        wanted[:, -1] &= ~wanted[:, :-1].any(1)
        return InstructionFeatures(pooled, tokens, mask), wanted


class SelectorTrainer:
    """Trains a PluginSelector on pooled plugin prompts and an encoded instruction bank.

    prompts: [images, tasks, prompt_width] each plugin's Fp for each training image,
    max-pooled over tokens (all the selector reads of Fp).
    """

    def __init__(self, selector: PluginSelector, text_encoder, prompts: torch.Tensor, bank: InstructionBank,
                 config: SelectorTrainConfig):
        if prompts.shape[1] != bank.wanted.shape[1] - 1:
            raise ValueError(f"{prompts.shape[1]} prompt columns for {bank.wanted.shape[1] - 1} tasks")
        self.selector, self.config = selector, config
        self.prompts = prompts.float()
        self.bank = bank
        if selector.null_prompt is None:
            ensure_learned_null(selector, text_encoder)
        self.optimizer = torch.optim.AdamW(selector.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    def sample(self, batch: int) -> tuple[InstructionFeatures, torch.Tensor]:
        """A batch of training instructions; with a reader, some are joined with one or two others."""
        g, n = self.generator, len(self.bank)
        rows = torch.randint(0, n, (batch,), generator=g).tolist()
        groups = [[row] for row in rows]
        if self.selector.reader is not None and self.config.joined:
            join = (torch.rand(batch, generator=g) < self.config.joined).tolist()
            three = (torch.rand(batch, generator=g) < self.config.join_three).tolist()
            for i in range(batch):
                if join[i]:
                    groups[i] += torch.randint(0, n, (2 if three[i] else 1,), generator=g).tolist()
                    order = torch.randperm(len(groups[i]), generator=g).tolist()
                    groups[i] = [groups[i][k] for k in order]
        return self.bank.batch(groups)

    def loss(self, image_rows: torch.Tensor, text: InstructionFeatures, wanted: torch.Tensor) -> torch.Tensor:
        grid = self.selector.score(text, self.prompts[image_rows])  # [batch, images, tasks + 1]
        scores = grid.reshape(-1, grid.shape[-1])
        wanted_grid = wanted[:, None].expand(-1, grid.shape[1], -1)
        wanted = wanted_grid.reshape(scores.shape)
        # Eq. 6 for every wanted candidate against up to `negatives` unwanted ones:
        # -log(e^s_pos / (e^s_pos + sum e^s_neg)) = softplus(logsumexp(s_neg) - s_pos).
        shuffle = torch.rand(scores.shape, generator=self.generator)
        rank = torch.where(wanted, torch.full_like(shuffle, 2.0), shuffle).argsort(dim=1).argsort(dim=1)
        negative = ~wanted & (rank < self.config.negatives)
        lse = torch.logsumexp(scores.masked_fill(~negative, float("-inf")), dim=1, keepdim=True)
        contrastive = (F.softplus(lse - scores) * wanted).sum() / wanted.sum()
        loss = contrastive
        if self.config.boundary_weight:
            target = wanted.float()
            margin = self.config.margin * (2 * target - 1)
            loss = loss + self.config.boundary_weight * F.binary_cross_entropy_with_logits(scores - margin, target)
        return loss

    def train(self, progress: Callable[[int, int, float], None] | None = None, should_stop=None) -> list[float]:
        self.selector.train()
        losses = []
        average = {k: v.detach().clone() for k, v in self.selector.state_dict().items()} if self.config.ema else None
        images = self.prompts.shape[0]
        while self.step < self.config.steps:
            if should_stop and should_stop():
                break
            text, wanted = self.sample(self.config.batch_size)
            image_rows = torch.randperm(images, generator=self.generator)[: self.config.images_per_step]
            loss = self.loss(image_rows, text, wanted)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            losses.append(loss.item())
            if average is not None:  # averaging the noisy late iterates steadies the decision boundary
                with torch.no_grad():
                    for key, value in self.selector.state_dict().items():
                        average[key].lerp_(value, 1 - self.config.ema)
            if progress:
                progress(self.step, self.config.steps, losses[-1])
        if average is not None and self.step:
            self.selector.load_state_dict(average)
        self.selector.eval()
        return losses


def ensure_learned_null(selector: PluginSelector, text_encoder) -> None:
    """Give a reference-style selector a learnable null prompt, starting from the " " embedding
    it used so far when the widths allow (so nothing changes until training moves it)."""
    if selector.null_prompt is not None:
        return
    start = torch.zeros(selector.prompt_width)
    if text_encoder.width == selector.prompt_width:
        start = text_encoder.encode([NULL_TEXT])[0].float()
    selector.null_prompt = torch.nn.Parameter(start.clone().to(selector.proj_v.weight))


def build_memory(text_encoder, instructions: Sequence[Instruction], tasks: Sequence[str], weight: float,
                 normalizer=None) -> InstructionMemory:
    """The memory of these requests (single-task and unrelated ones: a written multi-task
    request is remembered through its clauses' own neighbours instead)."""
    kept = [item for item in instructions if len(item.tasks) <= 1]
    wanted = torch.zeros(len(kept), len(tasks) + 1)
    for row, item in enumerate(kept):
        wanted[row, tasks.index(item.tasks[0]) if item.tasks else len(tasks)] = 1
    return InstructionMemory(text_encoder.encode([item.text for item in kept], normalizer), wanted, tasks, weight=weight)


@dataclass
class SelectorRun:
    selector: PluginSelector  # with its tasks, text encoder, normaliser words, memory and held-out results
    results: dict[str, dict[str, float]]  # held-out metrics per instruction set
    losses: list[float]  # per step


def _starting_selector(init: PluginSelector | None, prompt_width: int, text_width: int, seed: int, reader_width: int,
                       embed_width: int) -> PluginSelector:
    """A new selector (seeded), or `init` to fine-tune (its memory rebuilt afterwards for the new tasks)."""
    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return PluginSelector(prompt_width, text_width, embed_width=embed_width, learned_null=True, reader_width=reader_width)
    if init.text_width != text_width:
        raise ValueError(f"the selector reads {init.text_width}-wide text, this encoder gives {text_width}")
    init.memory = None
    return init


def train_selector(
    plugins: Sequence,
    clip_tokens: Callable[[int], torch.Tensor],
    text_encoder,
    config: SelectorTrainConfig,
    *,
    init: PluginSelector | None = None,
    corpus: dict | None = None,
    extra_instructions: dict | None = None,
    reader_width: int = READER_WIDTH,
    embed_width: int = EMBED_WIDTH,
    progress=None,
    should_stop=None,
) -> SelectorRun:
    """Train (or fine-tune `init`, in place) a selector for these plugins and measure it on
    held-out instructions.

    clip_tokens(layer): CLIP vision tokens of the training images; extra_instructions:
    {task: {"train": [...], "heldout": [...]}} for tasks the corpus lacks; plugins that
    carry their own instructions (PluginInfo.instructions) supply them too.
    progress(done, total, loss) after each step.
    """
    corpus = corpus or load_corpus()
    tasks = [p.task for p in plugins]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"plugins with the same task: {tasks}")
    extra = {}
    for plugin in plugins:
        if plugin.task not in corpus["single"] and plugin.info.instructions:
            extra[plugin.task] = {"train": list(plugin.info.instructions), "heldout": []}
    extra.update(extra_instructions or {})
    prompts = pooled_prompts(plugins, clip_tokens)
    base = instruction_sets(corpus, tasks, "train", config.seed, extra)
    normalizer = None
    if config.normalize:
        normalizer = Normalizer.from_texts([i.text for name in ("single", "multi", "unrelated") for i in base[name]],
                                           text_encoder.vocabulary())
    selector = _starting_selector(init, prompts.shape[-1], text_encoder.width, config.seed, reader_width, embed_width)
    joins = selector.reader is not None and config.token_joins
    if not joins:
        config = dataclasses.replace(config, joined=0.0)
    instructions = training_instructions(corpus, tasks, config.seed, extra, written_combinations=not joins)
    bank = InstructionBank(instructions, tasks, text_encoder, normalizer)
    losses = SelectorTrainer(selector, text_encoder, prompts, bank, config).train(progress=progress, should_stop=should_stop)
    selector.tasks, selector.text_encoder = tasks, text_encoder.describe()
    selector.lexicon = normalizer.lexicon if normalizer is not None else {}
    if config.memory_weight:
        selector.memory = build_memory(text_encoder, [i for name in ("single", "unrelated") for i in base[name]], tasks,
                                       config.memory_weight, normalizer)
    held = instruction_sets(corpus, tasks, "heldout", 0, extra)  # the same held-out sets whatever the training seed
    results = evaluate(selector, text_encoder, prompts, tasks, {k: held[k] for k in (*SETS, "unrelated")})
    selector.info = {"steps": config.steps, "seed": config.seed, "fine_tuned": init is not None, "held_out": results}
    return SelectorRun(selector, results, losses)
