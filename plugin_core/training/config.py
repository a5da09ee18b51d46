"""What a training run does: one typed object, its defaults (the reference recipe's) and the
command-line argument of each setting (plugin_core.options). `diffplugin train` and the Train
Task-Plugin node both build it; pure Python, so the command line parses without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Option, add_options, check_settings
from ..restore.settings import RestoreSettings
from ..vocabulary import MIXED_PRECISION, REPORT_TO, START_MODES


@dataclass
class TrainConfig:
    task: str = "custom"
    steps: int = 1000
    batch_size: int = 1  # per process and micro-batch
    learning_rate: float = 1e-5
    scale_lr: bool = True  # the reference multiplies by the global batch (batch x processes x accumulation)
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # "no", "fp16", "bf16": autocast, fp32 master weights
    resolution: int = 512
    random_crop: bool = True
    random_flip: bool = True
    seed: int = 42
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    validation_steps: int = RestoreSettings.steps  # a restore's (the reference inference's 20)
    init_scb_from_unet: bool = False
    cache: bool = False  # encode each pair once (centre crop, both flips): faster, less augmentation
    workers: int = 2  # DataLoader worker processes (0: in the training process)
    report_to: str = "none"  # an Accelerate tracker: "tensorboard", "wandb"
    clip_layer: int = 24
    start_mode: str | None = None  # None: from the task ('noise' for lowlight / highlight)
    instructions: tuple[str, ...] = ()

    OPTIONS = {
        "task": Option("--task", "the task name stored in the plugin (e.g. 'derain')", kind=str),
        "steps": Option("--steps", "optimisation steps", low=1),
        "batch_size": Option("--batch-size", "pairs per micro-batch and process (global batch: batch x processes x "
                             "--accumulate)", low=1),
        "gradient_accumulation": Option("--accumulate", "gradient accumulation micro-batches per step", low=1),
        "learning_rate": Option("--lr", "per-sample learning rate, scaled by the global batch as the reference "
                                "(1e-5 x 64 on 4 GPUs)", kind=float, low=0.0, high=1.0, low_open=True),
        "scale_lr": Option("--no-scale-lr", "use --lr as it is", kind=bool),
        "warmup_steps": Option("--warmup", "linear warm-up steps", low=0),
        "resolution": Option("--resolution", "training crop size", low=8, multiple=8),
        "random_crop": Option("--no-crop", "centre crop instead of a random crop", kind=bool),
        "random_flip": Option("--no-flip", "no random horizontal flip", kind=bool),
        "seed": Option("--seed", "seeds data order, crops, noise and timesteps", low=0),
        "mixed_precision": Option("--mixed-precision", "autocast precision (fp32 master weights)", kind=str,
                                  choices=MIXED_PRECISION),
        "gradient_checkpointing": Option("--gradient-checkpointing", "less memory, about a third more time", kind=bool),
        "checkpoint_every": Option("--checkpoint-every", "steps between checkpoints (0: only at the end)", low=0),
        "validate_every": Option("--validate-every", "steps between validation images (0: none)", low=0),
        "workers": Option("--workers", "data loading processes per training process (0: in the training loop); the "
                          "result is the same", low=0),
        "report_to": Option("--report-to", "an experiment tracker (Accelerate's): loss, lr, grad norm, samples/s, "
                            "validation; tensorboard logs under the run folder", kind=str, choices=REPORT_TO),
        "init_scb_from_unet": Option("--init-scb-from-unet", "start the SCB from the UNet's first level "
                                     "(ControlNet-style)", kind=bool),
        "cache": Option("--cache", "encode each pair once (centre crop): faster, less augmentation", kind=bool),
        "start_mode": Option("--start-mode", "how sampling starts (default: 'noise' for lowlight/highlight, else "
                             "'input')", kind=str, choices=START_MODES),
    }

    def __post_init__(self):
        check_settings(self, self.OPTIONS)
        self.adam_betas = tuple(self.adam_betas)
        self.instructions = tuple(self.instructions)

    def global_batch(self, processes: int = 1) -> int:
        return self.batch_size * processes * self.gradient_accumulation

    def learning_rate_for(self, processes: int = 1) -> float:
        return self.learning_rate * (self.global_batch(processes) if self.scale_lr else 1)

    @classmethod
    def add_arguments(cls, parser) -> dict:
        """The training settings as command-line arguments (a group of `parser`); their actions."""
        group = parser.add_argument_group("training settings")
        defaults = cls()
        actions = add_options(group, cls.OPTIONS, {name: getattr(defaults, name) for name in cls.OPTIONS})
        actions["instructions"] = group.add_argument("--instruction", dest="instructions", action="append", default=[],
                                                     help="an instruction describing the task (repeatable)")
        return actions

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        """The settings a parsed command line asks for."""
        return cls(**{name: getattr(args, name) for name in cls.OPTIONS}, instructions=tuple(args.instructions))
