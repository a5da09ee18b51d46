"""`diffplugin restore` and `diffplugin select`: outputs, images, plugins and the base folders are
checked (in that order, cheapest first) before any model loads."""

from __future__ import annotations

import json
import sys
import time

from ..errors import InputImageError, PluginError
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


def _inputs(paths) -> tuple[list, list[str]]:
    """The images to restore: files as given (each must be readable, checked here), and the image
    files of folders (an unreadable one is named and left out: it never stops the others)."""
    from ..errors import InputImageError
    from ..images import image_files

    files, left_out = [], []
    for path in paths:
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise PluginError(f"{path}: no image files in this folder")
            for member in found:
                try:
                    _check_readable(member)
                    files.append(member)
                except InputImageError as error:
                    left_out.append(str(error))
        else:
            _check_readable(path)  # a file named by the user must be right: checked before anything loads
            files.append(path)
    return files, left_out


def _check_readable(path) -> None:
    from PIL import Image, UnidentifiedImageError

    from ..errors import InputImageError

    if not path.is_file():
        raise InputImageError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.verify()  # the header and structure, without decoding every pixel of a large folder
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputImageError(f"{path}: cannot read this image ({error})") from None


class _Processes:
    """This command's share of the work when a launcher (torchrun, accelerate launch) started
    several copies of it, and a count of finished images that every process adds to, so rank 0
    can show one bar for all (the process group's key-value store: no lockstep)."""

    def __init__(self, device):
        from ..training.distributed import launched_processes

        import torch

        self.state, self.device, self._done = None, device, 0
        if launched_processes() > 1:
            from accelerate import PartialState

            cpu = torch.device(device).type == "cpu"
            self.state = PartialState(cpu=cpu)
            self.state.wait_for_everyone()  # every process checked its outputs before any writes one
            self.device = device if cpu else self.state.device  # each process its own GPU
        self.is_main = self.state is None or self.state.is_main_process

    def share(self, items: list) -> list:
        if self.state is None:
            return items
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def finished(self, count: int = 1) -> int:
        """Add finished images; returns how many all processes finished."""
        if self.state is None:
            self._done += count
            return self._done
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store().add("diffplugin/restored", count)

    def end(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def restore(args) -> int:
    from ..formats import atomic_write
    from ..images import at_size, load_image
    from ..models import load_plugin
    from ..outputs import check_new_files, restore_targets
    from ..selector import group_by_selection
    from ..training.distributed import launched_processes

    if bool(args.plugin) == bool(args.prompt):
        raise PluginError("give either --plugin PATH (repeatable) or --prompt TEXT with --plugins and --selector")
    if args.skip_existing and args.overwrite:
        raise PluginError("--skip-existing keeps outputs that exist, --overwrite replaces them: give one of them")
    if args.save_latent and launched_processes() > 1:
        raise PluginError("--save-latent writes one file for all images: restore in one process to use it")
    try:
        tiles = TileSettings(args.tile_size, args.tile_overlap, args.tile_batch, args.tile_prompt)
    except ValueError as error:
        raise PluginError(str(error)) from None
    files, left_out = _inputs(args.images)
    if not files:
        raise PluginError("none of the images can be read: " + "; ".join(left_out[:5]))
    targets = restore_targets(files, args.output, overwrite=args.overwrite or args.skip_existing)
    if args.skip_existing:
        work = [(f, t) for f, t in zip(files, targets) if not t.exists()]
    else:
        work = list(zip(files, targets))
    if args.save_latent:
        check_new_files([args.save_latent], overwrite=args.overwrite, inputs=files)
    processes = _Processes(args.device)
    args.device = processes.device  # several processes: each its own GPU, for the plugins as for the models
    if args.plugin:
        chain = [load_plugin(p, device=args.device, dtype=DTYPES[args.dtype]) for p in args.plugin]
        library = selector = None
    else:
        chain, (library, selector) = None, _library(args)
    say = print if processes.is_main else (lambda *a, **k: None)
    for problem in left_out:
        say(f"left out: {problem}", file=sys.stderr)
    if len(work) < len(targets):
        say(f"{len(targets) - len(work)} of {len(targets)} outputs exist already: skipped (--skip-existing)")
    if not work:
        return 0 if not left_out else 1
    mine = processes.share(work)
    restorer = _restorer(args, with_text=library is not None)
    one_bar = len(work) == 1  # one image: the bar counts its UNet calls; several: images, of all processes
    bar = None if args.no_progress or not processes.is_main else ProgressBar("restoring", unit="UNet call" if one_bar else "image")
    if bar and not one_bar:
        bar(0, len(work))
    report = bar.write if bar else (lambda text: say(text, file=sys.stderr))
    failed, latents = [], []
    for path, target in mine:
        try:
            image = load_image(path)
            if library is None:
                groups = [([0], chain)]
            else:
                selection = restorer.select_each([image], args.prompt, library, selector, args.select_threshold)[0]
                print(f"{path}:\n{selection.format()}")
                groups = group_by_selection([selection], {p.task: p for p in library})

            def progress(done, total):
                if bar and one_bar:
                    bar(done, total)
                elif bar:
                    bar(processes.finished(0), len(work), image=f"{path.name} {done}/{total}")

            result = restorer.restore_groups([image], groups, steps=args.steps, later_steps=args.later_steps, seed=args.seed,
                                             threshold=args.threshold, resolution=args.resolution, resize_mode=args.resize,
                                             tiles=tiles, color_fix=args.color_fix, progress=progress if bar else None,
                                             report=report)
        except InputImageError as error:  # a file that changed since the check: the others go on
            failed.append(str(error))
            report(f"not restored: {error}")
            processes.finished()
            continue
        out = at_size(result.images[0], image.size) if args.output_size == "original" else result.images[0]
        atomic_write(target, lambda temp: out.save(temp, format=_format(target)))  # a killed run leaves no half image
        latents.append(result.latents[0])
        done = processes.finished()
        if bar and not one_bar:
            bar(done, len(work))
        print(f"wrote {target}")
    if bar and not one_bar:
        while (done := processes.finished(0)) < len(work):  # rank 0 finished its share: show the others'
            bar(done, len(work))
            time.sleep(0.5)
        bar(done, len(work))
    processes.end()
    if bar:
        bar.close()
    if args.save_latent:
        from ..formats import write_safetensors

        write_safetensors(args.save_latent, {f"latent.{i}": latent for i, latent in enumerate(latents)},
                          {"images": json.dumps([str(p) for p, _ in mine])})
        print(f"wrote {args.save_latent}")
    problems = left_out + failed
    if problems:
        say(f"{len(problems)} image(s) not restored: " + "; ".join(problems[:5]), file=sys.stderr)
        return 1
    return 0


def _format(target) -> str:
    from PIL import Image

    return Image.registered_extensions().get(target.suffix.lower(), "PNG")


def select(args) -> int:
    from ..images import load_image

    image = load_image(args.image)
    library, selector = _library(args)
    restorer = _restorer(args, with_text=True)
    selection = restorer.select(image, args.prompt, library, selector, args.select_threshold)
    print(json.dumps(selection.as_dict(), indent=1) if args.json else selection.format())
    return 0
