"""Training a Task-Plugin: the config (config.py), the run folder (run_folder.py), the log (log.py),
the step loop (trainer.py) with its encodings, the frozen base behind a small backend interface
(backend.py: `TrainingBackend`; `DiffusersTrainingBackend` on diffusers models), training pairs
(datasets.py), which sample goes where (samples.py), the Accelerate engine (distributed.py) and
the loss curve. Imported lazily: data and config need no diffusers."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# ruff: noqa: F401 - the names of _EXPORTS, imported for editors and static tools only (never run: the
# imports stay lazy); tests/test_imports.py checks that both name the same names from the same modules.
if TYPE_CHECKING:
    from .backend import DiffusersTrainingBackend, TrainingBackend
    from .config import MIXED_PRECISION, REPORT_TO, TrainConfig
    from .datasets import Augment, DataError, PairDataset
    from .distributed import check_report_to, make_accelerator
    from .loss_curve import write_loss_curve
    from .run_folder import RunFolder, TrainingError
    from .trainer import Trainer, TrainResult

_EXPORTS = {
    "DiffusersTrainingBackend": "backend",
    "TrainingBackend": "backend",
    "MIXED_PRECISION": "config",
    "REPORT_TO": "config",
    "TrainConfig": "config",
    "Augment": "datasets",
    "DataError": "datasets",
    "PairDataset": "datasets",
    "check_report_to": "distributed",
    "make_accelerator": "distributed",
    "write_loss_curve": "loss_curve",
    "RunFolder": "run_folder",
    "TrainingError": "run_folder",
    "TrainResult": "trainer",
    "Trainer": "trainer",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
