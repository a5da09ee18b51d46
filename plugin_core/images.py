"""Image files and conversions, exactly as the reference does them.

* Files: `IMAGE_SUFFIXES` and `image_files` say what counts as an image everywhere (restore,
  training data, synthetic pairs, selector photos); `load_image` is the one reader.
* CLIP input at inference: short side to 224 (PIL bicubic), centre crop 224, /255, OpenAI
  mean/std (a default `CLIPImageProcessor`, applied to the *original* image); in training
  (`training_clip_pixels`): the reference's bilinear squash to 224 x 224 instead.
* Working size: if a side is below `resolution` (512), the short side is raised to it
  (`infer.py`); then each side is rounded down to a multiple of 8 with a LANCZOS resize
  (diffusers' `VaeImageProcessor`). Pixels to [-1, 1].
* Output: `(x / 2 + 0.5).clamp(0, 1) * 255`, rounded to uint8.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import einops
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputImageError
from .vocabulary import RESIZE_MODES

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path | str) -> list[Path]:
    """The image files directly in a folder, sorted by name; hidden ones (`.name`, e.g. macOS's
    `._photo.jpg` resource forks) left out."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))


@contextlib.contextmanager
def _opened(path: Path | str, error: type[InputImageError] = InputImageError):
    """The image file opened, any failure to read it turned into `error` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            yield image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as problem:
        raise error(f"{path}: cannot read this image ({problem})") from None


def check_image_file(path: Path | str, decode: bool = False, error: type[InputImageError] = InputImageError) -> None:
    """Refuse a file that is not a readable image with an `error` naming it: its structure only
    (cheap on a large folder), or with `decode` every pixel (a truncated JPEG is found too)."""
    with _opened(path, error) as image:
        image.load() if decode else image.verify()


def depth_note(path: Path | str) -> str | None:
    """A note when an image file holds more than 8 bits per channel (a 16-bit PNG or TIFF, a float
    image): the plugins read, and a restore writes, 8 bits per channel. From its header alone."""
    with _opened(path) as image:
        raw = " ".join(str(getattr(tile, "args", tile[3] if len(tile) > 3 else "")) for tile in image.tile or ())
        deep = image.mode.startswith("I") or image.mode == "F" or ";16" in raw or ";32" in raw
        bits = "16-bit" if ";16" in image.mode or ";16" in raw else "high bit-depth"
    return f"a {bits} image: read and written with 8 bits per channel" if deep else None


REGION_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def upright_size(path: Path | str) -> tuple[int, int]:
    """(width, height) of an image file as it is shown (its EXIF orientation applied), from its header."""
    with _opened(path) as image:
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        return (image.height, image.width) if turned else image.size


def load_region(path: Path | str) -> torch.Tensor:
    """A region drawn as an image (white: the region, black: outside, grey: a soft edge; its grey
    level is read, any alpha ignored), upright: [1, 1, H, W] in [0, 1]. An empty one is refused."""
    with _opened(path) as image:
        if image.mode not in REGION_MODES:
            raise InputImageError(f"{path}: a region must be an 8-bit image (grey or colour), not mode {image.mode}: "
                                  "save it as an 8-bit grey PNG")
        image.load()
        grey = ImageOps.exif_transpose(image).convert("RGB").convert("L")
    region = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None, None]
    if not region.any():
        raise InputImageError(f"{path}: the region is empty (all black): white marks where the plugin acts")
    return region


def load_image(path: Path | str | Image.Image) -> Image.Image:
    """An RGB image from a file (or a PIL image, converted the same way), upright: a camera's
    EXIF orientation is applied, as every photo viewer (and ComfyUI's LoadImage) does."""
    if isinstance(path, Image.Image):
        return to_rgb(path)
    return load_photo(path)[0]


def load_photo(path: Path | str) -> tuple[Image.Image, Image.Image | None]:
    """(the RGB image the plugins read, its transparency as an 'L' image or None), upright: what a
    restore gives back keeps the photo's alpha channel."""
    with _opened(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        alpha = None
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            alpha = (image.convert("RGBA") if image.mode == "P" else image).getchannel("A")
        return to_rgb(image), alpha


ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")  # PIL formats that keep an alpha channel


def with_alpha(image: Image.Image, alpha: Image.Image | None, image_format: str) -> tuple[Image.Image, str | None]:
    """The restored image with the photo's alpha (brought to its size) where the format keeps one;
    (the image, a note when the alpha had to be dropped)."""
    if alpha is None:
        return image, None
    if image_format not in ALPHA_FORMATS:
        return image, f"the photo's transparency is dropped: {image_format} has none (write .png or .webp to keep it)"
    out = image.copy()
    out.putalpha(at_size(alpha, image.size))
    return out, None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as the reference reads it: alpha dropped (not composited), grey expanded."""
    if image.width < 1 or image.height < 1:
        raise InputImageError(f"empty image ({image.width}x{image.height})")
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits before the RGB conversion clips it.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def clip_pixels(images: list[Image.Image]) -> torch.Tensor:
    """[B, 3, 224, 224] CLIP vision input, as the reference's default CLIPImageProcessor."""
    batch = []
    for image in images:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(CLIP_SIZE * long / short)
        size = (CLIP_SIZE, new_long) if width <= height else (new_long, CLIP_SIZE)
        resized = image.resize(size, resample=Image.BICUBIC)
        top = (resized.height - CLIP_SIZE) // 2
        left = (resized.width - CLIP_SIZE) // 2
        array = np.asarray(resized, dtype=np.float32)[top : top + CLIP_SIZE, left : left + CLIP_SIZE]
        array = (array * (1 / 255) - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
        batch.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
    return torch.stack(batch)


def training_clip_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """The reference training's CLIP input: [-1,1] -> [0,1], bilinear squash to 224, OpenAI mean/std."""
    x = (pixels + 1.0) / 2.0
    x = F.interpolate(x, size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def scaled_size(width: int, height: int, resolution: int = 512, mode: str = "min") -> tuple[int, int]:
    """The short-side rule before rounding.

    mode "min" (infer.py): raise the short side to `resolution` only when a side is smaller;
    mode "exact" (demo.py): always scale the short side to `resolution`.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "exact" or width < resolution or height < resolution:
        if width < height:
            return resolution, int((resolution / width) * height)
        return int((resolution / height) * width), resolution
    return width, height


def working_size(width: int, height: int, resolution: int = 512, mode: str = "min", multiple: int = 8) -> tuple[int, int]:
    """The size the reference runs an image at: the short-side rule, then each side
    rounded down to a multiple of the VAE factor."""
    width, height = scaled_size(width, height, resolution, mode)
    width, height = width - width % multiple, height - height % multiple
    if width < multiple or height < multiple:
        raise InputImageError(f"image too small to process at resolution {resolution}")
    return width, height


def resize_for_vae(image: Image.Image, resolution: int = 512, mode: str = "min", multiple: int = 8) -> Image.Image:
    """The reference's two resizes: bicubic for the short-side rule, then LANCZOS down to
    multiples of the VAE factor (each a no-op when the size already fits)."""
    scaled = scaled_size(image.width, image.height, resolution, mode)
    if scaled != image.size:
        image = image.resize(scaled, resample=Image.BICUBIC)
    final = working_size(image.width, image.height, resolution, mode="min", multiple=multiple)
    if final != image.size:
        image = image.resize(final, resample=Image.LANCZOS)
    return image


def vae_pixels(images: list[Image.Image]) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] from same-size RGB images (one float copy, scaled in place: a
    12 MP photo is 145 MB of float32)."""
    array = np.stack([np.asarray(image) for image in images]).astype(np.float32)
    array /= 255.0  # the reference's order of operations: / 255, then * 2 - 1
    array *= 2.0
    array -= 1.0
    return einops.rearrange(torch.from_numpy(array), "b h w c -> b c h w")


def to_uint8(decoded: torch.Tensor, rows: int = 256) -> np.ndarray:
    """VAE output [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3], rounded as the reference; a band
    of `rows` at a time, so a large image costs no float copies of itself."""
    out = np.empty((decoded.shape[0], decoded.shape[2], decoded.shape[3], 3), dtype=np.uint8)
    for top in range(0, decoded.shape[2], rows):
        band = (decoded[:, :, top : top + rows].float() / 2 + 0.5).clamp(0, 1)
        out[:, top : top + rows] = (einops.rearrange(band, "b c h w -> b h w c").cpu().numpy() * 255).round().astype(np.uint8)
    return out


def to_pil(decoded: torch.Tensor) -> list[Image.Image]:
    """VAE output [B, 3, H, W] in [-1, 1] -> uint8 RGB images (`to_uint8`)."""
    return [Image.fromarray(array) for array in to_uint8(decoded)]


def at_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image at `size` (LANCZOS), e.g. a result back at its input's size."""
    return image if image.size == tuple(size) else image.resize(tuple(size), resample=Image.LANCZOS)
