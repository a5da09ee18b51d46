"""Synthetic degradations and the training pairs made with them (`diffplugin synth`, the
Synthesize Degraded Pairs node, training on clean photos). Torch and PIL only."""

from .degradations import DEGRADATIONS, Degradation, degrade
from .pairs import SyntheticPairs, write_pairs

__all__ = ["DEGRADATIONS", "Degradation", "SyntheticPairs", "degrade", "write_pairs"]
