"""Does single-task routing depend on how the selector reads MiniLM? An ablation on folds.

The shipped selector reads the frozen last-layer token states of all-MiniLM-L6-v2. This
measures, on the same folds of the training split as `bench_selector.py --folds` and with the
shipped training settings (three members, the instruction memory), two other ways to read it:

* `mixed`: the mean of the token states of layers 2, 4 and 6 (frozen);
* `tuned`: each member fine-tunes its own copy of MiniLM's last layer (AdamW at `--tuned-lr`,
  the selector's own parameters at theirs), reading the fifth layer's states through it.

    python benchmarks/bench_selector_encoder.py --folds 0 1 --variants last mixed tuned

Not part of the library: neither way was kept (see the README's selector section).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_selector import FOLDS, fold_corpus, selector_setup  # noqa: E402
from plugin_core.selector import PluginSelector, SelectorEnsemble  # noqa: E402
from plugin_core.selector_training import (  # noqa: E402
    SETS,
    InstructionBank,
    SelectorTrainConfig,
    SelectorTrainer,
    build_memory,
    evaluate,
    instruction_sets,
    pooled_prompts,
    training_instructions,
    with_typos,
)
from plugin_core.text import InstructionFeatures, Normalizer  # noqa: E402
from tiny_models import random_task_plugins  # noqa: E402


class LayerStates:
    """The sentence encoder, with the token states of other layers (their mean); pooled
    embeddings (the memory's) unchanged."""

    def __init__(self, encoder, layers: list[int]):
        self.encoder, self.layers, self.width = encoder, layers, encoder.width
        self.bert, self.tokenizer = encoder.model[0].auto_model, encoder.model[0].tokenizer
        self._cache: dict[str, torch.Tensor] = {}

    normalizer = property(lambda self: self.encoder.normalizer, lambda self, value: setattr(self.encoder, "normalizer", value))

    def vocabulary(self):
        return self.encoder.vocabulary()

    def encode(self, texts):
        return self.encoder.encode(texts)

    @torch.no_grad()
    def features(self, texts) -> InstructionFeatures:
        texts = list(texts)
        read = [self.normalizer(t) if self.normalizer else t for t in texts]
        missing = [t for t in dict.fromkeys(read) if t not in self._cache]
        for start in range(0, len(missing), 128):
            chunk = missing[start : start + 128]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            states = self.bert(**batch, output_hidden_states=True).hidden_states
            mean = torch.stack([states[i] for i in self.layers]).mean(0)
            for row, text in enumerate(chunk):
                self._cache[text] = mean[row, : int(batch.attention_mask[row].sum())].clone()
        pooled = self.encoder.encode(texts)
        return InstructionFeatures.stack([(p, self._cache[t]) for p, t in zip(pooled, read)])


class TunedTopSelector(PluginSelector):
    """A selector that runs its own (trainable) copy of the encoder's last layer on the
    penultimate token states before reading them."""

    def __init__(self, top_layer, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.top = copy.deepcopy(top_layer)

    def _tuned(self, text: InstructionFeatures) -> InstructionFeatures:
        bias = torch.zeros(text.mask.shape).masked_fill(~text.mask, float("-inf"))[:, None, None, :]
        states = self.top(text.tokens, attention_mask=bias)
        states = states[0] if isinstance(states, tuple) else states
        return InstructionFeatures(text.pooled, states * text.mask[..., None], text.mask)

    def score_grid(self, candidates, text):
        return super().score_grid(candidates, self._tuned(text))

    def score_features(self, candidates, text):
        return super().score_features(candidates, self._tuned(text))


def train_variant(variant: str, corpus: dict, plugins, clip_tokens, base_encoder, tuned_lr: float) -> dict[str, float]:
    """train_selector's steps (normaliser, instructions, bank, members, memory, held-out
    metrics), with the variant's reader input."""
    config = SelectorTrainConfig(seed=0)
    encoder = {"last": base_encoder, "mixed": LayerStates(base_encoder, [2, 4, 6]),
               "tuned": LayerStates(base_encoder, [5])}[variant]
    tasks = [p.task for p in plugins]
    prompts = pooled_prompts(plugins, clip_tokens)
    base = instruction_sets(corpus, tasks, "train", config.seed)
    encoder.normalizer = Normalizer.from_texts([i.text for n in ("single", "multi", "unrelated") for i in base[n]],
                                               encoder.vocabulary())
    instructions = training_instructions(corpus, tasks, config.seed, written_combinations=False)
    bank = InstructionBank(instructions + with_typos(instructions, config.typo_copies, config.seed), tasks, encoder)
    members = []
    for m in range(config.members):
        torch.manual_seed(config.seed + m)
        shape = dict(embed_width=256, learned_null=True, reader_width=256)
        if variant == "tuned":
            member = TunedTopSelector(base_encoder.model[0].auto_model.encoder.layer[-1], prompts.shape[-1], encoder.width, **shape)
        else:
            member = PluginSelector(prompts.shape[-1], encoder.width, **shape)
        trainer = SelectorTrainer(member, encoder, prompts, tasks, bank, config, seed=config.seed + m)
        if variant == "tuned":
            top = {id(p) for p in member.top.parameters()}
            trainer.optimizer = torch.optim.AdamW(
                [{"params": [p for p in member.parameters() if id(p) not in top]},
                 {"params": list(member.top.parameters()), "lr": tuned_lr, "weight_decay": 0.0}],
                lr=config.learning_rate, weight_decay=config.weight_decay)
        trainer.train()
        members.append(member)
    selector = SelectorEnsemble(members).eval()
    selector.memory = build_memory(encoder, [i for n in ("single", "unrelated") for i in base[n]], tasks, config.memory_weight)
    held = instruction_sets(corpus, tasks, "heldout", 0)
    results = evaluate(selector, encoder, prompts, tasks, {k: held[k] for k in (*SETS, "unrelated")})
    return {k: results[k]["ZTA"] for k in (*SETS, "unrelated")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1], choices=range(FOLDS))
    parser.add_argument("--variants", nargs="+", default=["last", "mixed", "tuned"], choices=["last", "mixed", "tuned"])
    parser.add_argument("--tuned-lr", type=float, default=3e-5)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "degraded")
    args = parser.parse_args()

    _, clip_tokens, encoder, corpus = selector_setup(args.photos)
    print("| fold | reader input | single ZTA | multi ZTA | single+unrelated ZTA | unrelated only ZTA | seconds |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for fold in args.folds:
        dev = fold_corpus(corpus, fold, encoder)
        for variant in args.variants:
            start = time.perf_counter()
            row = train_variant(variant, dev, random_task_plugins(corpus["tasks"], 100), clip_tokens, encoder, args.tuned_lr)
            seconds = time.perf_counter() - start
            print(f"| {fold} | {variant} | " + " | ".join(f"{v:.3f}" for v in row.values()) + f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
