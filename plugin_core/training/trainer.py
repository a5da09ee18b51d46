"""Training a Task-Plugin: the reference recipe, resumable and safe to interrupt.

Frozen UNet / VAE / CLIP vision; trainable TPB + SCB. Per step: the target latent is a
sample of the VAE posterior of the clean image, the SCB reads the posterior mean of the
degraded input, Fp comes from CLIP vision of the input (squashed to 224, as the reference
trains); noise and a timestep uniform in [0, 1000) give x_t, and the loss is the MSE
between the UNet's prediction and the noise (or the velocity for v-prediction models).
AdamW (lr 1e-5 x batch x accumulation, weight decay 1e-2), grad-norm clip 1.0 per branch,
constant lr with optional linear warm-up.

Every random choice of step s comes from a generator seeded by (seed, s), and the data
order from (seed, epoch), so a resumed run repeats exactly what an uninterrupted one does.
Checkpoints hold the plugin, optimizer, lr schedule and scaler state, and are written to a
temp file and renamed: a crash mid-write leaves the previous one intact.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import PluginError, PluginFileError
from ..formats import atomic_write, read_torch_pickle
from ..models import PluginConfig, PluginInfo, SpatialComplementBranch, TaskPlugin, default_start_mode, save_plugin
from .datasets import Augment
from .loss_curve import write_loss_curve
from .seeding import generator, mix_seed

log = logging.getLogger("diffplugin")

MIXED_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
STATE_FORMAT = "diff-plugin/training-state"
_CHECKPOINT = re.compile(r"step-(\d+)\.pt$")


class TrainingError(PluginError):
    """Training stopped because something went wrong (NaN loss, incompatible resume, ...)."""


@dataclass
class TrainConfig:
    task: str = "custom"
    steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1e-5
    scale_lr: bool = True  # the reference multiplies by batch size and accumulation
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
    clip_layer: int = 24
    start_mode: str | None = None
    instructions: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}")
        for name in ("steps", "batch_size", "gradient_accumulation", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.resolution % 8:
            raise ValueError("resolution must be a multiple of 8")
        self.adam_betas = tuple(self.adam_betas)
        self.instructions = tuple(self.instructions)

    @property
    def effective_learning_rate(self) -> float:
        scale = self.batch_size * self.gradient_accumulation if self.scale_lr else 1
        return self.learning_rate * scale


@dataclass
class TrainResult:
    plugin: TaskPlugin
    steps: int  # optimisation steps done in total
    stopped: bool  # True when cancelled before `config.steps`
    losses: list[tuple[int, float]] = field(default_factory=list)
    plugin_path: Path | None = None
    checkpoint_path: Path | None = None


class Trainer:
    """Trains one plugin on a dataset of (input, target) images with a TrainingBackend."""

    def __init__(
        self,
        backend,
        dataset,
        config: TrainConfig,
        output_dir: Path | str,
        *,
        plugin: TaskPlugin | None = None,
        validation_images: Sequence[Image.Image] = (),
    ):
        if len(dataset) == 0:
            raise PluginError("the training dataset is empty")
        self.backend = backend
        self.dataset = dataset
        self.config = config
        self.output_dir = Path(output_dir)
        self.validation_images = list(validation_images)
        self.device = backend.device
        self.plugin = (plugin or self._new_plugin()).to(self.device, torch.float32)
        self.plugin.check_base(context_width=backend.context_width, channels=backend.channels, clip_width=backend.clip_width)
        self.augment = Augment(config.resolution, random_crop=config.random_crop and not config.cache, random_flip=config.random_flip)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": list(self.plugin.scb.parameters())},
                {"params": list(self.plugin.tpb.parameters())},
            ],
            lr=config.effective_learning_rate,
            betas=config.adam_betas,
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        warmup = config.warmup_steps
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        )
        self.autocast_dtype = MIXED_PRECISION[config.mixed_precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        if config.gradient_checkpointing:
            backend.enable_gradient_checkpointing()
            self.plugin.scb.enable_gradient_checkpointing()
        self._cache: dict[tuple[int, bool], tuple] = {}
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

    def _sample_indices(self, step: int) -> list[list[int]]:
        """Dataset indices of each micro-batch of `step`: epochs are seeded permutations."""
        n, config = len(self.dataset), self.config
        per_step = config.batch_size * config.gradient_accumulation
        indices = []
        for k in range(step * per_step, (step + 1) * per_step):
            epoch, position = divmod(k, n)
            order = torch.randperm(n, generator=generator(config.seed, 2, epoch))
            indices.append(int(order[position]))
        return [indices[i : i + config.batch_size] for i in range(0, per_step, config.batch_size)]

    def _encoded(self, indices: list[int], generator: torch.Generator):
        """(input latent mean, target posterior mean and std, CLIP tokens) for a micro-batch."""
        if self.config.cache:
            return [self._cached(index, generator) for index in indices]
        pixels = []
        for index in indices:
            pixels += self.augment(*self.dataset[index], generator)
        # All inputs and targets of the micro-batch through the VAE in one batch.
        mean, std = self.backend.encode(torch.stack(pixels).to(self.device))
        tokens = self.backend.clip_tokens(torch.stack(pixels[0::2]).to(self.device), self.plugin.info.clip_layer)
        return [(mean[2 * i], mean[2 * i + 1], std[2 * i + 1], tokens[i]) for i in range(len(indices))]

    def _cached(self, index: int, generator: torch.Generator):
        flip = self.config.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        if (index, flip) not in self._cache:
            source, target = self.dataset[index]
            pixels = torch.stack(Augment(self.config.resolution, random_crop=False, random_flip=False)(source, target, generator))
            pixels = (pixels.flip(-1) if flip else pixels).to(self.device)
            mean, std = self.backend.encode(pixels)
            tokens = self.backend.clip_tokens(pixels[:1], self.plugin.info.clip_layer)
            self._cache[index, flip] = (mean[0], mean[1], std[1], tokens[0])
        return self._cache[index, flip]

    # ------------------------------------------------------------------ one step

    def loss_on(self, indices: list[int], generator: torch.Generator) -> torch.Tensor:
        """The training loss of one micro-batch; differentiable w.r.t. the plugin only."""
        cond, target_mean, target_std, tokens = (torch.stack(parts) for parts in zip(*self._encoded(indices, generator)))
        batch = cond.shape[0]
        latents = target_mean + target_std * _randn(target_mean.shape, generator, self.device)
        noise = _randn(latents.shape, generator, self.device)
        timesteps = torch.randint(0, len(self.backend.alphas_cumprod), (batch,), generator=generator).to(self.device)
        alpha_bar = self.backend.alphas_cumprod.to(self.device)[timesteps].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
        if self.backend.prediction_type == "v_prediction":
            target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
        elif self.backend.prediction_type == "epsilon":
            target = noise
        else:
            raise TrainingError(f"unsupported prediction type {self.backend.prediction_type!r}")
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            visual_prompt = self.plugin.visual_prompt(tokens)
            residuals = self.plugin.skip_residuals(cond, timesteps, visual_prompt)
            prediction = self.backend.predict(noisy, timesteps, visual_prompt, residuals)
        return F.mse_loss(prediction.float(), target.float())

    def step_generator(self, step: int) -> torch.Generator:
        """All randomness of one step (crops, flips, posterior sample, noise, timesteps)."""
        return generator(self.config.seed, 3, step)

    def train_step(self) -> float:
        """One optimisation step (all micro-batches); returns the mean loss."""
        config = self.config
        generator = self.step_generator(self.step)
        self.plugin.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        micro_batches = self._sample_indices(self.step)
        for indices in micro_batches:
            loss = self.loss_on(indices, generator)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at step {self.step + 1}; training stopped "
                    f"({self._last_good_note()})"
                )
            self.scaler.scale(loss / len(micro_batches)).backward()
            total += loss.item() / len(micro_batches)
        self.scaler.unscale_(self.optimizer)
        for branch in (self.plugin.scb, self.plugin.tpb):
            torch.nn.utils.clip_grad_norm_(branch.parameters(), config.max_grad_norm)
        if self.autocast_dtype != torch.float16 and not all(
            torch.isfinite(p.grad).all() for p in self.plugin.parameters() if p.grad is not None
        ):
            raise TrainingError(f"non-finite gradients at step {self.step + 1}; training stopped ({self._last_good_note()})")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_schedule.step()
        self.step += 1
        return total

    # ------------------------------------------------------------------ the loop

    def start(self, *, resume: bool = False, overwrite: bool = False) -> str:
        """Make the run folder ready and say how the run starts. A folder that holds a run is
        continued (`resume`: from its newest checkpoint) or, only when asked (`overwrite`),
        cleared of that run's files; otherwise this refuses, and nothing is touched."""
        if self._started is not None:
            return self._started
        held = describe_run(self.output_dir, self.config.task)
        if resume:
            step = self.resume()
            self._started = (f"resumed from {self.resumed_from} at step {step}" if self.resumed_from
                             else f"no checkpoint in {self.checkpoint_dir}: a new run")
        elif held and not overwrite:
            raise TrainingError(f"{self.output_dir} holds a training run ({held}): continue it with --resume, or start over "
                                "with --overwrite (that run's files are replaced), or choose another run folder")
        else:
            if held:
                self._clear_run()
            self._started = f"a new run in {self.output_dir}" + (f" (replacing {held})" if held else "")
        self.output_dir.mkdir(parents=True, exist_ok=True)
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

        On `should_stop()` a checkpoint is written and the run returns early without a
        plugin file. resume / overwrite: how a run folder that already holds a run is treated
        (`start`)."""
        config = self.config
        self.start(resume=resume, overwrite=overwrite)
        self._log_open()
        stopped = False
        checkpoint = self.latest_checkpoint()
        while self.step < config.steps:
            if should_stop and should_stop():
                stopped = True
                break
            started = time.perf_counter()
            loss = self.train_step()
            lr = self.lr_schedule.get_last_lr()[0]
            self.losses.append((self.step, loss))
            self._log_write(self.step, loss, lr, time.perf_counter() - started)
            if progress:
                progress(self.step, config.steps, loss, lr)
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                checkpoint = self.save_checkpoint()
            if config.validate_every and self.validation_images and self.step % config.validate_every == 0:
                self.validate()
        if self.step > 0 and (checkpoint is None or _checkpoint_step(checkpoint) != self.step):
            checkpoint = self.save_checkpoint()
        self._log_close()
        if stopped:
            plugin_path = None
        else:
            plugin_path = self.save_plugin(Path(plugin_path or self.output_dir / f"{config.task}.safetensors"))
        write_loss_curve(self.output_dir / "loss.png", self.losses)
        return TrainResult(self.plugin, self.step, stopped, list(self.losses), plugin_path, checkpoint)

    def validate(self) -> list[Path]:
        self.plugin.eval()
        images = self.backend.render(self.plugin, self.validation_images, self.config.validation_steps, self.config.seed)
        folder = self.output_dir / "validation"
        folder.mkdir(exist_ok=True)
        paths = []
        for index, image in enumerate(images):
            paths.append(folder / f"step-{self.step:06d}_{index:02d}.png")
            image.save(paths[-1])
        return paths

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
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "plugin": self.plugin.state_dict(),
            "plugin_config": dataclasses.asdict(self.plugin.config),
            "plugin_info": {"task": self.plugin.task, "start_mode": self.plugin.start_mode, "clip_layer": self.plugin.info.clip_layer},
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_config": json.dumps(dataclasses.asdict(self.config)),
            "losses": [[s, l] for s, l in self.losses],
        }
        path = atomic_write(self.checkpoint_dir / f"step-{self.step:06d}.pt", lambda temp: torch.save(state, temp))
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
        for leftover in self.checkpoint_dir.glob(".*.tmp") if self.checkpoint_dir.is_dir() else ():
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
            self.scaler.load_state_dict(state["scaler"])
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
        config = self.config
        self.plugin.info.extra = {
            "trained_steps": self.step,
            "data": getattr(self.dataset, "description", type(self.dataset).__name__),
            "resolution": config.resolution,
            "batch_size": config.batch_size * config.gradient_accumulation,
            "learning_rate": config.effective_learning_rate,
            "seed": config.seed,
            "prediction_type": self.backend.prediction_type,
            "base": {"context_width": self.backend.context_width, "channels": self.backend.channels, "clip_width": self.backend.clip_width},
        }
        return save_plugin(self.plugin.eval(), path)

    def _last_good_note(self) -> str:
        latest = self.latest_checkpoint()
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"

    # ------------------------------------------------------------------ loss log

    def _log_open(self):
        path = self.output_dir / "loss.csv"
        rows = []
        if path.is_file():  # keep the rows up to the resumed step only
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= self.step]
        self._log_handle = path.open("w", newline="")
        self._log = csv.writer(self._log_handle)
        self._log.writerow(["step", "loss", "lr", "seconds"])
        for row in rows:
            self._log.writerow([row["step"], row["loss"], row["lr"], row["seconds"]])

    def _log_write(self, step, loss, lr, seconds):
        self._log.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{seconds:.4f}"])
        self._log_handle.flush()

    def _log_close(self):
        self._log_handle.close()


def describe_run(folder: Path | str, task: str) -> str | None:
    """What a run folder holds of a training run (checkpoints, loss log, plugin), or None."""
    folder = Path(folder)
    steps = sorted(_checkpoint_step(p) for p in (folder / "checkpoints").glob("step-*.pt") if _CHECKPOINT.search(p.name))
    parts = [f"checkpoints up to step {steps[-1]}"] if steps else []
    parts += [name for name in ("loss.csv", f"{task}.safetensors") if (folder / name).is_file()]
    return ", ".join(parts) or None


def _randn(shape, generator, device):
    return torch.randn(shape, generator=generator).to(device)


def _checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.search(path.name).group(1))
