"""Training and restoring in several processes: 2 CPU processes on the gloo backend, launched
with torchrun as a user launches them, on tiny models. A sample's fate depends only on (seed,
its number), so the process count and the data workers never change the plugin."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from plugin_core import BaseModels, load_plugin
from plugin_core.cli import main
from plugin_core.formats import read_torch_pickle
from plugin_core.synthetic import write_pairs
from plugin_core.training import DiffusersTrainingBackend, PairDataset, TrainConfig, Trainer
from tests.random_models import write_tiny_clip_vision, write_tiny_sd

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")

ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, photo_dir):
    root = tmp_path_factory.mktemp("distributed")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    write_pairs([photo_dir / "rain.png", photo_dir / "snow.png"], root / "pairs", "haze", pairs_per_image=2)
    return root


def train_args(setup, run, *extra):
    return ["train", "--data", str(setup / "pairs"), "--task", "t", "--resolution", "32", "--seed", "5", "--lr", "1e-3",
            "--no-scale-lr", "--sd", str(setup / "sd"), "--clip-vision", str(setup / "clip_vision"), "--no-progress",
            "-o", str(run), *extra]


def launch(processes: int, args: list[str], script: str | None = None, **popen) -> subprocess.Popen:
    """torchrun --standalone --nproc_per_node N -m plugin_core ARGS (or a script)."""
    target = [script] if script else ["-m", "plugin_core"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               *target, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, **popen)


def run(processes: int, args: list[str], script: str | None = None, timeout: int = 240) -> str:
    process = launch(processes, args, script)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def flat(plugin) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in plugin.state_dict().values()])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def one_process(setup, tmp_path, steps: int, **settings) -> Trainer:
    """The same run (train_args' settings) in this process, on the Trainer itself."""
    backend = DiffusersTrainingBackend(BaseModels.from_pretrained(setup / "sd", setup / "clip_vision"))
    config = TrainConfig(task="t", steps=steps, resolution=32, seed=5, learning_rate=1e-3, scale_lr=False, **({"workers": 0} | settings))
    return Trainer(backend, PairDataset.from_path(setup / "pairs"), config, tmp_path)


def test_two_processes_equal_one_with_the_global_batch_and_resume_exactly(setup, tmp_path):
    """2 processes x batch 1 (2 data workers each) == 1 process x batch 2 (no workers); a
    2-process run stopped at step 2 and resumed equals the uninterrupted one."""
    single = one_process(setup, tmp_path / "one", 4, batch_size=2)
    start = flat(single.plugin)
    one = flat(single.train().plugin)
    out = run(2, train_args(setup, tmp_path / "two", "--steps", "4", "--batch-size", "1", "--workers", "2"))
    assert "2 processes, global batch 2" in out and out.count("wrote ") == 1  # rank 0 alone speaks
    two = flat(load_plugin(tmp_path / "two" / "t.safetensors"))
    assert relative(two, one) <= 1e-5 and relative(one, start) > 1e-2, (relative(two, one), relative(one, start))
    assert load_plugin(tmp_path / "two" / "t.safetensors").info.extra["batch_size"] == 2

    run(2, train_args(setup, tmp_path / "split", "--steps", "2", "--batch-size", "1", "--checkpoint-every", "2"))
    run(2, train_args(setup, tmp_path / "split", "--steps", "4", "--batch-size", "1", "--resume"))
    resumed = flat(load_plugin(tmp_path / "split" / "t.safetensors"))
    assert relative(resumed, two) <= 1e-5
    log = [line.split(",")[:2] for line in (tmp_path / "split" / "loss.csv").read_text().splitlines()[1:]]
    assert len(log) == 4 and log == [line.split(",")[:2] for line in (tmp_path / "two" / "loss.csv").read_text().splitlines()[1:]]


def test_data_workers_do_not_change_the_plugin(setup, tmp_path):
    plugins = [flat(one_process(setup, tmp_path / str(workers), 3, batch_size=2, workers=workers, checkpoint_every=0)
                    .train().plugin) for workers in (0, 2)]
    assert relative(plugins[1], plugins[0]) <= 1e-6


def test_a_killed_process_ends_the_run_and_the_checkpoint_resumes(setup, tmp_path):
    psutil = pytest.importorskip("psutil")
    folder = tmp_path / "run"
    process = launch(2, train_args(setup, folder, "--steps", "100000", "--checkpoint-every", "2", "--workers", "0"))
    deadline = time.time() + 240
    while not (folder / "checkpoints" / "step-000004.pt").is_file():
        assert time.time() < deadline and process.poll() is None, process.stdout.read() if process.poll() is not None else "too slow"
        time.sleep(0.2)
    ranks = [p for p in psutil.Process(process.pid).children(recursive=True) if "plugin_core" in " ".join(p.cmdline())]
    victim = next(p for p in ranks if p.environ().get("LOCAL_RANK") == "1")
    victim.send_signal(signal.SIGKILL)
    killed = time.time()
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and time.time() - killed < 60, output
    assert "exitcode  : -9" in output  # the launcher names the process that died
    assert "another process of this run" in output and "continue with --resume" in output  # and the survivor says why it stopped
    newest = sorted((folder / "checkpoints").glob("step-*.pt"))[-1]
    reached = read_torch_pickle(newest)["step"]
    run(2, train_args(setup, folder, "--steps", str(reached + 2), "--checkpoint-every", "2", "--resume"))
    assert load_plugin(folder / "t.safetensors").info.extra["trained_steps"] == reached + 2


def test_a_nan_on_one_process_stops_every_process(setup, tmp_path):
    script = tmp_path / "poisoned.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import plugin_core.training.backend as backend
        from plugin_core.cli import main
        real, calls = backend.DiffusersTrainingBackend.predict, []
        def poisoned(self, *args):
            calls.append(1)
            out = real(self, *args)
            return out * float("nan") if os.environ["RANK"] == "1" and len(calls) == 3 else out
        backend.DiffusersTrainingBackend.predict = poisoned
        sys.exit(main(sys.argv[1:]))
    """))
    process = launch(2, train_args(setup, tmp_path / "run", "--steps", "10", "--checkpoint-every", "2"), script=str(script))
    output, _ = process.communicate(timeout=240)
    assert process.returncode != 0
    assert "error: the loss became nan at step 3" in output and "nan on another process at step 3" in output, output
    assert "last good checkpoint is" in output and (tmp_path / "run" / "checkpoints" / "step-000002.pt").is_file()


def test_a_folder_restored_by_two_processes_equals_one_and_resumes(setup, tmp_path, photo_dir, fixtures_dir, capsys):
    """Each process restores its share of the folder; the images are those of one process, a
    broken file is named and left out, and --skip-existing carries on a stopped run."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index, name in enumerate(("rain.png", "snow.png", "haze.png", "blur.png")):
        Image.open(photo_dir / name).convert("RGB").resize((40 + 8 * index, 32)).save(photos / f"{index}.png")
    (photos / "broken.png").write_bytes(b"not an image")
    restore = ["restore", str(photos), "--plugin", str(fixtures_dir / "tiny" / "derain"), "--sd", str(setup / "sd"),
               "--clip-vision", str(setup / "clip_vision"), "--steps", "2", "--resolution", "32"]
    # One process, this one, with the thread count the launched processes get (OMP_NUM_THREADS=1):
    # float sums in another order may flip a uint8 rounding, and the bytes are compared below.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*restore, "-o", str(tmp_path / "one"), "--no-progress"]) == 1
    finally:
        torch.set_num_threads(threads)
    assert "broken.png: cannot read this image" in capsys.readouterr().err
    process = launch(2, [*restore, "-o", str(tmp_path / "two")])
    output, _ = process.communicate(timeout=240)
    assert process.returncode != 0 and output.count("broken.png: cannot read") == 2  # named once, in the summary too
    assert "4/4" in output  # rank 0's one bar counts the images of both processes
    written = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert written == ["0.png", "1.png", "2.png", "3.png"] == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in written:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name

    (photos / "broken.png").unlink()
    (tmp_path / "two" / "2.png").unlink()
    kept = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in ("0.png", "1.png", "3.png")}
    output = run(2, [*restore, "-o", str(tmp_path / "two"), "--skip-existing", "--no-progress"])
    assert "3 of 4 outputs exist already" in output and output.count("wrote ") == 1
    assert (tmp_path / "two" / "2.png").read_bytes() == (tmp_path / "one" / "2.png").read_bytes()
    assert {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in kept} == kept
