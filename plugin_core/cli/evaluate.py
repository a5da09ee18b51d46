"""`diffplugin evaluate` and `diffplugin make-stats`: measure restorations.

evaluate PRED TARGET           paired metrics of two folders matched by name (PSNR, SSIM, LPIPS)
evaluate PRED --reference DIR | --reference-stats STATS   set metrics (CLIP-FID, KID, FID)
evaluate --plugin P --data VAL restore a paired validation set, then measure it
make-stats CLEAN -o STATS      the features of a clean set, once, for --reference-stats

Everything a run needs (folders, names, sizes, outputs, weight files) is checked before any
model loads (`_plan`: evaluation.plan's plan); an existing --json / --csv is kept unless
--overwrite. Restore-and-measure restores through evaluation.plan (restore.folders.restore_files:
the files `diffplugin restore` writes) and measures what it wrote.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import PluginError
from ..restore.settings import WEIGHTS_MEANING, RestoreSettings, parse_shares
from .args import (
    base_arguments,
    base_path_problems,
    choice,
    command,
    device_argument,
    overwrite_argument,
    path_problems,
    progress_argument,
    renamed,
    required,
)

LPIPS_MODES = ("auto", "require", "off")


def register(commands) -> None:
    evaluate = command(commands, "evaluate", "measure restored images: PSNR/SSIM/LPIPS against references, FID/KID against a "
                       "clean set", run_evaluate, check_evaluate, evaluate_paths)
    evaluate.add_argument("pred", nargs="?", type=Path, help="folder of restored images (not with --plugin)")
    evaluate.add_argument("target", nargs="?", type=Path, help="folder of their references, matched by file name")
    paired = evaluate.add_argument_group("paired metrics")
    paired.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the BT.601 luma (Y of YCbCr), as restoration papers")
    paired.add_argument("--lpips", type=choice("--lpips", LPIPS_MODES), default="auto", metavar="{auto,require,off}",
                        help="LPIPS (AlexNet): 'auto' measures it when its weights and torchvision are here, 'require' stops "
                             "when they are not")
    paired.add_argument("--lpips-weights", type=Path,
                        help="torchvision's alexnet-owt-7be5be79.pth (default: torch's hub cache); implies --lpips require")
    sets = evaluate.add_argument_group("set metrics (the paper's Table 1)")
    reference = sets.add_mutually_exclusive_group()
    reference.add_argument("--reference", type=Path, help="folder of clean images to compare the set with (default: TARGET)")
    reference.add_argument("--reference-stats", type=Path, help="a clean set's statistics file from `diffplugin make-stats`")
    _network_arguments(sets)
    restore = evaluate.add_argument_group("restore and measure")
    restore.add_argument("--plugin", action="append", type=Path, default=[], help="plugin file or task folder; repeat to chain")
    restore.add_argument("--data", type=Path, help="the paired set: a pairs CSV (image,conditioning_image) or input/ + target/")
    base_arguments(restore, need=False)
    RestoreSettings.add_arguments(evaluate, exclude=("output_size",))  # measured at each input's own size
    renamed(evaluate, "--weights", "--shares", "shares", parse_shares, WEIGHTS_MEANING)
    restore.add_argument("--save-restored", type=Path,
                         help="also write the restored images to this folder (<name>.png, as `restore` writes them: a "
                              "photo's alpha kept)")
    evaluate.add_argument("--json", type=Path, help="write the metrics, per-image rows and settings to this JSON file")
    evaluate.add_argument("--csv", type=Path, help="write the per-image rows and the mean row to this CSV file")
    evaluate.add_argument("--per-image", action="store_true", help="print every image's row, not only the means")
    overwrite_argument(evaluate, "--json / --csv / --save-restored files that exist")
    progress_argument(evaluate)

    stats = command(commands, "make-stats", "the features of a clean image set, for `evaluate --reference-stats` "
                    "(clean-fid's make_custom_stats)", run_make_stats, check_make_stats,
                    paths=lambda args: path_problems((None, args.clean, "folder", "folder")))
    required(stats, stats.add_argument("clean", nargs="?", type=Path, help="folder of clean images (e.g. a task's clean training set)"))
    required(stats, stats.add_argument("-o", "--output", type=Path, help="the statistics file to write (.safetensors)"))
    _network_arguments(stats)
    device_argument(stats)
    overwrite_argument(stats, "the output file if it exists")
    progress_argument(stats)


def _network_arguments(parser) -> None:
    parser.add_argument("--clip-model", type=Path,
                        help="transformers CLIP ViT-B/32 folder (openai/clip-vit-base-patch32): CLIP-FID and CLIP-KID, as the paper")
    parser.add_argument("--inception", type=Path,
                        help="clean-fid's TorchScript Inception, inception-2015-12-05.pt: FID and KID")


def check_evaluate(args) -> list[str]:
    """Which of the three modes the arguments ask for, and whether they say all it needs."""
    if args.plugin:
        from ..evaluation.plan import one_process_problem

        if args.pred is not None:
            return ["with --plugin, give the paired set as --data (PRED/TARGET are for images restored before)"]
        missing = [flag for flag, value in (("--data", args.data), ("--sd", args.sd), ("--clip-vision", args.clip_vision)) if value is None]
        found = [f"restore-and-measure (--plugin) also needs {', '.join(missing)}"] if missing else []
        return found + [problem for problem in [one_process_problem()] if problem]
    found = [f"--{flag.replace('_', '-')} belongs to restore-and-measure: give --plugin too"
             for flag in ("data", "sd", "sd_config", "clip_vision", "save_restored") if getattr(args, flag) is not None]
    if args.pred is None:
        found.append("give PRED (a folder of restored images) with TARGET for PSNR/SSIM/LPIPS, or with --reference/--reference-stats "
                     "and --clip-model/--inception for FID/KID; or --plugin with --data")
    elif args.target is None and not (args.reference or args.reference_stats):
        found.append(f"{args.pred}: nothing to compare with: give TARGET (its references, by name) or --reference DIR / "
                     "--reference-stats STATS for the set metrics")
    elif args.target is None and not (args.clip_model or args.inception):
        found.append("the set metrics need a feature network: --clip-model DIR (CLIP ViT-B/32, the paper's CLIP-FID) and/or "
                     "--inception inception-2015-12-05.pt")
    return found


def evaluate_paths(args) -> list[str]:
    """The folders, the statistics file, the plugins, the paired set and the base, as far as the file
    system shows (the feature networks and LPIPS weights say more in `evaluation.plan.feature_networks`
    and `_lpips`)."""
    found = path_problems((None, args.pred, "folder", "folder"), (None, args.target, "folder", "folder"),
                          ("--reference", args.reference, "folder", "folder"), ("--reference-stats", args.reference_stats, "file", "file"),
                          *[("--plugin", plugin, "file", None) for plugin in args.plugin], ("--data", args.data, "file or folder", None))
    return found + (base_path_problems(args) if args.plugin else [])


def check_make_stats(args) -> list[str]:
    found = [] if args.clip_model or args.inception else [
        "give the feature network(s) to keep features of: --clip-model DIR (CLIP ViT-B/32) and/or --inception inception-2015-12-05.pt"]
    if args.output is not None and args.output.suffix != ".safetensors":
        found.append(f"-o {args.output}: give a .safetensors file name")
    return found


def _features(args, name: str, path: Path, images, device: str):
    """The features of `images` by the network `name` (a progress bar over them)."""
    from ..evaluation.sets import (
        CLIP_FEATURES,
        clip_network,
        features,
        inception_network,
    )

    network = clip_network(path, device) if name == CLIP_FEATURES else inception_network(path, device)
    bar = _bar(args, f"{name} features")
    try:
        return features(network, images, progress=bar)
    finally:
        if bar:
            bar.close()


def _bar(args, what: str):
    from .progress import ProgressBar

    return None if args.no_progress else ProgressBar(what, unit="image")


def _lpips(args, device: str):
    """A loader of Lpips, or None (off, or 'auto' without its weights: then a note says why)."""
    from ..evaluation import Lpips, MissingWeightsError, lpips_problem

    mode = "require" if args.lpips_weights else args.lpips
    if mode == "off":
        return None
    problem = lpips_problem(args.lpips_weights)
    if problem and mode == "require":
        raise MissingWeightsError(problem)
    if problem:
        print(f"note: LPIPS not measured. {problem} (--lpips off hides this note)", file=sys.stderr)
        return None
    return lambda: Lpips(args.lpips_weights, device=device)


def _plan(args, device: str):
    """evaluation.plan's plan of the arguments, with LPIPS and the base checked: nothing loads before."""
    from ..evaluation.plan import plan_evaluation

    plan = plan_evaluation(pred=args.pred, target=args.target, data=args.data, plugins=args.plugin,
                           reports=[p for p in (args.json, args.csv) if p], save_restored=args.save_restored,
                           overwrite=args.overwrite, clip_model=args.clip_model, inception=args.inception,
                           reference=args.reference, reference_stats=args.reference_stats, y_channel=args.y_channel,
                           note=lambda line: print(f"note: {line}", file=sys.stderr))
    plan.lpips = _lpips(args, device) if plan.pairs else None
    if args.plugin:
        from .args import check_base_arguments

        check_base_arguments(args)
    return plan


@contextmanager
def _pairs(args, plan, device: str):
    """The pairs to measure: the plan's, or (--plugin) its inputs restored by evaluation.plan."""
    if not args.plugin:
        yield plan.pairs
        return
    from ..evaluation.plan import restored_pairs
    from ..models import load_plugin
    from ..restore import check_shares
    from .args import restorer_for, torch_dtype

    settings = RestoreSettings.from_args(args, device=device)
    chain = [load_plugin(p, device=device, dtype=torch_dtype(args.dtype)) for p in plan.plugins]
    check_shares(settings, chain)
    restorer = restorer_for(args, device, with_text=False)
    bar = _bar(args, "restoring")
    report = bar.write if bar else (lambda line: print(line, file=sys.stderr))
    try:
        with restored_pairs(restorer, chain, settings, plan, on_image=bar, report=report) as pairs:
            if bar:
                bar.close()
            yield pairs
    finally:
        if bar:
            bar.close()


def run_evaluate(args) -> int:
    from ..evaluation import Report
    from .args import device_of

    device = device_of(args.device)
    plan = _plan(args, device)
    with _pairs(args, plan, device) as pairs:  # models load from here on
        metrics, per_image = _measure(args, plan, pairs, device)
    report = Report(metrics, per_image, _settings(args, plan, len(pairs) or len(plan.inputs)))
    print(report.table(per_image=args.per_image))
    for path, write in ((args.json, report.write_json), (args.csv, report.write_csv)):
        if path:
            print(f"wrote {write(path)}")
    for path in plan.saved.values():
        print(f"wrote {path}")
    return 0


def _measure(args, plan, pairs: list, device: str) -> tuple[dict, dict]:
    """(the set's metrics, each image's paired metrics) of the pairs (the files they name)."""
    from ..evaluation import measure_pairs
    from ..evaluation.folders import means
    from ..evaluation.sets import set_distances

    per_image = {}
    if pairs:
        bar = _bar(args, "paired metrics")
        try:
            per_image = measure_pairs(pairs, y_channel=args.y_channel, lpips=plan.lpips() if plan.lpips else None, progress=bar)
        finally:
            if bar:
                bar.close()
    metrics = means(per_image) if per_image else {}
    restored_set = [a for _, a, _ in pairs] if pairs else plan.inputs
    for name, path in plan.networks.items():
        ours = _features(args, name, path, restored_set, device)
        theirs = plan.reference_features.get(name)
        theirs = theirs if theirs is not None else _features(args, name, path, plan.reference_images, device)
        metrics.update(set_distances(name, ours, theirs))
    return metrics, per_image


def _settings(args, plan, count: int) -> dict:
    from ..evaluation.paired import SSIM_SIGMA, SSIM_WINDOW

    settings = {
        "images": count,
        "pred": str(args.pred) if args.pred else None,
        "target": str(args.target) if args.target else None,
        "left_out": plan.left_out,
        "channels": "Y (BT.601, 16-235)" if args.y_channel else "RGB",
        "psnr": "8-bit, data range 255, dB; the set value is the mean of the per-image dB",
        "ssim": f"Gaussian window {SSIM_WINDOW} px, sigma {SSIM_SIGMA}, mean over the valid region (torchmetrics map)",
        "lpips": ("alex (torchmetrics), weights " + str(args.lpips_weights or "torch hub cache")) if plan.lpips else None,
        "feature_networks": {name: str(path) for name, path in plan.networks.items()},
        "reference": str(args.reference_stats or args.reference or args.target or args.data) if plan.networks else None,
    }
    if plan.reference_info:
        settings["reference_stats"] = plan.reference_info
    if args.plugin:
        from .args import device_of

        restore = dataclasses.asdict(RestoreSettings.from_args(args, device=device_of(args.device)))
        settings["restore"] = {"plugins": [str(p) for p in args.plugin], "data": str(args.data), **restore}
    return settings


def run_make_stats(args) -> int:
    from ..evaluation import folders
    from ..evaluation.plan import feature_networks
    from ..evaluation.sets import write_statistics
    from ..outputs import check_new_files
    from .args import device_of

    images = list(folders.images_by_name(args.clean, "CLEAN").values())
    if len(images) < 2:
        raise PluginError(f"{args.clean}: {len(images)} image; FID and KID need at least 2 (the paper's sets hold hundreds)")
    check_new_files([args.output], overwrite=args.overwrite, inputs=images)
    networks, device = feature_networks(args.clip_model, args.inception), device_of(args.device)
    sets = {name: _features(args, name, path, images, device) for name, path in networks.items()}
    info = {"folder": str(args.clean), "images": len(images), "networks": {n: str(p) for n, p in networks.items()}}
    print(f"wrote {write_statistics(args.output, sets, info)} ({len(images)} images: {', '.join(sets)})")
    return 0
