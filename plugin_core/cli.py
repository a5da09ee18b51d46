"""The `diffplugin` command line (also `python -m plugin_core`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import torch

from .errors import PluginError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _add_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sd", required=True, type=Path, help="diffusers Stable Diffusion 1.x folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/)")
    parser.add_argument("--clip-vision", required=True, type=Path, help="transformers CLIP ViT-L/14 folder (CLIPVisionModel or CLIPModel)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")


def _add_selection_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--prompt", required=required, help="instruction, e.g. 'remove the rain and the haze'")
    parser.add_argument("--plugins", type=Path, help="folder of plugins (.safetensors files and/or reference task folders)")
    parser.add_argument("--selector", type=Path, help="Plugin-Selector (.safetensors or reference PromptTunner.pt)")
    parser.add_argument("--select-threshold", type=float, default=0.0, help="θ: plugins scoring above it are selected (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffplugin", description="Diff-Plugin: task plugins for Stable Diffusion 1.x.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    restore = commands.add_parser("restore", help="restore images with chosen plugins or by instruction")
    restore.add_argument("images", nargs="+", type=Path)
    restore.add_argument("--plugin", action="append", type=Path, default=[], help="plugin file or task folder; repeat to chain plugins")
    _add_selection_arguments(restore, required=False)
    _add_base_arguments(restore)
    restore.add_argument("--steps", type=int, default=20, help="sampling steps of the first plugin (default 20)")
    restore.add_argument("--later-steps", type=int, default=3, help="steps of every later plugin (default 3, as the reference)")
    restore.add_argument("--seed", type=int, default=42)
    restore.add_argument("--threshold", type=int, default=960, help="timesteps >= this restart from the noised input (default 960)")
    restore.add_argument("--resolution", type=int, default=512, help="short side is raised to this when smaller (default 512)")
    restore.add_argument("--resize", choices=("min", "exact"), default="min", help="'min': only raise small images (infer.py); 'exact': always scale the short side (demo.py)")
    restore.add_argument("--output-size", choices=("original", "processed"), default="original", help="write at the input's size, or at the working size the reference outputs")
    restore.add_argument("-o", "--output", type=Path, default=Path("restored"), help="output folder, or a file name for a single image")
    restore.add_argument("--save-latent", type=Path, help="also write the final latents to this .safetensors file")
    restore.add_argument("--no-progress", action="store_true")

    select = commands.add_parser("select", help="print the Plugin-Selector's scores for an image and instruction")
    select.add_argument("image", type=Path)
    _add_selection_arguments(select, required=True)
    _add_base_arguments(select)
    select.add_argument("--json", action="store_true", help="print the scores as JSON")

    convert = commands.add_parser("convert", help="reference layout -> one .safetensors per plugin")
    convert.add_argument("source", type=Path, help="a task folder (tpb.pt + scb/), a PromptTunner.pt, or a folder of them (pre-trained/)")
    convert.add_argument("-o", "--output", type=Path, required=True, help="output file (one plugin) or folder")
    convert.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="store weights in this dtype")

    info = commands.add_parser("info", help="what a plugin or selector file holds")
    info.add_argument("path", type=Path)

    train = commands.add_parser("train", help="train a Task-Plugin on (degraded, clean) image pairs")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a pairs CSV (image,conditioning_image = target,input) or a folder with input/ and target/")
    source.add_argument("--synthetic", type=Path, help="a folder of clean photos: degraded on the fly with --degrade")
    train.add_argument("--degrade", default="rain", help="synthetic degradations, comma-separated and applied in order (e.g. 'haze,rain')")
    train.add_argument("--task", required=True, help="the task name stored in the plugin (e.g. 'derain')")
    train.add_argument("-o", "--output", type=Path, default=None, help="run folder: checkpoints, loss.csv, loss.png, validation/, the plugin (default runs/<task>)")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch-size", type=int, default=1)
    train.add_argument("--accumulate", type=int, default=1, help="gradient accumulation micro-batches per step")
    train.add_argument("--lr", type=float, default=1e-5, help="per-sample learning rate, scaled by batch x accumulation as the reference (default 1e-5)")
    train.add_argument("--no-scale-lr", action="store_true", help="use --lr as it is")
    train.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    train.add_argument("--resolution", type=int, default=512)
    train.add_argument("--no-crop", action="store_true", help="centre crop instead of a random crop")
    train.add_argument("--no-flip", action="store_true")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--validate-every", type=int, default=0)
    train.add_argument("--validation-image", type=Path, action="append", default=[])
    train.add_argument("--init-scb-from-unet", action="store_true", help="start the SCB from the UNet's first level (ControlNet-style)")
    train.add_argument("--cache", action="store_true", help="encode each pair once (centre crop): faster, less augmentation")
    train.add_argument("--start-mode", choices=("input", "noise"), help="default: 'noise' for lowlight/highlight, else 'input'")
    train.add_argument("--instruction", action="append", default=[], help="an instruction describing the task (repeatable)")
    train.add_argument("--init", type=Path, help="fine-tune this plugin instead of starting fresh")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    train.add_argument("--sd", required=True, type=Path, help="diffusers Stable Diffusion folder (the frozen base)")
    train.add_argument("--clip-vision", required=True, type=Path)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--no-progress", action="store_true")

    def selector_inputs(parser):
        parser.add_argument("--plugins", required=True, type=Path, help="folder of the plugins to choose among")
        parser.add_argument("--images", required=True, type=Path, help="folder of photos: each plugin's Fp on them are the pseudo-labels")
        parser.add_argument("--clip-vision", required=True, type=Path)
        parser.add_argument("--sd", type=Path, help="SD folder: its CLIP-L text encoder, for --text-encoder clip")
        parser.add_argument("--corpus", type=Path, help="instruction corpus JSON (default: the shipped one)")
        parser.add_argument("--task-instructions", action="append", default=[], metavar="TASK=FILE",
                            help="instructions for a task the corpus lacks (or more for one it has): a JSON {train: [...], heldout: [...]} or a text file, one per line")
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    train_selector = commands.add_parser("train-selector", help="train (or fine-tune) the Plugin-Selector")
    selector_inputs(train_selector)
    train_selector.add_argument("--text-encoder", choices=("clip", "minilm"), default="clip",
                                help="'clip': SD's CLIP-L (--sd), as the reference; 'minilm': the offline sentence model")
    train_selector.add_argument("--init", type=Path, help="start from this selector (e.g. the reference PromptTunner.pt)")
    from .selector.training import FINE_TUNE_STEPS, SelectorTrainConfig  # light: no diffusers

    defaults = SelectorTrainConfig()
    train_selector.add_argument("--steps", type=int, default=None,
                                help=f"optimisation steps of each member (default {defaults.steps}; with --init {FINE_TUNE_STEPS})")
    train_selector.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train_selector.add_argument("--lr", type=float, default=defaults.learning_rate)
    train_selector.add_argument("--negatives", type=int, default=defaults.negatives)
    train_selector.add_argument("--reader", type=int, default=256, help="width of the instruction reader (0: the reference's pooled text only)")
    train_selector.add_argument("--embed", type=int, default=256, help="width of the joint embedding (the reference's: 768)")
    train_selector.add_argument("--memory-weight", type=float, default=defaults.memory_weight,
                                help="weight of the instruction memory: a unanimous vote moves a score by half of it, up or down (0: no memory)")
    train_selector.add_argument("--seed", type=int, default=defaults.seed)
    train_selector.add_argument("-o", "--output", type=Path, required=True, help="selector .safetensors")
    train_selector.add_argument("--no-progress", action="store_true")

    eval_selector = commands.add_parser("eval-selector", help="measure a selector on held-out instructions (the paper's Table 5)")
    selector_inputs(eval_selector)
    eval_selector.add_argument("--selector", required=True, type=Path)
    eval_selector.add_argument("--split", choices=("heldout", "train"), default="heldout")
    eval_selector.add_argument("--threshold", type=float, default=0.0)

    synth = commands.add_parser("synth", help="write a training set of synthetic (degraded, clean) pairs from clean photos")
    synth.add_argument("clean", type=Path, help="folder of clean photos")
    synth.add_argument("-o", "--output", type=Path, required=True)
    synth.add_argument("--degrade", default="rain", help="comma-separated degradations, applied in order")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--per-image", type=int, default=1, help="pairs per clean photo")
    synth.add_argument("--intensity", type=float, nargs=2, default=(0.3, 0.9), metavar=("LOW", "HIGH"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        _quiet_libraries()
    handlers = {
        "restore": _restore, "select": _select, "convert": _convert, "info": _info, "train": _train, "synth": _synth,
        "train-selector": _train_selector, "eval-selector": _eval_selector,
    }
    try:
        return handlers[args.command](args) or 0
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------- commands
# Each handler maps its arguments onto plugin_core and prints the outcome; the work is done there.


def _restorer(args, with_text: bool):
    from .pipeline import BaseModels, Restorer

    dtype = DTYPES[args.dtype]
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, with_text=with_text, device=args.device, dtype=dtype)
    return Restorer(models, device=args.device, dtype=dtype)


def _load_library(args):
    from .models import find_plugins, load_plugin
    from .selector import load_selector

    if args.plugins is None or args.selector is None:
        raise PluginError("--prompt needs --plugins DIR and --selector PATH")
    found = find_plugins(args.plugins)
    if not found:
        raise PluginError(f"{args.plugins}: no plugins found")
    plugins = [load_plugin(path, device=args.device, dtype=DTYPES[args.dtype]) for path in found.values()]
    return plugins, load_selector(args.selector, device=args.device)[0]


def _restore(args) -> int:
    from .images import at_size, load_image, output_paths
    from .models import load_plugin
    from .selector import group_by_selection

    if bool(args.plugin) == bool(args.prompt):
        raise PluginError("give either --plugin PATH (repeatable) or --prompt TEXT with --plugins and --selector")
    images = [load_image(path) for path in args.images]
    restorer = _restorer(args, with_text=bool(args.prompt))
    if args.plugin:
        groups = [(list(range(len(images))), [load_plugin(p, device=args.device, dtype=DTYPES[args.dtype]) for p in args.plugin])]
    else:
        library, selector = _load_library(args)
        selections = restorer.select_each(images, args.prompt, library, selector, args.select_threshold)
        for path, selection in zip(args.images, selections):
            print(f"{path}:\n{selection.format()}")
        groups = group_by_selection(selections, {p.task: p for p in library})
    progress = None if args.no_progress else _ProgressBar("restoring")
    try:
        result = restorer.restore_groups(images, groups, steps=args.steps, later_steps=args.later_steps, seed=args.seed,
                                         threshold=args.threshold, resolution=args.resolution, resize_mode=args.resize,
                                         progress=progress)
    finally:
        if progress:
            progress.close()
    for image, original, target in zip(result.images, images, output_paths(args.images, args.output)):
        target.parent.mkdir(parents=True, exist_ok=True)
        (at_size(image, original.size) if args.output_size == "original" else image).save(target)
        print(f"wrote {target}")
    if args.save_latent:
        from .formats import write_safetensors

        write_safetensors(args.save_latent, {f"latent.{i}": latent for i, latent in enumerate(result.latents)},
                          {"images": json.dumps([str(p) for p in args.images])})
        print(f"wrote {args.save_latent}")
    return 0


def _select(args) -> int:
    from .images import load_image

    image = load_image(args.image)
    restorer = _restorer(args, with_text=True)
    library, selector = _load_library(args)
    selection = restorer.select(image, args.prompt, library, selector, args.select_threshold)
    print(json.dumps(selection.as_dict(), indent=1) if args.json else selection.format())
    return 0


def _convert(args) -> int:
    from .models import convert_reference_folder, convert_reference_plugin, is_reference_task_folder
    from .selector.files import REFERENCE_SELECTOR_FILE, convert_reference_selector

    dtype = DTYPES[args.dtype] if args.dtype else None
    source, output = args.source, args.output
    if source.is_file():
        written = [convert_reference_selector(source, output)]
    elif is_reference_task_folder(source):
        written = [convert_reference_plugin(source, output if output.suffix == ".safetensors" else output / f"{source.name}.safetensors", dtype=dtype)]
    elif source.is_dir():
        written = convert_reference_folder(source, output, dtype=dtype)
        if (source / REFERENCE_SELECTOR_FILE).is_file():
            written.append(convert_reference_selector(source / REFERENCE_SELECTOR_FILE, output / "selector.safetensors"))
        if not written:
            raise PluginError(f"{source}: no reference task folders (tpb.pt + scb/) or plugin_selector/PromptTunner.pt found")
    else:
        raise PluginError(f"{source}: not found")
    for path in written:
        print(f"wrote {path}")
    return 0


def _info(args) -> int:
    from .selector.files import describe_selector, is_selector_file, load_selector

    if is_selector_file(args.path):
        print(describe_selector(load_selector(args.path)[0], args.path))
    else:
        from .models import describe_plugin, load_plugin

        print(describe_plugin(load_plugin(args.path), args.path))
    return 0


def _train(args) -> int:
    from .images import load_image
    from .models import load_plugin
    from .pipeline import BaseModels
    from .training import DiffusersBackend, PairDataset, SyntheticPairs, TrainConfig, Trainer

    if args.data:
        dataset = PairDataset.from_path(args.data)
    else:
        dataset = SyntheticPairs.from_folder(args.synthetic, _kinds(args.degrade), seed=args.seed)
    config = TrainConfig(
        task=args.task, steps=args.steps, batch_size=args.batch_size, gradient_accumulation=args.accumulate,
        learning_rate=args.lr, scale_lr=not args.no_scale_lr, warmup_steps=args.warmup, resolution=args.resolution,
        random_crop=not args.no_crop, random_flip=not args.no_flip, seed=args.seed, mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, init_scb_from_unet=args.init_scb_from_unet, cache=args.cache,
        start_mode=args.start_mode, instructions=tuple(args.instruction),
    )
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, device=args.device)
    output = args.output or Path("runs") / args.task
    trainer = Trainer(DiffusersBackend(models, device=args.device), dataset, config, output,
                      plugin=load_plugin(args.init) if args.init else None,
                      validation_images=[load_image(p) for p in args.validation_image])
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, unit="step", desc=f"training {args.task}")

    def progress(step, total, loss, lr):
        if bar is not None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.refresh()

    # The first Ctrl+C stops after the current step with a checkpoint; a second one aborts.
    interrupted = []

    def on_interrupt(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\nstopping after this step (Ctrl+C again to abort without a checkpoint)", file=sys.stderr)

    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGINT, on_interrupt) if main_thread else None
    try:
        result = trainer.train(resume=args.resume, progress=progress, should_stop=lambda: bool(interrupted))
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    if result.stopped:
        print(f"stopped at step {result.steps}; checkpoint {result.checkpoint_path}; continue with --resume")
        return 130
    print(f"wrote {result.plugin_path}\nloss log: {output / 'loss.csv'}\nloss curve: {output / 'loss.png'}")
    return 0


def _selector_inputs(args):
    """(plugins, CLIP-token function over the photos, SD's CLIP-L encoder or None, extra instructions, corpus)."""
    from .images import image_files, load_image
    from .models import find_plugins, load_plugin
    from .pipeline import clip_vision_tokens, load_clip_text, load_clip_vision
    from .selector import ClipTextEncoder, load_corpus, read_task_instructions

    plugins = [load_plugin(path) for path in find_plugins(args.plugins).values()]
    if not plugins:
        raise PluginError(f"{args.plugins}: no plugins found")
    paths = image_files(args.images) if args.images.is_dir() else []
    if not paths:
        raise PluginError(f"{args.images}: no images")
    images = [load_image(p) for p in paths]
    clip = load_clip_vision(args.clip_vision, args.device)
    clip_text = ClipTextEncoder(*load_clip_text(args.sd, args.device), args.device) if args.sd else None
    extra = {}
    for item in args.task_instructions:
        task, _, file = item.partition("=")
        if not task or not Path(file).is_file():
            raise PluginError(f"--task-instructions expects TASK=FILE with an existing file, got {item!r}")
        extra[task] = read_task_instructions(file)
    tokens = lambda layer: clip_vision_tokens(clip, images, layer, args.device).cpu()  # noqa: E731
    return plugins, tokens, clip_text, extra, load_corpus(args.corpus)


def _train_selector(args) -> int:
    from .selector import FINE_TUNE_STEPS, SelectorTrainConfig, format_table, load_selector, save_selector, sentence_encoder, train_selector

    plugins, tokens, clip_text, extra, corpus = _selector_inputs(args)
    if args.text_encoder == "clip":
        if clip_text is None:
            raise PluginError("--text-encoder clip reads SD's CLIP-L: give --sd")
        encoder = clip_text
    else:  # the process-wide instance: each text is encoded once
        encoder = sentence_encoder()
    init = load_selector(args.init)[0] if args.init else None
    steps = args.steps or (FINE_TUNE_STEPS if init is not None else SelectorTrainConfig.steps)
    config = SelectorTrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr,
                                 negatives=args.negatives, memory_weight=args.memory_weight, seed=args.seed)
    progress = None if args.no_progress else _ProgressBar("training the selector")
    try:
        run = train_selector(plugins, tokens, encoder, config, init=init, corpus=corpus, extra_instructions=extra,
                             reader_width=args.reader, embed_width=args.embed,
                             progress=(lambda done, total, loss: progress(done, total, loss=f"{loss:.4f}")) if progress else None)
    finally:
        if progress:
            progress.close()
    save_selector(run.selector, args.output)
    print(format_table(run.results))
    print(f"wrote {args.output}")
    return 0


def _eval_selector(args) -> int:
    from .selector import SETS, evaluate, format_table, instruction_sets, load_selector, pooled_prompts, text_encoder_for

    plugins, tokens, clip_text, extra, corpus = _selector_inputs(args)
    selector = load_selector(args.selector)[0]
    encoder = text_encoder_for(selector.text_encoder, clip_text)
    tasks = [p.task for p in plugins]
    sets = instruction_sets(corpus, tasks, args.split, 0, extra)
    results = evaluate(selector, encoder, pooled_prompts(plugins, tokens), tasks, {k: sets[k] for k in (*SETS, "unrelated")},
                       args.threshold)
    print(format_table(results))
    return 0


def _kinds(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _synth(args) -> int:
    from .training import write_pairs

    try:
        path = write_pairs(args.clean, args.output, _kinds(args.degrade), seed=args.seed,
                           intensity=tuple(args.intensity), pairs_per_image=args.per_image)
    except ValueError as error:
        raise PluginError(str(error)) from None
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------- helpers


def _quiet_libraries() -> None:
    """diffusers/transformers loading chatter (accelerate hints, weight bars) hides our output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _ProgressBar:
    """A tqdm bar fed by a (done, total) callback; made on the first call, when the total is known."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __call__(self, done: int, total: int, **postfix) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", desc=self.description)
        self.bar.total = total
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
