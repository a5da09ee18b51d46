"""`diffplugin train`: the data, the run folder, --init, the validation images and the base
folders are checked before any model loads. The first Ctrl+C stops after the current step with
a checkpoint (exit 130, `--resume` continues); a second one aborts at once (exit 130).

Under `accelerate launch` / `torchrun` every process runs this; rank 0 alone prints, shows the
bar and writes. A launcher forwards the terminal's Ctrl+C to its processes, which then see it
twice: a second one within a few seconds counts as the same. A process that another one's
failure ends (the launcher's SIGTERM, or a collective that lost its peer) says so and points
at the newest checkpoint."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from ..training.config import TrainConfig
from .args import (
    INTERRUPTED,
    base_arguments,
    base_path_problems,
    check_base_arguments,
    command,
    overwrite_argument,
    path_problems,
    progress_argument,
    required,
)
from .files import degrade_help


def register(commands) -> None:
    train = command(commands, "train", "train a Task-Plugin on (degraded, clean) image pairs", run_train, check_train,
                    train_paths)
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="a pairs CSV (image,conditioning_image = target,input) or a folder with input/ and target/")
    source.add_argument("--synthetic", type=Path, help="a folder of clean photos, degraded on the fly with --degrade")
    train.add_argument("--degrade", default="rain", help=degrade_help())
    train.add_argument("-o", "--output", type=Path, default=None,
                       help="run folder: checkpoints/, loss.csv, loss.png, validation/, the plugin (default: runs/<task>)")
    task = TrainConfig.add_arguments(train)["task"]
    task.default = None  # a run names its task
    required(train, task)
    train.add_argument("--validation-image", type=Path, action="append", default=[], help="an image to restore at each validation (repeatable)")
    train.add_argument("--validation-data", type=Path,
                       help="held-out pairs (CSV or input/ + target/): PSNR / SSIM at each validation, in loss.csv and the trackers")
    train.add_argument("--init", type=Path, help="fine-tune this plugin instead of starting fresh")
    train.add_argument("--resume", action="store_true", help="continue the run in the run folder from its newest checkpoint")
    overwrite_argument(train, "a run the run folder holds (its checkpoints, loss log and plugin)")
    base_arguments(train, dtype=False)
    progress_argument(train)


def check_train(args) -> list[str]:
    found = [] if args.data or args.synthetic else ["give the pairs: --data PAIRS or --synthetic CLEAN_PHOTOS"]
    if args.resume and args.overwrite:
        found.append("--resume continues the run in the run folder, --overwrite replaces it: give one of them")
    return found


def train_paths(args) -> list[str]:
    """The data, --init, the validation images and pairs and the base, as far as the file system shows."""
    return path_problems(("--data", args.data, "file or folder", None), ("--synthetic", args.synthetic, "folder", "folder"),
                         ("--init", args.init, "file or folder", None),
                         *[("--validation-image", image, "image", "file") for image in args.validation_image],
                         ("--validation-data", args.validation_data, "file or folder", None)) + base_path_problems(args)


def _inputs(args, config: TrainConfig, output: Path):
    """The run folder checked, the data, --init, the validation sets and the base folders: all
    before any model loads. (dataset, plugin to fine-tune or None, validation images, pairs)."""
    from ..images import load_image
    from ..models import load_plugin
    from ..synthetic import SyntheticPairs
    from ..training import PairDataset, RunFolder, check_report_to

    RunFolder(output, config.task).check(resume=args.resume, overwrite=args.overwrite, elsewhere="give another -o")
    if args.data:
        dataset = PairDataset.from_path(args.data)
    else:
        dataset = SyntheticPairs.from_folder(args.synthetic, [k.strip() for k in args.degrade.split(",") if k.strip()],
                                             seed=config.seed)
    check_report_to(config.report_to)
    plugin = load_plugin(args.init) if args.init else None
    validation = [load_image(p) for p in args.validation_image]
    validation_pairs = PairDataset.from_path(args.validation_data) if args.validation_data else None
    if validation_pairs is not None:
        from ..evaluation import require_libraries

        require_libraries()  # PSNR / SSIM's libraries are there before any model loads
    check_base_arguments(args)
    return dataset, plugin, validation, validation_pairs


def _trainer(args, config: TrainConfig, output: Path):
    """The Trainer and its accelerator, the models loaded on each process's device."""
    from ..base import BaseModels
    from ..restore import Restorer
    from ..training import DiffusersTrainingBackend, Trainer, make_accelerator
    from .args import device_of

    dataset, plugin, validation, validation_pairs = _inputs(args, config, output)
    device = device_of(args.device)
    accelerator = make_accelerator(device=device, mixed_precision=config.mixed_precision,
                                   accumulation=config.gradient_accumulation, report_to=config.report_to, project_dir=output)
    if accelerator.num_processes > 1:
        device = accelerator.device  # several processes: each its own GPU
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, sd_config=args.sd_config, device=device)
    render = Restorer(models, device=device).render if validation or validation_pairs is not None else None
    return Trainer(DiffusersTrainingBackend(models, device=device), dataset, config, output, plugin=plugin,
                   validation_images=validation, validation_pairs=validation_pairs, render=render, accelerator=accelerator)


def run_train(args) -> int:
    from .progress import ProgressBar

    config = TrainConfig.from_args(args)
    output = args.output or Path("runs") / config.task
    trainer = _trainer(args, config, output)
    accelerator, distributed = trainer.accelerator, trainer.accelerator.num_processes > 1
    say = print if accelerator.is_main_process else (lambda *a, **k: None)
    started = trainer.start(resume=args.resume, overwrite=args.overwrite)
    processes = accelerator.num_processes
    say(started + (f"; {processes} processes, " if distributed else "; ") + f"global batch {config.global_batch(processes)}, "
        f"lr {config.learning_rate_for(processes):.3g}")
    bar = None if args.no_progress or not accelerator.is_main_process else ProgressBar(f"training {config.task}")
    if bar:
        bar(trainer.step, config.steps)
    try:
        result = _train(trainer, bar, distributed)
    finally:
        if bar:
            bar.close()
    if isinstance(result, int):  # aborted, or another process of the run failed
        return result
    if result.stopped:
        say(f"stopped at step {result.steps}; checkpoint {result.checkpoint_path}; continue with --resume")
        return INTERRUPTED
    say(f"wrote {result.plugin_path}\nloss log: {output / 'loss.csv'}\nloss curve: {output / 'loss.png'}")
    return 0


def _train(trainer, bar, distributed: bool):
    """trainer.train with the signals a run answers: the first Ctrl+C stops after the step with a
    checkpoint, a second aborts (exit status 130); a launcher's SIGTERM or a lost peer ends this
    process (exit status 1). Returns the TrainResult, or the exit status."""
    from ..launch import launched_processes

    interrupted, rank = [], trainer.accelerator.process_index
    say = print if trainer.is_main else (lambda *a, **k: None)

    def newest() -> str:
        latest = trainer.latest_checkpoint()
        return f"the newest checkpoint is {latest} (continue with --resume)" if latest else "no checkpoint was written"

    def on_interrupt(signum, frame):
        if interrupted and not (distributed and time.monotonic() - interrupted[0] < 3):
            raise KeyboardInterrupt
        if not interrupted:
            interrupted.append(time.monotonic())
            say("\nstopping after this step with a checkpoint (Ctrl+C again to abort without one)", file=sys.stderr)

    def on_terminate(signum, frame):
        print(f"\nprocess {rank}: ended by the launcher (another process of this run failed or was stopped); {newest()}",
              file=sys.stderr)
        sys.exit(1)

    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGINT, on_interrupt) if main_thread else None
    previous_term = signal.signal(signal.SIGTERM, on_terminate) if main_thread and distributed else None
    progress = (lambda step, total, loss, lr: bar(step, total, loss=f"{loss:.4f}", lr=f"{lr:.2e}")) if bar else None
    try:
        return trainer.train(progress=progress, should_stop=lambda: bool(interrupted))
    except KeyboardInterrupt:
        print(f"\naborted at step {trainer.step} without a new checkpoint; {newest()}", file=sys.stderr)
        return INTERRUPTED
    except RuntimeError as error:
        if not distributed or launched_processes() == 1:
            raise
        # A collective whose peer died (gloo / NCCL): the run cannot go on without it.
        print(f"\nprocess {rank}: another process of this run stopped at step {trainer.step + 1} "
              f"({str(error).splitlines()[0][:160]}); {newest()}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
            if distributed:
                signal.signal(signal.SIGTERM, previous_term)
