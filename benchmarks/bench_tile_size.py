"""The tile size a device wants: the UNet's seconds per megapixel and step at each tile size, and
what that makes of one large photo. Not a test.

One UNet call per tile size (batch 1, a tile's latent, the plugin's 256-token visual prompt as the
context), median of `--repeats` after a warm-up, all measured in one run. A large photo is covered
by tiles whose strides are (size - overlap), so its cost per megapixel and step is a call's time
over a stride's area; `--photo` is counted exactly with plugin_core's TilePlan (tiles x a call).
The SCB, CLIP and the VAE are left out: their cost per pixel does not depend on the tile size.
The tile size plugin_core chooses for the device (`plugin_core.tile_defaults`) is marked.

    python -m benchmarks.bench_tile_size --model sd15 --sizes 512 1024 1536
    python -m benchmarks.bench_tile_size --model sd15 --device cuda --dtype float16 --sizes 512 1024 1536 2048
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved


def unet(model: str, device: str, dtype: torch.dtype):
    """SD1.5's UNet (860M parameters, random), or the tests' tiny one."""
    if model == "sd15":
        from tests.random_models import sd15_unet

        return sd15_unet().to(device=device, dtype=dtype)
    from diffusers import UNet2DConditionModel

    from tests.random_models import write_tiny_sd

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_sd(Path(folder))
        net = UNet2DConditionModel.from_pretrained(Path(folder) / "unet").eval().requires_grad_(False)
    return net.to(device=device, dtype=dtype)


def call(net, size: int, device: str, dtype: torch.dtype):
    """One UNet call on a `size` px tile."""
    latent = torch.randn(1, net.config.in_channels, size // 8, size // 8, device=device, dtype=dtype)
    context = torch.randn(1, 256, net.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor([500], device=device)

    def run():
        with torch.no_grad():
            net(latent, timestep, encoder_hidden_states=context)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run


def main() -> None:
    from plugin_core import tile_defaults
    from plugin_core.tiling import TilePlan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1536], help="tile sizes in px")
    parser.add_argument("--overlap", type=float, default=1 / 8, help="overlap as a part of the tile size")
    parser.add_argument("--photo", default="3000x2000", help="a large photo, WIDTHxHEIGHT")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    net = unet(args.model, args.device, dtype)
    chosen = tile_defaults(args.device)
    width, height = map(int, args.photo.lower().split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, {args.dtype}; model {args.model}; "
          f"plugin_core's tiles on {args.device}: {chosen.size} px, overlap {chosen.overlap} px")
    seconds = interleaved({size: call(net, size, args.device, dtype) for size in args.sizes}, args.repeats)
    rows = []
    for size in args.sizes:
        overlap = int(size * args.overlap) // 8 * 8
        plan = TilePlan(height // 8, width // 8, size // 8, overlap // 8)
        per_mp = seconds[size] / ((size - overlap) ** 2 / 1e6)
        rows.append((size, overlap, seconds[size], per_mp, len(plan.tiles), len(plan.tiles) * seconds[size]))
    best = min(row[3] for row in rows)
    print(f"\n| tile (px) | overlap | s per call | s per MP and step | vs the cheapest | {args.photo}: tiles | s per step |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, overlap, call_s, per_mp, tiles, step in rows:
        mark = " (chosen)" if size == chosen.size else ""
        print(f"| {size}{mark} | {overlap} | {call_s:.2f} | {per_mp:.2f} | {per_mp / best:.2f} | {tiles} | {step:.1f} |")


if __name__ == "__main__":
    main()
