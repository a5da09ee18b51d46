"""Tiled restoration: time per megapixel and peak memory against the image size, tiled and untiled.

One restore (one plugin, `--steps` steps: CLIP vision, VAE encode, sampling, VAE decode) per row,
each in a fresh process (peak RSS counted from after the models are built). `--model sd15`: the
SD1.5-shaped UNet (860M), CLIP ViT-L/14 vision and a 1.7M-parameter plugin, with a small VAE of the
same latent layout (the SD VAE's own cost is linear in the pixels under its tiling, and would
hide the UNet's); `--model tiny`: the tests' tiny models. Ratios are against the row of the
smallest size of the same kind, measured in the same run. Not a test.

    python -m benchmarks.bench_tiling --model sd15 --sizes 1 4 --untiled-up-to 1
    python -m benchmarks.bench_tiling --model tiny --sizes 0.75 3 12 --untiled-up-to 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import gib, in_fresh_process, peak_rss, reset_peak


def _restorer(model: str, folder: str):
    from diffusers import UniPCMultistepScheduler

    from plugin_core import BaseModels, Restorer
    from tests.random_models import random_task_plugins, sd15_clip_vision, sd15_unet, sd15_vae

    if model == "sd15":
        from plugin_core import PluginConfig, PluginInfo, TaskPlugin

        torch.manual_seed(1)
        plugin = TaskPlugin(PluginConfig(), PluginInfo.for_task("derain")).eval()
        models = BaseModels(unet=sd15_unet(), vae=sd15_vae(full=False), scheduler=UniPCMultistepScheduler(),
                            clip_vision=sd15_clip_vision())
    else:
        plugin = random_task_plugins(["derain"])[0]
        models = BaseModels.from_pretrained(Path(folder) / "sd", Path(folder) / "clip_vision")
    return Restorer(models), plugin


def measure(model: str, folder: str, width: int, height: int, tile: int, overlap: int, steps: int) -> dict:
    from PIL import Image

    from plugin_core import TileSettings

    restorer, plugin = _restorer(model, folder)
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(3, height // 16 + 1, width // 16 + 1, generator=generator)  # a smooth random photo
    pixels = torch.nn.functional.interpolate(noise[None], size=(height, width), mode="bilinear")[0]
    image = Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).astype("uint8"))
    base = reset_peak()
    start = time.perf_counter()
    restorer.restore([image], [plugin], steps=steps, resolution=64, tiles=TileSettings(size=tile, overlap=overlap))
    return {"seconds": time.perf_counter() - start, "peak": peak_rss(), "base": base}


def size_of(megapixels: float) -> tuple[int, int]:
    """A 4:3 image of about this many megapixels, sides multiples of 8."""
    width = math.sqrt(megapixels * 1e6 * 4 / 3)
    return int(width) // 8 * 8, int(width * 3 / 4) // 8 * 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sd15", "tiny"), default="tiny")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.75, 3, 12], help="megapixels")
    parser.add_argument("--untiled-up-to", type=float, default=3, help="largest size (MP) also run untiled")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--tile-overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        if args.model == "tiny":
            from tests.random_models import write_tiny_clip_vision, write_tiny_sd

            write_tiny_sd(Path(folder) / "sd")
            write_tiny_clip_vision(Path(folder) / "clip_vision")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; model {args.model}, "
              f"{args.steps} step(s); tiles {args.tile_size} px, overlap {args.tile_overlap} px")
        rows = []
        for kind, tile in (("tiled", args.tile_size), ("untiled", 0)):
            for megapixels in args.sizes:
                if kind == "untiled" and megapixels > args.untiled_up_to:
                    continue
                width, height = size_of(megapixels)
                result = in_fresh_process(measure, args.model, folder, width, height, tile, args.tile_overlap, args.steps)
                rows.append((kind, width, height, result))
                print(f"  {kind} {width}x{height}: {result['seconds']:.1f} s, peak {gib(result['peak']):.2f} GiB", flush=True)
    print("\n| run | size | MP | seconds | s / MP | peak RSS (GiB) | s / MP vs smallest | peak vs smallest |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    first = {}
    for kind, width, height, result in rows:
        mp = width * height / 1e6
        per_mp = result["seconds"] / mp
        base = first.setdefault(kind, (per_mp, result["peak"]))
        print(f"| {kind} | {width}x{height} | {mp:.2f} | {result['seconds']:.1f} | {per_mp:.1f} | {gib(result['peak']):.2f} | "
              f"{per_mp / base[0]:.2f} | {result['peak'] / base[1]:.2f} |")


if __name__ == "__main__":
    main()
