"""Several plugins: the reference chain against one joint pass, measured in one run.

SD1.5-shaped random weights (the 860M UNet, SD's VAE, CLIP ViT-L/14 vision), plugins of the
released shape, 512 px, CPU float32. For 2 and 3 plugins: the chain (the first plugin `--steps`,
each later one 3 steps, a VAE round trip per plugin) and the joint pass (`--steps` once, each
step every SCB, the UNet reading all prompts; 'attention' and 'tokens' contexts), each a whole
restore in a fresh process: UNet calls, SCB calls, VAE passes, seconds, peak RSS, and their ratio
to the chain of the same plugins.

    python -m benchmarks.bench_compose                 # the docs' table (20 steps)
    python -m benchmarks.bench_compose --steps 4       # quicker; the ratios move with the steps

cfg 1 against cfg 7 with a plugin is ComfyUI's concern: `benchmarks/bench_comfyui.py`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import gib, in_fresh_process, peak_rss, reset_peak

TASKS = ("derain", "dehaze", "desnow")


def _counting(module, counts: dict, key: str, method: str = "forward"):
    real = getattr(module, method)

    def counted(*args, **kwargs):
        counts[key] += 1
        return real(*args, **kwargs)

    setattr(module, method, counted)


def measure(plugins: int, compose: str, context: str, steps: int, size: int) -> dict:
    """One whole restore (CLIP, the VAE, sampling, decode) with `plugins` plugins."""
    from diffusers import UniPCMultistepScheduler

    from plugin_core import BaseModels, PluginConfig, PluginInfo, Restorer, TaskPlugin
    from tests.random_models import sd15_clip_vision, sd15_unet, sd15_vae

    models = BaseModels(unet=sd15_unet(), vae=sd15_vae(full=True), scheduler=UniPCMultistepScheduler(),
                        clip_vision=sd15_clip_vision())
    chosen = []
    for index, task in enumerate(TASKS[:plugins]):
        torch.manual_seed(10 + index)
        chosen.append(TaskPlugin(PluginConfig(), PluginInfo.for_task(task)).eval().requires_grad_(False))
    counts = {"unet": 0, "scb": 0, "vae": 0}
    _counting(models.unet, counts, "unet")
    for plugin in chosen:
        _counting(plugin.scb, counts, "scb")
    _counting(models.vae, counts, "vae", "encode")
    _counting(models.vae, counts, "vae", "decode")
    restorer = Restorer(models)
    photo = Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8))
    base = reset_peak()
    start = time.perf_counter()
    restorer.restore([photo], chosen, steps=steps, resolution=size, compose=compose, joint_context=context)
    return {"seconds": time.perf_counter() - start, "peak": peak_rss(), "base": base, **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--plugins", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args(argv)
    print(f"SD1.5-shaped random weights, {args.size} px, CPU float32, {torch.get_num_threads()} threads, {args.steps} steps "
          "(later plugins of a chain: 3)\n")
    print("| plugins | run | UNet calls | SCB calls | VAE passes | seconds | peak RSS (GiB) | **s vs chain** | **peak vs chain** |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for count in args.plugins:
        rows = {}
        for name, compose, context in (("chain", "chain", "attention"), ("joint, attention", "joint", "attention"),
                                       ("joint, tokens", "joint", "tokens")):
            rows[name] = result = in_fresh_process(measure, count, compose, context, args.steps, args.size)
            chain = rows["chain"]
            print(f"| {count} | {name} | {result['unet']} | {result['scb']} | {result['vae']} | {result['seconds']:.1f} | "
                  f"{gib(result['peak']):.2f} | **{result['seconds'] / chain['seconds']:.2f}** | "
                  f"**{result['peak'] / chain['peak']:.2f}** |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
