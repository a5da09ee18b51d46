"""Peak memory of Restore with Task-Plugins on long IMAGE batches (video frames): 16, 64 and 256
frames in chunks of `--batch-size`, against the whole batch at once, measured in one run.

The real node (RestoreWithTaskPlugins.execute) in ComfyUI's Python, on the random SD1.5-shaped
test models (tests/comfy_support.py: a one-level UNet, the full SD VAE and CLIP ViT-L/14
vision) and the reference-layout derain plugin; `--side` px frames, euler, `--steps` steps. Each
case in its own process; peak RSS from after the models are loaded and one frame restored. The
IMAGE tensors themselves (the input batch and the node's output, float32 as ComfyUI keeps them)
grow with the frames whatever the node does: the table gives them apart, and the working
memory is the peak above them. Not a test:

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m benchmarks.bench_frames
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from benchmarks.common import in_fresh_process, peak_rss, reset_peak
from tests import comfy_support as cs

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "official"


def measure(frames: int, batch_size: int, side: int, steps: int) -> dict:
    import torch

    cs.import_comfy()
    import comfy.clip_vision
    import comfy.sd

    models = cs.model_files(FIXTURES)
    pack = cs.load_pack()
    import folder_paths

    folder_paths.folder_names_and_paths["diff_plugins"] = ([str(models / "diff_plugins")], {".safetensors", ".pt"})
    model, _, vae = comfy.sd.load_checkpoint_guess_config(str(models / "checkpoints" / cs.CHECKPOINT))[:3]
    clip_vision = comfy.clip_vision.load(str(models / "clip_vision" / cs.CLIP_VISION))
    node = importlib.import_module(f"{pack.__name__}.nodes.restore").RestoreWithTaskPlugins
    plugins = importlib.import_module(f"{pack.__name__}.nodes.loaders").LoadTaskPluginLibrary.execute(
        "derain", "plugin_selector/PromptTunner.pt").args[0]
    bridge = importlib.import_module(f"{pack.__name__}.nodes.bridge")
    from tests.photos import make_photo

    frame = bridge.pil_to_image([make_photo("rain.png").resize((side, side))])
    settings = {"seed": 42, "steps": steps, "later_steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
                "resolution": side, "output_size": "original", "batch_size": batch_size}

    def restore(image):
        with torch.inference_mode():  # as ComfyUI runs a node
            return node.execute(model, plugins, clip_vision, vae, image, **settings).args[0]

    restore(frame)  # every model loaded before the mark
    image = frame.expand(frames, -1, -1, -1).clone()  # the frames, as a loader gives them
    base = reset_peak()
    start = time.perf_counter()
    out = restore(image)
    seconds = time.perf_counter() - start
    tensors = image.numel() * image.element_size() + out.numel() * out.element_size()
    return {"peak": peak_rss() - base, "tensors": tensors, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--whole-up-to", type=int, default=64, help="also run the whole batch at once up to this many frames")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32; {args.side}x{args.side} px frames, "
          f"euler, {args.steps} steps")
    print("\n| frames | batch_size | peak above the models (MiB) | of which the IMAGE tensors (MiB) | **working memory (MiB)** "
          "| s per frame |\n|---:|---:|---:|---:|---:|---:|")
    mib = 2**20
    for frames in args.frames:
        for batch_size in [args.batch_size] + ([frames] if frames <= args.whole_up_to and frames != args.batch_size else []):
            r = in_fresh_process(measure, frames, batch_size, args.side, args.steps)
            print(f"| {frames} | {batch_size} | {r['peak'] / mib:.0f} | {r['tensors'] / mib:.0f} | "
                  f"**{(r['peak'] - r['tensors']) / mib:.0f}** | {r['seconds'] / frames:.2f} |", flush=True)


if __name__ == "__main__":
    main()
