"""How a restore runs: one typed object, its defaults (the reference inference's) and the
command-line argument of each setting (plugin_core.options), for `restore`, `evaluate` and the
nodes' defaults alike. Pure Python: the command line builds its parser without torch."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import PluginError
from ..options import Option, add_options, check_settings

RESIZE_MODES = ("min", "exact")
OUTPUT_SIZES = ("original", "processed")
COLOR_FIXES = ("none", "wavelet", "adain")  # colorfix.py implements them
TILE_PROMPTS = ("tile", "global")
COMPOSE_MODES = ("chain", "joint")  # several plugins: one after another (the reference), or in one pass
JOINT_CONTEXTS = ("attention", "tokens")  # models/compose.py: how the UNet reads the plugins' prompts in one pass


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


@dataclass(frozen=True)
class RestoreSettings:
    """Every setting of a restore. The defaults are the reference inference's: 20 UniPC steps, seed
    42, the noised input latent as the start while t >= 960, later plugins of a chain 3 steps each,
    short sides below 512 raised to 512, no colour fix."""

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
    weights: tuple[tuple[str, float], ...] = ()  # (task, weight): a plugin not named weighs 1
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
                                "attention per plugin, outputs averaged with the weights) or 'tokens' (one attention over all "
                                "their tokens, tilted by the weights)", kind=str, choices=JOINT_CONTEXTS),
    }

    def __post_init__(self):
        check_settings(self, self.OPTIONS)
        object.__setattr__(self, "weights", tuple((str(task), float(weight)) for task, weight in dict(self.weights).items()))
        bad = [f"{task}={weight}" for task, weight in self.weights if not (math.isfinite(weight) and weight >= 0)]
        if bad:
            raise PluginError(f"weights must be finite numbers of at least 0, got {', '.join(bad)}")

    def weight(self, task: str) -> float:
        """A plugin's weight: as named in `weights`, else 1."""
        return dict(self.weights).get(task, 1.0)

    def replace(self, **changes) -> "RestoreSettings":
        """A copy with some settings changed (tile settings by their own names: tile_size=...)."""
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
        add_options(group, {f"tile_{name}": option for name, option in TileSettings.OPTIONS.items()},
                    {f"tile_{name}": getattr(defaults.tiles, name) for name in TileSettings.OPTIONS})
        if "weights" not in exclude:
            group.add_argument("--weights", type=parse_weights, default=(), metavar="TASK=W,...",
                               help="each plugin's weight, e.g. derain=1,dehaze=0.5 (a plugin not named weighs 1; 0 leaves it "
                                    "out): its strength, and in a joint pass its share of the prompts")

    @classmethod
    def from_args(cls, args) -> "RestoreSettings":
        """The settings a parsed command line asks for (the defaults for those it does not have)."""
        tiles = TileSettings(**{name: getattr(args, f"tile_{name}") for name in TileSettings.OPTIONS})
        return cls(**{name: getattr(args, name) for name in cls.OPTIONS if hasattr(args, name)}, tiles=tiles,
                   weights=getattr(args, "weights", ()))


def parse_weights(text: str):
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
            return Invalid(f"--weights: {item!r} is not TASK=WEIGHT with a finite weight of at least 0 (e.g. dehaze=0.5)")
        pairs.append((task.strip(), weight))
    return tuple(pairs)

