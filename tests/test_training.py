"""Training Task-Plugins on tiny random models: the recipe, resume, safety, data errors."""

import copy
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from plugin_core import BaseModels, Restorer, load_plugin
from plugin_core.cli import main
from plugin_core.images import training_clip_pixels
from plugin_core.training import DataError, DiffusersTrainingBackend, PairDataset, TrainConfig, Trainer, TrainingError
from tests.random_models import write_tiny_clip_vision, write_tiny_sd


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-base")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    return root


@pytest.fixture()
def backend(base):
    return DiffusersTrainingBackend(BaseModels.from_pretrained(base / "sd", base / "clip_vision"))


@pytest.fixture(scope="module")
def pairs(photo_dir):
    """Two (degraded, clean-ish) pairs from photos (tests/photos.py): the 'target' is a darker copy."""
    inputs = [Image.open(photo_dir / n).convert("RGB").resize((48, 40)) for n in ("rain.png", "snow.png")]
    return PairDataset.from_images(inputs, [i.point(lambda v: v // 2) for i in inputs], "two photos")


def config(**overrides):
    values = dict(task="darken", steps=4, resolution=32, learning_rate=1e-4, checkpoint_every=0, seed=3, workers=0)
    return TrainConfig(**(values | overrides))


class FixedBatch(Trainer):
    """The samples of step 0 (their pairs, crops, noise, timesteps) every step: a fixed batch to overfit."""

    def micro_batches(self, step):
        return super().micro_batches(0)


def frozen_state(backend):
    models = backend.models
    return {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in
            (("unet", models.unet), ("vae", models.vae), ("clip", models.clip_vision))}


def test_loss_on_a_fixed_batch_falls_and_only_the_plugin_learns(backend, pairs, tmp_path):
    trainer = FixedBatch(backend, pairs, config(steps=300, learning_rate=1e-3, batch_size=1), tmp_path)
    before_plugin = copy.deepcopy(trainer.plugin.state_dict())
    before_frozen = frozen_state(backend)
    with torch.no_grad():
        start = trainer.loss_on([0]).item()
    result = trainer.train()
    with torch.no_grad():
        end = trainer.loss_on([0]).item()
    assert end < start / 5, (start, end)
    after = trainer.plugin.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before_plugin[k])]
    assert any(k.startswith("tpb.") for k in changed) and any(k.startswith("scb.") for k in changed)
    for name, state in frozen_state(backend).items():
        assert all(torch.equal(state[k], before_frozen[name][k]) for k in state), f"{name} changed"
    assert all(p.grad is None for m in (backend.models.unet, backend.models.vae, backend.models.clip_vision) for p in m.parameters())
    assert result.plugin_path.is_file() and (tmp_path / "loss.png").is_file()
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 301))


def test_fresh_plugin_is_a_no_op_on_the_skips(backend, pairs, tmp_path):
    trainer = Trainer(backend, pairs, config(), tmp_path)
    cond = torch.randn(1, 4, 4, 4)
    residuals = trainer.plugin.skip_residuals(cond, torch.tensor([500]), torch.randn(1, 256, 768))
    assert all(r.abs().max() == 0 for r in residuals)


def test_recipe_targets_and_learning_rate(backend, tmp_path):
    """ε target by default; the velocity for v-prediction bases; lr scaled by batch x accumulation.

    The loss is recomputed from what the UNet was given: with a deterministic posterior (std 0)
    the clean latent is the VAE mean of the target, so the noise is recovered from x_t."""
    image = Image.new("RGB", (32, 32), (200, 120, 40))  # the training size: no crop to guess
    data = PairDataset.from_images([image], [image.point(lambda v: v // 2)], "one pair")
    trainer = Trainer(backend, data, config(batch_size=2, gradient_accumulation=3, random_flip=False), tmp_path)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 6)  # 1 process
    assert backend.prediction_type == "epsilon"
    seen = {}
    original_predict, original_encode = backend.predict, backend.encode_distribution

    def spy(noisy, timesteps, prompt, residuals):
        seen.update(noisy=noisy, timesteps=timesteps)
        seen["prediction"] = original_predict(noisy, timesteps, prompt, residuals)
        return seen["prediction"]

    backend.predict = spy
    backend.encode_distribution = lambda pixels: (original_encode(pixels)[0], torch.zeros_like(original_encode(pixels)[1]))
    target_pixels = torch.from_numpy(np.asarray(data[0][1], dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    z0 = original_encode(target_pixels)[0]
    for prediction_type in ("epsilon", "v_prediction"):
        backend.prediction_type = prediction_type
        with torch.no_grad():
            loss = trainer.loss_on([5])
        t = seen["timesteps"]
        a = backend.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (seen["noisy"] - a.sqrt() * z0) / (1 - a).sqrt()
        target = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * z0
        expected = torch.nn.functional.mse_loss(seen["prediction"], target)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
        assert 0 <= int(t) < 1000 and float(eps.std()) == pytest.approx(1.0, rel=0.5)  # x_t did carry unit noise


def _bilinear(array: np.ndarray, size: int) -> np.ndarray:
    """[H, W] resized to size x size by bilinear interpolation with half-pixel centres (the
    convention of PyTorch's align_corners=False), written out independently here."""
    def weights(length):  # [size, length] matrix: row i mixes the two source samples around output sample i
        source = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, length - 1)
        matrix = np.zeros((size, length))
        matrix[np.arange(size), low] += 1 - (source - low)
        matrix[np.arange(size), high] += source - low
        return matrix

    return weights(array.shape[0]) @ array @ weights(array.shape[1]).T


def test_training_clip_input_is_the_reference_squash():
    """The reference training's CLIP input: the [-1, 1] crop mapped to [0, 1], squashed (not
    cropped) to 224 x 224 bilinearly, normalised with OpenAI CLIP's statistics (transformers' own)."""
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    pixels = torch.rand(1, 3, 40, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = training_clip_pixels(pixels)
    assert out.shape == (1, 3, 224, 224)
    for channel in range(3):
        squashed = _bilinear((pixels[0, channel].double().numpy() + 1) / 2, 224)
        expected = (squashed - OPENAI_CLIP_MEAN[channel]) / OPENAI_CLIP_STD[channel]
        assert np.abs(out[0, channel].double().numpy() - expected).max() < 1e-4  # float32 against float64; another convention is off by 1e-2


def test_resume_continues_exactly(backend, pairs, tmp_path):
    whole = Trainer(backend, pairs, config(steps=6, checkpoint_every=3, batch_size=2), tmp_path / "whole")
    whole.train()
    first = Trainer(backend, pairs, config(steps=3, checkpoint_every=3, batch_size=2), tmp_path / "split")
    first.train()
    second = Trainer(backend, pairs, config(steps=6, checkpoint_every=3, batch_size=2), tmp_path / "split")
    second.train(resume=True)
    assert second.step == 6
    a, b = whole.plugin.state_dict(), second.plugin.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    rows = list(csv.DictReader((tmp_path / "split" / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(base, pairs, tmp_path, photo_dir):
    """SIGKILL while step 4's checkpoint is being written: step 2's stays intact and resumable."""
    script = textwrap.dedent(f"""
        import os, sys, time, torch
        sys.path.insert(0, {str(base.parent)!r})
        from PIL import Image
        from plugin_core import BaseModels
        from plugin_core.training import DiffusersTrainingBackend, PairDataset, TrainConfig, Trainer
        import plugin_core.training.trainer as trainer_module
        real_save = torch.save
        def slow_save(obj, path, *a, **k):
            real_save(obj, path, *a, **k)
            if obj["step"] == 4:
                print("WRITING", flush=True)
                time.sleep(60)  # killed here: the temp file is written, not yet renamed
        trainer_module.torch.save = slow_save
        image = Image.open({str(photo_dir / "rain.png")!r}).convert("RGB").resize((40, 40))
        data = PairDataset.from_images([image], [image.point(lambda v: v // 2)])
        backend = DiffusersTrainingBackend(BaseModels.from_pretrained({str(base / "sd")!r}, {str(base / "clip_vision")!r}))
        Trainer(backend, data, TrainConfig(task="t", steps=6, resolution=32, checkpoint_every=2, workers=0), {str(tmp_path)!r}).train()
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    deadline = time.time() + 240
    line = ""
    while time.time() < deadline and "WRITING" not in line:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
    assert "WRITING" in line, "the child never reached the checkpoint write"
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "step-000002.pt").is_file() and not (checkpoints / "step-000004.pt").exists()
    assert list(checkpoints.glob(".*.tmp")), "the interrupted write left its temp file, not a checkpoint"
    data = PairDataset.from_images([Image.new("RGB", (40, 40))], [Image.new("RGB", (40, 40))])
    backend = DiffusersTrainingBackend(BaseModels.from_pretrained(base / "sd", base / "clip_vision"))
    trainer = Trainer(backend, data, TrainConfig(task="t", steps=6, resolution=32, checkpoint_every=2, workers=0), tmp_path)
    assert trainer.resume() == 2
    assert not list(checkpoints.glob(".*.tmp"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(backend, pairs, tmp_path):
    trainer = Trainer(backend, pairs, config(steps=10, checkpoint_every=2), tmp_path)
    original = backend.predict
    calls = []

    def poisoned(*args):
        calls.append(1)
        out = original(*args)
        return out * float("nan") if len(calls) == 5 else out

    backend.predict = poisoned
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*last good checkpoint is .*step-000004\.pt"):
        trainer.train()
    backend.predict = original
    fresh = Trainer(backend, pairs, config(steps=10, checkpoint_every=2), tmp_path)
    assert fresh.resume() == 4


def test_cancel_stops_cleanly_with_a_checkpoint(backend, pairs, tmp_path):
    trainer = Trainer(backend, pairs, config(steps=10), tmp_path)
    result = trainer.train(should_stop=lambda: trainer.step >= 3)
    assert result.stopped and result.steps == 3 and result.plugin_path is None
    assert result.checkpoint_path.name == "step-000003.pt"


def test_mixed_precision_and_gradient_checkpointing(backend, pairs, tmp_path):
    plain = Trainer(backend, pairs, config(), tmp_path / "a")
    checkpointed = Trainer(backend, pairs, config(gradient_checkpointing=True), tmp_path / "b")
    checkpointed.plugin.load_state_dict(plain.plugin.state_dict())
    for trainer in (plain, checkpointed):
        trainer.optimizer.zero_grad()
        trainer.loss_on([0]).backward()
    for a, b in zip(plain.plugin.parameters(), checkpointed.plugin.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4)
    backend.models.unet.disable_gradient_checkpointing()
    bf16 = Trainer(backend, pairs, config(mixed_precision="bf16", steps=2), tmp_path / "c")
    bf16.train()
    assert all(p.dtype == torch.float32 for p in bf16.plugin.parameters())  # fp32 master weights


def test_init_scb_from_unet_copies_the_first_level(backend, pairs, tmp_path):
    trainer = Trainer(backend, pairs, config(init_scb_from_unet=True), tmp_path)
    unet = backend.models.unet
    assert torch.equal(trainer.plugin.scb.controlnet_cond_embedding.weight, unet.conv_in.weight)
    assert torch.equal(trainer.plugin.scb.down_blocks[0].resnets[1].conv2.weight, unet.down_blocks[0].resnets[1].conv2.weight)
    assert all(conv.weight.abs().max() == 0 for conv in trainer.plugin.scb.controlnet_down_blocks)


def test_sdxl_like_plugin_trains_loads_and_applies(tmp_path, pairs):
    """Context 2048 and a first level without attention: dimensions follow the base model."""
    write_tiny_sd(tmp_path / "sdxl", context_width=2048, sdxl_like=True)
    write_tiny_clip_vision(tmp_path / "clip", width=80)
    models = BaseModels.from_pretrained(tmp_path / "sdxl", tmp_path / "clip")
    result = Trainer(DiffusersTrainingBackend(models), pairs, config(task="xl", steps=3), tmp_path / "run").train()
    plugin = load_plugin(result.plugin_path)
    assert (plugin.config.context_width, plugin.config.channels, plugin.config.clip_width) == (2048, 32, 80)
    assert plugin.info.extra["base"] == {"context_width": 2048, "channels": 32, "clip_width": 80}
    out = Restorer(models).restore([pairs[0][0]], [plugin], steps=2, resolution=32)
    assert out.images[0].size == (48, 40)  # short side 40 >= 32: only rounded to multiples of 8


@pytest.mark.parametrize("problem", ["empty", "unmatched", "unreadable", "csv"])
def test_bad_data_is_named(tmp_path, problem):
    folder = tmp_path / "data"
    (folder / "input").mkdir(parents=True)
    (folder / "target").mkdir()
    if problem == "empty":
        with pytest.raises(DataError, match="hold no images"):
            PairDataset.from_path(folder)
    elif problem == "unmatched":
        Image.new("RGB", (8, 8)).save(folder / "input" / "a.png")
        Image.new("RGB", (8, 8)).save(folder / "target" / "b.png")
        with pytest.raises(DataError, match=r"in input/ only: a; in target/ only: b"):
            PairDataset.from_path(folder)
    elif problem == "unreadable":
        (folder / "input" / "a.png").write_bytes(b"not an image")
        Image.new("RGB", (8, 8)).save(folder / "target" / "a.png")
        with pytest.raises(DataError, match=r"input/a.png: cannot read this image"):
            PairDataset.from_path(folder)
    else:
        Image.new("RGB", (8, 8)).save(folder / "target" / "a.png")
        (tmp_path / "pairs.csv").write_text("image,conditioning_image\ndata/target/a.png,data/input/missing.png\n")
        with pytest.raises(DataError, match=r"line 2: .*data/input/missing.png"):
            PairDataset.from_path(tmp_path / "pairs.csv")


def test_cli_train_writes_plugin_log_and_curve(base, tmp_path, pairs):
    data = tmp_path / "data"
    for sub in ("input", "target"):
        (data / sub).mkdir(parents=True)
    for index in range(len(pairs)):
        source, target = pairs[index]
        source.save(data / "input" / f"{index}.png")
        target.save(data / "target" / f"{index}.png")
    run = tmp_path / "run"
    code = main(["train", "--data", str(data), "--task", "darken", "--steps", "3", "--resolution", "32",
                 "--sd", str(base / "sd"), "--clip-vision", str(base / "clip_vision"), "-o", str(run), "--no-progress",
                 "--instruction", "make it darker", "--checkpoint-every", "2"])
    assert code == 0
    plugin = load_plugin(run / "darken.safetensors")
    assert plugin.task == "darken" and plugin.info.instructions == ("make it darker",)
    assert plugin.info.extra["trained_steps"] == 3 and "folder" in plugin.info.extra["data"]
    assert (run / "loss.png").is_file() and len((run / "loss.csv").read_text().splitlines()) == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002.pt", "step-000003.pt"]


def test_ctrl_c_in_the_cli_stops_with_a_checkpoint_and_resume_continues(base, tmp_path, photo_dir):
    """`diffplugin train`: the first SIGINT ends the run after the current step with a
    checkpoint of it (exit 130, no plugin file); `--resume` carries on from there."""
    from plugin_core.formats import read_torch_pickle
    from plugin_core.synthetic import write_pairs

    write_pairs([photo_dir / "rain.png"], tmp_path / "pairs", "haze", pairs_per_image=2)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "plugin_core", "train", "--data", str(tmp_path / "pairs"), "--task", "t",
               "--resolution", "32", "--checkpoint-every", "0", "--sd", str(base / "sd"), "--clip-vision",
               str(base / "clip_vision"), "-o", str(run), "--no-progress"]
    process = subprocess.Popen(command + ["--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (run / "loss.csv").is_file() or len((run / "loss.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and process.poll() is None, process.stdout.read() if process.poll() is not None else "too slow"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 130, output
    checkpoint = next((run / "checkpoints").glob("step-*.pt"))
    reached = read_torch_pickle(checkpoint)["step"]
    assert reached >= 2 and f"stopped at step {reached}" in output and not (run / "t.safetensors").exists()
    resumed = subprocess.run(command + ["--steps", str(reached + 1), "--resume"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert load_plugin(run / "t.safetensors").info.extra["trained_steps"] == reached + 1


def test_a_run_folder_holding_a_run_needs_resume_or_overwrite(backend, pairs, tmp_path):
    """Training into a folder holding a finished run: refused unless asked; --overwrite replaces
    that run's files (and nothing else), so a later --resume continues the new run."""
    Trainer(backend, pairs, config(steps=4, checkpoint_every=2), tmp_path).train()
    (tmp_path / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match=r"holds a training run \(checkpoints up to step 4, loss.csv, darken.safetensors\)"):
        Trainer(backend, pairs, config(steps=2, checkpoint_every=2), tmp_path).train()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    again = Trainer(backend, pairs, config(steps=2, checkpoint_every=1, seed=9), tmp_path)
    assert "replacing" in again.start(overwrite=True)
    again.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001.pt", "step-000002.pt"]
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "loss.csv").open())] == [1, 2]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    resumed = Trainer(backend, pairs, config(steps=3, checkpoint_every=1, seed=9), tmp_path)
    assert resumed.start(resume=True).endswith("step-000002.pt at step 2")


def test_pruning_only_removes_checkpoints_of_this_run(backend, pairs, tmp_path):
    """A later step's checkpoint can never be an earlier one of this run: keep-2 leaves it alone."""
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / "step-000120.pt"
    stale.write_bytes(b"another run's")
    trainer = Trainer(backend, pairs, config(steps=6), tmp_path)
    for step in (2, 4, 6):
        trainer.step = step
        trainer.save_checkpoint()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000004.pt", "step-000006.pt", "step-000120.pt"]
    assert stale.read_bytes() == b"another run's"


def test_trackers_and_validation_metrics(backend, pairs, tmp_path):
    """--report-to tensorboard: loss, lr, grad norm, samples/s and the validation PSNR / SSIM per
    step, read back from the event file; the same metrics in loss.csv on validation steps."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = Trainer(backend, pairs, config(steps=4, validate_every=2, validation_steps=1, report_to="tensorboard"),
                      tmp_path, validation_images=[pairs[0][0]], validation_pairs=pairs, render=Restorer(backend.models).render)
    trainer.train()
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert all(float(r["grad_norm"]) > 0 and float(r["samples_per_s"]) > 0 for r in rows)
    assert [bool(r["val_psnr"]) for r in rows] == [False, True, False, True]
    psnr = float(rows[1]["val_psnr"])
    from plugin_core.evaluation import paired_metrics
    from plugin_core.images import at_size

    # The last validation saw the final plugin: measured again here, at the pairs' own size.
    expected = sum(paired_metrics(at_size(Restorer(backend.models).render(trainer.plugin, [s], 1, 3)[0], s.size), t)["psnr"]
                   for s, t in (pairs[i] for i in range(len(pairs)))) / len(pairs)
    assert float(rows[3]["val_psnr"]) == pytest.approx(expected, abs=1e-3) and 0 < psnr < 100
    events = EventAccumulator(str(next((tmp_path / "diff-plugin").glob("**/events.out.tfevents.*")).parent))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("loss", "lr", "grad_norm", "samples_per_s"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag
    assert [e.step for e in events.Scalars("validation/psnr")] == [2, 4] and "validation/ssim" in scalars
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    assert events.Tags()["images"], "the validation images were logged"
