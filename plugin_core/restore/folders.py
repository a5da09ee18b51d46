"""Image files restored into image files: the library code behind `diffplugin restore`, for
scripts that restore a folder the same way.

* `find_inputs`: the files named (each must be readable, checked before any model loads) and the
  image files of folders (an unreadable one is named and left out: it never stops the others);
* `restore_files`: one image at a time (memory never grows with the folder), each with the given
  chain or with what the Plugin-Selector chose for it, written atomically (a stopped run leaves no
  half image); under a launcher each process restores its share (`Processes`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputImageError, PluginError
from ..formats import atomic_write
from ..images import check_image_file, depth_note, image_files, load_photo, with_alpha
from .processes import Processes
from .recipe import PluginGroup, describe_run, groups_by_selection
from .settings import RestoreSettings


@dataclass
class Selecting:
    """Restore by instruction: the Plugin-Selector chooses each image's plugins among `plugins`."""

    instruction: str
    plugins: list
    selector: object
    threshold: float = 0.0


@dataclass
class FolderReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # why each image of this process's share was not restored
    latents: dict[Path, object] = field(default_factory=dict)  # input -> its final latent


def find_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[str], list[str]]:
    """(the image files to restore, why each unreadable folder member is not restored, notes: the
    subfolders each folder has, which are not looked into). A file named here is read whole now: a
    broken one stops the command before any model loads; a folder's members are checked by their
    structure (cheap on a large folder); hidden files (`.name`) are not images to restore."""
    files, left_out, notes = [], [], []
    for path in map(Path, paths):
        if not path.is_dir():
            check_image_file(path, decode=True)
            files.append(path)
            continue
        found = image_files(path)
        subfolders = sum(1 for member in path.iterdir() if member.is_dir() and not member.name.startswith("."))
        skipped = f"{subfolders} subfolder{'s' if subfolders > 1 else ''} skipped (only the images directly in a " \
                  "folder are restored; name a subfolder to restore it)" if subfolders else ""
        if not found:
            raise PluginError(f"{path}: no image files in this folder" + (f"; {skipped}" if skipped else ""))
        if skipped:
            notes.append(f"{path}: {skipped}")
        for member in found:
            try:
                check_image_file(member)
                files.append(member)
            except InputImageError as error:
                left_out.append(str(error))
    return files, left_out, notes


def restore_files(restorer, work: Sequence[tuple[Path, Path]], settings: RestoreSettings, *, plugins: Sequence = (),
                  selecting: Selecting | None = None, processes: Processes | None = None,
                  on_calls: Callable[[Path, int, int], None] | None = None,
                  on_image: Callable[[int, int], None] | None = None, say: Callable[[str], None] = print,
                  report: Callable[[str], None] | None = None,
                  on_stage: Callable[[Path, str], None] | None = None) -> FolderReport:
    """Restore each (input, output) pair of `work` (this process's share of it): with `plugins` in
    order, or with each image's selection (`selecting`). on_calls(input, done, total): UNet calls of
    the image at hand; on_image(done, total): images finished by all processes; say(line): what was
    written and selected; report(line): the tile plan, the time it takes, notes on an image (its bit
    depth, its transparency), what failed (default: say); on_stage(input, label): the plugin that
    runs now ('derain 1/2'), or 'decoding'."""
    processes = processes or Processes(str(restorer.device))
    report, done_report = report or say, FolderReport()
    for source, target in processes.share(list(work)):
        try:
            image, alpha = load_photo(source)
            if depth := depth_note(source):
                report(f"{source}: {depth}")
            groups = _groups(restorer, image, source, plugins, selecting, say, settings)
            progress = (lambda done, total, source=source: on_calls(source, done, total)) if on_calls else None
            stage = (lambda label, source=source: on_stage(source, label)) if on_stage else None
            result = restorer.restore_groups([image], groups, settings, progress=progress, report=report, stage=stage)
        except InputImageError as error:  # a file that changed since it was checked: the others go on
            done_report.failed.append(str(error))
            report(f"not restored: {error}")
            processes.finished()
            continue
        restored, note = with_alpha(result.images[0], alpha, image_format(target))
        if note:
            report(f"{source}: {note}")
        atomic_write(target, lambda temp: restored.save(temp, format=image_format(target)))
        done_report.written.append(target)
        done_report.latents[source] = result.latents[0]
        done = processes.finished()
        if on_image:
            on_image(done, len(work))
        say(f"wrote {target}")
    if on_image and processes.is_main:  # rank 0 finished its share: show the others'
        while (done := processes.finished(0)) < len(work):
            on_image(done, len(work))
            time.sleep(0.5)
        on_image(done, len(work))
    processes.end()
    return done_report


def _groups(restorer, image, source: Path, plugins, selecting: Selecting | None, say, settings) -> list[PluginGroup]:
    if selecting is None:
        return [PluginGroup([0], list(plugins))]
    selection = restorer.select_each([image], selecting.instruction, selecting.plugins, selecting.selector,
                                     selecting.threshold)[0]
    groups = groups_by_selection([selection], {p.task: p for p in selecting.plugins})
    say(f"{source}:\n{selection.format()}\nruns: {describe_run(groups[0].plugins, settings)}")
    return groups


def image_format(target: Path) -> str:
    """PIL's format name for an output file's suffix (PNG for a suffix it does not know)."""
    from PIL import Image

    return Image.registered_extensions().get(Path(target).suffix.lower(), "PNG")
