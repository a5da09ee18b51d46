"""The `diffplugin` command line (also `python -m plugin_core`): it parses and dispatches.

Every argument is checked while it is parsed (args.py) or by the command before anything loads;
a user error is one message and exit status 2 (`-v` adds the traceback), Ctrl+C ends with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from ..errors import PluginError
from .args import DTYPES, default_device, device, finite_float, int_at_least, int_between, multiple_of

INTERRUPTED = 130


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, and keeps help texts on one line each."""

    def _get_help_string(self, action):
        text = action.help or ""
        empty = action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS
        if empty or "%(default)" in text or "default" in text:
            return text
        return text + " (default: %(default)s)"


def _command(commands, name: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=description, description=description, formatter_class=_Formatter)


def _base_arguments(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    parser.add_argument("--sd", required=True, type=Path,
                        help="diffusers Stable Diffusion 1.x folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/)")
    parser.add_argument("--clip-vision", required=True, type=Path,
                        help="transformers CLIP ViT-L/14 vision folder (a CLIPVisionModel or CLIPModel download)")
    parser.add_argument("--device", type=device, default=default_device(), help="where the models run (cpu, cuda, cuda:1, mps)")
    if dtype:
        parser.add_argument("--dtype", choices=DTYPES, default="float32", help="compute precision (the VAE stays float32)")


def _selection_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--prompt", required=required, help="the instruction, e.g. 'remove the rain and the haze'")
    parser.add_argument("--plugins", type=Path, help="folder of plugins to choose among (.safetensors files and/or reference task folders)")
    parser.add_argument("--selector", type=Path, help="Plugin-Selector (.safetensors or the reference PromptTunner.pt)")
    parser.add_argument("--select-threshold", type=finite_float(), default=0.0, help="θ: plugins scoring above it are selected")


def _overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} (without it, existing ones are kept and the command stops before any work)")


def _progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from ..colorfix import FIXES
    from ..selector.training import FINE_TUNE_STEPS, SelectorTrainConfig  # light: no diffusers
    from ..tiling import TILE_PROMPTS, TileSettings
    from ..training.distributed import REPORT_TO
    from ..synthetic import DEGRADATIONS

    parser = argparse.ArgumentParser(prog="diffplugin", description="Diff-Plugin: task plugins for Stable Diffusion 1.x.",
                                     formatter_class=_Formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="more messages, and the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    restore = _command(commands, "restore", "restore images with chosen plugins or by instruction")
    restore.add_argument("images", nargs="+", type=Path,
                         help="images and folders of images to restore (never written over); under torchrun / accelerate "
                              "launch the processes share them")
    restore.add_argument("--plugin", action="append", type=Path, default=[], help="plugin file or task folder; repeat to chain plugins")
    _selection_arguments(restore, required=False)
    _base_arguments(restore)
    restore.add_argument("--steps", type=int_at_least(1), default=20, help="sampling steps of the first plugin")
    restore.add_argument("--later-steps", type=int_at_least(1), default=3, help="steps of every later plugin (the reference: 3)")
    restore.add_argument("--seed", type=int_at_least(0), default=42, help="noise seed (the reference: 42)")
    restore.add_argument("--threshold", type=int_between(0, 1000), default=960,
                         help="timesteps at or above it restart from the noised input (1000: never)")
    restore.add_argument("--resolution", type=multiple_of(8, 8), default=512, help="the short side is raised to this when smaller")
    restore.add_argument("--resize", choices=("min", "exact"), default="min",
                         help="'min': only raise small images (infer.py); 'exact': always scale the short side (demo.py)")
    restore.add_argument("--output-size", choices=("original", "processed"), default="original",
                         help="write at the input's size, or at the working size the reference outputs")
    tiles = TileSettings()
    restore.add_argument("--tile-size", type=multiple_of(8, 0), default=tiles.size,
                         help="tile size in px; an image whose working size fits in one tile is not tiled (0: never tile)")
    restore.add_argument("--tile-overlap", type=multiple_of(8, 0), default=tiles.overlap, help="overlap of neighbouring tiles in px")
    restore.add_argument("--tile-batch", type=int_at_least(1), default=tiles.batch, help="tiles per UNet call (more use a GPU better)")
    restore.add_argument("--tile-prompt", choices=TILE_PROMPTS, default=tiles.prompt,
                         help="Fp from each tile's pixels ('tile', nearer the plugins' training crops) or the whole image ('global')")
    restore.add_argument("--color-fix", choices=FIXES, default="none",
                         help="keep the input's low-frequency colour: 'wavelet' (its low band under the result's detail) or "
                              "'adain' (its per-channel mean and std); 'none' is the reference")
    restore.add_argument("-o", "--output", type=Path, default=Path("restored"),
                         help="output folder (files <name>.png), or an image file name for a single image")
    restore.add_argument("--save-latent", type=Path, help="also write the final latents to this .safetensors file")
    _overwrite(restore, "output files that exist")
    restore.add_argument("--skip-existing", action="store_true",
                         help="leave out images whose output exists (a stopped run over a folder carries on)")
    _progress(restore)

    select = _command(commands, "select", "print the Plugin-Selector's scores for an image and instruction")
    select.add_argument("image", type=Path, help="the image")
    _selection_arguments(select, required=True)
    _base_arguments(select)
    select.add_argument("--json", action="store_true", help="print the scores as JSON")

    convert = _command(commands, "convert", "the reference layout -> one .safetensors per plugin")
    convert.add_argument("source", type=Path, help="a task folder (tpb.pt + scb/), a PromptTunner.pt, or a folder of them (pre-trained/)")
    convert.add_argument("-o", "--output", type=Path, required=True, help="output file (one plugin or the selector) or folder")
    convert.add_argument("--dtype", choices=DTYPES, help="store the weights in this dtype (default: as stored)")
    _overwrite(convert, "output files that exist")

    info = _command(commands, "info", "what a plugin or selector file holds")
    info.add_argument("path", type=Path, help="a plugin (.safetensors or task folder) or a selector file")

    defaults = SelectorTrainConfig()
    train = _command(commands, "train", "train a Task-Plugin on (degraded, clean) image pairs")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a pairs CSV (image,conditioning_image = target,input) or a folder with input/ and target/")
    source.add_argument("--synthetic", type=Path, help="a folder of clean photos, degraded on the fly with --degrade")
    train.add_argument("--degrade", default="rain", help=f"synthetic degradations, comma-separated, applied in order ({', '.join(DEGRADATIONS)})")
    train.add_argument("--task", required=True, help="the task name stored in the plugin (e.g. 'derain')")
    train.add_argument("-o", "--output", type=Path, default=None,
                       help="run folder: checkpoints/, loss.csv, loss.png, validation/, the plugin (default: runs/<task>)")
    train.add_argument("--steps", type=int_at_least(1), default=1000, help="optimisation steps")
    train.add_argument("--batch-size", type=int_at_least(1), default=1,
                       help="pairs per micro-batch and process (global batch: batch x processes x --accumulate)")
    train.add_argument("--accumulate", type=int_at_least(1), default=1, help="gradient accumulation micro-batches per step")
    train.add_argument("--lr", type=finite_float(0.0, 1.0, low_open=True), default=1e-5,
                       help="per-sample learning rate, scaled by the global batch as the reference (1e-5 x 64 on 4 GPUs)")
    train.add_argument("--no-scale-lr", action="store_true", help="use --lr as it is")
    train.add_argument("--warmup", type=int_at_least(0), default=0, help="linear warm-up steps")
    train.add_argument("--resolution", type=multiple_of(8, 8), default=512, help="training crop size")
    train.add_argument("--no-crop", action="store_true", help="centre crop instead of a random crop")
    train.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    train.add_argument("--seed", type=int_at_least(0), default=42, help="seeds data order, crops, noise and timesteps")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="autocast precision (fp32 master weights)")
    train.add_argument("--gradient-checkpointing", action="store_true", help="less memory, about a third more time")
    train.add_argument("--checkpoint-every", type=int_at_least(0), default=500, help="steps between checkpoints (0: only at the end)")
    train.add_argument("--validate-every", type=int_at_least(0), default=0, help="steps between validation images (0: none)")
    train.add_argument("--validation-image", type=Path, action="append", default=[], help="an image to restore at each validation (repeatable)")
    train.add_argument("--validation-data", type=Path,
                       help="held-out pairs (CSV or input/ + target/): PSNR / SSIM at each validation, in loss.csv and the trackers")
    train.add_argument("--workers", type=int_at_least(0), default=2,
                       help="data loading processes per training process (0: in the training loop); the result is the same")
    train.add_argument("--report-to", choices=REPORT_TO, default="none",
                       help="an experiment tracker (Accelerate's): loss, lr, grad norm, samples/s, validation; tensorboard logs under the run folder")
    train.add_argument("--init-scb-from-unet", action="store_true", help="start the SCB from the UNet's first level (ControlNet-style)")
    train.add_argument("--cache", action="store_true", help="encode each pair once (centre crop): faster, less augmentation")
    train.add_argument("--start-mode", choices=("input", "noise"), help="how sampling starts (default: 'noise' for lowlight/highlight, else 'input')")
    train.add_argument("--instruction", action="append", default=[], help="an instruction describing the task (repeatable)")
    train.add_argument("--init", type=Path, help="fine-tune this plugin instead of starting fresh")
    train.add_argument("--resume", action="store_true", help="continue the run in the run folder from its newest checkpoint")
    _overwrite(train, "a run the run folder holds (its checkpoints, loss log and plugin)")
    _base_arguments(train, dtype=False)
    _progress(train)

    def selector_inputs(parser):
        parser.add_argument("--plugins", required=True, type=Path, help="folder of the plugins to choose among")
        parser.add_argument("--images", required=True, type=Path, help="folder of photos: each plugin's Fp on them are the pseudo-labels")
        parser.add_argument("--clip-vision", required=True, type=Path, help="transformers CLIP ViT-L/14 vision folder")
        parser.add_argument("--sd", type=Path, help="SD folder: its CLIP-L text encoder, for --text-encoder clip and the reference's selector")
        parser.add_argument("--corpus", type=Path, help="instruction corpus JSON (default: the shipped one)")
        parser.add_argument("--task-instructions", action="append", default=[], metavar="TASK=FILE",
                            help="instructions for a task the corpus lacks (or more for one it has): a JSON "
                                 "{train: [...], heldout: [...]} or a text file, one per line (repeatable)")
        parser.add_argument("--device", type=device, default=default_device(), help="where the models run")

    train_selector = _command(commands, "train-selector", "train (or fine-tune) the Plugin-Selector")
    selector_inputs(train_selector)
    train_selector.add_argument("--text-encoder", choices=("clip", "minilm"), default="clip",
                                help="'clip': SD's CLIP-L (--sd), as the reference; 'minilm': the offline sentence model")
    train_selector.add_argument("--init", type=Path, help="fine-tune this selector (e.g. one trained before, or the reference PromptTunner.pt)")
    train_selector.add_argument("--steps", type=int_at_least(1), default=None,
                                help=f"optimisation steps (default: {defaults.steps}; with --init {FINE_TUNE_STEPS})")
    train_selector.add_argument("--batch-size", type=int_at_least(1), default=defaults.batch_size, help="instructions per step")
    train_selector.add_argument("--lr", type=finite_float(0.0, 1.0, low_open=True), default=defaults.learning_rate, help="AdamW learning rate")
    train_selector.add_argument("--negatives", type=int_at_least(1), default=defaults.negatives, help="unwanted candidates per wanted one in eq. 6")
    train_selector.add_argument("--reader", type=int_at_least(0), default=256, help="width of the instruction reader (0: the reference's pooled text only)")
    train_selector.add_argument("--embed", type=int_at_least(1), default=256, help="width of the joint embedding (the reference's: 768)")
    train_selector.add_argument("--memory-weight", type=finite_float(0.0), default=defaults.memory_weight,
                                help="weight of the instruction memory: a unanimous vote moves a score by half of it (0: no memory)")
    train_selector.add_argument("--seed", type=int_at_least(0), default=defaults.seed, help="seeds the initialisation and the batches")
    train_selector.add_argument("-o", "--output", type=Path, required=True, help="the selector .safetensors to write")
    _overwrite(train_selector, "the output file if it exists")
    _progress(train_selector)

    eval_selector = _command(commands, "eval-selector", "measure a selector on held-out instructions (the paper's Table 5)")
    selector_inputs(eval_selector)
    eval_selector.add_argument("--selector", required=True, type=Path, help="the selector to measure")
    eval_selector.add_argument("--split", choices=("heldout", "train"), default="heldout", help="which instructions of the corpus")
    eval_selector.add_argument("--threshold", type=finite_float(), default=0.0, help="θ of the selection rule")

    synth = _command(commands, "synth", "write a training set of synthetic (degraded, clean) pairs from clean photos")
    synth.add_argument("clean", type=Path, help="folder of clean photos (never written over)")
    synth.add_argument("-o", "--output", type=Path, required=True, help="folder for input/, target/ and pairs.csv")
    synth.add_argument("--degrade", default="rain", help=f"comma-separated degradations, applied in order ({', '.join(DEGRADATIONS)})")
    synth.add_argument("--seed", type=int_at_least(0), default=0, help="pair k depends only on (seed, k)")
    synth.add_argument("--per-image", type=int_at_least(1), default=1, help="pairs per clean photo")
    synth.add_argument("--intensity", type=finite_float(0.0, 1.0), nargs=2, default=(0.3, 0.9), metavar=("LOW", "HIGH"),
                       help="intensity range in [0, 1], drawn per pair")
    _overwrite(synth, "pairs already in the output folder")

    from .evaluate import add_parsers as add_evaluation_parsers  # evaluate, make-stats

    add_evaluation_parsers(commands, _command, _overwrite, _progress)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from . import evaluate, files, restore, selector, train

    handlers = {
        "restore": restore.restore, "select": restore.select, "convert": files.convert, "info": files.info,
        "train": train.train, "synth": files.synth, "train-selector": selector.train_selector,
        "eval-selector": selector.eval_selector,
        "evaluate": evaluate.evaluate, "make-stats": evaluate.make_stats,
    }
    try:
        if not args.verbose:
            _quiet_libraries()
        return handlers[args.command](args) or 0
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
    """diffusers/transformers loading chatter (accelerate hints, weight bars) hides our output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
