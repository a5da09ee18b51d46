"""Training a Task-Plugin: the reference recipe, resumable and safe to interrupt.

Frozen UNet / VAE / CLIP vision; trainable TPB + SCB. Per step: the target latent is a
sample of the VAE posterior of the clean image, the SCB reads the posterior mean of the
degraded input, Fp comes from CLIP vision of the input (squashed to 224, as the reference
trains); noise and a timestep uniform in [0, 1000) give x_t, and the loss is the MSE
between the UNet's prediction and the noise (or the velocity for v-prediction models).
AdamW (lr 1e-5 x the global batch: batch x processes x accumulation, weight decay 1e-2),
grad-norm clip 1.0 per branch, constant lr with optional linear warm-up.

The engine is HF Accelerate (distributed.py): one process or many, DDP on the plugin alone.
Every random choice about a sample comes from (seed, its sample number) (samples.py), so a
run gives the same plugin on any number of processes and data workers, and a resumed run
repeats exactly what an uninterrupted one does. Rank 0 alone writes checkpoints (the plugin,
optimizer, lr schedule and scaler state, written to a temp file and renamed: a crash
mid-write leaves the previous one intact), the loss log, validation images and the plugin.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import PluginError, PluginFileError
from ..formats import atomic_write, read_torch_pickle
from ..images import at_size
from ..models import PluginConfig, PluginInfo, SpatialComplementBranch, TaskPlugin, default_start_mode, save_plugin
from .datasets import Augment
from .distributed import make_accelerator
from .loss_curve import write_loss_curve
from .samples import Layout, StepBatches, TrainingSamples, sample_noise
from ..seeding import mix_seed

log = logging.getLogger("diffplugin")

MIXED_PRECISION = ("no", "fp16", "bf16")  # autocast, fp32 master weights
STATE_FORMAT = "diff-plugin/training-state"
_CHECKPOINT = re.compile(r"step-(\d+)\.pt$")
_LOG_COLUMNS = ["step", "loss", "lr", "seconds", "grad_norm", "samples_per_s", "val_psnr", "val_ssim"]


class TrainingError(PluginError):
    """Training stopped because something went wrong (NaN loss, incompatible resume, ...)."""


@dataclass
class TrainConfig:
    task: str = "custom"
    steps: int = 1000
    batch_size: int = 1  # per process and micro-batch
    learning_rate: float = 1e-5
    scale_lr: bool = True  # the reference multiplies by the global batch (batch x processes x accumulation)
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # "no", "fp16", "bf16": autocast, fp32 master weights
    resolution: int = 512
    random_crop: bool = True
    random_flip: bool = True
    seed: int = 42
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    validation_steps: int = 20
    init_scb_from_unet: bool = False
    cache: bool = False  # encode each pair once (centre crop, both flips): faster, less augmentation
    workers: int = 0  # DataLoader worker processes (0: in the training process)
    report_to: str = "none"  # an Accelerate tracker: "tensorboard", "wandb"
    clip_layer: int = 24
    start_mode: str | None = None
    instructions: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}")
        for name in ("steps", "batch_size", "gradient_accumulation", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.workers < 0:
            raise ValueError("workers must be at least 0")
        if self.resolution % 8:
            raise ValueError("resolution must be a multiple of 8")
        self.adam_betas = tuple(self.adam_betas)
        self.instructions = tuple(self.instructions)

    def global_batch(self, processes: int = 1) -> int:
        return self.batch_size * processes * self.gradient_accumulation

    def learning_rate_for(self, processes: int = 1) -> float:
        return self.learning_rate * (self.global_batch(processes) if self.scale_lr else 1)


@dataclass
class TrainResult:
    plugin: TaskPlugin
    steps: int  # optimisation steps done in total
    stopped: bool  # True when cancelled before `config.steps`
    losses: list[tuple[int, float]] = field(default_factory=list)
    plugin_path: Path | None = None
    checkpoint_path: Path | None = None


@dataclass
class StepReport:
    loss: float  # the mean over the global batch
    grad_norm: float  # of both branches together, before clipping
    seconds: float


class Trainer:
    """Trains one plugin on a dataset of (input, target) images with a TrainingBackend, in this
    process and, under a launcher, in every other process of the run (`accelerator`)."""

    def __init__(
        self,
        backend,
        dataset,
        config: TrainConfig,
        output_dir: Path | str,
        *,
        plugin: TaskPlugin | None = None,
        validation_images: Sequence[Image.Image] = (),
        validation_pairs=None,
        accelerator=None,
    ):
        if len(dataset) == 0:
            raise PluginError("the training dataset is empty")
        self.backend = backend
        self.dataset = dataset
        self.config = config
        self.output_dir = Path(output_dir)
        self.validation_images = list(validation_images)
        self.validation_pairs = validation_pairs  # (input, target) pairs measured at each validation
        self.device = backend.device
        self.accelerator = accelerator or make_accelerator(
            device=self.device, mixed_precision=config.mixed_precision, accumulation=config.gradient_accumulation,
            report_to=config.report_to, project_dir=self.output_dir)
        self.rank, self.processes = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.layout = Layout(config.batch_size, config.gradient_accumulation, self.processes)
        self.plugin = (plugin or self._new_plugin()).to(self.device, torch.float32)
        self.plugin.check_base(context_width=backend.context_width, channels=backend.channels, clip_width=backend.clip_width)
        self.samples = TrainingSamples(dataset, config.resolution, config.seed, random_crop=config.random_crop,
                                       random_flip=config.random_flip, cached=config.cache)
        optimizer = torch.optim.AdamW(
            [
                {"params": list(self.plugin.scb.parameters())},
                {"params": list(self.plugin.tpb.parameters())},
            ],
            lr=config.learning_rate_for(self.processes),
            betas=config.adam_betas,
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        warmup = config.warmup_steps
        # Not prepared: Accelerate's scheduler wrapper steps once per process, ours once per step.
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        )
        # Only the plugin is prepared (DDP in several processes); the frozen base never is.
        self.model, self.optimizer = self.accelerator.prepare(self.plugin, optimizer)
        if config.gradient_checkpointing:
            backend.enable_gradient_checkpointing()
            self.plugin.scb.enable_gradient_checkpointing()
        self._cache: dict[tuple[int, bool], tuple] | None = None
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self._started: str | None = None  # how the run started (start())
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup

    def _new_plugin(self) -> TaskPlugin:
        backend, config = self.backend, self.config
        plugin_config = PluginConfig(clip_width=backend.clip_width, context_width=backend.context_width, channels=backend.channels)
        info = PluginInfo(
            task=config.task,
            start_mode=config.start_mode or default_start_mode(config.task),
            instructions=config.instructions,
            clip_layer=config.clip_layer,
        )
        with torch.random.fork_rng(devices=[]):  # module init follows the run's seed; the caller's RNG is untouched
            torch.manual_seed(mix_seed(config.seed, 1))
            plugin = TaskPlugin(plugin_config, info)
            if config.init_scb_from_unet:
                plugin.scb = SpatialComplementBranch.from_unet(plugin_config, backend.unet_state())
        plugin.scb.zero_output_convs()  # a fresh plugin starts as a no-op on the skips
        return plugin

    # ------------------------------------------------------------------ data

    def micro_batches(self, step: int) -> list[list[int]]:
        """The sample numbers of this process's micro-batches of `step` (samples.Layout)."""
        return self.layout.micro_batches(step, self.rank)

    def batches(self, start: int, stop: int) -> torch.utils.data.DataLoader:
        """This process's micro-batches of steps start..stop-1, decoded, cropped and degraded in
        `config.workers` worker processes ahead of the training loop. The order is ours, not
        Accelerate's sharding: a sample's number decides everything about it."""
        workers = self.config.workers
        return torch.utils.data.DataLoader(
            self.samples, batch_sampler=StepBatches(self.micro_batches, start, stop), num_workers=workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None)

    def collate(self, keys: list[int]) -> dict:
        """A micro-batch made here, as the DataLoader makes it."""
        return torch.utils.data.default_collate([self.samples[k] for k in keys])

    def _encoded(self, batch: dict):
        """(input latent mean, target posterior mean and std, CLIP tokens) of a micro-batch."""
        if self.config.cache:
            self._fill_cache()
            parts = [self._cache[int(i), bool(f)] for i, f in zip(batch["index"], batch["flip"])]
            return (torch.stack(p).to(self.device) for p in zip(*parts))
        source, target = batch["source"].to(self.device), batch["target"].to(self.device)
        # All inputs and targets of the micro-batch through the VAE in one batch.
        mean, std = self.backend.encode(torch.cat([source, target]))
        tokens = self.backend.clip_tokens(source, self.plugin.info.clip_layer)
        count = source.shape[0]
        return mean[:count], mean[count:], std[count:], tokens

    def _fill_cache(self):
        """Encode every pair (and its mirror image) once: each process its share, then all of it
        to every process."""
        if self._cache is not None:
            return
        flips = (False, True) if self.config.random_flip else (False,)
        items = [(index, flip) for index in range(len(self.dataset)) for flip in flips]
        centre = Augment(self.config.resolution, random_crop=False, random_flip=False)
        mine = {}
        for index, flip in items[self.rank :: self.processes]:
            pixels = torch.stack(centre(*self.dataset[index], None))
            pixels = (pixels.flip(-1) if flip else pixels).to(self.device)
            mean, std = self.backend.encode(pixels)
            tokens = self.backend.clip_tokens(pixels[:1], self.plugin.info.clip_layer)
            mine[index, flip] = tuple(t.cpu() for t in (mean[0], mean[1], std[1], tokens[0]))
        if self.processes > 1:
            from accelerate.utils import gather_object

            shares = gather_object([mine])
            mine = {key: value for share in shares for key, value in share.items()}
        self._cache = mine

    # ------------------------------------------------------------------ one step

    def batch_loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one micro-batch; differentiable w.r.t. the plugin only."""
        cond, target_mean, target_std, tokens = self._encoded(batch)
        steps = len(self.backend.alphas_cumprod)
        posterior, noise, timesteps = (t.to(self.device) for t in
                                       sample_noise(batch["key"], target_mean.shape[1:], steps, self.config.seed))
        latents = target_mean + target_std * posterior
        alpha_bar = self.backend.alphas_cumprod.to(self.device)[timesteps].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
        if self.backend.prediction_type == "v_prediction":
            target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
        elif self.backend.prediction_type == "epsilon":
            target = noise
        else:
            raise TrainingError(f"unsupported prediction type {self.backend.prediction_type!r}")
        with self.accelerator.autocast():
            visual_prompt, residuals = self.model(tokens, cond, timesteps)
            prediction = self.backend.predict(noisy, timesteps, visual_prompt, residuals)
        return F.mse_loss(prediction.float(), target.float())

    def loss_on(self, keys: list[int]) -> torch.Tensor:
        """The loss of the samples numbered `keys` (as one micro-batch)."""
        return self.batch_loss(self.collate(keys))

    def _any(self, *flags: float) -> list[float]:
        """Sums of per-process numbers over all processes (one all-reduce; itself alone in one)."""
        values = torch.tensor(flags, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(values, "sum").tolist() if self.processes > 1 else values.tolist()

    def train_step(self, micro_batches: list[dict] | None = None) -> StepReport:
        """One optimisation step over this process's micro-batches (DataLoader batches; by
        default made here, without workers)."""
        config = self.config
        started = time.perf_counter()
        if micro_batches is None:
            micro_batches = [self.collate(keys) for keys in self.micro_batches(self.step)]
        self.model.train()
        total = 0.0
        for batch in micro_batches:
            with self.accelerator.accumulate(self.model):
                loss = self.batch_loss(batch)
                self.accelerator.backward(loss)  # divided by the accumulation; all-reduced on the last
            total += loss.item() / len(micro_batches)
        # Every process learns whether any loss was not finite, so they all stop together.
        loss_sum, bad = self._any(total, 0.0 if math.isfinite(total) else 1.0)
        if bad:
            raise TrainingError(f"the loss became {total if not math.isfinite(total) else 'nan on another process'} "
                                f"at step {self.step + 1}; training stopped ({self._last_good_note()})")
        self.accelerator.unscale_gradients()  # once: per-branch clipping below (clip_grad_norm_ unscales per call)
        norms = [torch.nn.utils.clip_grad_norm_(branch.parameters(), config.max_grad_norm)
                 for branch in (self.plugin.scb, self.plugin.tpb)]
        grad_norm = float(torch.stack(norms).norm())
        if self.accelerator.scaler is None and not math.isfinite(grad_norm):  # fp16's scaler skips such steps itself
            raise TrainingError(f"non-finite gradients at step {self.step + 1}; training stopped ({self._last_good_note()})")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_schedule.step()
        self.step += 1
        return StepReport(loss_sum / self.processes, grad_norm, time.perf_counter() - started)

    # ------------------------------------------------------------------ the loop

    def start(self, *, resume: bool = False, overwrite: bool = False) -> str:
        """Make the run folder ready and say how the run starts. A folder that holds a run is
        continued (`resume`: from its newest checkpoint) or, only when asked (`overwrite`),
        cleared of that run's files; otherwise this refuses, and nothing is touched."""
        if self._started is not None:
            return self._started
        self.accelerator.wait_for_everyone()  # every process sees the folder before rank 0 changes it
        held = describe_run(self.output_dir, self.config.task)
        if resume:
            step = self.resume()
            self._started = (f"resumed from {self.resumed_from} at step {step}" if self.resumed_from
                             else f"no checkpoint in {self.checkpoint_dir}: a new run")
        elif held and not overwrite:
            raise TrainingError(f"{self.output_dir} holds a training run ({held}): continue it with --resume, or start over "
                                "with --overwrite (that run's files are replaced), or choose another run folder")
        else:
            if held and self.is_main:
                self._clear_run()
            self._started = f"a new run in {self.output_dir}" + (f" (replacing {held})" if held else "")
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        return self._started

    def train(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: Callable[[int, int, float, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        plugin_path: Path | str | None = None,
    ) -> TrainResult:
        """Run to `config.steps`, then write the plugin (default: output_dir/<task>.safetensors).

        On `should_stop()` (in any process) a checkpoint is written and the run returns early
        without a plugin file. resume / overwrite: how a run folder that already holds a run is
        treated (`start`)."""
        config = self.config
        self.start(resume=resume, overwrite=overwrite)
        self._log_open()
        self._trackers_open()
        stopped = False
        checkpoint = self.latest_checkpoint()
        data = iter(self.batches(self.step, config.steps))
        try:
            while self.step < config.steps:
                if self._any(bool(should_stop and should_stop()))[0]:
                    stopped = True
                    break
                report = self.train_step([next(data) for _ in range(config.gradient_accumulation)])
                lr = self.lr_schedule.get_last_lr()[0]
                self.losses.append((self.step, report.loss))
                self._record(self.step, report, lr)
                if progress:
                    progress(self.step, config.steps, report.loss, lr)
                if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                    checkpoint = self.save_checkpoint()
                if config.validate_every and self.step % config.validate_every == 0 and (
                        self.validation_images or self.validation_pairs):
                    self.validate()
            if self.step > 0 and (checkpoint is None or _checkpoint_step(checkpoint) != self.step):
                checkpoint = self.save_checkpoint()
        finally:
            del data  # stops the data workers
            self._log_close()
            for tracker in self.accelerator.trackers:  # not end_training(): it ends the process group too
                tracker.finish()
        if stopped:
            plugin_path = None
        else:
            plugin_path = self.save_plugin(Path(plugin_path or self.output_dir / f"{config.task}.safetensors"))
        if self.is_main:
            write_loss_curve(self.output_dir / "loss.png", self.losses)
        self.accelerator.wait_for_everyone()  # the files are there for every process
        return TrainResult(self.plugin, self.step, stopped, list(self.losses), plugin_path, checkpoint)

    def validate(self) -> dict[str, float]:
        """Rank 0 restores the validation images (written to validation/) and the validation
        pairs' inputs, measured against their targets (PSNR / SSIM, in the log and trackers)."""
        metrics = {}
        if self.is_main:
            self.plugin.eval()
            folder = self.output_dir / "validation"
            folder.mkdir(exist_ok=True)
            steps, seed = self.config.validation_steps, self.config.seed
            images = self.backend.render(self.plugin, self.validation_images, steps, seed) if self.validation_images else []
            for index, image in enumerate(images):
                image.save(folder / f"step-{self.step:06d}_{index:02d}.png")
            if self.validation_pairs is not None:
                metrics = self._measure(steps)
            self._log_validation(images, metrics)
        self.accelerator.wait_for_everyone()
        return metrics

    def _measure(self, steps: int) -> dict[str, float]:
        from ..evaluation import paired_metrics

        scores = []
        for index in range(len(self.validation_pairs)):
            source, target = self.validation_pairs[index]
            # Measured at the pair's own size, as `diffplugin evaluate` measures a restored folder.
            restored = at_size(self.backend.render(self.plugin, [source], steps, self.config.seed)[0], source.size)
            if target.size != source.size:
                target = target.resize(source.size, resample=Image.BICUBIC)
            scores.append(paired_metrics(restored, target))
        return {name: sum(s[name] for s in scores) / len(scores) for name in ("psnr", "ssim")}

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        found = [p for p in self.checkpoint_dir.iterdir() if _CHECKPOINT.search(p.name)]
        return sorted(found, key=_checkpoint_step)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self) -> Path:
        """Rank 0 writes step-N.pt (every process returns its path)."""
        path = self.checkpoint_dir / f"step-{self.step:06d}.pt"
        if not self.is_main:
            return path
        scaler = self.accelerator.scaler
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "plugin": self.plugin.state_dict(),
            "plugin_config": dataclasses.asdict(self.plugin.config),
            "plugin_info": {"task": self.plugin.task, "start_mode": self.plugin.start_mode, "clip_layer": self.plugin.info.clip_layer},
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "processes": self.processes,
            "train_config": json.dumps(dataclasses.asdict(self.config)),
            "losses": [[s, l] for s, l in self.losses],
        }
        atomic_write(path, lambda temp: torch.save(state, temp))
        if self.config.keep_checkpoints:  # 0 keeps them all
            # Only this run's: a later step can never be an earlier checkpoint of it.
            ours = [c for c in self.checkpoints() if _checkpoint_step(c) <= self.step]
            for old in ours[: -self.config.keep_checkpoints]:
                old.unlink(missing_ok=True)
        return path

    def _clear_run(self) -> None:
        """Remove the files of the run this folder holds (nothing else in it)."""
        for path in [*self.checkpoints(), self.output_dir / "loss.csv", self.output_dir / "loss.png",
                     self.output_dir / f"{self.config.task}.safetensors"]:
            path.unlink(missing_ok=True)
        validation = self.output_dir / "validation"
        for image in validation.glob("step-*.png") if validation.is_dir() else ():
            image.unlink()

    def resume(self, path: Path | None = None) -> int:
        """Load the newest readable checkpoint (or `path`); returns the step it holds."""
        if self.is_main and self.checkpoint_dir.is_dir():
            for leftover in self.checkpoint_dir.glob(".*.tmp"):
                leftover.unlink()  # a write that never finished
        candidates = [path] if path else list(reversed(self.checkpoints()))
        for candidate in candidates:
            try:
                state = read_torch_pickle(candidate)
            except PluginFileError as error:
                log.warning("skipping unreadable checkpoint: %s", error)
                continue
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise TrainingError(f"{candidate}: not a diff-plugin training checkpoint")
            saved = PluginConfig.from_dict(state["plugin_config"])
            if saved != self.plugin.config:
                raise TrainingError(
                    f"{candidate}: the checkpoint's plugin ({saved.describe()}) differs from this run's "
                    f"({self.plugin.config.describe()})"
                )
            self.plugin.load_state_dict(state["plugin"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])
            if self.accelerator.scaler is not None and state["scaler"]:
                self.accelerator.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.losses = [(int(s), float(l)) for s, l in state["losses"]]
            self.resumed_from = candidate
            log.info("resumed from %s at step %d", candidate, self.step)
            return self.step
        if path is not None or self.checkpoints():
            raise TrainingError(f"no readable checkpoint in {self.checkpoint_dir}")
        log.info("no checkpoint in %s: starting from step 0", self.checkpoint_dir)
        return 0

    def save_plugin(self, path: Path) -> Path:
        """Rank 0 writes the trained plugin (every process returns its path)."""
        config = self.config
        self.plugin.info.extra = {
            "trained_steps": self.step,
            "data": getattr(self.dataset, "description", type(self.dataset).__name__),
            "resolution": config.resolution,
            "batch_size": config.global_batch(self.processes),
            "processes": self.processes,
            "learning_rate": config.learning_rate_for(self.processes),
            "seed": config.seed,
            "prediction_type": self.backend.prediction_type,
            "base": {"context_width": self.backend.context_width, "channels": self.backend.channels, "clip_width": self.backend.clip_width},
        }
        self.plugin.eval()
        return save_plugin(self.plugin, path) if self.is_main else path

    def _last_good_note(self) -> str:
        latest = self.latest_checkpoint()
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"

    # ------------------------------------------------------------------ loss log and trackers (rank 0)

    def _log_open(self):
        self._log_handle = None
        if not self.is_main:
            return
        path = self.output_dir / "loss.csv"
        rows = []
        if path.is_file():  # keep the rows up to the resumed step only
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= self.step]
        self._log_handle = path.open("w", newline="")
        self._log = csv.DictWriter(self._log_handle, _LOG_COLUMNS, restval="", extrasaction="ignore")
        self._log.writeheader()
        self._log.writerows(rows)
        self._pending: dict | None = None

    def _record(self, step: int, report: StepReport, lr: float):
        values = {"loss": report.loss, "lr": lr, "grad_norm": report.grad_norm,
                  "samples_per_s": self.config.global_batch(self.processes) / report.seconds}
        self.accelerator.log(values, step=step)
        if self._log_handle is not None:
            self._flush_row()
            self._pending = {"step": step, "seconds": f"{report.seconds:.4f}", **{k: f"{v:.6g}" for k, v in values.items()}}
            if not (self.config.validate_every and self.validation_pairs is not None and step % self.config.validate_every == 0):
                self._flush_row()  # a validation step's row waits for its metrics

    def _flush_row(self):
        if self._pending is not None:
            self._log.writerow(self._pending)
            self._log_handle.flush()
            self._pending = None

    def _log_validation(self, images: list[Image.Image], metrics: dict[str, float]):
        if metrics:
            self.accelerator.log({f"validation/{name}": value for name, value in metrics.items()}, step=self.step)
            if self._log_handle is not None and self._pending is not None:
                self._pending.update({f"val_{name}": f"{value:.6g}" for name, value in metrics.items()})
                self._flush_row()
        for tracker in self.accelerator.trackers if images else ():
            if tracker.name == "tensorboard":
                tracker.log_images({"validation": np.stack([np.asarray(i) for i in images])}, self.step, dataformats="NHWC")
            elif tracker.name == "wandb":
                tracker.log_images({"validation": images}, self.step)

    def _trackers_open(self):
        if self.config.report_to != "none":
            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in dataclasses.asdict(self.config).items()}
            self.accelerator.init_trackers("diff-plugin", config=values | {"processes": self.processes})

    def _log_close(self):
        if self._log_handle is not None:
            self._flush_row()
            self._log_handle.close()
            self._log_handle = None


def describe_run(folder: Path | str, task: str) -> str | None:
    """What a run folder holds of a training run (checkpoints, loss log, plugin), or None."""
    folder = Path(folder)
    steps = sorted(_checkpoint_step(p) for p in (folder / "checkpoints").glob("step-*.pt") if _CHECKPOINT.search(p.name))
    parts = [f"checkpoints up to step {steps[-1]}"] if steps else []
    parts += [name for name in ("loss.csv", f"{task}.safetensors") if (folder / name).is_file()]
    return ", ".join(parts) or None


def _checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.search(path.name).group(1))
