"""How the Plugin-Selector is trained: its settings and their command-line arguments (pure
Python: the command line parses without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Option

SELECT_THRESHOLD = 0.0  # θ: plugins scoring above it are selected (the reference's)
# The reference's rule counts a negative score as 0 (apply_selection_rule), so a θ below 0 would
# select every plugin: θ starts at 0.
SELECT_THRESHOLD_MIN = 0.0
TEXT_ENCODERS = ("clip", "minilm")  # SD's CLIP-L (the reference's), or the offline sentence model
READER_WIDTH, EMBED_WIDTH = 256, 256  # the selectors trained here (the reference's: no reader, 768)


@dataclass
class SelectorTrainConfig:
    steps: int = 600
    batch_size: int = 32  # instructions per step, each scored against `images_per_step` images' plugins
    negatives: int = 7
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    boundary_weight: float = 1.0
    margin: float = 4.0  # the boundary term wants wanted scores above +margin, others below -margin (chosen on dev folds of the train split)
    joined: float = 0.5  # share of a batch's instructions joined with one or two others (reader selectors)
    join_three: float = 0.15  # of those, the share joined with two others
    images_per_step: int = 8
    ema: float = 0.99  # the weights are this exponential average of theirs over the steps (0: the last)
    # The instruction memory's vote moves a score by up to memory_weight / 2 (0: no memory).
    memory_weight: float = 8.0
    normalize: bool = True  # fix typos against the training words before encoding (normalizer.py)
    token_joins: bool = True  # with a reader: join instructions at the token level (else: written combinations)
    seed: int = 0


# Fine-tuning a trained selector for a new task (the documented path, measured in
# benchmarks/bench_selector.py): fewer steps, the new task's instructions plus all the old ones.
FINE_TUNE_STEPS = 400


TRAIN_OPTIONS = {
    "batch_size": Option("--batch-size", "instructions per step", low=1),
    "learning_rate": Option("--lr", "AdamW learning rate", kind=float, low=0.0, high=1.0, low_open=True),
    "negatives": Option("--negatives", "unwanted candidates per wanted one in eq. 6", low=1),
    "memory_weight": Option("--memory-weight", "weight of the instruction memory: a unanimous vote moves a score by half "
                            "of it (0: no memory)", kind=float, low=0.0),
    "seed": Option("--seed", "seeds the initialisation and the batches", low=0),
}
