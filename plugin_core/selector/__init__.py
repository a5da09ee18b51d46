"""The Plugin-Selector, one contained subsystem (torch only: loading and scoring a selector
file never needs diffusers).

* model.py — `PluginSelector` (the projections, optional reader and learned null, and what its
  file holds: tasks, text encoder, normaliser words, instruction memory) and its one scoring
  entry point `PluginSelector.score`; the selection rule;
* text.py — instruction encoders (SD's CLIP-L, a sentence model); normalizer.py — typo fixes;
* memory.py — the instruction memory's vote; corpus.py — the instruction corpus (data/);
* training.py — training and fine-tuning; metrics.py — the paper's Table 5 metrics;
* files.py — the reference's PromptTunner.pt and the project's .safetensors.
"""

from .corpus import SETS, Instruction, instruction_sets, load_corpus, read_task_instructions
from .files import convert_reference_selector, describe_selector, is_selector_file, load_selector, save_selector
from .memory import InstructionMemory
from .metrics import evaluate, format_table, selector_metrics
from .model import NULL_TASK, PluginSelector, Selection, apply_selection_rule, group_by_selection, pooled_prompts, select
from .text import ClipTextEncoder, InstructionFeatures, SentenceTextEncoder, sentence_encoder, text_encoder_for
from .training import FINE_TUNE_STEPS, SelectorRun, SelectorTrainConfig, train_selector

__all__ = [
    "FINE_TUNE_STEPS", "NULL_TASK", "SETS", "ClipTextEncoder", "Instruction", "InstructionFeatures", "InstructionMemory",
    "PluginSelector", "Selection", "SelectorRun", "SelectorTrainConfig", "SentenceTextEncoder",
    "apply_selection_rule", "convert_reference_selector", "group_by_selection", "describe_selector", "evaluate", "format_table",
    "instruction_sets", "is_selector_file", "load_corpus", "read_task_instructions", "load_selector", "pooled_prompts", "save_selector", "select",
    "selector_metrics", "sentence_encoder", "text_encoder_for", "train_selector",
]
