"""What a Task-Plugin costs on top of Stable Diffusion 1.5, measured in one run.

SD1.5-shaped random weights (UNet 860M, CLIP ViT-L/14 vision, CLIP-L text). Prints:
per-step time of the UNet alone vs the pipeline's UNet + SCB step at 512 and 256 px,
the SCB alone, TPB time per image, Plugin-Selector time for 8 plugins vs one CLIP vision
pass, and peak memory (each configuration in its own process, peak RSS after the
weights are built). Not a test: numbers depend on the machine.

    python -m benchmarks.bench_plugin_core            # the README table
    python -m benchmarks.bench_plugin_core --quick    # 256 px only, fewer repeats
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import gib, in_fresh_process, interleaved, peak_rss, reset_peak
from plugin_core import BaseModels, PluginConfig, PluginInfo, PluginSelector, Restorer, TaskPlugin
from tests.random_models import sd15_clip_text, sd15_clip_vision, sd15_unet, sd15_vae

# Whole-word tokens as in CLIP's vocabulary: 7 words + BOS/EOS = 9 tokens, as the real tokenizer gives.
INSTRUCTION = "please remove the rain and the haze"


def build_plugin(task="derain", seed=1):
    torch.manual_seed(seed)
    return TaskPlugin(PluginConfig(), PluginInfo.for_task(task)).eval().requires_grad_(False)


def restorer_for(unet, with_clip=False):
    """A Restorer around the SD1.5 UNet; CLIP models only when the selector is measured."""
    from diffusers import UniPCMultistepScheduler

    # The VAE is outside every timed region; a small one keeps memory for what is measured.
    clip_vision = text_encoder = tokenizer = None
    if with_clip:
        clip_vision = sd15_clip_vision()
        text_encoder, tokenizer = sd15_clip_text(Path(tempfile.mkdtemp()) / "tokenizer", words=tuple(INSTRUCTION.split()))
    return Restorer(BaseModels(unet=unet, vae=sd15_vae(full=False), scheduler=UniPCMultistepScheduler(),
                               clip_vision=clip_vision, text_encoder=text_encoder, tokenizer=tokenizer))


@torch.no_grad()
def step_times(unet, plugin, restorer, size, repeats):
    h = size // 8
    latents, cond = torch.randn(1, 4, h, h), torch.randn(1, 4, h, h)
    context, t = torch.randn(1, 256, 768), torch.tensor(500)
    return interleaved(
        {
            "unet": lambda: unet(latents, t, encoder_hidden_states=context),
            "unet+scb": lambda: restorer.backend.predict_with_plugin(plugin, latents, t, cond, context),
            "scb": lambda: plugin.skip_residuals(cond, t, context),
        },
        repeats,
    )


def memory(kind, size):
    """Peak RSS of two steps (UNet alone, or UNet + SCB), counted from after the weights are built."""
    unet = sd15_unet()
    plugin = build_plugin() if kind == "unet+scb" else None
    restorer = restorer_for(unet)
    h = size // 8
    latents, cond, context, t = torch.randn(1, 4, h, h), torch.randn(1, 4, h, h), torch.randn(1, 256, 768), torch.tensor(500)
    weights = reset_peak()
    with torch.no_grad():
        for _ in range(2):
            if plugin is None:
                unet(latents, t, encoder_hidden_states=context)
            else:
                restorer.backend.predict_with_plugin(plugin, latents, t, cond, context)
    plugin_bytes = sum(p.numel() * p.element_size() for p in plugin.parameters()) if plugin else 0
    return {"peak": peak_rss(), "weights": weights, "plugin_bytes": plugin_bytes}


@torch.no_grad()
def selector_times(repeats):
    from PIL import Image

    restorer = restorer_for(sd15_unet(), with_clip=True)
    plugins = [build_plugin(f"task{i}", seed=10 + i) for i in range(8)]
    selector = PluginSelector().eval()
    image = Image.new("RGB", (640, 480), (120, 90, 60))
    tokens = restorer.backend.clip_tokens([image], 24)
    return interleaved(
        {
            "clip vision pass": lambda: restorer.backend.clip_tokens([image], 24),
            "tpb (one plugin)": lambda: plugins[0].visual_prompt(tokens),
            "select among 8 (instruction encoded before)": lambda: restorer.select(image, INSTRUCTION, plugins, selector),
            "select among 8 (new instruction: + text encoder)": lambda: (
                restorer.text_encoder.forget([INSTRUCTION]), restorer.select(image, INSTRUCTION, plugins, selector)),
        },
        repeats,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="256 px, 3 repeats")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [256], 3

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    unet, plugin = sd15_unet(), build_plugin()
    restorer = restorer_for(unet)
    print("\n| per step | " + " | ".join(f"{s} px" for s in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    rows = {"UNet alone (s)": [], "UNet + SCB (s)": [], "SCB alone (s)": [], "**UNet+SCB / UNet**": [], "SCB / UNet": []}
    for size in args.sizes:
        times = step_times(unet, plugin, restorer, size, args.repeats)
        rows["UNet alone (s)"].append(f"{times['unet']:.3f}")
        rows["UNet + SCB (s)"].append(f"{times['unet+scb']:.3f}")
        rows["SCB alone (s)"].append(f"{times['scb']:.3f}")
        rows["**UNet+SCB / UNet**"].append(f"**{times['unet+scb'] / times['unet']:.3f}**")
        rows["SCB / UNet"].append(f"{times['scb'] / times['unet']:.3f}")
    if not args.no_memory:
        mem_rows = {"peak RSS, UNet alone (GiB)": [], "peak RSS, UNet + SCB − plugin weights (GiB)": [],
                    "**peak ratio**": [], "activations, UNet alone (MiB)": [], "activations, UNet + SCB (MiB)": []}
        for size in args.sizes:
            alone, with_plugin = in_fresh_process(memory, "unet", size), in_fresh_process(memory, "unet+scb", size)
            adjusted = with_plugin["peak"] - with_plugin["plugin_bytes"]
            mem_rows["peak RSS, UNet alone (GiB)"].append(f"{gib(alone['peak']):.2f}")
            mem_rows["peak RSS, UNet + SCB − plugin weights (GiB)"].append(f"{gib(adjusted):.2f}")
            mem_rows["**peak ratio**"].append(f"**{adjusted / alone['peak']:.3f}**")
            mem_rows["activations, UNet alone (MiB)"].append(f"{(alone['peak'] - alone['weights']) / 2**20:.0f}")
            mem_rows["activations, UNet + SCB (MiB)"].append(f"{(with_plugin['peak'] - with_plugin['weights']) / 2**20:.0f}")
        rows.update(mem_rows)
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(values) + " |")

    del unet, restorer
    times = selector_times(args.repeats)
    print("\n| once per image | seconds | × CLIP vision pass |\n|---|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {seconds / times['clip vision pass']:.3f} |")


if __name__ == "__main__":
    main()
