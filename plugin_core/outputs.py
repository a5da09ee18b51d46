"""Where results go, decided and checked before any work starts, so that nothing a user has is
lost: an input is never written over, and an existing file is replaced only when the user says
so (`overwrite`); and whether a path lies inside given folders (`inside`), for callers that must
keep to them (a server reading what a prompt names)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import PluginError
from .images import IMAGE_SUFFIXES, is_image_file

OVERWRITE_HINT = "pass --overwrite to replace it"


class OutputError(PluginError):
    """An output that would replace an input or an existing file, or cannot be written."""


class OutputsExist(OutputError):
    """Outputs that exist already, and no `overwrite`: `paths` names them, so that a front end
    other than the command line can word its own remedy (the message names the CLI's)."""

    def __init__(self, message: str, paths: Sequence[Path]):
        super().__init__(message)
        self.paths = list(paths)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_new_files(targets: Iterable[Path], *, overwrite: bool = False, inputs: Sequence[Path] = (),
                    elsewhere: str = "choose another -o", also: str = "") -> list[Path]:
    """Each target must not be an input (whatever `overwrite` says) and must not exist unless
    `overwrite`; its folder must not be a file. Returns the targets. The messages end with
    `elsewhere` (how to name another output) and, for existing outputs, `also` (another remedy)
    before the overwrite hint."""
    targets = [Path(t) for t in targets]
    for target in targets:
        clash = next((i for i in inputs if _same_file(target, Path(i))), None)
        if clash is not None:
            raise OutputError(f"{target}: this is an input ({clash}); results never replace an input: {elsewhere}")
        if target.is_dir():
            raise OutputError(f"{target}: a folder of that name exists; choose a file name")
        for parent in target.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise OutputError(f"{target}: {parent} is a file, not a folder")
                break
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise OutputsExist(f"{shown} already exist{'s' if len(existing) == 1 else ''}; {also}{OVERWRITE_HINT}, or {elsewhere}",
                           existing)
    return targets


def restore_targets(inputs: Sequence[Path], output: Path, *, overwrite: bool = False, also: str = "") -> list[Path]:
    """The file each restored image goes to: `output` itself for one input and an image file
    name, else output/`folder_names`.png; checked by check_new_files."""
    inputs, output = [Path(p) for p in inputs], Path(output)
    if output.exists() and not output.is_dir() and not is_image_file(output):
        raise OutputError(f"-o {output} is a file, not a folder; give a folder, or an image file name for one image")
    if output.suffix and not is_image_file(output) and not output.is_dir():
        raise OutputError(f"-o {output}: '{output.suffix}' is not an image format ({', '.join(IMAGE_SUFFIXES)}); give an image "
                          "file name, or a folder (to write into a folder of that name, create it first)")
    if is_image_file(output) and not output.is_dir():
        if len(inputs) != 1:
            raise OutputError(f"-o {output} names one image file, but {len(inputs)} images are restored; give a folder")
        targets = [output]
    else:
        targets = [output / f"{name}.png" for name in folder_names(inputs)]
    return check_new_files(targets, overwrite=overwrite, inputs=inputs, also=also)


def folder_names(inputs: Sequence[Path]) -> list[str]:
    """The names (without .png) the inputs' results get in one folder: each input's stem; inputs that
    share a stem (compared case-blind, as Windows and macOS are) but not a suffix keep it in their
    name (x.png, x.jpg -> x_png, x_jpg); one name in several folders (a/x.png, b/x.png) gets _1, _2."""
    inputs = [Path(p) for p in inputs]
    suffixes: dict[str, set[str]] = {}
    for path in inputs:
        suffixes.setdefault(path.stem.lower(), set()).add(path.suffix.lower())
    names = [f"{p.stem}_{p.suffix[1:].lower()}" if len(suffixes[p.stem.lower()]) > 1 else p.stem for p in inputs]
    lowered = [name.lower() for name in names]
    used, counts, result = set(), {}, []
    for name in names:
        if lowered.count(name.lower()) > 1:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
            name = f"{name}_{counts[name.lower()]}"
        while name.lower() in used:
            name += "_"
        used.add(name.lower())
        result.append(name)
    return result


def renamed_note(inputs: Sequence[Path], targets: Sequence[Path]) -> str | None:
    """A note naming the inputs whose results are not <stem>.png because inputs share a name."""
    renamed = [(source, target) for source, target in zip(inputs, targets)
               if len(inputs) > 1 and Path(target).stem != Path(source).stem]
    if not renamed:
        return None
    shown = "; ".join(f"{source} -> {target}" for source, target in renamed[:5])
    return (f"{len(renamed)} inputs share a name, so their results are named apart: {shown}"
            + (f" (and {len(renamed) - 5} more)" if len(renamed) > 5 else ""))


def normal_path(path: Path | str) -> str:
    """An absolute path with '.' and '..' resolved by name, links not followed (as ComfyUI compares paths)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def inside(path: Path | str, roots: Iterable[Path | str]) -> bool:
    """Whether `path` lies in one of the folders `roots` (by name: `normal_path`)."""
    path = normal_path(path)
    for root in map(normal_path, roots):
        try:
            if os.path.commonpath([path, root]) == root:
                return True
        except ValueError:  # another drive (Windows)
            continue
    return False
