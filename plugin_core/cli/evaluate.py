"""`diffplugin evaluate` and `diffplugin make-stats`: measure restorations.

evaluate PRED TARGET           paired metrics of two folders matched by name (PSNR, SSIM, LPIPS)
evaluate PRED --reference DIR | --reference-stats STATS   set metrics (CLIP-FID, KID, FID)
evaluate --plugin P --data VAL restore a paired validation set, then measure it
make-stats CLEAN -o STATS      the features of a clean set, once, for --reference-stats

Everything a run needs (folders, names, sizes, outputs, weight files) is checked before any
model loads; an existing --json / --csv is kept unless --overwrite.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import PluginError
from .args import DTYPES, default_device, device, int_at_least, int_between, multiple_of

LPIPS_MODES = ("auto", "require", "off")


def add_parsers(commands, command, overwrite, progress) -> None:
    """The two subcommands, on build_parser's helpers (`command`, `overwrite`, `progress`)."""
    from ..colorfix import FIXES
    from ..tiling import TILE_PROMPTS, TileSettings

    evaluate = command(commands, "evaluate", "measure restored images: PSNR/SSIM/LPIPS against references, FID/KID against a clean set")
    evaluate.add_argument("pred", nargs="?", type=Path, help="folder of restored images (not with --plugin)")
    evaluate.add_argument("target", nargs="?", type=Path, help="folder of their references, matched by file name")
    paired = evaluate.add_argument_group("paired metrics")
    paired.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the BT.601 luma (Y of YCbCr), as restoration papers")
    paired.add_argument("--lpips", choices=LPIPS_MODES, default="auto",
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
    restore.add_argument("--sd", type=Path, help="diffusers Stable Diffusion 1.x folder")
    restore.add_argument("--clip-vision", type=Path, help="transformers CLIP ViT-L/14 vision folder (the plugins' TPB input)")
    restore.add_argument("--dtype", choices=DTYPES, default="float32", help="compute precision (the VAE stays float32)")
    restore.add_argument("--steps", type=int_at_least(1), default=20, help="sampling steps of the first plugin")
    restore.add_argument("--later-steps", type=int_at_least(1), default=3, help="steps of every later plugin")
    restore.add_argument("--seed", type=int_at_least(0), default=42, help="noise seed")
    restore.add_argument("--threshold", type=int_between(0, 1000), default=960, help="timesteps at or above it restart from the noised input")
    restore.add_argument("--resolution", type=multiple_of(8, 8), default=512, help="the short side is raised to this when smaller")
    restore.add_argument("--resize", choices=("min", "exact"), default="min", help="as `restore --resize`")
    tiles = TileSettings()
    restore.add_argument("--tile-size", type=multiple_of(8, 0), default=tiles.size, help="as `restore --tile-size` (0: never tile)")
    restore.add_argument("--tile-overlap", type=multiple_of(8, 0), default=tiles.overlap, help="overlap of neighbouring tiles in px")
    restore.add_argument("--tile-batch", type=int_at_least(1), default=tiles.batch, help="tiles per UNet call")
    restore.add_argument("--tile-prompt", choices=TILE_PROMPTS, default=tiles.prompt, help="Fp per tile or from the whole image")
    restore.add_argument("--color-fix", choices=FIXES, default="none", help="as `restore --color-fix`")
    restore.add_argument("--save-restored", type=Path, help="also write the restored images to this folder (<name>.png)")
    evaluate.add_argument("--device", type=device, default=default_device(), help="where the networks run")
    evaluate.add_argument("--json", type=Path, help="write the metrics, per-image rows and settings to this JSON file")
    evaluate.add_argument("--csv", type=Path, help="write the per-image rows and the mean row to this CSV file")
    evaluate.add_argument("--per-image", action="store_true", help="print every image's row, not only the means")
    overwrite(evaluate, "--json / --csv / --save-restored files that exist")
    progress(evaluate)

    stats = command(commands, "make-stats", "the features of a clean image set, for `evaluate --reference-stats` (clean-fid's make_custom_stats)")
    stats.add_argument("clean", type=Path, help="folder of clean images (e.g. a task's clean training set)")
    stats.add_argument("-o", "--output", type=Path, required=True, help="the statistics file to write (.safetensors)")
    _network_arguments(stats)
    stats.add_argument("--device", type=device, default=default_device(), help="where the networks run")
    overwrite(stats, "the output file if it exists")
    progress(stats)


def _network_arguments(parser) -> None:
    parser.add_argument("--clip-model", type=Path,
                        help="transformers CLIP ViT-B/32 folder (openai/clip-vit-base-patch32): CLIP-FID and CLIP-KID, as the paper")
    parser.add_argument("--inception", type=Path,
                        help="clean-fid's TorchScript Inception, inception-2015-12-05.pt: FID and KID")


def _networks(args) -> dict:
    """Feature name -> the file or folder given for it; each checked for existence now."""
    from ..evaluation.sets import CLIP_FEATURES, INCEPTION_FEATURES, INCEPTION_FILE, INCEPTION_URL
    from ..evaluation.perceptual import MissingWeightsError

    if args.clip_model is not None and not (args.clip_model / "config.json").is_file():
        raise MissingWeightsError(f"--clip-model {args.clip_model}: no config.json there; CLIP-FID needs a transformers CLIP "
                                  "ViT-B/32 folder (a download of openai/clip-vit-base-patch32: config.json + model.safetensors)")
    if args.inception is not None and not args.inception.is_file():
        raise MissingWeightsError(f"--inception {args.inception}: file not found; FID/KID need clean-fid's {INCEPTION_FILE} "
                                  f"(download {INCEPTION_URL}; clean-fid keeps it at /tmp/{INCEPTION_FILE})")
    return {name: path for name, path in ((CLIP_FEATURES, args.clip_model), (INCEPTION_FEATURES, args.inception)) if path}


def _load_network(name: str, path: Path, device: str):
    from ..evaluation.sets import CLIP_FEATURES, clip_network, inception_network

    return clip_network(path, device) if name == CLIP_FEATURES else inception_network(path, device)


def _bar(args, what: str):
    from .progress import ProgressBar

    return None if args.no_progress else ProgressBar(what, unit="image")


def _check_mode(args) -> None:
    if args.plugin:
        if args.pred is not None:
            raise PluginError("with --plugin, give the paired set as --data (PRED/TARGET are for images restored before)")
        missing = [flag for flag, value in (("--data", args.data), ("--sd", args.sd), ("--clip-vision", args.clip_vision)) if value is None]
        if missing:
            raise PluginError(f"restore-and-measure (--plugin) also needs {', '.join(missing)}")
        return
    for flag in ("data", "sd", "clip_vision", "save_restored"):
        if getattr(args, flag) is not None:
            raise PluginError(f"--{flag.replace('_', '-')} belongs to restore-and-measure: give --plugin too")
    if args.pred is None:
        raise PluginError("give PRED (a folder of restored images) with TARGET for PSNR/SSIM/LPIPS, or with "
                          "--reference/--reference-stats and --clip-model/--inception for FID/KID; or --plugin with --data")
    if args.target is None and not (args.reference or args.reference_stats):
        raise PluginError(f"{args.pred}: nothing to compare with: give TARGET (its references, by name) or "
                          "--reference DIR / --reference-stats STATS for the set metrics")
    if args.target is None and not (args.clip_model or args.inception):
        raise PluginError("the set metrics need a feature network: --clip-model DIR (CLIP ViT-B/32, the paper's CLIP-FID) "
                          "and/or --inception inception-2015-12-05.pt")


def _lpips(args):
    """A loaded Lpips, or None (off, or 'auto' without its weights: then a note says why)."""
    from ..evaluation.perceptual import Lpips, MissingWeightsError, lpips_problem

    mode = "require" if args.lpips_weights else args.lpips
    if mode == "off":
        return None
    problem = lpips_problem(args.lpips_weights)
    if problem and mode == "require":
        raise MissingWeightsError(problem)
    if problem:
        print(f"note: LPIPS not measured. {problem} (--lpips off hides this note)", file=sys.stderr)
        return None
    return lambda: Lpips(args.lpips_weights, device=args.device)


def _restored(args, pairs, targets):
    """Restore each pair's input with the --plugin chain; (name, restored image, target path)."""
    from ..images import at_size, load_image
    from ..models import load_plugin
    from ..tiling import TileSettings
    from .restore import _restorer  # the same loading and checks as `restore`

    try:
        tiles = TileSettings(args.tile_size, args.tile_overlap, args.tile_batch, args.tile_prompt)
    except ValueError as error:
        raise PluginError(str(error)) from None
    chain = [load_plugin(p, device=args.device, dtype=DTYPES[args.dtype]) for p in args.plugin]
    restorer = _restorer(args, with_text=False)
    bar = _bar(args, "restoring")
    out = []
    try:
        for done, (name, source, target) in enumerate(pairs, 1):
            original = load_image(source)
            result = restorer.restore([original], chain, steps=args.steps, later_steps=args.later_steps, seed=args.seed,
                                      threshold=args.threshold, resolution=args.resolution, resize_mode=args.resize,
                                      tiles=tiles, color_fix=args.color_fix)
            image = at_size(result.images[0], original.size)
            if name in targets:
                targets[name].parent.mkdir(parents=True, exist_ok=True)
                image.save(targets[name])
            out.append((name, image, target))
            if bar:
                bar(done, len(pairs))
    finally:
        if bar:
            bar.close()
    return out


def _pairs_of_data(path: Path):
    from ..training import PairDataset

    dataset = PairDataset.from_path(path)
    pairs, seen = [], {}
    for source, target in dataset.pairs:
        stem = Path(target).stem
        seen[stem] = seen.get(stem, 0) + 1
        pairs.append((stem if seen[stem] == 1 else f"{stem}_{seen[stem]}", Path(source), Path(target)))
    return pairs


def evaluate(args) -> int:
    from ..evaluation import folders
    from ..evaluation.report import Report
    from ..evaluation.sets import read_statistics
    from ..outputs import check_new_files

    _check_mode(args)
    if args.plugin:
        pairs = _pairs_of_data(args.data)
        folders.check_sizes(pairs, what=("input", "target"))
        inputs = [p for _, a, b in pairs for p in (a, b)]
    elif args.target is not None:
        pairs = folders.match_folders(args.pred, args.target)
        folders.check_sizes(pairs)
        inputs = [p for _, a, b in pairs for p in (a, b)]
    else:
        pairs = []
        inputs = list(folders.images_by_name(args.pred, "PRED").values())
    check_new_files([p for p in (args.json, args.csv) if p], overwrite=args.overwrite, inputs=inputs)
    saved = {}
    if args.plugin and args.save_restored:
        saved = dict(zip([n for n, _, _ in pairs], check_new_files(
            [args.save_restored / f"{n}.png" for n, _, _ in pairs], overwrite=args.overwrite, inputs=inputs)))
    networks = _networks(args)
    reference_features, reference_info = {}, {}
    if args.reference_stats:
        reference_features, reference_info = read_statistics(args.reference_stats)
        absent = [name for name in networks if name not in reference_features]
        if absent:
            raise PluginError(f"--reference-stats {args.reference_stats} holds features of {', '.join(reference_features) or 'nothing'}, "
                              f"not of {', '.join(absent)}: write them with `diffplugin make-stats` and the same network")
    reference_images = []
    if networks and not args.reference_stats:
        folder = args.reference or args.target
        reference_images = list(folders.images_by_name(folder, "--reference" if args.reference else "TARGET").values()) if folder else \
            [b for _, _, b in pairs]
    if pairs or networks:  # a missing library stops here, not after the restoring
        from ..evaluation.paired import require_libraries

        require_libraries(y_channel=args.y_channel and bool(pairs))
    lpips = _lpips(args) if pairs else None
    if args.plugin:
        from ..pipeline import check_base_folders

        check_base_folders(args.sd, args.clip_vision)

    # ------------------------------------------------------------------ the work: models load from here on
    if args.plugin:
        pairs = _restored(args, pairs, saved)
    per_image = {}
    if pairs:
        bar = _bar(args, "paired metrics")
        try:
            per_image = folders.measure_pairs(pairs, y_channel=args.y_channel, lpips=lpips() if lpips else None, progress=bar)
        finally:
            if bar:
                bar.close()
    metrics = folders.means(per_image) if per_image else {}
    restored_set = [a for _, a, _ in pairs] if pairs else inputs
    for name, path in networks.items():
        metrics.update(_set_metrics(args, name, path, restored_set, reference_features.get(name), reference_images))
    report = Report(metrics, per_image, _settings(args, networks, reference_info, len(restored_set), lpips is not None))
    print(report.table(per_image=args.per_image))
    for path, write in ((args.json, report.write_json), (args.csv, report.write_csv)):
        if path:
            print(f"wrote {write(path)}")
    for path in saved.values():
        print(f"wrote {path}")
    return 0


def _set_metrics(args, name, path, restored_set, reference, reference_images) -> dict:
    from ..evaluation.sets import features, set_distances

    network = _load_network(name, path, args.device)
    bar = _bar(args, f"{name} features")
    try:
        ours = features(network, restored_set, progress=bar)
        theirs = reference if reference is not None else features(network, reference_images, progress=bar)
    finally:
        if bar:
            bar.close()
    return set_distances(name, ours, theirs)


def _settings(args, networks, reference_info, count, lpips) -> dict:
    from ..evaluation.paired import SSIM_SIGMA, SSIM_WINDOW

    settings = {
        "images": count,
        "pred": str(args.pred) if args.pred else None,
        "target": str(args.target) if args.target else None,
        "channels": "Y (BT.601, 16-235)" if args.y_channel else "RGB",
        "psnr": "8-bit, data range 255, dB; the set value is the mean of the per-image dB",
        "ssim": f"Gaussian window {SSIM_WINDOW} px, sigma {SSIM_SIGMA}, mean over the valid region (torchmetrics map)",
        "lpips": ("alex (torchmetrics), weights " + str(args.lpips_weights or "torch hub cache")) if lpips else None,
        "feature_networks": {name: str(path) for name, path in networks.items()},
        "reference": str(args.reference_stats or args.reference or args.target or args.data) if networks else None,
    }
    if reference_info:
        settings["reference_stats"] = reference_info
    if args.plugin:
        settings["restore"] = {
            "plugins": [str(p) for p in args.plugin], "data": str(args.data), "steps": args.steps, "later_steps": args.later_steps,
            "seed": args.seed, "threshold": args.threshold, "resolution": args.resolution, "resize": args.resize,
            "tile_size": args.tile_size, "tile_overlap": args.tile_overlap, "color_fix": args.color_fix,
        }
    return settings


def make_stats(args) -> int:
    from ..evaluation import folders
    from ..evaluation.sets import features, write_statistics
    from ..outputs import check_new_files

    if not (args.clip_model or args.inception):
        raise PluginError("give the feature network(s) to keep features of: --clip-model DIR (CLIP ViT-B/32) and/or "
                          "--inception inception-2015-12-05.pt")
    if args.output.suffix != ".safetensors":
        raise PluginError(f"-o {args.output}: give a .safetensors file name")
    images = list(folders.images_by_name(args.clean, "CLEAN").values())
    if len(images) < 2:
        raise PluginError(f"{args.clean}: {len(images)} image; FID and KID need at least 2 (the paper's sets hold hundreds)")
    check_new_files([args.output], overwrite=args.overwrite, inputs=images)
    networks = _networks(args)
    sets = {}
    for name, path in networks.items():
        bar = _bar(args, f"{name} features")
        try:
            sets[name] = features(_load_network(name, path, args.device), images, progress=bar)
        finally:
            if bar:
                bar.close()
    info = {"folder": str(args.clean), "images": len(images), "networks": {n: str(p) for n, p in networks.items()}}
    print(f"wrote {write_statistics(args.output, sets, info)} ({len(images)} images: {', '.join(sets)})")
    return 0

