"""`diffplugin convert`, `info` and `synth`: files in, files out, nothing replaced unasked. `info`
on a .safetensors plugin reads its header alone (no torch, no diffusers)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import PluginError
from .args import DTYPES, choice, command, number, overwrite_argument, path_problems, required

SYNTH_SEED, PAIRS_PER_IMAGE, INTENSITY = 0, 1, (0.3, 0.9)


def degrade_help() -> str:
    from ..synthetic.kinds import KINDS

    text = "comma-separated degradations, applied in order: " + "; ".join(f"{name} ({what})" for name, what in KINDS.items())
    return text.replace("%", "%%")  # argparse formats help texts


def register(commands) -> None:
    convert = command(commands, "convert", "the reference layout -> one .safetensors per plugin", run_convert,
                      paths=lambda args: path_problems((None, args.source, "file or folder", None)))
    required(convert, convert.add_argument("source", nargs="?", type=Path,
                                           help="a task folder (tpb.pt + scb/), a PromptTunner.pt, or a folder of them (pre-trained/)"))
    required(convert, convert.add_argument("-o", "--output", type=Path, help="output file (one plugin or the selector) or folder"))
    convert.add_argument("--dtype", type=choice("--dtype", DTYPES), metavar="{" + ",".join(DTYPES) + "}",
                         help="store the weights in this dtype (default: as stored)")
    overwrite_argument(convert, "output files that exist")

    info = command(commands, "info", "what a plugin or selector file holds", run_info,
                   paths=lambda args: path_problems((None, args.path, "file or folder", None)))
    required(info, info.add_argument("path", nargs="?", type=Path, help="a plugin (.safetensors or task folder) or a selector file"))

    synth = command(commands, "synth", "write a training set of synthetic (degraded, clean) pairs from clean photos", run_synth,
                    check_synth, paths=lambda args: path_problems((None, args.clean, "folder", "folder")))
    required(synth, synth.add_argument("clean", nargs="?", type=Path, help="folder of clean photos (never written over)"))
    required(synth, synth.add_argument("-o", "--output", type=Path, help="folder for input/, target/ and pairs.csv"))
    synth.add_argument("--degrade", default="rain", help=degrade_help())
    synth.add_argument("--seed", type=number("--seed", low=0), default=SYNTH_SEED, help="pair k depends only on (seed, k)")
    synth.add_argument("--per-image", type=number("--per-image", low=1), default=PAIRS_PER_IMAGE, help="pairs per clean photo")
    synth.add_argument("--intensity", type=number("--intensity", float, low=0.0, high=1.0), nargs=2, default=INTENSITY,
                       metavar=("LOW", "HIGH"), help="intensity range in [0, 1], drawn per pair")
    overwrite_argument(synth, "pairs already in the output folder")


def run_convert(args) -> int:
    from ..formats import REFERENCE_SELECTOR_FILE, is_selector_file
    from ..models import (
        convert_reference_folder,
        convert_reference_plugin,
        is_partial_task_folder,
        is_reference_task_folder,
        reference_folder_problem,
    )
    from ..outputs import check_new_files
    from ..selector import convert_reference_selector
    from .args import torch_dtype

    dtype = torch_dtype(args.dtype) if args.dtype else None
    source, output = args.source, args.output
    if source.is_file():
        if not is_selector_file(source):
            raise PluginError(f"{source}: not a Plugin-Selector file; convert takes a reference task folder (tpb.pt + scb/), "
                              "a PromptTunner.pt, or a folder of them")
        target = output if output.suffix == ".safetensors" else output / "selector.safetensors"
        written = [convert_reference_selector(source, *check_new_files([target], overwrite=args.overwrite, inputs=[source]))]
    elif is_reference_task_folder(source):
        target = output if output.suffix == ".safetensors" else output / f"{source.name}.safetensors"
        written = [convert_reference_plugin(source, *check_new_files([target], overwrite=args.overwrite), dtype=dtype)]
    elif source.is_dir():
        if is_partial_task_folder(source):
            raise PluginError(f"{source}: a partial task folder ({reference_folder_problem(source)})")
        selector = source / REFERENCE_SELECTOR_FILE
        selector_target = check_new_files([output / "selector.safetensors"], overwrite=args.overwrite) if selector.is_file() else []
        written, skipped = convert_reference_folder(source, output, dtype=dtype, overwrite=args.overwrite)
        for folder, why in skipped:
            print(f"skipped {folder}: {why}")
        written += [convert_reference_selector(selector, target) for target in selector_target]
        if not written:
            raise PluginError(f"{source}: no reference task folders (tpb.pt + scb/) or plugin_selector/PromptTunner.pt found")
    else:
        raise PluginError(f"{source}: not found")
    for path in written:
        print(f"wrote {path}")
    return 0


def run_info(args) -> int:
    from ..formats import is_selector_file

    if is_selector_file(args.path):
        from ..selector import describe_selector, load_selector

        print(describe_selector(load_selector(args.path)[0], args.path))
    else:
        from ..models import describe_plugin

        print(describe_plugin(args.path))
    return 0


def check_synth(args) -> list[str]:
    low, high = args.intensity
    return [f"--intensity {low} {high}: LOW must not be above HIGH"] if low > high else []


def run_synth(args) -> int:
    from ..synthetic import write_pairs

    kinds = [k.strip() for k in args.degrade.split(",") if k.strip()]
    path = write_pairs(args.clean, args.output, kinds, seed=args.seed, intensity=tuple(args.intensity),
                       pairs_per_image=args.per_image, overwrite=args.overwrite)
    with path.open(newline="") as handle:
        pairs = sum(1 for _ in csv.reader(handle)) - 1  # the rows below the header
    print(f"wrote {pairs} pair{'s' if pairs != 1 else ''} ({args.output / 'input'}: degraded, {args.output / 'target'}: "
          f"clean), listed in {path}")
    return 0
