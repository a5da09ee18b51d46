"""The `diffplugin` command line (also `python -m plugin_core`): it parses, checks and reports;
the work is plugin_core's. Each command module registers its own parser.

Every argument mistake of a command, and every path it names that is not there, is reported
together in one message (args.py), and each command checks its files before any model loads; a user
error is one message and exit status 2 (`-v` adds the traceback), Ctrl+C ends with 130. Help and
argument errors import no torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from .. import __version__
from ..errors import PluginError
from . import evaluate, files, restore, selector, train
from .args import INTERRUPTED, Formatter, Parser, did_you_mean, problems, usage_error

COMMAND_MODULES = (restore, files, train, selector, evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="diffplugin", formatter_class=Formatter, description="Diff-Plugin: task plugins for Stable Diffusion 1.x.")
    parser.add_argument("--version", action="version", version=f"diffplugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more messages, and the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def unknown_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The message for a first word that is no command (with the nearest one), or None."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    word = next((item for item in argv if not item.startswith("-")), None)
    if word is None or word in commands:
        return None
    return usage_error(parser.prog, [f"{word!r} is not a command{did_you_mean(word, commands)}"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if message := unknown_command(parser, argv):
        print(message, end="", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0 if not extra else 2
    mistakes = problems(args, extra)
    if mistakes:
        print(usage_error(args.parser.prog, mistakes), end="", file=sys.stderr)
        return 2
    for note in getattr(args, "notes", []):
        print(note, file=sys.stderr)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.run(args) or 0
    except PluginError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        print("\ninterrupted: stopped (Ctrl+C); nothing more was written", file=sys.stderr)
        return INTERRUPTED


def _quiet_libraries() -> None:
    """diffusers/transformers loading chatter (accelerate hints, weight bars) hides our output; set
    through their environment variables, so that neither is imported for it."""
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("diffusers", "transformers"):
        if sys.modules.get(name) is not None:  # already imported (a script calling main): set it directly
            sys.modules[name].utils.logging.set_verbosity_error()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
