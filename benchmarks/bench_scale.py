"""Scaling out: training samples/s and restore images/s in 1 and 2 processes, and whether the
data pipeline hides behind the training step. Not a test.

SD1.5-shaped random weights (UNet 860M, the SD VAE, CLIP ViT-L/14 vision), 256 px, the real
Trainer / Restorer on HF Accelerate. Parts:

* overlap (one process): a training step fed by the DataLoader (JPEG decoding, crop and flip in
  `--workers` worker processes) against the same step on micro-batches already in memory,
  interleaved; and with the data made in the loop (0 workers);
* processes: `torchrun --nproc_per_node P` for P = 1 and 2, the same global batch (2), each
  process with its share of the cores; then each process restores its share of 4 photos.

    python -m benchmarks.bench_scale                       # CPU, the README table
    python -m benchmarks.bench_scale --device cuda --dtype float16 --processes 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SIZE = 256
PHOTOS = Path(tempfile.gettempdir()) / "diffplugin-bench-photos"  # drawn scenes as 1024x768 JPEGs (tests/photos.py)


def build(device: str, dtype: torch.dtype):
    from diffusers import UniPCMultistepScheduler

    from plugin_core import BaseModels
    from plugin_core.training import DiffusersTrainingBackend
    from tests.random_models import sd15_clip_vision, sd15_unet, sd15_vae

    models = BaseModels(unet=sd15_unet(), vae=sd15_vae(), scheduler=UniPCMultistepScheduler(), clip_vision=sd15_clip_vision())
    for name in ("unet", "clip_vision"):
        getattr(models, name).to(device, dtype)
    models.vae.to(device)
    return DiffusersTrainingBackend(models, device=device, dtype=dtype)


def photos(count: int = 8) -> list[Path]:
    """JPEGs a DataLoader decodes for every sample, as a user's photos; written once, the same in every process."""
    from tests.photos import scene

    PHOTOS.mkdir(exist_ok=True)
    paths = [PHOTOS / f"scene_{seed}.jpg" for seed in range(count)]
    for seed, path in enumerate(paths):
        if not path.is_file():
            temp = path.with_suffix(f".{os.getpid()}.tmp")
            scene(seed, size=(1024, 768)).save(temp, format="JPEG", quality=90)
            os.replace(temp, path)
    return paths


def trainer(backend, batch: int, workers: int, accelerator=None, mixed_precision="no"):
    from plugin_core.training import PairDataset, TrainConfig, Trainer

    files = photos()[:8]
    data = PairDataset(list(zip(files, reversed(files))), "photos")  # decoded from JPEG for every sample
    config = TrainConfig(task="bench", steps=10**6, resolution=SIZE, batch_size=batch, workers=workers, checkpoint_every=0,
                         mixed_precision=mixed_precision)
    return Trainer(backend, data, config, Path(tempfile.mkdtemp()), accelerator=accelerator)


# ---------------------------------------------------------------------------------------- overlap

def overlap(args):
    backend = build(args.device, args.dtype)
    fed = trainer(backend, 1, args.workers)
    in_loop = trainer(backend, 1, 0)
    ready = [fed.collate(keys) for step in range(args.steps + 1) for keys in fed.micro_batches(step)]
    loader = iter(fed.batches(0, 10**6))
    loop_data = iter(in_loop.batches(0, 10**6))
    times = {"data in memory": [], f"DataLoader, {args.workers} workers": [], "data made in the loop (0 workers)": []}
    runs = list(zip(times, (lambda i: ready[i], lambda i: next(loader), lambda i: next(loop_data))))
    for index in range(args.steps + 1):  # the first round warms up
        for name, batch in runs:
            started = time.perf_counter()
            fed.train_step([batch(index)])
            if index:
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["data in memory"])
    print("\n| training step, 256 px, batch 1 | seconds | × data in memory |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | **{statistics.median(values) / base:.3f}** |")


# ---------------------------------------------------------------------------------------- processes

def worker(args):
    """One process of a torchrun launch: train a few steps, then restore a share of photos."""
    from accelerate import PartialState

    from plugin_core import Restorer
    from plugin_core.images import load_image
    from plugin_core.training.distributed import make_accelerator

    processes = int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(max(1, args.threads // processes))
    device = args.device if args.device == "cpu" else f"cuda:{os.environ['LOCAL_RANK']}"
    accelerator = make_accelerator(device=device, mixed_precision="fp16" if args.dtype == torch.float16 else "no")
    backend = build(accelerator.device if args.device != "cpu" else "cpu", torch.float32)
    train = trainer(backend, args.global_batch // processes, args.workers, accelerator,
                    "fp16" if args.dtype == torch.float16 else "no")
    data = iter(train.batches(0, 10**6))
    train.train_step([next(data)])  # warm-up
    accelerator.wait_for_everyone()
    started = time.perf_counter()
    for _ in range(args.steps):
        train.train_step([next(data)])
    accelerator.wait_for_everyone()
    training = time.perf_counter() - started
    del data

    plugin = train.plugin.eval()
    restorer = Restorer(backend.models, device=backend.device, dtype=args.dtype if args.device != "cpu" else torch.float32)
    images = [load_image(p).resize((SIZE, SIZE)) for p in photos()[: args.images]]
    restorer.restore(images[:1], [plugin], steps=args.restore_steps, resolution=SIZE)  # warm-up
    state = PartialState()
    state.wait_for_everyone()
    started = time.perf_counter()
    with state.split_between_processes(images) as mine:
        for image in mine:
            restorer.restore([image], [plugin], steps=args.restore_steps, resolution=SIZE)
    state.wait_for_everyone()
    restoring = time.perf_counter() - started
    if state.is_main_process:
        print("RESULT " + json.dumps({"processes": processes, "samples_per_s": args.global_batch * args.steps / training,
                                      "images_per_s": len(images) / restoring}), flush=True)


def processes(args):
    rows = []
    for count in args.processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(count),
                   "-m", "benchmarks.bench_scale", "--role", "worker", "--device", args.device, "--dtype", args.dtype_name,
                   "--steps", str(args.steps), "--workers", str(args.workers), "--threads", str(args.threads),
                   "--global-batch", str(args.global_batch), "--images", str(args.images),
                   "--restore-steps", str(args.restore_steps)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
        rows.append(json.loads(line[len("RESULT "):]))
    one = rows[0]
    print(f"\n| processes | training samples/s (global batch {args.global_batch}) | × 1 process | restore images/s "
          f"({args.restore_steps} steps) | × 1 process |\n|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['processes']} | {row['samples_per_s']:.3f} | **{row['samples_per_s'] / one['samples_per_s']:.2f}** | "
              f"{row['images_per_s']:.3f} | **{row['images_per_s'] / one['images_per_s']:.2f}** |")
    from plugin_core.models import PluginConfig, PluginInfo, TaskPlugin

    count = sum(p.numel() for p in TaskPlugin(PluginConfig(), PluginInfo(task="x")).parameters())
    print(f"\nAll-reduced per optimisation step: the plugin's {count / 1e6:.1f} M gradients ({count * 4 / 2**20:.0f} MiB in float32).")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "worker"), default="main")
    parser.add_argument("--part", choices=("all", "overlap", "processes"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", dest="dtype_name", choices=("float32", "float16"), default="float32")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="cores shared by the processes")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--global-batch", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--restore-steps", type=int, default=2)
    args = parser.parse_args()
    args.dtype = {"float32": torch.float32, "float16": torch.float16}[args.dtype_name]
    if args.role == "worker":
        return worker(args)
    print(f"torch {torch.__version__}, {args.device}, {args.dtype_name}, {SIZE} px, {os.cpu_count()} cores")
    if args.part in ("all", "overlap"):
        overlap(args)
    if args.part in ("all", "processes"):
        processes(args)


if __name__ == "__main__":
    main()
