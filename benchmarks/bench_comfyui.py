"""ComfyUI sampling with a Task-Plugin applied vs the plain model, measured in one run.

SD1.5-shaped random weights (the full 860M UNet, loaded through ComfyUI), the real
ApplyTaskPlugin path, ComfyUI's own sampler (euler, `--steps` steps) at cfg 1 and cfg 7,
256 and 512 px: the plain model, the patched one (one UNet evaluation per step at any cfg) and
the patched one with plugin_guidance (the uncond side on the plain model). Peak memory: each configuration in its own process, peak RSS from after
the models are loaded. Not a test. Run with ComfyUI's Python:

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m benchmarks.bench_comfyui
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import in_fresh_process, interleaved, peak_rss, reset_peak
from tests import comfy_support as cs

ROOT = Path(__file__).resolve().parent.parent

FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"  # the reference-layout SD1.5-shaped plugin


def setup(attention: str):
    """(plain model, {size: (patched model, patched with plugin_guidance, latent)}) with random SD1.5 weights."""
    import torch

    cs.import_comfy(pytorch_attention=attention == "pytorch")
    import comfy.clip_vision
    import comfy.sd
    from diffusers import UNet2DConditionModel

    models = cs.model_files(FIXTURES)
    pack = cs.load_pack()
    import folder_paths

    folder_paths.folder_names_and_paths["diff_plugins"] = ([str(models / "diff_plugins")], {".safetensors", ".pt"})
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    model = comfy.sd.load_diffusion_model_state_dict(unet.state_dict())  # detected as SD15
    del unet
    vae = comfy.sd.load_checkpoint_guess_config(str(models / "checkpoints" / cs.CHECKPOINT))[2]
    clip_vision = comfy.clip_vision.load(str(models / "clip_vision" / cs.CLIP_VISION))
    import importlib

    apply = importlib.import_module(f"{pack.__name__}.nodes.apply")
    loaders = importlib.import_module(f"{pack.__name__}.nodes.loaders")
    bridge = importlib.import_module(f"{pack.__name__}.nodes.bridge")
    handle = loaders.load_plugin_handle("derain.safetensors")
    from tests.photos import make_photo

    photo = make_photo("rain.png")
    patched = {}
    for size in (256, 512):
        image = photo.resize((size, size))
        model_p, latent, _ = apply.apply_plugin(model, handle, clip_vision, vae, [image], [image])
        guided = apply.apply_plugin(model, handle, clip_vision, vae, [image], [image], guidance=True)[0]
        patched[size] = (model_p, guided, latent)
    return model, patched, bridge


def run(model, latent, cfg, steps, prompt_tokens=77):
    import comfy.sample
    import torch

    cond = [[torch.zeros(1, prompt_tokens, 768), {}]]
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    with torch.inference_mode():
        comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", cond, cond, latent["samples"], denoise=1.0,
                            disable_pbar=True, seed=0)


def timings(steps, repeats, sizes, attention):
    plain, patched, _ = setup(attention)
    rows = {}
    for size in sizes:
        model_p, guided, latent = patched[size]
        for cfg in (1.0, 7.0):
            # "plain 256": the plain model with a 256-token prompt, Fp's length: the context's share.
            candidates = {"plain": (plain, 77), "plain 256": (plain, 256), "plugin": (model_p, 77)}
            if cfg > 1:
                candidates["guided"] = (guided, 77)
            rows[size, cfg] = interleaved(
                {name: (lambda m=m, tokens=tokens: run(m, latent, cfg, steps, tokens)) for name, (m, tokens) in candidates.items()},
                repeats,
            )
    return rows


def memory(which, size, cfg, steps, attention):
    plain, patched, _ = setup(attention)
    model_p, _, latent = patched[size]
    model = model_p if which == "plugin" else plain
    run(model, latent, cfg, 1)  # loads the models (and the plugin) before the mark
    base = reset_peak()
    run(model, latent, cfg, steps)
    plugin_bytes = sum(p.numel() * p.element_size() for p in model_p.additional_models["diff_plugin"][0].model.parameters())
    return {"peak": peak_rss(), "base": base, "plugin_bytes": plugin_bytes if which == "plugin" else 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--attention", choices=("pytorch", "cpu-default"), default="pytorch",
                        help="'pytorch': SDPA, ComfyUI's default on NVIDIA GPUs; 'cpu-default': ComfyUI's CPU default (sub-quadratic)")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32; euler, {args.steps} steps; "
          f"attention: {args.attention}")
    rows = {} if args.no_timing else timings(args.steps, args.repeats, args.sizes, args.attention)
    if rows:
        print("\n| ComfyUI sampling | plain (s) | with plugin (s) | **ratio** | of which: 256-token context | SCB "
              "| plugin_guidance (s) | **ratio** |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for (size, cfg), t in rows.items():
        context = t["plain 256"] / t["plain"]
        guided = f"{t['guided']:.2f} | **{t['guided'] / t['plain']:.3f}**" if "guided" in t else "– | –"
        print(f"| {size} px, cfg {cfg:g} | {t['plain']:.2f} | {t['plugin']:.2f} | **{t['plugin'] / t['plain']:.3f}** | "
              f"{context:.3f} | {t['plugin'] / t['plain 256']:.3f} | {guided} |")
    if not args.no_memory:
        print("\n| peak memory (cfg 1) | plain (GiB) | with plugin − plugin weights (GiB) | **ratio** |\n|---|---:|---:|---:|")
        for size in args.sizes:
            plain = in_fresh_process(memory, "plain", size, 1.0, args.steps, args.attention)
            plugin = in_fresh_process(memory, "plugin", size, 1.0, args.steps, args.attention)
            adjusted = plugin["peak"] - plugin["plugin_bytes"]
            print(f"| {size} px | {plain['peak'] / 2**30:.2f} | {adjusted / 2**30:.2f} | **{adjusted / plain['peak']:.3f}** |")


if __name__ == "__main__":
    main()
