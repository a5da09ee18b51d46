"""`diffplugin restore` and `diffplugin select`: the outputs, images, plugins and base folders are
checked (in that order, cheapest first) before any model loads; the work is plugin_core.restore's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import PluginError
from ..options import Invalid
from ..restore.settings import WEIGHTS_MEANING, RestoreSettings, parse_shares
from ..selector.config import SELECT_THRESHOLD, SELECT_THRESHOLD_MIN
from .args import (
    base_arguments,
    base_path_problems,
    command,
    number,
    overwrite_argument,
    path_problems,
    progress_argument,
    renamed,
    required,
)

SKIP_HINT = "to carry on a stopped run, pass --skip-existing (outputs that exist are kept, the rest restored); "


def register(commands) -> None:
    restore = command(commands, "restore", "restore images with chosen plugins or by instruction", run_restore, check_restore,
                      restore_paths)
    required(restore, restore.add_argument(
        "images", nargs="*", type=Path, metavar="IMAGE",
        help="images and folders of images to restore (never written over); under torchrun / accelerate launch the "
             "processes share them"))
    restore.add_argument("--plugin", action="append", type=Path, default=[], help="plugin file or task folder; repeat to chain plugins")
    restore.add_argument("--region", action="append", type=parse_region, default=[], metavar="TASK=MASK",
                         help="where a plugin acts: an image of the photo's size, white inside, black outside, grey a soft "
                              "edge (e.g. desnow=river.png); repeat for other plugins; the rest of the photo is kept")
    selection_arguments(restore)
    base_arguments(restore)
    RestoreSettings.add_arguments(restore)
    renamed(restore, "--weights", "--shares", "shares", parse_shares, WEIGHTS_MEANING)
    renamed(restore, "--threshold", "--renoise-until", "renoise_until", RestoreSettings.OPTIONS["renoise_until"].parse)
    restore.add_argument("-o", "--output", type=Path, default=Path("restored"),
                         help="output folder (files <name>.png), or an image file name for a single image")
    restore.add_argument("--save-latent", type=Path, help="also write the final latents to this .safetensors file")
    overwrite_argument(restore, "output files that exist")
    restore.add_argument("--skip-existing", action="store_true",
                         help="leave out images whose output exists (a stopped run over a folder carries on)")
    progress_argument(restore)

    select = command(commands, "select", "print the Plugin-Selector's scores for an image and instruction", run_select,
                     paths=select_paths)
    required(select, select.add_argument("image", nargs="?", type=Path, help="the image"))
    selection_arguments(select, need=True)
    base_arguments(select)
    select.add_argument("--json", action="store_true", help="print the scores as JSON")


def selection_arguments(parser, need: bool = False) -> None:
    prompt = parser.add_argument("--prompt", help="the instruction, e.g. 'remove the rain and the haze'")
    plugins = parser.add_argument("--plugins", type=Path, help="folder of plugins to choose among (.safetensors files "
                                                               "and/or reference task folders)")
    selector = parser.add_argument("--selector", type=Path, help="Plugin-Selector (.safetensors or the reference PromptTunner.pt)")
    parser.add_argument("--select-threshold", type=number("--select-threshold", float, low=SELECT_THRESHOLD_MIN), default=SELECT_THRESHOLD,
                        help="θ: plugins scoring above it are selected")
    if need:
        required(parser, prompt, plugins, selector)


def check_restore(args) -> list[str]:
    from ..launch import launched_processes

    found = []
    if bool(args.plugin) == bool(args.prompt):
        found.append("give either --plugin PATH (repeatable) or --prompt TEXT with --plugins and --selector")
    elif args.prompt and (args.plugins is None or args.selector is None):
        found.append("--prompt needs --plugins DIR and --selector PATH")
    if args.skip_existing and args.overwrite:
        found.append("--skip-existing keeps outputs that exist, --overwrite replaces them: give one of them")
    if args.save_latent and launched_processes() > 1:
        found.append("--save-latent writes one file for all images: restore in one process to use it")
    return found


def selection_paths(args) -> list[str]:
    return path_problems(("--plugins", args.plugins, "folder", "folder"), ("--selector", args.selector, "file", "file"))


def restore_paths(args) -> list[str]:
    """The images, plugins, region masks, --plugins / --selector and the base, as far as the file system shows."""
    regions = [("--region", region[1], "image", "file") for region in args.region if not isinstance(region, Invalid)]
    return (path_problems(*[(None, image, "image or folder", None) for image in args.images],
                          *[("--plugin", plugin, "file", None) for plugin in args.plugin], *regions)
            + selection_paths(args) + base_path_problems(args, with_text=bool(args.prompt)))


def select_paths(args) -> list[str]:
    return path_problems((None, args.image, "image", "file")) + selection_paths(args) + base_path_problems(args, with_text=True)


def parse_region(text: str):
    """'desnow=river.png' -> ("desnow", Path("river.png")), or an `Invalid` message."""
    task, equals, path = text.partition("=")
    if not equals or not task.strip() or not path.strip():
        return Invalid(f"--region: {text!r} is not TASK=MASK (e.g. desnow=river.png)")
    return task.strip(), Path(path.strip())


def load_regions(named: list[tuple[str, Path]], photos: list[Path]) -> tuple:
    """Each --region's mask, read and checked against every photo's size (one message for all)."""
    from ..images import load_region, upright_size

    tasks = [task for task, _ in named]
    if len(set(tasks)) < len(tasks):
        raise PluginError(f"--region names {', '.join(sorted({t for t in tasks if tasks.count(t) > 1}))} twice: one region per plugin")
    regions = tuple((task, load_region(path)) for task, path in named)
    sizes = {photo: upright_size(photo) for photo in photos}
    problems = [f"{path} is {region.shape[-1]}x{region.shape[-2]}, {photo} {width}x{height}"
                for (task, region), (_, path) in zip(regions, named) for photo, (width, height) in sizes.items()
                if (region.shape[-1], region.shape[-2]) != (width, height)]
    if problems:
        raise PluginError("a region must have its photo's size: " + "; ".join(problems[:5])
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return regions


def _library(args, device, dtype):
    """The plugins of --plugins and the --selector, for --prompt."""
    from ..models import find_plugins, load_plugin
    from ..selector import load_selector

    found = find_plugins(args.plugins)
    if not found:
        raise PluginError(f"{args.plugins}: no plugins found")
    plugins = [load_plugin(path, device=device, dtype=dtype) for path in found.values()]
    return plugins, load_selector(args.selector, device=device)[0]


def run_restore(args) -> int:
    from ..outputs import check_new_files, renamed_note, restore_targets
    from ..restore import Processes, Selecting, check_shares, describe_run, find_inputs
    from .args import device_of, restorer_for, torch_dtype

    settings = RestoreSettings.from_args(args, device=device_of(args.device))  # tiles not given: the device's
    files, left_out, notes = find_inputs(args.images)
    if not files:
        raise PluginError("none of the images can be read: " + "; ".join(left_out[:5]))
    targets = restore_targets(files, args.output, overwrite=args.overwrite or args.skip_existing, also=SKIP_HINT)
    work = [(f, t) for f, t in zip(files, targets) if not (args.skip_existing and t.exists())]
    if args.save_latent:
        check_new_files([args.save_latent], overwrite=args.overwrite, inputs=files)
    if args.region:
        settings = settings.replace(regions=load_regions(args.region, [source for source, _ in work]))
    processes = Processes(device_of(args.device))  # several processes: each its own GPU, for plugins and models
    say = print if processes.is_main else (lambda *a, **k: None)
    for note in notes + [renamed_note(files, targets)]:
        if note:
            say(f"note: {note}", file=sys.stderr)
    for problem in left_out:
        say(f"not restored: {problem}", file=sys.stderr)
    if len(work) < len(targets):
        say(f"{len(targets) - len(work)} of {len(targets)} outputs exist already: skipped (--skip-existing)")
    if work and (tiles := _tile_note(args, settings, [source for source, _ in work], processes.device)):
        say(f"note: {tiles}", file=sys.stderr)
    if not work:
        return 0 if not left_out else 1
    from ..models import load_plugin

    dtype = torch_dtype(args.dtype)
    chain = [load_plugin(p, device=processes.device, dtype=dtype) for p in args.plugin]
    selecting = Selecting(args.prompt, *_library(args, processes.device, dtype), args.select_threshold) if args.prompt else None
    check_shares(settings, chain or selecting.plugins)
    if chain and (len(chain) > 1 or settings.strength != 1 or settings.shares):
        say(f"runs: {describe_run(chain, settings)}")
    restorer = restorer_for(args, processes.device, with_text=selecting is not None)
    report = _run(restorer, work, settings, chain, selecting, processes, args)
    if args.save_latent:
        _write_latents(args.save_latent, report.latents)
    problems = left_out + report.failed
    if problems:
        say(f"{len(problems)} image(s) not restored: " + "; ".join(problems[:5]), file=sys.stderr)
        return 1
    return 0


def _tile_note(args, settings, photos, device) -> str | None:
    """On a CPU, for the largest photo: the tiles it chose (--tile-size not given), or the faster
    ones (given, and larger)."""
    from ..images import upright_size, working_size
    from ..restore import TileSettings, tile_advice, tile_defaults

    sizes = []
    for photo in photos:
        try:
            sizes.append(upright_size(photo))
        except (OSError, PluginError):
            continue  # reported when it is restored
    largest = max(sizes, key=max, default=None)
    if largest is None:
        return None
    if args.tile_size is not None:
        return tile_advice(settings, *largest, device)
    gpu, working = TileSettings(), working_size(*largest, settings.resolution, settings.resize)
    if tile_defaults(device) == gpu or max(working) <= settings.tiles.size:
        return None
    return (f"tiles of {settings.tiles.size} px, overlap {settings.tiles.overlap} px: the default on a CPU (a GPU's are "
            f"{gpu.size} px, which keep photos up to {gpu.size} px a side whole, the reference result; --tile-size {gpu.size} "
            "does that here, at more time per pixel)")


def _run(restorer, work, settings, chain, selecting, processes, args):
    """restore_files with a progress bar: one image, its UNet calls; several, the images of all processes."""
    from ..restore import restore_files
    from .progress import ProgressBar

    one = len(work) == 1
    bar = None if args.no_progress or not processes.is_main else ProgressBar("restoring", unit="UNet call" if one else "image")
    if bar and not one:
        bar(0, len(work))

    def on_calls(source, done, total):
        if bar and one:
            bar(done, total)
        elif bar:
            bar(processes.finished(0), len(work), image=f"{source.name} {done}/{total}")

    report = bar.write if bar else (lambda text: print(text, file=sys.stderr) if processes.is_main else None)
    try:
        return restore_files(restorer, work, settings, plugins=chain, selecting=selecting, processes=processes,
                             on_calls=on_calls if bar else None, on_image=None if one or not bar else bar, say=print,
                             report=report, on_stage=(lambda source, label: bar.stage(label)) if bar else None)
    finally:
        if bar:
            bar.close()


def _write_latents(path: Path, latents: dict) -> None:
    from ..formats import write_safetensors

    write_safetensors(path, {f"latent.{i}": latent for i, latent in enumerate(latents.values())},
                      {"images": json.dumps([str(p) for p in latents])})
    print(f"wrote {path}")


def run_select(args) -> int:
    from ..images import load_image
    from .args import device_of, restorer_for, torch_dtype

    device = device_of(args.device)
    image = load_image(args.image)
    library, selector = _library(args, device, torch_dtype(args.dtype))
    restorer = restorer_for(args, device, with_text=True)
    selection = restorer.select(image, args.prompt, library, selector, args.select_threshold)
    print(json.dumps(selection.as_dict(), indent=1) if args.json else selection.format())
    return 0
