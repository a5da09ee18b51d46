"""The Plugin-Selector, one contained subsystem (torch only: loading and scoring a selector
file never needs diffusers).

* model.py — `PluginSelector` (the projections, optional reader and learned null, and what its
  file holds: tasks, text encoder, normaliser words, instruction memory) and its one scoring
  entry point `PluginSelector.score`; the selection rule;
* text.py — instruction encoders (SD's CLIP-L, a sentence model); normalizer.py — typo fixes;
* memory.py — the instruction memory's vote; corpus.py — the instruction corpus (data/);
* config.py — how it is trained; training.py — training and fine-tuning; metrics.py — the
  paper's Table 5 metrics;
* files.py — the reference's PromptTunner.pt and the project's .safetensors.

Imported lazily: the training settings need no torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .config import (
        EMBED_WIDTH,
        FINE_TUNE_STEPS,
        READER_WIDTH,
        SELECT_THRESHOLD,
        SELECT_THRESHOLD_MIN,
        TEXT_ENCODERS,
        TRAIN_OPTIONS,
        SelectorTrainConfig,
    )
    from .corpus import SETS, Instruction, instruction_sets, load_corpus, read_task_instructions
    from .files import convert_reference_selector, describe_selector, is_selector_file, load_selector, save_selector
    from .memory import InstructionMemory
    from .metrics import evaluate, format_table, selector_metrics
    from .model import NULL_TASK, PluginSelector, Selection, apply_selection_rule, pooled_prompts, select
    from .text import (
        CLIP_TEXT_ENCODER,
        ClipTextEncoder,
        InstructionFeatures,
        RememberingEncoder,
        SentenceTextEncoder,
        clip_words,
        sentence_encoder,
        text_encoder_for,
    )
    from .training import SelectorRun, train_selector

_EXPORTS = {
    "EMBED_WIDTH": "config",
    "FINE_TUNE_STEPS": "config",
    "READER_WIDTH": "config",
    "SELECT_THRESHOLD": "config",
    "SELECT_THRESHOLD_MIN": "config",
    "TEXT_ENCODERS": "config",
    "TRAIN_OPTIONS": "config",
    "SelectorTrainConfig": "config",
    "SETS": "corpus",
    "Instruction": "corpus",
    "instruction_sets": "corpus",
    "load_corpus": "corpus",
    "read_task_instructions": "corpus",
    "convert_reference_selector": "files",
    "describe_selector": "files",
    "is_selector_file": "files",
    "load_selector": "files",
    "save_selector": "files",
    "InstructionMemory": "memory",
    "evaluate": "metrics",
    "format_table": "metrics",
    "selector_metrics": "metrics",
    "NULL_TASK": "model",
    "PluginSelector": "model",
    "Selection": "model",
    "apply_selection_rule": "model",
    "pooled_prompts": "model",
    "select": "model",
    "CLIP_TEXT_ENCODER": "text",
    "ClipTextEncoder": "text",
    "InstructionFeatures": "text",
    "RememberingEncoder": "text",
    "SentenceTextEncoder": "text",
    "clip_words": "text",
    "sentence_encoder": "text",
    "text_encoder_for": "text",
    "SelectorRun": "training",
    "train_selector": "training",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
