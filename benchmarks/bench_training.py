"""What one Task-Plugin training step costs, measured in one run.

SD1.5-shaped random weights (UNet 860M, the SD VAE, CLIP ViT-L/14 vision), float32, batch 1,
256 px crops, the real Trainer and DiffusersTrainingBackend. Prints, interleaved so machine drift
hits all alike:

* one UNet forward + backward (gradients only to its inputs: Fp and the three skip
  residuals, as training needs; the UNet's weights are frozen) - the unit;
* a training step that encodes every pair (VAE of input and target, CLIP vision of the
  input, both without autograd) and one with cached encodings;
* each with and without gradient checkpointing;

and peak memory of each configuration in its own process (peak RSS of two steps above the
RSS once the models and the plugin exist). Not a test.

    python -m benchmarks.bench_training              # the README table
    python -m benchmarks.bench_training --repeats 2  # quicker
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import gib, in_fresh_process, interleaved, peak_rss, reset_peak
from tests.random_models import sd15_clip_vision, sd15_unet, sd15_vae

SIZE = 256


def build_backend():
    from diffusers import UniPCMultistepScheduler

    from plugin_core import BaseModels
    from plugin_core.training import DiffusersTrainingBackend

    models = BaseModels(unet=sd15_unet(), vae=sd15_vae(), scheduler=UniPCMultistepScheduler(), clip_vision=sd15_clip_vision())
    return DiffusersTrainingBackend(models)


def build_trainer(backend, cache: bool, checkpointing: bool, output_dir: Path):
    from PIL import Image

    from plugin_core.training import PairDataset, TrainConfig, Trainer

    generator = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(SIZE + 32, SIZE + 64, 3, generator=generator) * 255).byte().numpy()) for _ in range(4)]
    # Cached: one pair, no flip, so every step after the first reads the cache (no VAE/CLIP at all).
    dataset = PairDataset.from_images(images[:1], images[2:3], "random pair") if cache else \
        PairDataset.from_images(images[:2], images[2:], "random pairs")
    config = TrainConfig(task="bench", steps=10**6, resolution=SIZE, batch_size=1, cache=cache, random_flip=not cache,
                         gradient_checkpointing=checkpointing, checkpoint_every=0)
    return Trainer(backend, dataset, config, output_dir)


def unet_forward_backward(backend):
    """The unit: the frozen UNet's forward and its backward to Fp and the residuals."""
    h = SIZE // 8
    noisy, t = torch.randn(1, 4, h, h), torch.tensor([500])
    context = torch.randn(1, 256, 768, requires_grad=True)
    residuals = [torch.randn(1, 320, h, h, requires_grad=True) for _ in range(3)]

    def run():
        prediction = backend.predict(noisy, t, context, residuals)
        prediction.square().mean().backward()
        context.grad = None
        for r in residuals:
            r.grad = None

    return run


def set_checkpointing(backend, trainer, on: bool):
    unet, scb = backend.models.unet, trainer.plugin.scb
    if on:
        unet.enable_gradient_checkpointing()
        scb.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
        scb.disable_gradient_checkpointing()


def memory(kind: str, checkpointing: bool) -> dict:
    import tempfile

    backend = build_backend()
    if kind == "unet":
        run = unet_forward_backward(backend)
        if checkpointing:
            backend.enable_gradient_checkpointing()
    else:
        trainer = build_trainer(backend, cache=kind == "cached", checkpointing=checkpointing, output_dir=Path(tempfile.mkdtemp()))
        if kind == "cached":
            trainer.encodings.fill_cache()  # the steps only read it
        run = trainer.train_step
    # The mark is set before the first step: freed memory stays with the allocator, so a mark
    # after a warm-up step would hide what the step needs. AdamW's state (the same with and
    # without checkpointing) is allocated during the first step and counted.
    before = reset_peak()
    for _ in range(2):
        run()
    return {"peak": peak_rss(), "before": before}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU, {SIZE} px, batch 1")
    if not args.no_timing:
        timing_table(args.repeats)
    if not args.no_memory:
        memory_table()


def timing_table(repeats: int):
    import tempfile

    backend = build_backend()
    encoded = build_trainer(backend, cache=False, checkpointing=False, output_dir=Path(tempfile.mkdtemp()))
    cached = build_trainer(backend, cache=True, checkpointing=False, output_dir=Path(tempfile.mkdtemp()))
    unit = unet_forward_backward(backend)

    def with_checkpointing(fn, trainer):
        def run():
            set_checkpointing(backend, trainer, True)
            try:
                fn()
            finally:
                set_checkpointing(backend, trainer, False)
        return run

    times = interleaved(
        {
            "UNet forward + backward": unit,
            "training step, encoding each pair": encoded.train_step,
            "training step, cached encodings": cached.train_step,
            "UNet forward + backward, checkpointed": with_checkpointing(unit, cached),
            "training step, cached, checkpointed": with_checkpointing(cached.train_step, cached),
        },
        repeats,
    )
    print("\n| per step | seconds | × UNet fwd+bwd |\n|---|---:|---:|")
    for name, seconds in times.items():
        base = times["UNet forward + backward" + (", checkpointed" if "checkpointed" in name else "")]
        print(f"| {name} | {seconds:.2f} | {seconds / base:.3f} |")


def memory_table():
    print("\n| peak memory added by a step (GiB) | no checkpointing | checkpointing | cut |\n|---|---:|---:|---:|")
    peaks = {}
    for kind, label in (("unet", "UNet forward + backward"), ("encoded", "training step, encoding each pair"),
                        ("cached", "training step, cached encodings")):
        plain, checkpointed = in_fresh_process(memory, kind, False), in_fresh_process(memory, kind, True)
        a, b = plain["peak"] - plain["before"], checkpointed["peak"] - checkpointed["before"]
        peaks[kind] = (plain["peak"], checkpointed["peak"])
        print(f"| {label} | {gib(a):.2f} | {gib(b):.2f} | **{1 - b / a:.0%}** |")
    whole = peaks["encoded"]
    print(f"\nWhole-process peak RSS of the encoding step, weights included: {gib(whole[0]):.2f} GiB without, "
          f"{gib(whole[1]):.2f} GiB with checkpointing ({1 - whole[1] / whole[0]:.0%} less).")


if __name__ == "__main__":
    main()
