"""Synthetic training pairs: determinism, the physics of each degradation, odd sizes, files.

Effects are measured against the clean image with statistics written out here (luminance,
gradient and Laplacian energy, 8x8 blockiness, dark channel, near-white fraction), on small
photos (tests/photos.py: drawn scenes) and on a synthetic image with edges and texture.
"""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from plugin_core.seeding import mix_seed
from plugin_core.synthetic import DEGRADATIONS, SyntheticPairs, degrade, write_pairs
from plugin_core.training import PairDataset

KINDS = sorted(DEGRADATIONS)
SIZE = (96, 64)  # width, height: a multiple of 8, so JPEG blocks sit on a known grid
PHOTO_NAMES = ("scene_02.png", "scene_07.png", "scene_04.png")  # two portraits, a night street (tests/photos.py)


# ----------------------------------------------------------------------------- images


@pytest.fixture(scope="session")
def photos(photo_dir):
    paths = [photo_dir / name for name in PHOTO_NAMES]
    return [Image.open(path).convert("RGB").resize(SIZE, Image.LANCZOS) for path in paths]


def texture_image() -> Image.Image:
    """Clean synthetic scene: smooth gradient, rings, a hard-edged square and a diagonal."""
    ys, xs = np.mgrid[0 : SIZE[1], 0 : SIZE[0]].astype(np.float64)
    base = 0.25 + 0.3 * xs / SIZE[0] + 0.15 * np.sin(np.hypot(xs - 40, ys - 30) / 2.5)
    base[10:40, 55:85] = 0.8
    base[(xs - ys > 20) & (xs - ys < 26)] = 0.1
    rgb = np.stack([base, base * 0.9 + 0.05, base * 0.7 + 0.1], axis=-1)
    return Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def scenes(photos):
    return photos + [texture_image()]


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def as_array(image) -> np.ndarray:
    return np.asarray(image)


# ----------------------------------------------------------------------------- statistics


def luma(image) -> torch.Tensor:
    x = as_tensor(image) if isinstance(image, Image.Image) else image
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def grad_energy(image, axis=None) -> float:
    y = luma(image).double()
    dx = (y[:, 1:] - y[:, :-1]).square().mean()  # horizontal gradient: across vertical lines
    dy = (y[1:, :] - y[:-1, :]).square().mean()
    return float({None: dx + dy, "x": dx, "y": dy}[axis])


def laplacian_energy(image) -> float:
    y = luma(image).double()[None, None]
    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64)[None, None]
    return float(F.conv2d(y, kernel).square().mean())


def blockiness(image) -> float:
    """Mean |step| across 8-pixel block boundaries over the mean |step| inside blocks."""
    y = luma(image).double()
    steps_x, steps_y = (y[:, 1:] - y[:, :-1]).abs(), (y[1:, :] - y[:-1, :]).abs()
    at_x = (torch.arange(steps_x.shape[1]) % 8) == 7
    at_y = (torch.arange(steps_y.shape[0]) % 8) == 7
    boundary = torch.cat([steps_x[:, at_x].flatten(), steps_y[at_y, :].flatten()]).mean()
    inside = torch.cat([steps_x[:, ~at_x].flatten(), steps_y[~at_y, :].flatten()]).mean()
    return float(boundary / inside)


def dark_channel(image) -> float:
    x = as_tensor(image)
    darkest = x.min(dim=0).values[None, None]
    return float(-F.max_pool2d(-darkest, 5, stride=1, padding=2).mean())


def near_white(image) -> float:
    return float((as_tensor(image).min(dim=0).values > 0.85).float().mean())


def mean_luma(image) -> float:
    return float(luma(image).mean())


def luma_std(image) -> float:
    return float(luma(image).std())


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bits_other_seed_other_image(photos, kind):
    image = photos[0]
    first = as_array(degrade(image, kind, seed=7))
    again = as_array(degrade(image, kind, seed=7))
    other = as_array(degrade(image, kind, seed=8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, as_array(image))


def test_global_rng_neither_used_nor_disturbed(photos):
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = as_array(degrade(photos[0], KINDS, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    assert np.array_equal(as_array(degrade(photos[0], KINDS, seed=3)), first)


@pytest.mark.parametrize("kind", KINDS)
def test_tensor_and_pil_inputs_agree(photos, kind):
    image = photos[1]
    from_pil = as_array(degrade(image, kind, seed=11, intensity=0.6))
    out = degrade(as_tensor(image), kind, seed=11, intensity=0.6)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, SIZE[1], SIZE[0])
    from_tensor = (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(from_pil, from_tensor)


def test_tensor_dtype_kept():
    image = torch.rand(3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = degrade(image, "noise", seed=0)
    assert out.dtype == torch.float64 and out.shape == image.shape


def test_pair_seed_is_mixed_not_summed():
    seeds = {mix_seed(seed, index) for seed in range(20) for index in range(20)}
    assert len(seeds) == 400  # seed + index would give 39 distinct values
    assert mix_seed(0, 1) != mix_seed(1, 0)
    assert all(0 <= value < 2**63 for value in seeds)


def test_neighbouring_seeds_do_not_share_items(photos):
    a = SyntheticPairs(photos, "noise", seed=0, intensity=0.5)
    b = SyntheticPairs(photos, "noise", seed=1, intensity=0.5)
    # With seed + index, b[0] would be a[1]'s stream applied to photo 0.
    c = SyntheticPairs([photos[0]] * 2, "noise", seed=0, intensity=0.5)
    assert not np.array_equal(as_array(b[0][0]), as_array(c[1][0]))
    assert not np.array_equal(as_array(a[0][0]), as_array(b[0][0]))


def test_dataset_items_fixed_by_seed_and_index(tmp_path, photos):
    paths = []
    for number, photo in enumerate(photos):
        paths.append(tmp_path / f"clean{number}.png")
        photo.save(paths[-1])
    kinds = ["haze", "noise"]
    first = SyntheticPairs(paths, kinds, seed=5, pairs_per_image=2)
    second = SyntheticPairs([Image.open(p) for p in paths], kinds, seed=5, pairs_per_image=2)
    assert len(first) == len(second) == 2 * len(photos)
    forward = [tuple(map(as_array, first[i])) for i in range(len(first))]
    backward = {i: tuple(map(as_array, second[i])) for i in reversed(range(len(second)))}
    for index, (degraded, target) in enumerate(forward):
        assert np.array_equal(degraded, backward[index][0])
        assert np.array_equal(target, backward[index][1])
        assert np.array_equal(target, as_array(photos[index // 2]))
        assert second[index][0].mode == "RGB" and second[index][0].size == SIZE
    # Two pairs of one clean image are degraded differently; negative indices work.
    assert not np.array_equal(forward[0][0], forward[1][0])
    assert np.array_equal(as_array(first[-1][0]), forward[-1][0])
    with pytest.raises(IndexError):
        first[len(first)]


def test_intensity_range_draws_within_range(photos):
    image = photos[0]
    fixed = as_array(degrade(image, "jpeg", seed=0, intensity=0.4))
    assert np.array_equal(as_array(degrade(image, "jpeg", seed=0, intensity=(0.4, 0.4))), fixed)
    # jpeg uses no randomness: every drawn intensity in the range gives an error between the ends.
    def error(out):
        return float(np.abs(as_array(out).astype(np.float64) - as_array(image)).mean())

    low, high = error(degrade(image, "jpeg", seed=0, intensity=0.2)), error(degrade(image, "jpeg", seed=0, intensity=0.9))
    errors = {round(error(degrade(image, "jpeg", seed=s, intensity=(0.2, 0.9))), 6) for s in range(12)}
    assert len(errors) > 3
    assert all(low * 0.95 <= e <= high * 1.05 for e in errors)
    for bad in (1.5, -0.1, (0.8, 0.2)):
        with pytest.raises(ValueError, match="intensity"):
            degrade(image, "jpeg", seed=0, intensity=bad)


def test_several_kinds_apply_in_order(photos):
    image = photos[2]
    haze_then_noise = degrade(image, ["haze", "noise"], seed=4, intensity=0.7)
    noise_then_haze = degrade(image, ["noise", "haze"], seed=4, intensity=0.7)
    assert not np.array_equal(as_array(haze_then_noise), as_array(noise_then_haze))
    # Haze applied last multiplies the noise by the transmission t < 1; noise applied last
    # keeps its full strength.
    assert laplacian_energy(haze_then_noise) > 1.5 * laplacian_energy(noise_then_haze)


def test_unknown_kind_names_the_valid_ones(photos, tmp_path):
    for call in (
        lambda: degrade(photos[0], "fog", seed=0),
        lambda: degrade(photos[0], ["rain", "fog"], seed=0),
        lambda: SyntheticPairs(photos, "fog"),
        lambda: write_pairs([], tmp_path, "fog"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert "fog" in str(info.value)
        assert all(kind in str(info.value) for kind in KINDS)


# ----------------------------------------------------------------------------- physics


def test_lowlight_darkens_more_with_intensity(scenes):
    for image in scenes:
        levels = [mean_luma(degrade(image, "lowlight", seed=2, intensity=t)) for t in (0.1, 0.5, 0.9)]
        assert levels[0] < 0.6 * mean_luma(image)
        assert levels[0] > levels[1] > levels[2] > 0


def test_lowlight_has_signal_dependent_noise():
    flat = torch.full((3, 64, 96), 0.8)
    out = degrade(flat, "lowlight", seed=1, intensity=0.5)
    assert out.std() > 0.002  # shot + read noise, not a clean scaled image


@pytest.mark.parametrize("kind", ["motion_blur", "defocus_blur"])
def test_blur_lowers_gradient_energy_more_with_intensity(scenes, kind):
    for image in scenes:
        energies = [grad_energy(degrade(image, kind, seed=3, intensity=t)) for t in (0.0, 0.4, 0.9)]
        assert energies[0] < 0.9 * grad_energy(image)
        assert energies[0] > energies[1] > energies[2]


@pytest.mark.parametrize("kind", ["motion_blur", "defocus_blur"])
def test_blur_keeps_flat_images_flat(kind):
    # Normalised kernels and reflect padding: no darkening at the borders.
    flat = torch.full((3, 21, 17), 0.37)
    out = degrade(flat, kind, seed=0, intensity=1.0)
    assert torch.allclose(out, flat, atol=1e-5)


def test_motion_blur_is_directional():
    # A single bright dot becomes a line: its spread is elongated, not round.
    dot = torch.zeros(3, 41, 41)
    dot[:, 20, 20] = 1.0
    out = luma(degrade(dot, "motion_blur", seed=9, intensity=0.5))
    ys, xs = torch.nonzero(out > 1e-3, as_tuple=True)
    cov = torch.cov(torch.stack([xs.double(), ys.double()]), aweights=out[ys, xs].double())
    eig = torch.linalg.eigvalsh(cov)
    assert eig[1] > 10 * eig[0]
    assert torch.isclose(out.sum(), torch.tensor(1.0), atol=1e-4)


def test_haze_lowers_contrast_raises_dark_channel(scenes):
    for image in scenes:
        hazy = degrade(image, "haze", seed=6, intensity=0.6)
        assert luma_std(hazy) < 0.8 * luma_std(image)
        assert dark_channel(hazy) > dark_channel(image) + 0.1
        assert mean_luma(hazy) > mean_luma(image)
        heavier = degrade(image, "haze", seed=6, intensity=0.95)
        assert luma_std(heavier) < luma_std(hazy)
        assert dark_channel(heavier) > dark_channel(hazy)


def test_haze_is_thicker_toward_the_top():
    # Depth grows toward the top of the frame: less of a texture survives there.
    image = as_tensor(texture_image())
    hazy = degrade(image, "haze", seed=12, intensity=0.7)
    top, bottom = slice(0, 16), slice(48, 64)
    ratio_top = luma(hazy)[top].std() / luma(image)[top].std()
    ratio_bottom = luma(hazy)[bottom].std() / luma(image)[bottom].std()
    assert ratio_top < ratio_bottom


def test_noise_raises_high_frequency_energy_with_intensity(scenes):
    for image in scenes:
        energies = [laplacian_energy(degrade(image, "noise", seed=4, intensity=t)) for t in (0.1, 0.5, 0.9)]
        assert energies[0] > laplacian_energy(image)
        assert energies[0] < energies[1] < energies[2]


def test_noise_is_zero_mean_gaussian_with_a_sigma_linear_in_intensity():
    """Properties of the noise, not its constants: zero mean, Gaussian (kurtosis 3), sigma
    growing linearly with the intensity from barely visible to strong."""
    grey = torch.full((3, 128, 128), 0.5)
    sigmas = {}
    for intensity in (0.0, 0.5, 1.0):
        residual = (degrade(grey, "noise", seed=0, intensity=intensity) - grey).flatten().double()
        sigma = float(residual.std())
        sigmas[intensity] = sigma
        assert abs(float(residual.mean())) < 0.1 * sigma
        assert abs(float(((residual - residual.mean()) ** 4).mean() / sigma**4) - 3.0) < 0.3
    assert sigmas[0.0] < sigmas[0.5] < sigmas[1.0]
    assert sigmas[0.5] == pytest.approx((sigmas[0.0] + sigmas[1.0]) / 2, rel=0.06)
    assert sigmas[0.0] < 4 / 255 and sigmas[1.0] > 30 / 255  # invisible at 0 on 8 bits; strong at 1


def test_jpeg_adds_blocking(scenes):
    for image in scenes:
        compressed = degrade(image, "jpeg", seed=0, intensity=0.9)
        assert not np.array_equal(as_array(compressed), as_array(image))
        assert blockiness(compressed) > blockiness(image) + 0.15
        mild = degrade(image, "jpeg", seed=0, intensity=0.1)
        error = np.abs(as_array(compressed).astype(float) - as_array(image)).mean()
        assert np.abs(as_array(mild).astype(float) - as_array(image)).mean() < error


def test_rain_adds_near_vertical_bright_streaks(scenes):
    for image in scenes:
        rainy = degrade(image, "rain", seed=5, intensity=0.6)
        gain_x = grad_energy(rainy, "x") - grad_energy(image, "x")
        gain_y = grad_energy(rainy, "y") - grad_energy(image, "y")
        assert gain_x > 0 and gain_x > 2 * gain_y
        assert mean_luma(rainy) > mean_luma(image) + 0.01


def test_snow_adds_white_flakes(scenes):
    for image in scenes:
        snowy = degrade(image, "snow", seed=8, intensity=0.6)
        assert near_white(snowy) > near_white(image) + 0.01
        heavier = degrade(image, "snow", seed=8, intensity=1.0)
        assert near_white(heavier) > near_white(snowy)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("kind", KINDS)
def test_odd_and_tiny_sizes(kind):
    generator = torch.Generator().manual_seed(0)
    for height, width in ((1, 1), (7, 13), (13, 7), (8, 8), (2, 97), (33, 1)):
        image = torch.rand(3, height, width, generator=generator)
        for intensity in (0.0, 1.0):
            out = degrade(image, kind, seed=1, intensity=intensity)
            assert out.shape == image.shape
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    pil = degrade(Image.new("RGB", (1, 1), (200, 100, 50)), kind, seed=0)
    assert pil.size == (1, 1) and pil.mode == "RGB"


def test_bad_image_arguments():
    for bad in (torch.rand(4, 8, 8), torch.rand(8, 8), torch.rand(3, 0, 5)):
        with pytest.raises(ValueError, match="tensor"):
            degrade(bad, "noise", seed=0)
    with pytest.raises(ValueError):
        degrade(np.zeros((8, 8, 3)), "noise", seed=0)


# ----------------------------------------------------------------------------- files


def test_write_pairs_folder(tmp_path, photos):
    clean = tmp_path / "clean"
    clean.mkdir()
    names = []
    for number, photo in enumerate(photos):
        suffix = (".png", ".jpg", ".webp")[number % 3]
        names.append(f"shot{number}")
        photo.save(clean / f"shot{number}{suffix}")
    (clean / "notes.txt").write_text("not an image")
    out = tmp_path / "pairs"
    csv_path = write_pairs(clean, out, ["rain", "jpeg"], seed=3, pairs_per_image=2)
    assert csv_path == out / "pairs.csv"

    inputs = sorted(p.name for p in (out / "input").iterdir())
    targets = sorted(p.name for p in (out / "target").iterdir())
    expected = sorted(f"{name}_{k}.png" for name in names for k in range(2))
    assert inputs == targets == expected

    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", "conditioning_image"]
    assert len(rows) == 1 + len(expected)
    for target, source in rows[1:]:
        assert not target.startswith("/") and not source.startswith("/")
        assert target.startswith("target/") and source.startswith("input/")
        assert target.split("/", 1)[1] == source.split("/", 1)[1]
        assert (out / target).is_file() and (out / source).is_file()

    # The files hold exactly what the on-the-fly dataset gives, in sorted file order.
    paths = sorted(p for p in clean.iterdir() if p.suffix != ".txt")
    live = SyntheticPairs(paths, ["rain", "jpeg"], seed=3, pairs_per_image=2)
    for index, (target, source) in enumerate(rows[1:]):
        degraded, clean_image = live[index]
        assert np.array_equal(as_array(Image.open(out / source)), as_array(degraded))
        assert np.array_equal(as_array(Image.open(out / target)), as_array(clean_image))

    # The training loaders read both layouts back.
    assert len(PairDataset.from_csv(csv_path)) == len(expected)
    assert len(PairDataset.from_folder(out)) == len(expected)


def test_write_pairs_list_with_clashing_stems(tmp_path, photos):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    photos[0].save(first / "img.png")
    photos[1].save(second / "img.png")
    csv_path = write_pairs([first / "img.png", second / "img.png"], tmp_path / "out", "noise")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[0]["image"] != rows[1]["image"]
    assert len(list((tmp_path / "out" / "input").iterdir())) == 2


def test_write_pairs_empty_or_missing_folder(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="nothing_here"):
        write_pairs(empty, tmp_path / "out", "rain")
    with pytest.raises(ValueError, match="not_a_folder"):
        write_pairs(tmp_path / "not_a_folder", tmp_path / "out", "rain")
    with pytest.raises(ValueError):
        write_pairs([], tmp_path / "out", "rain")
    with pytest.raises(ValueError, match="missing.png"):
        SyntheticPairs([tmp_path / "missing.png"], "rain")


def test_write_pairs_again_keeps_its_own_pairs_and_refuses_others(tmp_path, photos):
    """A second run of the same photos and settings finds its own pairs there and writes nothing;
    other settings (another seed, another degradation), or one file changed, are refused before
    anything is written, naming the files (OutputsExist.paths), unless overwrite."""
    from plugin_core import OutputsExist

    clean = list(photos[:2])
    out = tmp_path / "pairs"
    write_pairs(clean, out, "rain", seed=1, pairs_per_image=2)
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert write_pairs(clean, out, "rain", seed=1, pairs_per_image=2) == out / "pairs.csv"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == stamps
    for changes in ({"kinds": "rain", "seed": 2}, {"kinds": "haze", "seed": 1}):
        with pytest.raises(OutputsExist) as refused:
            write_pairs(clean, out, changes["kinds"], seed=changes["seed"], pairs_per_image=2)
        assert out / "pairs.csv" in refused.value.paths and "--overwrite" in str(refused.value)
    first = out / "input" / "image00000_0.png"
    Image.new("RGB", Image.open(first).size).save(first)  # one image no longer the pair it was
    with pytest.raises(OutputsExist):
        write_pairs(clean, out, "rain", seed=1, pairs_per_image=2)
    write_pairs(clean, out, "rain", seed=1, pairs_per_image=2, overwrite=True)
    assert first.read_bytes() == stamps[first][1]
