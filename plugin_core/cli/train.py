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

from ..errors import PluginError
from . import INTERRUPTED
from .progress import ProgressBar


def _kinds(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def train(args) -> int:
    from ..images import load_image
    from ..models import load_plugin
    from ..pipeline import BaseModels, check_base_folders
    from ..synthetic import SyntheticPairs
    from ..training import DiffusersBackend, PairDataset, TrainConfig, Trainer
    from ..training.distributed import check_report_to, launched_processes, make_accelerator
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
            start_mode=args.start_mode, instructions=tuple(args.instruction), workers=args.workers, report_to=args.report_to,
        )
    except ValueError as error:
        raise PluginError(str(error)) from None
    check_report_to(args.report_to)
    plugin = load_plugin(args.init) if args.init else None
    validation = [load_image(p) for p in args.validation_image]
    validation_pairs = PairDataset.from_path(args.validation_data) if args.validation_data else None
    if validation_pairs is not None:
        from ..evaluation import require_libraries

        require_libraries()  # PSNR / SSIM's libraries are there before any model loads
    check_base_folders(args.sd, args.clip_vision)
    accelerator = make_accelerator(device=args.device, mixed_precision=config.mixed_precision,
                                   accumulation=config.gradient_accumulation, report_to=config.report_to, project_dir=output)
    distributed = accelerator.num_processes > 1
    device = accelerator.device if distributed else args.device  # several processes: each its own GPU
    say = print if accelerator.is_main_process else (lambda *a, **k: None)
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, device=device)
    trainer = Trainer(DiffusersBackend(models, device=device), dataset, config, output, plugin=plugin,
                      validation_images=validation, validation_pairs=validation_pairs, accelerator=accelerator)
    started = trainer.start(resume=args.resume, overwrite=args.overwrite)
    if distributed:
        started += (f"; {accelerator.num_processes} processes, global batch {config.global_batch(accelerator.num_processes)}, "
                    f"lr {config.learning_rate_for(accelerator.num_processes):.3g}")
    say(started)
    bar = None if args.no_progress or not accelerator.is_main_process else ProgressBar(f"training {args.task}")
    if bar:
        bar(trainer.step, config.steps)

    def progress(step, total, loss, lr):
        if bar:
            bar(step, total, loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    interrupted = []

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
        print(f"\nprocess {accelerator.process_index}: ended by the launcher (another process of this run failed or "
              f"was stopped); {newest()}", file=sys.stderr)
        sys.exit(1)

    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGINT, on_interrupt) if main_thread else None
    previous_term = signal.signal(signal.SIGTERM, on_terminate) if main_thread and distributed else None
    try:
        result = trainer.train(progress=progress, should_stop=lambda: bool(interrupted))
    except KeyboardInterrupt:
        print(f"\naborted at step {trainer.step} without a new checkpoint; {newest()}", file=sys.stderr)
        return INTERRUPTED
    except RuntimeError as error:
        if not distributed or launched_processes() == 1:
            raise
        # A collective whose peer died (gloo / NCCL): the run cannot go on without it.
        print(f"\nprocess {accelerator.process_index}: another process of this run stopped at step {trainer.step + 1} "
              f"({str(error).splitlines()[0][:160]}); {newest()}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
            if distributed:
                signal.signal(signal.SIGTERM, previous_term)
        if bar:
            bar.close()
    if result.stopped:
        say(f"stopped at step {result.steps}; checkpoint {result.checkpoint_path}; continue with --resume")
        return INTERRUPTED
    say(f"wrote {result.plugin_path}\nloss log: {output / 'loss.csv'}\nloss curve: {output / 'loss.png'}")
    return 0
