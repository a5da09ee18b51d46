"""`diffplugin convert`, `info` and `synth`: files in, files out, nothing replaced unasked."""

from __future__ import annotations

from ..errors import PluginError
from .args import DTYPES


def convert(args) -> int:
    from ..models import convert_reference_folder, convert_reference_plugin, is_reference_task_folder
    from ..models.files import reference_folder_problem
    from ..outputs import check_new_files
    from ..selector.files import REFERENCE_SELECTOR_FILE, convert_reference_selector, is_selector_file

    dtype = DTYPES[args.dtype] if args.dtype else None
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
        selector = source / REFERENCE_SELECTOR_FILE
        if (source / "tpb.pt").is_file() or (source / "scb").is_dir():
            raise PluginError(f"{source}: a partial task folder ({reference_folder_problem(source)})")
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


def info(args) -> int:
    from ..selector.files import describe_selector, is_selector_file, load_selector

    if is_selector_file(args.path):
        print(describe_selector(load_selector(args.path)[0], args.path))
    else:
        from ..models import describe_plugin, load_plugin

        print(describe_plugin(load_plugin(args.path), args.path))
    return 0


def synth(args) -> int:
    from ..synthetic import write_pairs

    low, high = args.intensity
    if low > high:
        raise PluginError(f"--intensity {low} {high}: LOW must not be above HIGH")
    kinds = [k.strip() for k in args.degrade.split(",") if k.strip()]
    path = write_pairs(args.clean, args.output, kinds, seed=args.seed, intensity=(low, high), pairs_per_image=args.per_image,
                       overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
