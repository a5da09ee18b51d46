"""`diffplugin train-selector` and `eval-selector`: the output, plugins, photos, instruction files
and the text encoder are checked before CLIP loads."""

from __future__ import annotations

from pathlib import Path

from ..errors import PluginError
from ..options import add_options
from ..selector.config import (
    EMBED_WIDTH,
    FINE_TUNE_STEPS,
    READER_WIDTH,
    SELECT_THRESHOLD,
    SELECT_THRESHOLD_MIN,
    TEXT_ENCODERS,
    TRAIN_OPTIONS,
    SelectorTrainConfig,
)
from .args import (
    base_path_problems,
    choice,
    command,
    device_argument,
    number,
    overwrite_argument,
    path_problems,
    progress_argument,
    renamed,
    required,
)


def register(commands) -> None:
    train = command(commands, "train-selector", "train (or fine-tune) the Plugin-Selector", run_train_selector,
                    paths=selector_paths)
    selector_inputs(train)
    train.add_argument("--text-encoder", type=choice("--text-encoder", TEXT_ENCODERS), default="clip", metavar="{clip,minilm}",
                       help="'clip': SD's CLIP-L (--sd), as the reference; 'minilm': the offline sentence model")
    train.add_argument("--init", type=Path, help="fine-tune this selector (e.g. one trained before, or the reference PromptTunner.pt)")
    defaults = SelectorTrainConfig()
    train.add_argument("--steps", type=number("--steps", low=1), default=None,
                       help=f"optimisation steps (default: {defaults.steps}; with --init {FINE_TUNE_STEPS})")
    add_options(train, TRAIN_OPTIONS, {name: getattr(defaults, name) for name in TRAIN_OPTIONS})
    train.add_argument("--reader", type=number("--reader", low=0), default=READER_WIDTH,
                       help="width of the instruction reader (0: the reference's pooled text only)")
    train.add_argument("--embed", type=number("--embed", low=1), default=EMBED_WIDTH,
                       help="width of the joint embedding (the reference's: 768)")
    required(train, train.add_argument("-o", "--output", type=Path, help="the selector .safetensors to write"))
    overwrite_argument(train, "the output file if it exists")
    progress_argument(train)

    evaluate = command(commands, "eval-selector", "measure a selector on held-out instructions (the paper's Table 5)",
                       run_eval_selector, paths=selector_paths)
    selector_inputs(evaluate)
    required(evaluate, evaluate.add_argument("--selector", type=Path, help="the selector to measure"))
    evaluate.add_argument("--split", type=choice("--split", ("heldout", "train")), default="heldout", metavar="{heldout,train}",
                          help="which instructions of the corpus")
    evaluate.add_argument("--select-threshold", type=number("--select-threshold", float, low=SELECT_THRESHOLD_MIN), default=SELECT_THRESHOLD,
                          help="θ of the selection rule")
    renamed(evaluate, "--threshold", "--select-threshold", "select_threshold", number("--threshold", float, low=SELECT_THRESHOLD_MIN))


def selector_inputs(parser) -> None:
    required(parser,
             parser.add_argument("--plugins", type=Path, help="folder of the plugins to choose among"),
             parser.add_argument("--images", type=Path, help="folder of photos: each plugin's Fp on them are the pseudo-labels"),
             parser.add_argument("--clip-vision", type=Path, help="CLIP ViT-L/14 vision: a .safetensors file or a transformers folder"))
    parser.add_argument("--sd", type=Path, help="Stable Diffusion 1.x (a checkpoint file or a diffusers folder): its CLIP-L text "
                                                "encoder, for --text-encoder clip and the reference's selector")
    parser.add_argument("--sd-config", type=Path, help="for a checkpoint file of other shapes than SD 1.5: a diffusers folder of "
                                                       "its configs")
    parser.add_argument("--corpus", type=Path, help="instruction corpus JSON (default: the shipped one)")
    parser.add_argument("--task-instructions", action="append", default=[], metavar="TASK=FILE",
                        help="instructions for a task the corpus lacks (or more for one it has): a JSON "
                             "{train: [...], heldout: [...]} or a text file, one per line (repeatable)")
    device_argument(parser)


def selector_paths(args) -> list[str]:
    """The plugins, photos, corpus, selector and base named, as far as the file system shows."""
    return path_problems(("--plugins", args.plugins, "folder", "folder"), ("--images", args.images, "folder", "folder"),
                         ("--corpus", args.corpus, "file", "file"), ("--init", getattr(args, "init", None), "file", "file"),
                         ("--selector", getattr(args, "selector", None), "file", "file")) + base_path_problems(
        args, with_text=args.sd is not None)


def _inputs(args, device: str):
    """(plugins, CLIP-token function over the photos, SD's CLIP-L encoder or None, extra instructions, corpus)."""
    from ..base import check_base, clip_vision_tokens, load_clip_text, load_clip_vision
    from ..images import image_files, load_image
    from ..models import find_plugins, load_plugin
    from ..selector import ClipTextEncoder, load_corpus, read_task_instructions

    plugins = [load_plugin(path) for path in find_plugins(args.plugins).values()]
    if not plugins:
        raise PluginError(f"{args.plugins}: no plugins found")
    paths = image_files(args.images) if args.images.is_dir() else []
    if not paths:
        raise PluginError(f"{args.images}: no images")
    images = [load_image(p) for p in paths]
    extra = {}
    for item in args.task_instructions:
        task, _, file = item.partition("=")
        if not task or not Path(file).is_file():
            raise PluginError(f"--task-instructions expects TASK=FILE with an existing file, got {item!r}")
        extra[task] = read_task_instructions(file)
    corpus = load_corpus(args.corpus)
    check_base(args.sd, args.clip_vision, sd_config=args.sd_config, with_text=args.sd is not None)
    clip = load_clip_vision(args.clip_vision, device)
    clip_text = ClipTextEncoder(*load_clip_text(args.sd, device, sd_config=args.sd_config), device) if args.sd else None
    tokens = lambda layer: clip_vision_tokens(clip, images, layer, device).cpu()  # noqa: E731
    return plugins, tokens, clip_text, extra, corpus


def run_train_selector(args) -> int:
    from ..outputs import check_new_files
    from ..selector import (
        format_table,
        load_selector,
        save_selector,
        sentence_encoder,
        train_selector,
    )
    from .args import device_of
    from .progress import ProgressBar

    check_new_files([args.output], overwrite=args.overwrite, inputs=[p for p in (args.init,) if p])
    if args.text_encoder == "clip" and args.sd is None:
        raise PluginError("--text-encoder clip reads SD's CLIP-L: give --sd (or use --text-encoder minilm)")
    init = load_selector(args.init)[0] if args.init else None
    encoder = sentence_encoder() if args.text_encoder == "minilm" else None  # before CLIP loads: a missing package says so now
    plugins, tokens, clip_text, extra, corpus = _inputs(args, device_of(args.device))
    steps = args.steps or (FINE_TUNE_STEPS if init is not None else SelectorTrainConfig.steps)
    config = SelectorTrainConfig(steps=steps, **{name: getattr(args, name) for name in TRAIN_OPTIONS})
    progress = None if args.no_progress else ProgressBar("training the selector")
    try:
        run = train_selector(plugins, tokens, encoder or clip_text, config, init=init, corpus=corpus, extra_instructions=extra,
                             reader_width=args.reader, embed_width=args.embed,
                             progress=(lambda done, total, loss: progress(done, total, loss=f"{loss:.4f}")) if progress else None)
    finally:
        if progress:
            progress.close()
    save_selector(run.selector, args.output)
    print(format_table(run.results))
    print(f"wrote {args.output}")
    return 0


def run_eval_selector(args) -> int:
    from ..selector import (
        SETS,
        evaluate,
        format_table,
        instruction_sets,
        load_selector,
        pooled_prompts,
        text_encoder_for,
    )
    from .args import device_of

    selector = load_selector(args.selector)[0]
    plugins, tokens, clip_text, extra, corpus = _inputs(args, device_of(args.device))
    encoder = text_encoder_for(selector.text_encoder, clip_text)
    tasks = [p.task for p in plugins]
    sets = instruction_sets(corpus, tasks, args.split, 0, extra)
    results = evaluate(selector, encoder, pooled_prompts(plugins, tokens), tasks, {k: sets[k] for k in (*SETS, "unrelated")},
                       args.select_threshold)
    print(format_table(results))
    return 0
