"""`diffplugin train`: the data, the run folder, --init, the validation images and the base
folders are checked before any model loads. The first Ctrl+C stops after the current step with
a checkpoint (exit 130, `--resume` continues); a second one aborts at once (exit 130)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from ..errors import PluginError
from . import INTERRUPTED
from .progress import ProgressBar


def _kinds(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def train(args) -> int:
    from ..images import load_image
    from ..models import load_plugin
    from ..pipeline import BaseModels, check_base_folders
    from ..training import DiffusersBackend, PairDataset, SyntheticPairs, TrainConfig, Trainer
    from ..training.trainer import describe_run

    if args.resume and args.overwrite:
        raise PluginError("--resume continues the run in the run folder, --overwrite replaces it: give one of them")
    output = args.output or Path("runs") / args.task
    held = describe_run(output, args.task)
    if held and not (args.resume or args.overwrite):
        raise PluginError(f"{output} holds a training run ({held}): continue it with --resume, or start over with "
                          "--overwrite (that run's files are replaced), or give another -o")
    if args.data:
        dataset = PairDataset.from_path(args.data)
    else:
        dataset = SyntheticPairs.from_folder(args.synthetic, _kinds(args.degrade), seed=args.seed)
    try:
        config = TrainConfig(
            task=args.task, steps=args.steps, batch_size=args.batch_size, gradient_accumulation=args.accumulate,
            learning_rate=args.lr, scale_lr=not args.no_scale_lr, warmup_steps=args.warmup, resolution=args.resolution,
            random_crop=not args.no_crop, random_flip=not args.no_flip, seed=args.seed, mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing, checkpoint_every=args.checkpoint_every,
            validate_every=args.validate_every, init_scb_from_unet=args.init_scb_from_unet, cache=args.cache,
            start_mode=args.start_mode, instructions=tuple(args.instruction),
        )
    except ValueError as error:
        raise PluginError(str(error)) from None
    plugin = load_plugin(args.init) if args.init else None
    validation = [load_image(p) for p in args.validation_image]
    check_base_folders(args.sd, args.clip_vision)
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, device=args.device)
    trainer = Trainer(DiffusersBackend(models, device=args.device), dataset, config, output, plugin=plugin,
                      validation_images=validation)
    print(trainer.start(resume=args.resume, overwrite=args.overwrite))
    bar = None if args.no_progress else ProgressBar(f"training {args.task}")
    if bar:
        bar(trainer.step, config.steps)

    def progress(step, total, loss, lr):
        if bar:
            bar(step, total, loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    interrupted = []

    def on_interrupt(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\nstopping after this step with a checkpoint (Ctrl+C again to abort without one)", file=sys.stderr)

    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGINT, on_interrupt) if main_thread else None
    try:
        result = trainer.train(progress=progress, should_stop=lambda: bool(interrupted))
    except KeyboardInterrupt:
        latest = trainer.latest_checkpoint()
        print(f"\naborted at step {trainer.step} without a new checkpoint; "
              + (f"the newest is {latest} (continue with --resume)" if latest else "none was written"), file=sys.stderr)
        return INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        if bar:
            bar.close()
    if result.stopped:
        print(f"stopped at step {result.steps}; checkpoint {result.checkpoint_path}; continue with --resume")
        return INTERRUPTED
    print(f"wrote {result.plugin_path}\nloss log: {output / 'loss.csv'}\nloss curve: {output / 'loss.png'}")
    return 0
