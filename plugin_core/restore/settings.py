"""How a restore runs: one typed object, its defaults (the reference inference's) and the
command-line argument of each setting (plugin_core.options), for `restore`, `evaluate` and the
nodes' defaults alike. Pure Python: the command line builds its parser without torch."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

from ..errors import PluginError
from ..options import Option, add_options, check_settings
from ..vocabulary import COLOR_FIXES, COMPOSE_MODES, JOINT_CONTEXTS, OUTPUT_SIZES, RESIZE_MODES, TILE_PROMPTS

STRENGTH_MAX = 5.0
WEIGHTS_MEANING = ("a plugin's share of a joint pass, where only the ratios count; to scale the plugins as a weight did "
                   "for one plugin, use strength (--strength)")
WEIGHTS_RENAMED = f"'weights' is now 'shares': {WEIGHTS_MEANING}"


@dataclass(frozen=True)
class TileSettings:
    """When and how an image is tiled, in pixels. An image whose working size fits in one tile is
    not tiled (exactly the untiled, reference result); size 0 never tiles.

    Defaults: images up to 1536 px a side (2.4 MP, more than the ~1 MP photos the reference ran
    whole) stay whole; larger ones go in 1536 px tiles overlapping by 256 px, the fewest tiles for
    a phone photo (9 for 12 MP) while a tile's working memory stays bounded. prompt: Fp per tile
    ("tile", from the tile's own pixels, nearer the 512 px crops the plugins were trained on) or
    one Fp from the whole image ("global")."""

    size: int = 1536
    overlap: int = 256
    batch: int = 1  # tiles per UNet call
    prompt: str = "tile"

    OPTIONS = {
        "size": Option("--tile-size", "tile size in px; an image whose working size fits in one tile is not tiled "
                       "(0: never tile)", low=0, multiple=8),
        "overlap": Option("--tile-overlap", "overlap of neighbouring tiles in px", low=0, multiple=8),
        "batch": Option("--tile-batch", "tiles per UNet call (more use a GPU better)", low=1),
        "prompt": Option("--tile-prompt", "Fp from each tile's pixels ('tile', nearer the plugins' training crops) or "
                         "the whole image ('global')", kind=str, choices=TILE_PROMPTS),
    }

    def __post_init__(self):
        check_settings(self, self.OPTIONS)
        if self.size and self.overlap >= self.size:
            raise PluginError(f"tile_overlap ({self.overlap} px) must be smaller than tile_size ({self.size} px): lower "
                              "tile_overlap or raise tile_size")

    def plan(self, width: int, height: int, factor: int = 8):
        """The tiles of a working size (pixels), or None when the image fits in one tile."""
        if not self.size or (width <= self.size and height <= self.size):
            return None
        from ..tiling import TilePlan

        return TilePlan(height // factor, width // factor, self.size // factor, self.overlap // factor)


def tile_defaults(device) -> TileSettings:
    """The default tiles on a device: 1536 px (photos up to 1536 px a side stay whole, the reference
    result) on a GPU; CPU_TILES on a CPU, where the UNet's self-attention, growing with the square of
    a tile's pixels, makes a large tile cost several times the time per pixel of a small one
    (benchmarks/bench_tile_size.py, docs/performance.md)."""
    return CPU_TILES if on_cpu(device) else TileSettings()


def on_cpu(device) -> bool:
    return (getattr(device, "type", None) or str(device).split(":")[0]) == "cpu"


CPU_TILES = TileSettings(size=768, overlap=96)
BY_DEVICE = ("size", "overlap")  # the tile settings tile_defaults chooses


@dataclass(frozen=True)
class RestoreSettings:
    """Every setting of a restore. The defaults are the reference inference's: 20 UniPC steps, seed
    42, the noised input latent as the start while t >= 960, later plugins of a chain 3 steps each,
    short sides below 512 raised to 512, no colour fix.

    Several plugins: `shares` are their parts of a joint pass, where only the ratios count (the
    shares are normalised; a share of 0 leaves a plugin out, in a chain too); `strength` is the
    patch's, the same for one plugin or several: it scales the SCB residuals (models.PluginMix), 1 is
    the plugins as trained and 0 switches them off (the photo as it is; in ComfyUI the plain MODEL).
    `regions` give plugins a part of the photo each (models/regions.py); the rest passes through."""

    steps: int = 20
    later_steps: int = 3
    seed: int = 42
    renoise_until: int = 960
    resolution: int = 512
    resize: str = "min"
    output_size: str = "original"
    color_fix: str = "none"
    compose: str = "chain"
    joint_context: str = "attention"
    strength: float = 1.0
    shares: tuple[tuple[str, float], ...] = ()  # (task, share): a plugin not named has the share 1
    regions: tuple[tuple[str, object], ...] = ()  # (task, mask of the photo's size in [0, 1]): a plugin not named acts everywhere
    tiles: TileSettings = field(default_factory=TileSettings)

    OPTIONS = {
        "steps": Option("--steps", "sampling steps of the first plugin", low=1),
        "later_steps": Option("--later-steps", "steps of every later plugin of a chain (the reference: 3)", low=1),
        "seed": Option("--seed", "noise seed (the reference: 42)", low=0),
        "renoise_until": Option("--renoise-until", "timesteps at or above it restart from the noised input "
                                "(1000: never; the reference's time_threshold)", low=0, high=1000),
        "resolution": Option("--resolution", "the short side is raised to this when smaller", low=8, multiple=8),
        "resize": Option("--resize", "'min': only raise small images (infer.py); 'exact': always scale the short "
                         "side (demo.py)", kind=str, choices=RESIZE_MODES),
        "output_size": Option("--output-size", "write at the input's size, or at the working size the reference "
                              "outputs", kind=str, choices=OUTPUT_SIZES),
        "color_fix": Option("--color-fix", "keep the input's low-frequency colour: 'wavelet' (its low band under the "
                            "result's detail) or 'adain' (its per-channel mean and std); 'none' is the reference",
                            kind=str, choices=COLOR_FIXES),
        "compose": Option("--compose", "several plugins: 'chain' runs them one after another on the previous output (the "
                          "reference: the first `steps`, each later one `later_steps`); 'joint' runs them together in one pass "
                          "of `steps`", kind=str, choices=COMPOSE_MODES),
        "joint_context": Option("--joint-context", "how a joint pass's UNet reads the plugins' prompts: 'attention' (one "
                                "attention per plugin, outputs averaged by their shares) or 'tokens' (one attention over all "
                                "their tokens, tilted by the shares)", kind=str, choices=JOINT_CONTEXTS),
        "strength": Option("--strength", "scales the plugins' spatial-branch (SCB) residuals: 1 as trained, 0 switches the "
                           "plugins off (the photo as it is)", kind=float, low=0, high=STRENGTH_MAX),
    }

    def __post_init__(self):
        check_settings(self, self.OPTIONS)
        object.__setattr__(self, "shares", tuple((str(task), float(share)) for task, share in dict(self.shares).items()))
        bad = [f"{task}={share}" for task, share in self.shares if not (math.isfinite(share) and share >= 0)]
        if bad:
            raise PluginError(f"shares must be finite numbers of at least 0, got {', '.join(bad)}")

    def region(self, task: str):
        """A plugin's region (a mask), or None: it acts everywhere."""
        return dict(self.regions).get(task)

    def share(self, task: str) -> float:
        """A plugin's share of a joint pass, before normalising: as named in `shares`, else 1."""
        return dict(self.shares).get(task, 1.0)

    def replace(self, **changes) -> "RestoreSettings":
        """A copy with some settings changed (tile settings by their own names: tile_size=...; the
        former `weights` is read as `shares`, with a warning)."""
        if "weights" in changes:
            warnings.warn(WEIGHTS_RENAMED, DeprecationWarning, stacklevel=2)
            changes["shares"] = changes.pop("weights")
        tiles = {name: changes.pop(f"tile_{name}") for name in TileSettings.OPTIONS if f"tile_{name}" in changes}
        if tiles:
            changes["tiles"] = dataclasses.replace(changes.get("tiles", self.tiles), **tiles)
        return dataclasses.replace(self, **changes)

    @classmethod
    def add_arguments(cls, parser, exclude: tuple[str, ...] = ()) -> None:
        """The restore settings as command-line arguments (a group of `parser`), but `exclude`."""
        group = parser.add_argument_group("restore settings")
        defaults = cls()
        options = {name: option for name, option in cls.OPTIONS.items() if name not in exclude}
        add_options(group, options, {name: getattr(defaults, name) for name in options})
        tiles = add_options(group, {f"tile_{name}": option for name, option in TileSettings.OPTIONS.items()},
                            {f"tile_{name}": getattr(defaults.tiles, name) for name in TileSettings.OPTIONS})
        for name in BY_DEVICE:  # None: tile_defaults(device) chooses, once the device is known (from_args)
            tiles[f"tile_{name}"].default = None
            tiles[f"tile_{name}"].help += (f" (default: {getattr(defaults.tiles, name)} on a GPU, "
                                           f"{getattr(CPU_TILES, name)} on a CPU)")
        if "shares" not in exclude:
            group.add_argument("--shares", type=parse_shares, default=(), metavar="TASK=S,...",
                               help="each plugin's share of a joint pass, e.g. derain=2,dehaze=1: only the ratios count (a "
                                    "plugin not named has 1; 0 leaves it out, in a chain too)")

    @classmethod
    def from_args(cls, args, device=None) -> "RestoreSettings":
        """The settings a parsed command line asks for (the defaults for those it does not have; the
        tile size and overlap not given: the `device`'s, tile_defaults)."""
        given = {name: getattr(args, f"tile_{name}") for name in TileSettings.OPTIONS}
        tiles = dataclasses.replace(tile_defaults(device or "cuda"), **{k: v for k, v in given.items() if v is not None})
        return cls(**{name: getattr(args, name) for name in cls.OPTIONS if hasattr(args, name)}, tiles=tiles,
                   shares=getattr(args, "shares", ()))


def parse_shares(text: str):
    """'derain=1, dehaze=0.5' -> (("derain", 1.0), ("dehaze", 0.5)), or an `Invalid` message (the
    command line's) naming what is wrong."""
    from ..options import Invalid

    pairs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        task, equals, number = item.partition("=")
        try:
            weight = float(number)
        except ValueError:
            weight = None
        if not equals or not task.strip() or weight is None or not math.isfinite(weight) or weight < 0:
            return Invalid(f"--shares: {item!r} is not TASK=SHARE with a finite share of at least 0 (e.g. dehaze=0.5)")
        pairs.append((task.strip(), weight))
    return tuple(pairs)

