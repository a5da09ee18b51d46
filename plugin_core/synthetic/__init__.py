"""Synthetic degradations (kinds.py names them, degradations.py makes them) and the training
pairs made with them (pairs.py): `diffplugin synth`, the Synthesize Degraded Pairs node, training
on clean photos. Imported lazily: the names need no torch."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .degradations import DEGRADATIONS, Degradation, degrade
    from .kinds import KINDS
    from .pairs import SyntheticPairs, write_pairs

_EXPORTS = {
    "DEGRADATIONS": "degradations",
    "Degradation": "degradations",
    "degrade": "degradations",
    "KINDS": "kinds",
    "SyntheticPairs": "pairs",
    "write_pairs": "pairs",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
