"""What an evaluation reads, restores and writes, settled before any model loads, and the
restoring itself (the library behind `diffplugin evaluate`).

* `plan_evaluation`: the pairs (two folders matched by name, or a paired set's inputs with the
  plugins that restore them), every file read, the files the restored images are saved to, the
  feature networks and the reference of the set metrics; each checked now;
* `restored_pairs`: each input restored by `restore.folders.restore_files`, so into the files
  `diffplugin restore` writes (PNG, the photo's alpha kept), and the pairs measured on those files:
  the restored RGB (what a PNG gives back exactly) against the target.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputImageError, PluginError

ONE_PROCESS = ("restore-and-measure runs in one process: start it without torchrun / accelerate launch (the metrics "
               "need every image)")


@dataclass
class EvaluationPlan:
    """What an evaluation will read, write and compute, all checked before any model loads."""

    pairs: list  # (name, restored file or input to restore, reference file)
    inputs: list  # every file read (never written over)
    plugins: list = field(default_factory=list)  # the chain that restores each pair's input; none: the pairs are restored
    saved: dict = field(default_factory=dict)  # name -> where its restored image goes (--save-restored)
    networks: dict = field(default_factory=dict)  # feature name -> network file or folder
    reference_features: dict = field(default_factory=dict)
    reference_info: dict = field(default_factory=dict)
    reference_images: list = field(default_factory=list)
    lpips: object = None
    left_out: str | None = None  # the names only one folder has, not measured


def paired_set(path: Path) -> list[tuple[str, Path, Path]]:
    """(name, input, target) of a paired set (a pairs CSV, or input/ + target/): each named by its
    target's stem, a stem met again numbered (`photo_2`)."""
    from ..training import PairDataset

    pairs, seen = [], {}
    for source, target in PairDataset.from_path(path).pairs:
        stem = Path(target).stem
        seen[stem] = seen.get(stem, 0) + 1
        pairs.append((stem if seen[stem] == 1 else f"{stem}_{seen[stem]}", Path(source), Path(target)))
    return pairs


def feature_networks(clip_model: Path | None, inception: Path | None) -> dict:
    """Feature name -> the file or folder given for it; each checked for existence now."""
    from .perceptual import MissingWeightsError
    from .sets import CLIP_FEATURES, INCEPTION_FEATURES, INCEPTION_FILE, INCEPTION_URL

    if clip_model is not None and not (clip_model / "config.json").is_file():
        raise MissingWeightsError(f"--clip-model {clip_model}: no config.json there; CLIP-FID needs a transformers CLIP "
                                  "ViT-B/32 folder (a download of openai/clip-vit-base-patch32: config.json + model.safetensors)")
    if inception is not None and not inception.is_file():
        raise MissingWeightsError(f"--inception {inception}: file not found; FID/KID need clean-fid's {INCEPTION_FILE} "
                                  f"(download {INCEPTION_URL}; clean-fid keeps it at /tmp/{INCEPTION_FILE})")
    return {name: path for name, path in ((CLIP_FEATURES, clip_model), (INCEPTION_FEATURES, inception)) if path}


def plan_evaluation(*, pred: Path | None = None, target: Path | None = None, data: Path | None = None,
                    plugins: Sequence[Path] = (), reports: Sequence[Path] = (), save_restored: Path | None = None,
                    overwrite: bool = False, clip_model: Path | None = None, inception: Path | None = None,
                    reference: Path | None = None, reference_stats: Path | None = None, y_channel: bool = False,
                    note: Callable[[str], None] | None = None) -> EvaluationPlan:
    """The plan of one evaluation: `pred` against `target` by name, `pred`'s set alone, or `data`'s
    inputs restored with `plugins` against its targets. `reports` (JSON, CSV) and the restored images
    saved in `save_restored` (<name>.png) must be new files unless `overwrite`; the feature networks
    (`feature_networks`) measure the set against `reference_stats`, else the `reference` folder, else
    `target`, else the pairs' targets. note(line): the names left out of the pairs."""
    from ..outputs import check_new_files

    plan = _plan_pairs(pred, target, data, plugins)
    if plan.left_out and note:
        note(f"measuring the {len(plan.pairs)} images both folders have; left out ({plan.left_out})")
    check_new_files(list(reports), overwrite=overwrite, inputs=plan.inputs, elsewhere="choose another --json / --csv file name")
    if plan.plugins and save_restored:
        names = [name for name, _, _ in plan.pairs]
        plan.saved = dict(zip(names, check_new_files([Path(save_restored) / f"{name}.png" for name in names],
                                                     overwrite=overwrite, inputs=plan.inputs,
                                                     elsewhere="choose another --save-restored folder")))
    plan.networks = feature_networks(clip_model, inception)
    _reference(plan, target, reference, reference_stats)
    if plan.pairs or plan.networks:  # a missing library stops here, not after the restoring
        from .paired import require_libraries

        require_libraries(y_channel=y_channel and bool(plan.pairs))
    return plan


def _plan_pairs(pred, target, data, plugins) -> EvaluationPlan:
    from . import folders

    if not plugins and target is None:
        return EvaluationPlan([], list(folders.images_by_name(pred, "PRED").values()))
    if plugins:
        pairs, left_out = paired_set(data), None
    else:
        matched = folders.match_folders(pred, target)
        pairs, left_out = matched.pairs, matched.left_out(pred, target)
    folders.check_sizes(pairs, what=("input", "target") if plugins else ("restored", "reference"))
    return EvaluationPlan(pairs, [p for _, a, b in pairs for p in (a, b)], list(plugins), left_out=left_out)


def _reference(plan: EvaluationPlan, target, reference, reference_stats) -> None:
    """The set metrics' reference: a statistics file's features (of every network asked for), or
    the images of a folder (`reference`, else `target`), else the pairs' references."""
    from . import folders
    from .sets import read_statistics

    if reference_stats:
        plan.reference_features, plan.reference_info = read_statistics(reference_stats)
        absent = [name for name in plan.networks if name not in plan.reference_features]
        if absent:
            raise PluginError(f"--reference-stats {reference_stats} holds features of "
                              f"{', '.join(plan.reference_features) or 'nothing'}, not of {', '.join(absent)}: write them "
                              "with `diffplugin make-stats` and the same network")
    elif plan.networks:
        folder = reference or target
        plan.reference_images = (list(folders.images_by_name(folder, "--reference" if reference else "TARGET").values())
                                 if folder else [b for _, _, b in plan.pairs])


def one_process_problem() -> str | None:
    """Why restore-and-measure cannot run here (a launcher started several processes), or None."""
    from ..launch import launched_processes

    return ONE_PROCESS if launched_processes() > 1 else None


@contextmanager
def restored_pairs(restorer, chain: Sequence, settings, plan: EvaluationPlan, *,
                   on_image: Callable[[int, int], None] | None = None,
                   report: Callable[[str], None] | None = None) -> Iterator[list[tuple[str, Path, Path]]]:
    """Each pair's input restored with `chain` (plan.plugins, loaded) by `restore_files`: into
    plan.saved's files, or those of a temporary folder (removed on leaving) when none is saved.
    Yields (name, restored file, target file). on_image(done, total); report(line): what `restore`
    reports (the tile plan, the time it takes, a photo's bit depth, what failed)."""
    from ..restore import restore_files

    if problem := one_process_problem():
        raise PluginError(problem)
    with tempfile.TemporaryDirectory(prefix="diffplugin-evaluate-") as temporary:
        files = [plan.saved.get(name) or Path(temporary) / f"{index}.png" for index, (name, _, _) in enumerate(plan.pairs)]
        done = restore_files(restorer, [(source, file) for (_, source, _), file in zip(plan.pairs, files)], settings,
                             plugins=chain, on_image=on_image, say=lambda line: None, report=report)
        if done.failed:
            raise InputImageError(f"{len(done.failed)} input(s) not restored, nothing measured: " + "; ".join(done.failed[:5]))
        yield [(name, file, reference) for (name, _, reference), file in zip(plan.pairs, files)]
