"""What a Task-Plugin costs on top of Stable Diffusion 1.5, measured in one run.

SD1.5-shaped random weights (UNet 860M, CLIP ViT-L/14 vision, CLIP-L text). Prints:
per-step time of the UNet alone vs the pipeline's UNet + SCB step at 512 and 256 px,
the SCB alone, TPB time per image, Plugin-Selector time for 8 plugins vs one CLIP vision
pass, and peak memory (each configuration in its own process, peak RSS after the
weights are built). Not a test: numbers depend on the machine.

    python benchmarks/bench_plugin_core.py            # the README table
    python benchmarks/bench_plugin_core.py --quick    # 256 px only, fewer repeats
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from plugin_core import PluginConfig, PluginInfo, PluginSelector, TaskPlugin  # noqa: E402
from plugin_core.pipeline import BaseModels, Restorer  # noqa: E402

# Whole-word tokens as in CLIP's vocabulary: 7 words + BOS/EOS = 9 tokens, as the real tokenizer gives.
INSTRUCTION = "please remove the rain and the haze"

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


def build_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**SD15_UNET).eval().requires_grad_(False)


def build_plugin(task="derain", seed=1):
    torch.manual_seed(seed)
    return TaskPlugin(PluginConfig(), PluginInfo.for_task(task)).eval().requires_grad_(False)


def restorer_for(unet, with_clip=False):
    """A Restorer around the SD1.5 UNet; CLIP models only when the selector is measured."""
    from diffusers import AutoencoderKL, UniPCMultistepScheduler

    # The VAE is outside every timed region; a small one keeps memory for what is measured.
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8)
    clip_vision = text_encoder = tokenizer = None
    if with_clip:
        from tiny_models import _tokenizer_files
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModel

        torch.manual_seed(2)
        clip_vision = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, projection_dim=768)).eval()
        folder = Path(tempfile.mkdtemp()) / "tokenizer"
        vocab = _tokenizer_files(folder, words=INSTRUCTION.split())
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, eos_token_id=vocab - 1, bos_token_id=vocab - 2)).eval()
    return Restorer(BaseModels(unet=unet, vae=vae, scheduler=UniPCMultistepScheduler(), clip_vision=clip_vision,
                               text_encoder=text_encoder, tokenizer=tokenizer))


def interleaved(fns: dict, repeats: int) -> dict:
    """Alternate the candidates so machine drift hits them alike; one warm-up each."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


@torch.no_grad()
def step_times(unet, plugin, restorer, size, repeats):
    h = size // 8
    latents, cond = torch.randn(1, 4, h, h), torch.randn(1, 4, h, h)
    context, t = torch.randn(1, 256, 768), torch.tensor(500)
    return interleaved(
        {
            "unet": lambda: unet(latents, t, encoder_hidden_states=context),
            "unet+scb": lambda: restorer.predict(plugin, latents, t, cond, context),
            "scb": lambda: plugin.skip_residuals(cond, t, context),
        },
        repeats,
    )


def proc_status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _memory_child(kind, size, queue):
    torch.set_num_threads(torch.get_num_threads())
    unet = build_unet()
    plugin = build_plugin() if kind == "unet+scb" else None
    restorer = restorer_for(unet)
    h = size // 8
    latents, cond, context, t = torch.randn(1, 4, h, h), torch.randn(1, 4, h, h), torch.randn(1, 256, 768), torch.tensor(500)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark: count from here
    weights = proc_status_bytes("VmRSS")
    with torch.no_grad():
        for _ in range(2):
            if plugin is None:
                unet(latents, t, encoder_hidden_states=context)
            else:
                restorer.predict(plugin, latents, t, cond, context)
    plugin_bytes = sum(p.numel() * p.element_size() for p in plugin.parameters()) if plugin else 0
    queue.put({"peak": proc_status_bytes("VmHWM"), "weights": weights, "plugin_bytes": plugin_bytes})


def peak_memory(kind, size):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_memory_child, args=(kind, size, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


@torch.no_grad()
def selector_times(repeats):
    from PIL import Image

    restorer = restorer_for(build_unet(), with_clip=True)
    plugins = [build_plugin(f"task{i}", seed=10 + i) for i in range(8)]
    selector = PluginSelector().eval()
    image = Image.new("RGB", (640, 480), (120, 90, 60))
    tokens = restorer.clip_tokens([image], 24)
    return interleaved(
        {
            "clip vision pass": lambda: restorer.clip_tokens([image], 24),
            "tpb (one plugin)": lambda: plugins[0].visual_prompt(tokens),
            "select among 8 (instruction encoded before)": lambda: restorer.select(image, INSTRUCTION, plugins, selector),
            "select among 8 (new instruction: + text encoder)": lambda: (
                restorer.text_encoder._cache.pop(INSTRUCTION, None), restorer.select(image, INSTRUCTION, plugins, selector)),
        },
        repeats,
    )


def gib(n):
    return n / 2**30


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
    unet, plugin = build_unet(), build_plugin()
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
            alone, with_plugin = peak_memory("unet", size), peak_memory("unet+scb", size)
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
