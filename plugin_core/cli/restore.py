"""`diffplugin restore` and `diffplugin select`: outputs, images, plugins and the base folders are
checked (in that order, cheapest first) before any model loads."""

from __future__ import annotations

import json
import sys

from ..errors import PluginError
from ..tiling import TileSettings
from .args import DTYPES
from .progress import ProgressBar


def _library(args):
    """The plugins of --plugins and the --selector, for --prompt."""
    from ..models import find_plugins, load_plugin
    from ..selector import load_selector

    if args.plugins is None or args.selector is None:
        raise PluginError("--prompt needs --plugins DIR and --selector PATH")
    found = find_plugins(args.plugins)
    if not found:
        raise PluginError(f"{args.plugins}: no plugins found")
    plugins = [load_plugin(path, device=args.device, dtype=DTYPES[args.dtype]) for path in found.values()]
    return plugins, load_selector(args.selector, device=args.device)[0]


def _restorer(args, with_text: bool):
    from ..pipeline import BaseModels, Restorer, check_base_folders

    check_base_folders(args.sd, args.clip_vision, with_text=with_text)
    dtype = DTYPES[args.dtype]
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, with_text=with_text, device=args.device, dtype=dtype)
    return Restorer(models, device=args.device, dtype=dtype)


def restore(args) -> int:
    from ..images import at_size, load_image
    from ..models import load_plugin
    from ..outputs import check_new_files, restore_targets
    from ..selector import group_by_selection

    if bool(args.plugin) == bool(args.prompt):
        raise PluginError("give either --plugin PATH (repeatable) or --prompt TEXT with --plugins and --selector")
    try:
        tiles = TileSettings(args.tile_size, args.tile_overlap, args.tile_batch, args.tile_prompt)
    except ValueError as error:
        raise PluginError(str(error)) from None
    targets = restore_targets(args.images, args.output, overwrite=args.overwrite)
    if args.save_latent:
        check_new_files([args.save_latent], overwrite=args.overwrite, inputs=args.images)
    images = [load_image(path) for path in args.images]
    if args.plugin:
        chain = [load_plugin(p, device=args.device, dtype=DTYPES[args.dtype]) for p in args.plugin]
        library = selector = None
    else:
        library, selector = _library(args)
    restorer = _restorer(args, with_text=library is not None)
    if library is None:
        groups = [(list(range(len(images))), chain)]
    else:
        selections = restorer.select_each(images, args.prompt, library, selector, args.select_threshold)
        for path, selection in zip(args.images, selections):
            print(f"{path}:\n{selection.format()}")
        groups = group_by_selection(selections, {p.task: p for p in library})
    progress = None if args.no_progress else ProgressBar("restoring", unit="UNet call")
    try:
        result = restorer.restore_groups(images, groups, steps=args.steps, later_steps=args.later_steps, seed=args.seed,
                                         threshold=args.threshold, resolution=args.resolution, resize_mode=args.resize,
                                         tiles=tiles, color_fix=args.color_fix, progress=progress,
                                         report=progress.write if progress else (lambda text: print(text, file=sys.stderr)))
    finally:
        if progress:
            progress.close()
    for image, original, target in zip(result.images, images, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        (at_size(image, original.size) if args.output_size == "original" else image).save(target)
        print(f"wrote {target}")
    if args.save_latent:
        from ..formats import write_safetensors

        write_safetensors(args.save_latent, {f"latent.{i}": latent for i, latent in enumerate(result.latents)},
                          {"images": json.dumps([str(p) for p in args.images])})
        print(f"wrote {args.save_latent}")
    return 0


def select(args) -> int:
    from ..images import load_image

    image = load_image(args.image)
    library, selector = _library(args)
    restorer = _restorer(args, with_text=True)
    selection = restorer.select(image, args.prompt, library, selector, args.select_threshold)
    print(json.dumps(selection.as_dict(), indent=1) if args.json else selection.format())
    return 0
