"""Synthetic degradations (kinds.py names them, degradations.py makes them) and the training
pairs made with them (pairs.py): `diffplugin synth`, the Synthesize Degraded Pairs node, training
on clean photos. Imported lazily: the names need no torch."""

from ..lazy import lazy_exports

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
