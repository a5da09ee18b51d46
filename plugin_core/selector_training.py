"""Training and evaluating the Plugin-Selector (the authors never released this part).

Pseudo-labels, as the paper's eq. 6: each plugin's visual prompt Fp for an image,
max-pooled over tokens and projected by proj_v, is the embedding an instruction asking
for that plugin must match (after proj_t). Per sample (an image and an instruction):

* contrastive term (eq. 6): for every wanted candidate, a softmax over it and up to
  `negatives` (7) unwanted candidates, with the learnable temperature exp(logit_scale);
  an instruction that asks for no plugin wants the null candidate;
* boundary term: the selection rule keeps every plugin scoring above θ = 0, which a
  ranking loss alone does not enforce; a logistic loss on each score (wanted > 0, others
  < 0) anchors that boundary. `boundary_weight=0` gives the pure eq. 6 objective.

The instruction corpus (plugin_core/data/instructions.json) has train and held-out
parts for the eight tasks, multi-task requests and unrelated requests. Requests are
combined, as the paper augments its texts: selectors with an InstructionReader are trained
on instructions joined at the token level (the encoder's token states of two or three
instructions side by side, a new combination every step, nothing more to encode); selectors
that read pooled text only get written combinations. Each instruction also has a copy with a
typo. Several selectors trained from different seeds make a SelectorEnsemble (their mean
score), which is steadier on unseen phrasings than any one of them. The trained selector then
remembers its training requests (selector_memory.InstructionMemory): their nearest neighbours'
vote is added to its scores.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .selector import PluginSelector, SelectorEnsemble, selector_members
from .selector_memory import InstructionMemory, memory_columns
from .selector_metrics import selector_metrics
from .text import InstructionFeatures

CONNECTORS = (" and ", ", and ", ". Also ", ", then ", " & ", "; ", " and also ", ", plus ")
SETS = ("single", "multi", "single+unrelated")
# Zero-tolerance accuracy the paper reports (method.md); its other Table 5 entries were not available here.
PAPER_ZTA = {"single": 0.998, "multi": 0.979, "single+unrelated": 0.779}


@dataclass(frozen=True)
class Instruction:
    text: str
    tasks: tuple[str, ...]  # wanted plugins; empty: an unrelated request (select nothing)


def load_corpus(path: Path | str | None = None) -> dict:
    if path is None:
        return json.loads(resources.files("plugin_core").joinpath("data/instructions.json").read_text())
    return json.loads(Path(path).read_text())


def combine(first: str, second: str, rng: random.Random) -> str:
    """Two requests in one sentence, as people write them."""
    if rng.random() < 0.5:
        first, second = second, first
    first = first.rstrip(" .!?")
    connector = rng.choice(CONNECTORS)
    if connector.startswith(".") and second:
        second = second[0].upper() + second[1:]
    elif second and rng.random() < 0.7:
        second = second[0].lower() + second[1:]
    return first + connector + second


def instruction_sets(corpus: dict, tasks: Sequence[str], split: str, seed: int = 0, extra: dict | None = None) -> dict[str, list[Instruction]]:
    """The labelled instructions of one split for these plugins.

    extra: {task: {"train": [...], "heldout": [...]}} instructions for tasks beyond the
    corpus (a new plugin's own), or more for a task it has (added to its own)."""
    rng = random.Random(seed)
    single_source = dict(corpus["single"])
    for task, lines in (extra or {}).items():
        known = single_source.get(task, {})
        single_source[task] = {split: list(known.get(split, [])) + list(lines.get(split, [])) for split in ("train", "heldout")}
    missing = [t for t in tasks if t not in single_source]
    if missing:
        raise ValueError(f"no instructions for task(s) {', '.join(missing)}: give some (e.g. the plugin's own instructions)")
    single = [Instruction(text, (task,)) for task in tasks for text in single_source[task][split]]
    order = {task: i for i, task in enumerate(tasks)}
    multi = [
        Instruction(item["text"], tuple(sorted(item["tasks"], key=order.get)))
        for item in corpus["multi"][split] if all(t in order for t in item["tasks"])
    ]
    unrelated = [Instruction(text, ()) for text in corpus["unrelated"][split]]
    mixed = [Instruction(combine(s.text, rng.choice(unrelated).text, rng), s.tasks) for s in single]
    return {"single": single, "multi": multi, "unrelated": unrelated, "single+unrelated": mixed}


def training_instructions(corpus: dict, tasks: Sequence[str], seed: int = 0, extra: dict | None = None,
                          written_combinations: bool = True) -> list[Instruction]:
    """Train-split instructions (single, multi, unrelated); with `written_combinations` also
    single-task ones combined in writing with unrelated requests and with each other (two or
    three tasks at once), for selectors that cannot be taught with token-level joins."""
    rng = random.Random(seed + 1)
    sets = instruction_sets(corpus, tasks, "train", seed, extra)
    base = [item for name in ("single", "multi", "unrelated") for item in sets[name]]
    if not written_combinations:
        return base
    by_task: dict[str, list[str]] = {}
    for item in sets["single"]:
        by_task.setdefault(item.tasks[0], []).append(item.text)
    order = {task: i for i, task in enumerate(tasks)}
    combined = []
    if len(by_task) > 1:
        for _ in range(4 * len(sets["single"]) // 3):
            chosen = rng.sample(sorted(by_task), k=2 if rng.random() < 0.8 or len(by_task) < 3 else 3)
            text = rng.choice(by_task[chosen[0]])
            for task in chosen[1:]:
                text = combine(text, rng.choice(by_task[task]), rng)
            combined.append(Instruction(text, tuple(sorted(chosen, key=order.get))))
    return base + sets["single+unrelated"] + combined


@dataclass
class SelectorTrainConfig:
    steps: int = 600  # per member
    batch_size: int = 32  # instructions per step, each scored against `images_per_step` images' plugins
    negatives: int = 7
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    boundary_weight: float = 1.0
    margin: float = 4.0  # the boundary term wants wanted scores above +margin, others below -margin (chosen on dev folds of the train split)
    typo_copies: int = 1  # training copies of each instruction with a random typo
    token_dropout: float = 0.1  # share of instruction tokens hidden from the reader per step
    joined: float = 0.5  # share of a batch's instructions joined with one or two others (reader selectors)
    join_three: float = 0.15  # of those, the share joined with two others
    images_per_step: int = 8
    members: int = 3  # selectors trained from seeds seed, seed + 1, ...; more than one make an ensemble
    ema: float = 0.99  # each member is this exponential average of its weights over the steps (0: the last)
    # When fine-tuning for a new task: how strongly the old tasks' scores are held to the
    # starting selector's. Off by default: rehearsing the old tasks' training instructions
    # (always done) kept them better than this term did (benchmarks/bench_selector.py).
    keep_weight: float = 0.0
    # The instruction memory's vote moves a score by up to memory_weight / 2 (0: no memory).
    memory_weight: float = 8.0
    normalize: bool = True  # fix typos against the training words before encoding (text.Normalizer)
    token_joins: bool = True  # reader selectors: join instructions at the token level (else: written combinations)
    seed: int = 0


def with_typos(instructions: Sequence[Instruction], copies: int, seed: int) -> list[Instruction]:
    """Copies of each instruction with one word mistyped (swap, drop, insert or replace a letter)."""
    rng = random.Random(seed + 2)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for item in instructions:
        for _ in range(copies):
            words = item.text.split()
            candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
            if not candidates:
                continue
            k = rng.choice(candidates)
            word, i = words[k], rng.randrange(len(words[k]) - 1)
            edit = rng.random()
            if edit < 0.35:
                word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            elif edit < 0.6:
                word = word[:i] + word[i + 1 :]
            elif edit < 0.8:
                word = word[:i] + rng.choice(letters) + word[i:]
            else:
                word = word[:i] + rng.choice(letters) + word[i + 1 :]
            words[k] = word
            out.append(Instruction(" ".join(words), item.tasks))
    return out


# Fine-tuning a trained selector for a new task (the documented path; measured in
# benchmarks/bench_selector.py): the new task's instructions plus all the old ones.
NEW_TASK_SETTINGS = dict(steps=400, learning_rate=1e-3)


class InstructionBank:
    """Encoded training instructions and the candidates each one wants (plugins, null last)."""

    def __init__(self, instructions: Sequence[Instruction], tasks: Sequence[str], text_encoder):
        index = {task: i for i, task in enumerate(tasks)}
        self.instructions = list(instructions)
        self.features = text_encoder.features([i.text for i in self.instructions])
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
    """Trains one PluginSelector on pooled plugin prompts and encoded instructions.

    prompts: [images, tasks, prompt_width] each plugin's Fp for each training image,
    max-pooled over tokens (all the selector reads of Fp).
    """

    def __init__(self, selector: PluginSelector, text_encoder, prompts: torch.Tensor, tasks: Sequence[str],
                 instructions: Sequence[Instruction] | InstructionBank, config: SelectorTrainConfig,
                 keep_tasks: Sequence[str] = (), seed: int | None = None):
        """instructions: a bank already encoded (shared by the members of an ensemble) or the
        instructions (then typo copies are added and all are encoded); keep_tasks: tasks the
        selector already knows; their scores (and the null's) are held to the starting
        selector's, so adding a task does not unlearn the others."""
        if prompts.shape[1] != len(tasks):
            raise ValueError(f"{prompts.shape[1]} prompt columns for {len(tasks)} tasks")
        self.selector, self.text_encoder, self.config = selector, text_encoder, config
        self.prompts = prompts.float()
        self.tasks = list(tasks)
        if not isinstance(instructions, InstructionBank):
            instructions = list(instructions) + with_typos(instructions, config.typo_copies, config.seed)
            instructions = InstructionBank(instructions, self.tasks, text_encoder)
        self.bank = instructions
        if selector.null_prompt is None:
            ensure_learned_null(selector, text_encoder)
        self.optimizer = torch.optim.AdamW(selector.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
        self.step = 0
        self.teacher, self.keep_columns = None, None
        if keep_tasks and config.keep_weight:
            self.teacher = copy.deepcopy(selector).eval().requires_grad_(False)
            self.keep_columns = torch.tensor([self.tasks.index(t) for t in keep_tasks] + [len(self.tasks)])

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
        text, wanted = self.bank.batch(groups)
        if self.selector.reader is not None and self.config.token_dropout:
            keep = torch.rand(text.mask.shape, generator=g) >= self.config.token_dropout
            keep[:, 0] = True  # never an empty instruction
            text = InstructionFeatures(text.pooled, text.tokens, text.mask & keep)
        return text, wanted

    def scores(self, image_rows: torch.Tensor, text: InstructionFeatures, selector: PluginSelector | None = None) -> torch.Tensor:
        """[batch, images, tasks + 1] scores (null last) of each instruction for each image's plugins."""
        selector = selector or self.selector
        return selector.score_grid(selector.candidates(self.prompts[image_rows]), text)

    def loss(self, image_rows: torch.Tensor, text: InstructionFeatures, wanted: torch.Tensor) -> torch.Tensor:
        grid = self.scores(image_rows, text)
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
        if self.teacher is not None:  # keep the known tasks' cosines where they were
            with torch.no_grad():
                old = self.scores(image_rows, text, self.teacher)[..., self.keep_columns] / self.teacher.logit_scale.exp()
            new = grid[..., self.keep_columns] / self.selector.logit_scale.exp()
            loss = loss + self.config.keep_weight * F.mse_loss(new, old) * 100
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


def ensure_learned_null(selector, text_encoder) -> None:
    """Give a reference-style selector a learnable null prompt, starting from the " " embedding
    it used so far when the widths allow (so nothing changes until training moves it)."""
    for member in selector_members(selector):
        if member.null_prompt is not None:
            continue
        start = torch.zeros(member.prompt_width)
        if text_encoder.width == member.prompt_width:
            start = text_encoder.encode([" "])[0].float()
        member.null_prompt = torch.nn.Parameter(start.clone().to(member.proj_v.weight))


def build_memory(text_encoder, instructions: Sequence[Instruction], tasks: Sequence[str], weight: float) -> InstructionMemory:
    """The memory of these requests (single-task and unrelated ones: a written multi-task
    request is remembered through its clauses' own neighbours instead)."""
    kept = [item for item in instructions if len(item.tasks) <= 1]
    wanted = torch.zeros(len(kept), len(tasks) + 1)
    for row, item in enumerate(kept):
        wanted[row, tasks.index(item.tasks[0]) if item.tasks else len(tasks)] = 1
    return InstructionMemory(text_encoder.encode([item.text for item in kept]), wanted, tasks, weight=weight)


@torch.no_grad()
def selector_scores(selector, text_encoder, prompts: torch.Tensor, items: Sequence[Instruction],
                    tasks: Sequence[str] | None = None, chunk: int = 128) -> torch.Tensor:
    """[instructions, images, tasks] plugin scores for every (instruction, image) pair; tasks:
    the prompts' tasks (needed to add the vote of a selector's instruction memory)."""
    selector.eval()
    dtype = selector.proj_v.weight.dtype
    prompts = prompts.to(dtype)
    if selector.null_prompt is not None:
        candidates = selector.candidates(prompts)[:, :-1]
    else:
        candidates = selector.embed_prompts(prompts.unsqueeze(-2))
    out = []
    for start in range(0, len(items), chunk):
        texts = [i.text for i in items[start : start + chunk]]
        scores = selector.score_grid(candidates, text_encoder.features(texts)).float()
        memory = getattr(selector, "memory", None)
        if memory is not None:
            if tasks is None:
                raise ValueError("this Plugin-Selector has an instruction memory: give the prompts' tasks")
            scores = scores + memory.adjustment(text_encoder, texts, memory_columns(memory.tasks, tasks)[:-1])[:, None]
        out.append(scores)
    return torch.cat(out)


def evaluate(selector, text_encoder, prompts: torch.Tensor, tasks: Sequence[str],
             sets: dict[str, list[Instruction]], threshold: float = 0.0) -> dict[str, dict[str, float]]:
    """Metrics per instruction set, over every (image, instruction) pair."""
    index = {task: i for i, task in enumerate(tasks)}
    results = {}
    for name, items in sets.items():
        if not items:
            continue
        scores = selector_scores(selector, text_encoder, prompts, items, tasks)  # [n, images, tasks]
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


def pooled_prompts(plugins: Sequence, clip_tokens: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """[images, plugins, width]: each plugin's Fp, max-pooled over tokens, for the images whose
    CLIP tokens `clip_tokens(layer)` gives (once per distinct CLIP layer)."""
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


@dataclass
class SelectorRun:
    selector: PluginSelector | SelectorEnsemble
    lexicon: dict[str, int]
    tasks: list[str]
    results: dict[str, dict[str, float]]  # held-out metrics per instruction set
    losses: list[float]  # every member's, one after the other

    def save(self, path: Path | str, text_encoder, info: dict) -> Path:
        """The selector's .safetensors: its tasks (the memory's columns), the encoder it reads,
        its normalizer's words, and `info` with the held-out results added."""
        from .checkpoints import save_selector

        return save_selector(self.selector, Path(path), tasks=self.tasks, text_encoder=text_encoder.describe(),
                             lexicon=self.lexicon, extra={**info, "held_out": self.results})


def train_selector(
    plugins: Sequence,
    clip_tokens: Callable[[int], torch.Tensor],
    text_encoder,
    config: SelectorTrainConfig,
    *,
    init: PluginSelector | SelectorEnsemble | None = None,
    corpus: dict | None = None,
    extra_instructions: dict | None = None,
    reader_width: int = 256,
    embed_width: int = 256,
    progress=None,
    should_stop=None,
) -> SelectorRun:
    """Train (or fine-tune `init`) a selector for these plugins and measure it on held-out instructions.

    clip_tokens(layer): CLIP vision tokens of the training images; extra_instructions:
    {task: {"train": [...], "heldout": [...]}} for tasks the corpus lacks; plugins that
    carry their own instructions (PluginInfo.instructions) supply them too. A new selector
    has `config.members` members (an ensemble when more than one); fine-tuning keeps the
    members `init` has. progress(done, total, loss) counts the steps of all members.
    """
    from .text import Normalizer

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
    text_encoder.normalizer = Normalizer.from_texts(
        [i.text for name in ("single", "multi", "unrelated") for i in base[name]], text_encoder.vocabulary()
    ) if config.normalize else None
    if init is None:
        members = []
        for m in range(max(1, config.members)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + m)
                members.append(PluginSelector(prompts.shape[-1], text_encoder.width, embed_width=embed_width,
                                              learned_null=True, reader_width=reader_width))
    else:
        members = selector_members(init)
        if members[0].text_width != text_encoder.width:
            raise ValueError(f"the selector reads {members[0].text_width}-wide text, this encoder gives {text_encoder.width}")
    # The tasks `init` already routes: its memory's, or the corpus's (extra lines may add to those).
    known = init.memory.tasks if getattr(init, "memory", None) is not None else list(corpus["single"])
    keep = [t for t in tasks if t in known] if init is not None else []
    joins = members[0].reader is not None and config.token_joins
    if not joins:
        config = dataclasses.replace(config, joined=0.0)
    instructions = training_instructions(corpus, tasks, config.seed, extra, written_combinations=not joins)
    bank = InstructionBank(instructions + with_typos(instructions, config.typo_copies, config.seed), tasks, text_encoder)
    losses = []
    for m, member in enumerate(members):
        if should_stop and should_stop():
            break
        report = None
        if progress:
            report = lambda step, total, loss, m=m: progress(m * config.steps + step, len(members) * config.steps, loss)
        trainer = SelectorTrainer(member, text_encoder, prompts, tasks, bank, config, keep_tasks=keep, seed=config.seed + m)
        losses += trainer.train(progress=report, should_stop=should_stop)
    selector = members[0] if len(members) == 1 else SelectorEnsemble(members).eval()
    selector.memory = build_memory(text_encoder, [i for name in ("single", "unrelated") for i in base[name]], tasks,
                                   config.memory_weight) if config.memory_weight else None
    held = instruction_sets(corpus, tasks, "heldout", 0, extra)  # the same held-out sets whatever the training seed
    results = evaluate(selector, text_encoder, prompts, tasks, {k: held[k] for k in (*SETS, "unrelated")})
    lexicon = dict(text_encoder.normalizer.lexicon) if text_encoder.normalizer is not None else {}
    return SelectorRun(selector, lexicon, tasks, results, losses)
