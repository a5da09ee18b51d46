"""Measuring restorations (plugin_core.evaluation, `diffplugin evaluate` / `make-stats`).

PSNR / SSIM against scikit-image on photos (tests/photos.py) with seeded degradations; FID / KID plumbing on
tiny random feature networks written here (a TorchScript "Inception", a transformers CLIP); the
command line's messages; restore-and-measure on the tiny models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchmetrics")
skimage_metrics = pytest.importorskip("skimage.metrics")

from plugin_core.cli import main  # noqa: E402
from plugin_core.errors import PluginError  # noqa: E402
from plugin_core.evaluation import paired_metrics  # noqa: E402
from plugin_core.synthetic import DEGRADATIONS, degrade  # noqa: E402

DIFFPLUGIN = Path(sys.executable).parent / "diffplugin"


def run(*args):
    command = [str(DIFFPLUGIN)] if DIFFPLUGIN.is_file() else [sys.executable, "-m", "plugin_core"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def cli(capsys, *args):
    """`diffplugin ...` in this process (cheaper than a new one): exit status, stdout + stderr."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_user_error(code, output, *messages):
    assert code == 2, output
    assert "Traceback" not in output, output
    for message in messages:
        assert message in output, output


def photo(photo_dir, name, side):
    image = Image.open(photo_dir / name).convert("RGB")
    image.thumbnail((side, side))
    return image


@pytest.fixture(scope="module")
def pairs(photo_dir):
    """(name, degraded, clean) for every made photo, each with a seeded synthetic degradation."""
    kinds = sorted(DEGRADATIONS)
    out = []
    for i, path in enumerate(sorted(p for p in photo_dir.iterdir() if p.suffix in (".jpg", ".png"))):
        clean = photo(photo_dir, path.name, 192)
        out.append((path.stem, degrade(clean, kinds[i % len(kinds)], seed=i), clean))
    return out


def bt601_luma(rgb: np.ndarray) -> np.ndarray:
    """Y of ITU-R BT.601 (Kr 0.299, Kb 0.114) in studio range: 16 + 219 x luma, for 8-bit RGB."""
    kr, kb = 0.299, 0.114
    weights = np.array([kr, 1 - kr - kb, kb])
    return 16 + 219 * (rgb.astype(np.float64) / 255) @ weights


# ---------------------------------------------------------------------- PSNR / SSIM


@pytest.mark.parametrize("y_channel", [False, True], ids=["rgb", "y"])
def test_psnr_and_ssim_equal_scikit_image_on_real_photos(pairs, y_channel):
    assert len(pairs) >= 20
    for name, degraded, clean in pairs:
        ours = paired_metrics(degraded, clean, y_channel=y_channel)
        a, b = np.asarray(degraded), np.asarray(clean)
        if y_channel:
            a, b, channels = bt601_luma(a), bt601_luma(b), None
        else:
            channels = 2
        psnr = skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255)
        ssim = skimage_metrics.structural_similarity(b, a, channel_axis=channels, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=255)
        assert abs(ours["psnr"] - psnr) < 0.01, (name, ours, psnr)
        assert abs(ours["ssim"] - ssim) < 0.005, (name, ours, ssim)
    # the two conventions are not the same numbers: the Y variant is really measured on Y
    name, degraded, clean = pairs[0]
    assert paired_metrics(degraded, clean)["psnr"] != paired_metrics(degraded, clean, y_channel=True)["psnr"]


def test_paired_metrics_order_identity_and_size_check(pairs):
    _, degraded, clean = pairs[3]
    same = paired_metrics(clean, clean)
    assert same["psnr"] == float("inf") and abs(same["ssim"] - 1) < 1e-9
    mild = paired_metrics(degrade(clean, "noise", seed=0, intensity=0.1), clean)
    strong = paired_metrics(degrade(clean, "noise", seed=0, intensity=0.9), clean)
    assert mild["psnr"] > strong["psnr"] and mild["ssim"] > strong["ssim"]
    with pytest.raises(PluginError, match=r"restored image is 60x40 but its reference is 40x60"):
        paired_metrics(Image.new("RGB", (60, 40)), Image.new("RGB", (40, 60)))


def test_paired_metrics_imports_nothing_heavy():
    code = ("import sys; from plugin_core.evaluation import paired_metrics; "
            "print([m for m in ('torchmetrics', 'skimage', 'transformers', 'diffusers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ---------------------------------------------------------------------- two folders


@pytest.fixture()
def folders(tmp_path, pairs):
    pred, target = tmp_path / "pred", tmp_path / "target"
    pred.mkdir()
    target.mkdir()
    for name, degraded, clean in pairs[:4]:
        degraded.save(pred / f"{name}.png")  # as `diffplugin restore` names its results
        clean.save(target / f"{name}.png")
    return pred, target


def test_evaluate_two_folders_writes_json_and_csv(capsys, folders, tmp_path):
    pred, target = folders
    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    code, output = cli(capsys, "evaluate", pred, target, "--json", out_json, "--csv", out_csv, "--lpips", "off",
                       "--no-progress", "--per-image")
    assert code == 0, output
    report = json.loads(out_json.read_text())
    assert set(report) == {"metrics", "per_image", "settings"}
    assert sorted(report["per_image"]) == sorted(p.stem for p in pred.iterdir())
    for name, scores in report["per_image"].items():
        a, b = np.asarray(Image.open(pred / f"{name}.png")), np.asarray(Image.open(target / f"{name}.png"))
        assert abs(scores["psnr"] - skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255)) < 0.01
    psnrs = [s["psnr"] for s in report["per_image"].values()]
    assert abs(report["metrics"]["psnr"] - sum(psnrs) / len(psnrs)) < 1e-9
    rows = out_csv.read_text().splitlines()
    assert rows[0] == "image,psnr,ssim" and rows[-1].startswith("mean,") and len(rows) == len(psnrs) + 2
    assert all(name in output for name in report["per_image"])

    before = out_json.read_bytes()
    code, output = cli(capsys, "evaluate", pred, target, "--json", out_json, "--lpips", "off", "--y-channel")
    assert_user_error(code, output, "already exists", "--overwrite")
    assert out_json.read_bytes() == before
    code, output = cli(capsys, "evaluate", pred, target, "--json", out_json, "--lpips", "off", "--y-channel", "--overwrite",
                       "--no-progress")
    assert code == 0, output
    y = json.loads(out_json.read_text())
    assert y["settings"]["channels"].startswith("Y") and y["metrics"]["psnr"] != report["metrics"]["psnr"]


def test_images_only_one_folder_has_are_named_and_the_rest_measured(capsys, folders, tmp_path):
    """A restore that left out a broken file: the images both folders have are measured, the
    others named; no name in common is one message."""
    pred, target = folders
    first = sorted(pred.iterdir())[0]
    first.rename(pred / "renamed.png")
    code, output = cli(capsys, "evaluate", pred, target, "--lpips", "off", "--no-progress", "--json", tmp_path / "r.json")
    assert code == 0, output
    assert f"left out (only in {pred}: renamed; only in {target}: {first.stem})" in output
    report = json.loads((tmp_path / "r.json").read_text())
    assert first.stem not in report["per_image"] and "renamed" not in report["per_image"]
    assert len(report["per_image"]) == len(list(target.iterdir())) - 1 == report["settings"]["images"]
    assert report["settings"]["left_out"] == f"only in {pred}: renamed; only in {target}: {first.stem}"
    others = tmp_path / "others"
    others.mkdir()
    shutil.copy(first.parent / "renamed.png", others / "unrelated.png")
    code, output = cli(capsys, "evaluate", others, target, "--lpips", "off")
    assert_user_error(code, output, "no image of", "has a reference of the same name", "only in")
    (pred / "renamed.png").rename(first)


def test_sizes_that_differ_are_one_message(capsys, folders):
    pred, target = folders
    first = sorted(pred.iterdir())[0]
    Image.open(first).resize((50, 30)).save(first)
    code, output = cli(capsys, "evaluate", pred, target, "--lpips", "off")
    with Image.open(target / first.name) as reference:
        assert_user_error(code, output, "differ in size", f"{first.stem}: restored 50x30, reference {reference.width}x{reference.height}")


def test_a_missing_metrics_library_is_one_message(capsys, folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)  # as if torchmetrics were not installed
    code, output = cli(capsys, "evaluate", *folders, "--lpips", "off", "--no-progress")
    assert_user_error(code, output, "'torchmetrics'", "diff-plugin[metrics]", "requirements.txt")


# ---------------------------------------------------------------------- LPIPS


def test_lpips_without_its_weights_says_which_file_and_where(capsys, folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    pred, target = folders
    code, output = cli(capsys, "evaluate", pred, target, "--lpips", "require")
    assert_user_error(code, output, "alexnet-owt-7be5be79.pth", str(tmp_path / "empty-torch" / "hub" / "checkpoints"), "--lpips-weights")
    code, output = cli(capsys, "evaluate", pred, target, "--lpips-weights", tmp_path / "missing.pth")
    assert_user_error(code, output, f"--lpips-weights {tmp_path / 'missing.pth'}: file not found")
    code, output = cli(capsys, "evaluate", pred, target, "--no-progress")  # auto: measured without, and says why
    assert code == 0 and "LPIPS not measured" in output and "alexnet-owt-7be5be79.pth" in output, output


def test_lpips_on_weights_from_disk(pairs, tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision", reason="LPIPS builds torchvision's AlexNet")
    from plugin_core.evaluation import Lpips

    weights = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))  # not in the cache: only the file given
    lpips = Lpips(weights)
    assert torch.hub.get_dir() == str(tmp_path / "empty-torch" / "hub")  # and the hub folder is as it was
    assert torch.equal(lpips.metric.net.net.slice1[0].weight, state["features.0.weight"])  # the backbone is that file
    _, _, clean = pairs[0]
    assert lpips(clean, clean) < 1e-6
    noisy = [lpips(degrade(clean, "noise", seed=0, intensity=t), clean) for t in (0.2, 0.9)]
    assert 0 < noisy[0] and 0 < noisy[1]
    scores = paired_metrics(degrade(clean, "noise", seed=0, intensity=0.9), clean, lpips=lpips)
    assert scores["lpips"] == pytest.approx(noisy[1])


# ---------------------------------------------------------------------- FID / KID


class _TinyInceptionLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 9, stride=8)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)


class _TinyInception(torch.nn.Module):
    """clean-fid's TorchScript layout: a `layers` module mapping 299 px input in [-1, 1] to pooled features."""

    def __init__(self):
        super().__init__()
        self.layers = _TinyInceptionLayers()

    def forward(self, x):
        return self.layers(x)


@pytest.fixture(scope="module")
def feature_networks(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("feature-networks")
    torch.manual_seed(0)
    torch.jit.script(_TinyInception()).save(str(root / "inception-2015-12-05.pt"))
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=6)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip-vit-b-32")
    return root / "inception-2015-12-05.pt", root / "clip-vit-b-32"


@pytest.fixture()
def image_sets(tmp_path, photo_dir):
    """clean/: 12 photo crops; same/: copies of them; hazy/: the same photos with haze."""
    sets = {name: tmp_path / name for name in ("clean", "same", "hazy")}
    for folder in sets.values():
        folder.mkdir()
    photos = sorted(p for p in photo_dir.iterdir() if p.suffix in (".jpg", ".png"))[:12]
    for i, path in enumerate(photos):
        clean = photo(photo_dir, path.name, 96)
        clean.save(sets["clean"] / f"{path.stem}.png")
        clean.save(sets["same"] / f"{path.stem}.png")
        degrade(clean, "haze", seed=i, intensity=0.9).save(sets["hazy"] / f"{path.stem}.png")
    return sets


def test_fid_and_kid_from_stats_and_folders(capsys, feature_networks, image_sets, tmp_path):
    inception, clip = feature_networks
    stats = tmp_path / "clean-stats.safetensors"
    code, output = cli(capsys, "make-stats", image_sets["clean"], "-o", stats, "--inception", inception, "--clip-model", clip,
                       "--no-progress")
    assert code == 0 and stats.is_file(), output
    code, output = cli(capsys, "make-stats", image_sets["clean"], "-o", stats, "--inception", inception)
    assert_user_error(code, output, "already exists")

    def measured(pred, *reference):
        out = tmp_path / f"{pred.name}-{len(reference)}.json"
        code, output = cli(capsys, "evaluate", pred, *reference, "--inception", inception, "--clip-model", clip,
                           "--json", out, "--no-progress", "--overwrite")
        assert code == 0, output
        return json.loads(out.read_text())["metrics"]

    same = measured(image_sets["same"], "--reference-stats", stats)
    hazy = measured(image_sets["hazy"], "--reference-stats", stats)
    for prefix in ("", "clip_"):
        assert abs(same[f"{prefix}fid"]) < 1e-5, same
        assert hazy[f"{prefix}fid"] > 1e3 * max(abs(same[f"{prefix}fid"]), 1e-9), (same, hazy)
        # KID's unbiased estimate of a set against itself is -2 (mean k(x,x) - mean k(x,y)) / m: near 0, below the shift
        assert abs(same[f"{prefix}kid"]) < 0.5 * hazy[f"{prefix}kid"], (same, hazy)
    # the statistics file gives what the folder itself gives (stored features = recomputed ones)
    from_folder = measured(image_sets["hazy"], "--reference", image_sets["clean"])
    for key in ("fid", "clip_fid", "kid", "clip_kid"):
        assert from_folder[key] == pytest.approx(hazy[key], rel=1e-4, abs=1e-6), key


def test_missing_feature_networks_say_which_file(capsys, image_sets, tmp_path):
    clean = image_sets["clean"]
    code, output = cli(capsys, "evaluate", clean, "--reference", clean, "--inception", tmp_path / "nope.pt")
    assert_user_error(code, output, f"--inception {tmp_path / 'nope.pt'}: file not found", "inception-2015-12-05.pt")
    code, output = cli(capsys, "evaluate", clean, "--reference", clean, "--clip-model", tmp_path)
    assert_user_error(code, output, "--clip-model", "openai/clip-vit-base-patch32", "config.json")
    code, output = cli(capsys, "evaluate", clean, "--reference", clean)
    assert_user_error(code, output, "--clip-model", "--inception")
    code, output = cli(capsys, "make-stats", clean, "-o", tmp_path / "s.safetensors")
    assert_user_error(code, output, "--clip-model", "--inception")


def test_real_entry_point_error_and_wrong_stats(capsys, feature_networks, image_sets, tmp_path):
    inception, clip = feature_networks
    stats = tmp_path / "inception-only.safetensors"
    assert cli(capsys, "make-stats", image_sets["clean"], "-o", stats, "--inception", inception, "--no-progress")[0] == 0
    result = run("evaluate", image_sets["hazy"], "--reference-stats", stats, "--clip-model", clip)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output and "clip_vit_b_32" in output, output


# ---------------------------------------------------------------------- restore and measure


@pytest.fixture(scope="module")
def base(tmp_path_factory, fixtures_dir):
    from tests.random_models import write_tiny_clip_vision, write_tiny_sd

    root = tmp_path_factory.mktemp("evaluate-base")
    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    shutil.copytree(fixtures_dir / "tiny" / "derain", root / "derain")
    return root


def test_restore_and_measure_equals_restore_then_evaluate(capsys, base, photo_dir, tmp_path):
    data = tmp_path / "val"
    for sub in ("input", "target"):
        (data / sub).mkdir(parents=True)
    for i, name in enumerate(("scene_00.png", "scene_01.png")):
        clean = photo(photo_dir, name, 40)
        clean.save(data / "target" / f"pair{i}.png")
        degrade(clean, "rain", seed=i).save(data / "input" / f"pair{i}.png")
    restore = ["--sd", base / "sd", "--clip-vision", base / "clip_vision", "--steps", "1", "--resolution", "32", "--no-progress"]
    out = tmp_path / "val.json"
    code, output = cli(capsys, "evaluate", "--plugin", base / "derain", "--data", data, *restore, "--json", out,
                       "--lpips", "off", "--save-restored", tmp_path / "restored")
    assert code == 0, output
    measured = json.loads(out.read_text())
    assert sorted(measured["per_image"]) == ["pair0", "pair1"] and measured["settings"]["restore"]["steps"] == 1

    code, output = cli(capsys, "restore", *sorted((data / "input").iterdir()), "--plugin", base / "derain", *restore,
                       "-o", tmp_path / "by-restore")
    assert code == 0, output
    for name, scores in measured["per_image"].items():
        ours = np.asarray(Image.open(tmp_path / "by-restore" / f"{name}.png"))
        assert np.array_equal(ours, np.asarray(Image.open(tmp_path / "restored" / f"{name}.png")))
        psnr = skimage_metrics.peak_signal_noise_ratio(np.asarray(Image.open(data / "target" / f"{name}.png")), ours, data_range=255)
        assert abs(scores["psnr"] - psnr) < 0.01


def test_restore_and_measure_checks_before_loading(capsys, base, tmp_path):
    code, output = cli(capsys, "evaluate", "--plugin", base / "derain", "--data", tmp_path / "nowhere")
    assert_user_error(code, output, "--sd", "--clip-vision")
    data = tmp_path / "val"
    for sub in ("input", "target"):
        (data / sub).mkdir(parents=True)
    Image.new("RGB", (40, 32)).save(data / "input" / "a.png")
    Image.new("RGB", (32, 40)).save(data / "target" / "a.png")
    code, output = cli(capsys, "evaluate", "--plugin", base / "derain", "--data", data, "--sd", base / "sd",
                       "--clip-vision", base / "clip_vision")
    assert_user_error(code, output, "a: input 40x32, target 32x40")


def test_restore_and_measure_saves_what_restore_writes(capsys, base, photo_dir, tmp_path):
    """--save-restored writes through restore_files: a transparent photo keeps its alpha and a JPEG input
    becomes <name>.png, as `diffplugin restore` writes them; the metrics are the saved files' RGB against
    the targets, the same as measuring the saved folder afterwards."""
    data = tmp_path / "val"
    for sub in ("input", "target"):
        (data / sub).mkdir(parents=True)
    clean = photo(photo_dir, "scene_00.png", 40)
    clean.save(data / "target" / "glass.png")
    rainy = degrade(clean, "rain", seed=0).convert("RGBA")
    rainy.putalpha(Image.linear_gradient("L").resize(rainy.size))
    rainy.save(data / "input" / "glass.png")
    clean = photo(photo_dir, "scene_01.png", 40)
    clean.save(data / "target" / "camera.png")
    degrade(clean, "rain", seed=1).save(data / "input" / "camera.jpg", quality=90)
    restore = ["--sd", base / "sd", "--clip-vision", base / "clip_vision", "--steps", "1", "--resolution", "32", "--no-progress"]
    code, output = cli(capsys, "evaluate", "--plugin", base / "derain", "--data", data, *restore, "--json", tmp_path / "val.json",
                       "--lpips", "off", "--save-restored", tmp_path / "restored")
    assert code == 0, output
    code, output = cli(capsys, "restore", *sorted((data / "input").iterdir()), "--plugin", base / "derain", *restore,
                       "-o", tmp_path / "by-restore")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["camera.png", "glass.png"]
    for name, mode in (("camera.png", "RGB"), ("glass.png", "RGBA")):
        ours, theirs = Image.open(tmp_path / "restored" / name), Image.open(tmp_path / "by-restore" / name)
        assert (ours.format, ours.mode) == (theirs.format, theirs.mode) == ("PNG", mode)
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    alpha = np.asarray(Image.open(tmp_path / "restored" / "glass.png"))[..., 3]
    assert np.array_equal(alpha, np.asarray(Image.open(data / "input" / "glass.png"))[..., 3])

    code, output = cli(capsys, "evaluate", tmp_path / "restored", data / "target", "--json", tmp_path / "saved.json",
                       "--lpips", "off")
    assert code == 0, output
    measured, saved = (json.loads((tmp_path / f"{n}.json").read_text())["per_image"] for n in ("val", "saved"))
    assert measured == saved


def test_restore_and_measure_runs_in_one_process(capsys, base, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: each process would measure only its share
    code, output = cli(capsys, "evaluate", "--plugin", base / "derain", "--data", tmp_path, "--sd", base / "sd",
                       "--clip-vision", base / "clip_vision")
    assert_user_error(code, output, "restore-and-measure runs in one process")


def test_ssim_leaves_the_border_out_as_the_field_does(pairs):
    """Ours averages SSIM over the valid region only (docs/evaluation.md, "SSIM convention"):
    torchmetrics' full map, which also averages a reflect-padded border, differs from it on every
    pair, by the small amounts the docs give (prints them: -s shows the range)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    gaps = []
    for _, degraded, clean in pairs:
        a, b = (torch.from_numpy(np.asarray(i, dtype=np.float64)).permute(2, 0, 1)[None] for i in (degraded, clean))
        full = float(ssim(a, b, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0))
        gaps.append(full - paired_metrics(degraded, clean)["ssim"])
    print(f"torchmetrics full-map SSIM - ours: min {min(gaps):.4f} max {max(gaps):.4f}")
    assert all(1e-5 < abs(gap) < 0.05 for gap in gaps), gaps
