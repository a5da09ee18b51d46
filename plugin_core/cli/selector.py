"""`diffplugin train-selector` and `eval-selector`: the output, plugins, photos, instruction files
and the text encoder are checked before CLIP loads."""

from __future__ import annotations

from pathlib import Path

from ..errors import PluginError
from .progress import ProgressBar


def _inputs(args):
    """(plugins, CLIP-token function over the photos, SD's CLIP-L encoder or None, extra instructions, corpus)."""
    from ..images import image_files, load_image
    from ..models import find_plugins, load_plugin
    from ..pipeline import check_base_folders, clip_vision_tokens, load_clip_text, load_clip_vision
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
    check_base_folders(args.sd, args.clip_vision, with_text=args.sd is not None)
    clip = load_clip_vision(args.clip_vision, args.device)
    clip_text = ClipTextEncoder(*load_clip_text(args.sd, args.device), args.device) if args.sd else None
    tokens = lambda layer: clip_vision_tokens(clip, images, layer, args.device).cpu()  # noqa: E731
    return plugins, tokens, clip_text, extra, corpus


def train_selector(args) -> int:
    from ..outputs import check_new_files
    from ..selector import FINE_TUNE_STEPS, SelectorTrainConfig, format_table, load_selector, save_selector, sentence_encoder, train_selector

    check_new_files([args.output], overwrite=args.overwrite, inputs=[p for p in (args.init,) if p])
    if args.text_encoder == "clip" and args.sd is None:
        raise PluginError("--text-encoder clip reads SD's CLIP-L: give --sd (or use --text-encoder minilm)")
    init = load_selector(args.init)[0] if args.init else None
    encoder = sentence_encoder() if args.text_encoder == "minilm" else None  # before CLIP loads: a missing package says so now
    plugins, tokens, clip_text, extra, corpus = _inputs(args)
    encoder = encoder or clip_text
    steps = args.steps or (FINE_TUNE_STEPS if init is not None else SelectorTrainConfig.steps)
    config = SelectorTrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr, negatives=args.negatives,
                                 memory_weight=args.memory_weight, seed=args.seed)
    progress = None if args.no_progress else ProgressBar("training the selector")
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


def eval_selector(args) -> int:
    from ..selector import SETS, evaluate, format_table, instruction_sets, load_selector, pooled_prompts, text_encoder_for

    selector = load_selector(args.selector)[0]
    plugins, tokens, clip_text, extra, corpus = _inputs(args)
    encoder = text_encoder_for(selector.text_encoder, clip_text)
    tasks = [p.task for p in plugins]
    sets = instruction_sets(corpus, tasks, args.split, 0, extra)
    results = evaluate(selector, encoder, pooled_prompts(plugins, tokens), tasks, {k: sets[k] for k in (*SETS, "unrelated")},
                       args.threshold)
    print(format_table(results))
    return 0
