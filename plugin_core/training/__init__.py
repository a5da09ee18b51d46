"""Training a Task-Plugin: the trainer and its recipe, the frozen base behind a small backend
interface, training pairs (files, folders, images, synthetic degradations), seeding and the
loss curve. Imported lazily: data and degradations need no diffusers."""

from ..lazy import lazy_exports

_EXPORTS = {
    "DiffusersBackend": "backends",
    "TrainingBackend": "backends",
    "Augment": "datasets",
    "DataError": "datasets",
    "PairDataset": "datasets",
    "write_loss_curve": "loss_curve",
    "TrainConfig": "trainer",
    "Trainer": "trainer",
    "TrainingError": "trainer",
    "TrainResult": "trainer",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
