"""The command line's arguments: every command's mistakes are collected and reported together, in
one message (argparse alone stops at the first), and nothing here imports torch, so help and
argument errors answer at once.

* a value is checked while it is read (plugin_core.options.Option.parse gives an `Invalid`
  message instead of raising);
* required arguments are marked with `required()` and checked with everything else;
* a command adds its own cross-argument rules as `check(args) -> [problems]` and names the
  paths it reads as `paths(args) -> [problems]` (`path_problems`; both set_defaults): a path
  that is not there comes with the other mistakes, before torch is imported;
* an unknown command or option gets the nearest name (`did_you_mean`), and a mistake is printed
  as two short lines (`usage_error`), not argparse's usage block.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from ..options import Invalid, Option

DTYPES = ("float32", "float16", "bfloat16")
INTERRUPTED = 130  # the exit status after Ctrl+C


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, and keeps help texts on one line each."""

    def _get_help_string(self, action):
        text = action.help or ""
        empty = action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS
        if empty or action.nargs == 0 or "%(default)" in text or "default" in text:  # a switch (--no-crop): no default
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse's own errors (a value missing after an option, options that exclude each other) as
    every other mistake: two short lines, exit status 2."""

    def error(self, message):
        self.exit(2, usage_error(self.prog, [message]))


def usage_error(prog: str, mistakes: list[str]) -> str:
    """The message of a command line's mistakes: the error first, then where the help is."""
    return f"{prog}: error: " + "; ".join(mistakes) + f"\nsee: {prog} --help\n"


def did_you_mean(word: str, names) -> str:
    """' (did you mean X?)' for the name nearest a mistyped one, or ''."""
    near = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def command(commands, name: str, description: str, run, check=None, paths=None) -> argparse.ArgumentParser:
    """A subcommand: `run(args)` does it, `check(args)` lists its cross-argument mistakes, `paths(args)`
    what is wrong with the paths it reads (`path_problems`)."""
    parser = commands.add_parser(name, help=description, description=description, formatter_class=Formatter)
    parser.set_defaults(run=run, check=check, paths=paths, parser=parser, required=[])
    return parser


def required(parser: argparse.ArgumentParser, *actions: argparse.Action) -> None:
    """Mark arguments as required; missing ones are reported with every other mistake."""
    parser.set_defaults(required=parser.get_default("required") + [(a.option_strings[0] if a.option_strings else a.metavar or a.dest, a.dest) for a in actions])


def problems(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Every mistake of a parsed command line: bad values, missing and unknown arguments, paths that
    are not there, and the command's own rules (checked only when the values themselves are right)."""
    found = [value for value in vars(args).values() if isinstance(value, Invalid)]
    found += [item for value in vars(args).values() if isinstance(value, list) for item in value if isinstance(item, Invalid)]
    missing = [flag for flag, dest in args.required if getattr(args, dest, None) in (None, [])]
    if missing:
        found.append(f"missing {', '.join(missing)}")
    if extra:
        flags = [flag for action in args.parser._actions for flag in action.option_strings]
        found.append(f"unrecognized arguments: {' '.join(extra)}" + "".join(
            did_you_mean(item.split("=")[0], flags) for item in extra if item.startswith("--")))
    values_right = not found
    if args.paths:
        found += args.paths(args)
    if getattr(args, "device", None) and (problem := device_problem(args.device)):  # imports torch only when asked
        found.append(problem)
    if values_right and args.check:  # a path not there does not hide a rule between arguments
        found += args.check(args)
    return found


def path_problems(*named) -> list[str]:
    """What is wrong with each (flag, path, noun, kind): not there, or not a 'file' / 'folder' as
    `kind` says (None: either). flag None for a positional argument; path None (not given) and
    `Invalid` values are passed over. Pure Python: no torch, no file read."""
    found = []
    for flag, path, noun, kind in named:
        if path is None or isinstance(path, Invalid):
            continue
        path = Path(path)
        name = f"{flag} {path}" if flag else str(path)
        if not path.exists():
            found.append(f"{name}: {noun} not found")
        elif kind == "folder" and not path.is_dir():
            found.append(f"{name}: a file, not a folder")
        elif kind == "file" and path.is_dir():
            found.append(f"{name}: a folder, not a file")
    return found


def base_path_problems(args, with_text: bool = False) -> list[str]:
    """--sd (with --sd-config) and --clip-vision as far as the file system shows (plugin_core.base)."""
    from ..base.sources import base_problems

    return base_problems(args.sd, args.clip_vision, sd_config=args.sd_config, with_text=with_text)


def number(flag: str, kind: type = int, **limits):
    """A converter for a number option that is not a setting of its own (Option's rules)."""
    return Option(flag, "", kind=kind, **limits).parse


def choice(flag: str, options) -> callable:
    return Option(flag, "", kind=str, choices=tuple(options)).parse


def renamed(parser: argparse.ArgumentParser, old: str, new: str, dest: str, type, why: str = "") -> None:
    """An option's old name: it works as the new one, and a note says the new name (and `why`)."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, values)
            namespace.notes = [*getattr(namespace, "notes", []), f"note: {old} is now called {new}" + (f": {why}" if why else "")]

    parser.add_argument(old, dest=dest, type=type, action=Renamed, help=argparse.SUPPRESS)


def base_arguments(parser: argparse.ArgumentParser, *, dtype: bool = True, need: bool = True) -> None:
    """--sd (--sd-config), --clip-vision, --device (and --dtype): the frozen base and where it runs."""
    sd = parser.add_argument("--sd", type=Path, help="Stable Diffusion 1.x: a checkpoint file as ComfyUI's models/checkpoints "
                                                     "holds it (.safetensors or .ckpt), or a diffusers folder")
    parser.add_argument("--sd-config", type=Path, help="for a checkpoint file of other shapes than SD 1.5: a diffusers folder "
                                                       "of its configs (default: the SD 1.5 configs shipped with the package)")
    clip = parser.add_argument("--clip-vision", type=Path, help="CLIP ViT-L/14 vision: a .safetensors file as ComfyUI's "
                                                                "models/clip_vision holds it, or a transformers folder")
    if need:
        required(parser, sd, clip)
    device_argument(parser)
    if dtype:
        parser.add_argument("--dtype", type=choice("--dtype", DTYPES), default="float32", metavar="{" + ",".join(DTYPES) + "}",
                            help="compute precision (the VAE stays float32)")


def device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="where the models run: cpu, cuda, cuda:1, mps (default: cuda when there is "
                                         "one, else cpu)")


def overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} (without it, existing ones are kept and the command stops before any work)")


def progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def device_of(text: str | None) -> str:
    """The device to run on: the one asked for (checked by `device_problem`) or the default."""
    if text is not None:
        return text
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(text: str) -> str | None:
    """Why this machine cannot run on the device `text`, or None."""
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        return f"--device: {text!r} is not a device (cpu, cuda, cuda:1, mps)"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
            return f"--device {text}: no CUDA GPU here (torch {torch.__version__} is {build}); use --device cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        return "--device mps: no Apple GPU (mps) here; use --device cpu"
    return None


def check_base_arguments(args, with_text: bool = False) -> None:
    """--sd (with --sd-config) and --clip-vision checked, before any model loads."""
    from ..base import check_base

    check_base(args.sd, args.clip_vision, sd_config=args.sd_config, with_text=with_text)


def restorer_for(args, device: str, with_text: bool):
    """The Restorer on the base models --sd / --clip-vision name (checked before they load)."""
    from ..base import BaseModels
    from ..restore import Restorer

    check_base_arguments(args, with_text)
    dtype = torch_dtype(args.dtype)
    models = BaseModels.from_pretrained(args.sd, args.clip_vision, sd_config=args.sd_config, with_text=with_text, device=device,
                                        dtype=dtype)
    return Restorer(models, device=device, dtype=dtype)
