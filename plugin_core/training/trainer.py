"""Training a Task-Plugin: the reference recipe's step loop, resumable and safe to interrupt.

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
repeats exactly what an uninterrupted one does. Rank 0 alone writes the run folder
(run_folder.py: checkpoints, the plugin, validation images) and the log (log.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import PluginError
from ..images import at_size
from ..models import (
    PluginConfig,
    PluginInfo,
    SpatialComplementBranch,
    TaskPlugin,
    check_fits,
    default_start_mode,
    save_plugin,
)
from ..seeding import mix_seed
from .config import TrainConfig
from .distributed import make_accelerator
from .encodings import Encodings
from .log import TrainingLog
from .loss_curve import write_loss_curve
from .run_folder import RunFolder, TrainingError, checkpoint_step
from .samples import Layout, StepBatches, TrainingSamples, leave_interrupts_to_the_run, sample_noise

Render = Callable[[TaskPlugin, Sequence[Image.Image], int, int], list[Image.Image]]


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
    process and, under a launcher, in every other process of the run (`accelerator`).
    render(plugin, images, steps, seed): restores validation images (needed with validation_*)."""

    def __init__(self, backend, dataset, config: TrainConfig, output_dir: Path | str, *, plugin: TaskPlugin | None = None,
                 validation_images: Sequence[Image.Image] = (), validation_pairs=None, render: Render | None = None,
                 accelerator=None):
        if len(dataset) == 0:
            raise PluginError("the training dataset is empty")
        if (validation_images or validation_pairs is not None) and render is None:
            raise PluginError("validation images or pairs need a render function to restore them")
        self.backend, self.dataset, self.config, self.render = backend, dataset, config, render
        self.run = RunFolder(output_dir, config.task)
        self.output_dir = self.run.path
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
        check_fits(self.plugin, backend.facts)
        self.samples = TrainingSamples(dataset, config.resolution, config.seed, random_crop=config.random_crop,
                                       random_flip=config.random_flip, cached=config.cache)
        self.encodings = Encodings(backend, dataset, config, self.plugin.info.clip_layer, self.rank, self.processes)
        self.model, self.optimizer, self.lr_schedule = self._optimizer()
        if config.gradient_checkpointing:
            backend.enable_gradient_checkpointing()
            self.plugin.scb.enable_gradient_checkpointing()
        self.log = TrainingLog(self.output_dir, self.accelerator, config, self.processes)
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self._started: str | None = None  # how the run started (start())
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup

    def _new_plugin(self) -> TaskPlugin:
        facts, config = self.backend.facts, self.config
        plugin_config = PluginConfig(clip_width=facts.clip_width, context_width=facts.context_width, channels=facts.channels)
        info = PluginInfo(task=config.task, start_mode=config.start_mode or default_start_mode(config.task),
                          instructions=config.instructions, clip_layer=config.clip_layer)
        with torch.random.fork_rng(devices=[]):  # module init follows the run's seed; the caller's RNG is untouched
            torch.manual_seed(mix_seed(config.seed, 1))
            plugin = TaskPlugin(plugin_config, info)
            if config.init_scb_from_unet:
                plugin.scb = SpatialComplementBranch.from_unet(plugin_config, self.backend.unet_state())
        plugin.scb.zero_output_convs()  # a fresh plugin starts as a no-op on the skips
        return plugin

    def _optimizer(self):
        """(the prepared plugin, the prepared AdamW, the lr schedule): only the plugin is prepared
        (DDP in several processes), the frozen base never is; the schedule is not (Accelerate's
        wrapper steps once per process, ours once per step)."""
        config = self.config
        optimizer = torch.optim.AdamW(
            [{"params": list(self.plugin.scb.parameters())}, {"params": list(self.plugin.tpb.parameters())}],
            lr=config.learning_rate_for(self.processes), betas=config.adam_betas, eps=config.adam_epsilon,
            weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)
        return (*self.accelerator.prepare(self.plugin, optimizer), schedule)

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
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
            worker_init_fn=leave_interrupts_to_the_run if workers else None)

    def collate(self, keys: list[int]) -> dict:
        """A micro-batch made here, as the DataLoader makes it."""
        return torch.utils.data.default_collate([self.samples[k] for k in keys])

    # ------------------------------------------------------------------ one step

    def batch_loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one micro-batch; differentiable w.r.t. the plugin only."""
        input_latent, target_mean, target_std, tokens = self.encodings(batch)
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
            visual_prompt, residuals = self.model(tokens, input_latent, timesteps)
            prediction = self.backend.predict(noisy, timesteps, visual_prompt, residuals)
        return F.mse_loss(prediction.float(), target.float())

    def loss_on(self, keys: list[int]) -> torch.Tensor:
        """The loss of the samples numbered `keys` (as one micro-batch)."""
        return self.batch_loss(self.collate(keys))

    def _summed(self, *values: float) -> list[float]:
        """Each per-process number summed over all processes (one all-reduce; itself alone in one)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, "sum").tolist() if self.processes > 1 else tensor.tolist()

    def train_step(self, micro_batches: list[dict] | None = None) -> StepReport:
        """One optimisation step over this process's micro-batches (DataLoader batches; by
        default made here, without workers)."""
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
        loss_sum, bad = self._summed(total, 0.0 if math.isfinite(total) else 1.0)
        if bad:
            raise TrainingError(f"the loss became {total if not math.isfinite(total) else 'nan on another process'} "
                                f"at step {self.step + 1}; training stopped ({self.run.last_good_note()})")
        self.accelerator.unscale_gradients()  # once: per-branch clipping below (clip_grad_norm_ unscales per call)
        norms = [torch.nn.utils.clip_grad_norm_(branch.parameters(), self.config.max_grad_norm)
                 for branch in (self.plugin.scb, self.plugin.tpb)]
        grad_norm = float(torch.stack(norms).norm())
        if self.accelerator.scaler is None and not math.isfinite(grad_norm):  # fp16's scaler skips such steps itself
            raise TrainingError(f"non-finite gradients at step {self.step + 1}; training stopped ({self.run.last_good_note()})")
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
        held = self.run.check(resume=resume, overwrite=overwrite)
        if resume:
            step = self.resume()
            self._started = (f"resumed from {self.resumed_from} at step {step}" if self.resumed_from
                             else f"no checkpoint in {self.run.checkpoint_dir}: a new run")
        else:
            if held and self.is_main:
                self.run.clear()
            self._started = f"a new run in {self.output_dir}" + (f" (replacing {held})" if held else "")
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        return self._started

    def train(self, *, resume: bool = False, overwrite: bool = False,
              progress: Callable[[int, int, float, float], None] | None = None,
              should_stop: Callable[[], bool] | None = None, plugin_path: Path | str | None = None) -> TrainResult:
        """Run to `config.steps`, then write the plugin (default: output_dir/<task>.safetensors).

        On `should_stop()` (in any process) a checkpoint is written and the run returns early
        without a plugin file. resume / overwrite: how a run folder that already holds a run is
        treated (`start`)."""
        config = self.config
        self.start(resume=resume, overwrite=overwrite)
        self.log.open(self.step)
        stopped, checkpoint = False, self.run.latest()
        data = iter(self.batches(self.step, config.steps))
        try:
            while self.step < config.steps:
                if self._summed(bool(should_stop and should_stop()))[0]:
                    stopped = True
                    break
                report = self.train_step([next(data) for _ in range(config.gradient_accumulation)])
                lr = self.lr_schedule.get_last_lr()[0]
                self.losses.append((self.step, report.loss))
                validating = bool(config.validate_every and self.step % config.validate_every == 0
                                  and (self.validation_images or self.validation_pairs is not None))
                self.log.record(self.step, report, lr, validating and self.validation_pairs is not None)
                if progress:
                    progress(self.step, config.steps, report.loss, lr)
                if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                    checkpoint = self.save_checkpoint()
                if validating:
                    self.validate()
            if self.step > 0 and (checkpoint is None or checkpoint_step(checkpoint) != self.step):
                checkpoint = self.save_checkpoint()
        finally:
            del data  # stops the data workers
            self.log.close()
        plugin_path = None if stopped else self.save_plugin(Path(plugin_path or self.run.plugin_path))
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
            images = self.render(self.plugin, self.validation_images, steps, seed) if self.validation_images else []
            for index, image in enumerate(images):
                image.save(folder / f"step-{self.step:06d}_{index:02d}.png")
            if self.validation_pairs is not None:
                metrics = self._measure(steps)
            self.log.validation(self.step, images, metrics)
        self.accelerator.wait_for_everyone()
        return metrics

    def _measure(self, steps: int) -> dict[str, float]:
        from ..evaluation import paired_metrics

        scores = []
        for index in range(len(self.validation_pairs)):
            source, target = self.validation_pairs[index]
            # Measured at the pair's own size, as `diffplugin evaluate` measures a restored folder.
            restored = at_size(self.render(self.plugin, [source], steps, self.config.seed)[0], source.size)
            if target.size != source.size:
                target = target.resize(source.size, resample=Image.BICUBIC)
            scores.append(paired_metrics(restored, target))
        return {name: sum(s[name] for s in scores) / len(scores) for name in ("psnr", "ssim")}

    # ------------------------------------------------------------------ checkpoints and the plugin

    def latest_checkpoint(self) -> Path | None:
        return self.run.latest()

    def save_checkpoint(self) -> Path:
        """Rank 0 writes step-N.pt: the plugin, optimizer, lr schedule and scaler (every process
        returns its path)."""
        if not self.is_main:
            return self.run.checkpoint_dir / f"step-{self.step:06d}.pt"
        scaler = self.accelerator.scaler
        state = {
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
        return self.run.write_checkpoint(state, self.step, self.config.keep_checkpoints)

    def resume(self, path: Path | None = None) -> int:
        """Load the newest readable checkpoint (or `path`); returns the step it holds."""
        if self.is_main:
            self.run.remove_leftovers()
        for candidate, state in self.run.readable_states(path):
            saved = PluginConfig.from_dict(state["plugin_config"])
            if saved != self.plugin.config:
                raise TrainingError(f"{candidate}: the checkpoint's plugin ({saved.describe()}) differs from this run's "
                                    f"({self.plugin.config.describe()})")
            self.plugin.load_state_dict(state["plugin"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])
            if self.accelerator.scaler is not None and state["scaler"]:
                self.accelerator.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.losses = [(int(s), float(l)) for s, l in state["losses"]]
            self.resumed_from = candidate
            return self.step
        if path is not None or self.run.checkpoints():
            raise TrainingError(f"no readable checkpoint in {self.run.checkpoint_dir}")
        return 0

    def save_plugin(self, path: Path) -> Path:
        """Rank 0 writes the trained plugin (every process returns its path)."""
        config, facts = self.config, self.backend.facts
        self.plugin.info.extra = {
            "trained_steps": self.step,
            "data": getattr(self.dataset, "description", type(self.dataset).__name__),
            "resolution": config.resolution,
            "batch_size": config.global_batch(self.processes),
            "processes": self.processes,
            "learning_rate": config.learning_rate_for(self.processes),
            "seed": config.seed,
            "prediction_type": self.backend.prediction_type,
            "base": {"context_width": facts.context_width, "channels": facts.channels, "clip_width": facts.clip_width},
        }
        self.plugin.eval()
        return save_plugin(self.plugin, path) if self.is_main else path
