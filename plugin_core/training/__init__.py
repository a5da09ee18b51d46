"""Training a Task-Plugin: the config (config.py), the run folder (run_folder.py), the log (log.py),
the step loop (trainer.py) with its encodings, the frozen base behind a small backend interface
(backends.py), training pairs (datasets.py), which sample goes where (samples.py), the Accelerate
engine (distributed.py) and the loss curve. Imported lazily: data and config need no diffusers."""

from ..lazy import lazy_exports

_EXPORTS = {
    "DiffusersBackend": "backends",
    "TrainingBackend": "backends",
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
