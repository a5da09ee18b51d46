"""The restore recipe, written once for every front end: the command line and evaluation run it
on diffusers models (restorer.Restorer, over backend.DiffusersRestoreBackend), the ComfyUI nodes on
a MODEL, VAE and CLIP_VISION (their ComfyRestoreBackend). A backend (backend.RestoreBackend) gives
the recipe the base model's calls; the recipe decides everything else, in this order:

1. every plugin must fit the base (one check, one message), before any work;
2. each image gets its working size (the short-side rule, sides to multiples of the VAE's factor);
   images of one size and one chain of plugins share a batch, and a large one gets a tile plan;
3. the chain: per plugin, Fp from the CLIP vision tokens of the original images (or of each tile's
   pixels: the tile-prompt rule), the current images encoded, sampled (the first plugin `steps`,
   every later one `later_steps`, every one from the same seed), decoded to 8 bits, and handed to
   the next plugin;
4. the colour fix against the working-size input;
5. the output size: restored images back at their input's size (or kept at the working size);
   an image no plugin ran on is the input itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from PIL import Image

from .. import images as imaging
from ..colorfix import fix_colors
from ..errors import InputImageError, PluginError
from ..models.fit import check_fits
from .meter import Meter, ProgressFn
from .settings import CPU_TILES, RestoreSettings, TileSettings, on_cpu

if TYPE_CHECKING:
    from .backend import RestoreBackend


@dataclass
class PluginGroup:
    """Images (indices into a batch of inputs) and the plugins to run on them, in order: e.g. what
    the Plugin-Selector chose for them. No plugins: the images stay as they are."""

    indices: list[int]
    plugins: list = field(default_factory=list)


@dataclass
class RestoreResult:
    images: list[Image.Image]  # at the output size the settings ask for
    latents: list  # the final latent of each image (of its last plugin), as the backend gives it


def restore_groups(backend: RestoreBackend, images: Sequence[Image.Image], groups: Sequence[PluginGroup],
                   settings: RestoreSettings, *, progress: ProgressFn | None = None,
                   report: Callable[[str], None] | None = None, stage: Callable[[str], None] | None = None) -> RestoreResult:
    """Each group's images with its own plugins; results in the order of `images`.

    progress(done, total) counts UNet calls (tiles x steps) of all of them, from 0 before the
    first; report(text): the tile plan and, after the first calls, the time and memory it takes;
    stage(label): what runs from now on (the plugin, 'derain 1/2' in a chain, or 'decoding')."""
    if not images:
        raise InputImageError("no images given")
    for group in groups:  # 1.
        for plugin in group.plugins:
            check_fits(plugin, backend.facts)
    originals = [imaging.to_rgb(image) for image in images]
    batches = _batches(backend, originals, groups, settings, report)  # 2.
    finish = lambda: _finish_seconds(backend, originals, batches, settings)  # noqa: E731  (timed only when an estimate is made)
    meter = Meter(sum(_calls(plugins, plan, settings) for _, plugins, plan in batches), progress, report, backend.device, finish,
                  stage)
    out_images: list = [None] * len(originals)
    out_latents: list = [None] * len(originals)
    for indices, plugins, plan in batches:
        working = [imaging.resize_for_vae(originals[i], settings.resolution, settings.resize, backend.vae_factor) for i in indices]
        current, latents = run_chain(backend, [originals[i] for i in indices], working, plugins, plan, settings, meter)  # 3.
        current = fix_colors(current, working, settings.color_fix)  # 4.
        restored = bool(composed(plugins, settings))
        for position, index in enumerate(indices):
            out_images[index] = _at_output_size(current[position], originals[index], restored, settings)  # 5.
            out_latents[index] = latents[position].cpu()
    return RestoreResult(out_images, out_latents)


def composed(plugins, settings: RestoreSettings) -> list:
    """What is sampled, in order: the plugins of a share above 0, one after another ('chain') or
    all in one pass ('joint': one PluginMix, by their shares), each at the settings' strength (a
    plugin alone at strength 1 is itself); strength 0: nothing (the photo as it is)."""
    from ..models import PluginMix

    kept = [(plugin, settings.share(plugin.task)) for plugin in plugins if settings.share(plugin.task) > 0]
    if settings.strength == 0 or not kept:
        return []
    if settings.compose == "joint":
        return [PluginMix([p for p, _ in kept], [s for _, s in kept], settings.joint_context, settings.strength,
                          [settings.region(p.task) for p, _ in kept])]
    return [plugin if settings.strength == 1 and settings.region(plugin.task) is None
            else PluginMix([plugin], [1.0], settings.joint_context, settings.strength, [settings.region(plugin.task)])
            for plugin, _ in kept]


def describe_run(plugins, settings: RestoreSettings) -> str:
    """How the plugins run, in words: 'derain (20 steps), then dehaze (3 steps)', or one pass."""
    runs = composed(plugins, settings)
    zero = [plugin.task for plugin in plugins if settings.share(plugin.task) == 0]
    left_out = f"; left out (share 0): {', '.join(zero)}" if zero else ""
    if not runs:
        return "no plugin runs: the photo as it is" + left_out
    where = lambda plugin: " in its region" if settings.region(plugin.task) is not None else ""  # noqa: E731
    if settings.compose == "joint":
        mix = runs[0]
        shares = ", ".join(f"{p.task} {share:.3g}{where(p)}" for p, share in zip(mix.plugins, mix.shares))
        return f"{mix.task} in one pass of {settings.steps} steps (shares {shares})" + left_out
    return ", then ".join(f"{plugin.task} ({settings.steps if order == 0 else settings.later_steps} steps{where(plugin)})"
                          for order, plugin in enumerate(runs)) + left_out


def check_shares(settings: RestoreSettings, plugins) -> None:
    """Every task `settings.shares` and `settings.regions` name must be one of the plugins', and at
    least one plugin must have a share above 0 (else nothing would run)."""
    tasks = {plugin.task for plugin in plugins}
    for flag, named in (("--shares", settings.shares), ("--region", settings.regions)):
        unknown = [task for task, _ in named if task not in tasks]
        if unknown:
            raise PluginError(f"{flag} names {', '.join(map(repr, unknown))}, which is not among the plugins "
                              f"({', '.join(sorted(tasks)) or 'none'})")
    if tasks and all(settings.share(task) == 0 for task in tasks):
        raise PluginError(f"--shares gives every plugin ({', '.join(sorted(tasks))}) the share 0, which leaves it out: "
                          "nothing would run; give a plugin a share above 0 (--strength 0 keeps the photos as they are)")


def run_chain(backend: RestoreBackend, originals, working, plugins, plan, settings: RestoreSettings, meter: Meter):
    """One same-size batch through its plugins as composed (`composed`): (8-bit images, final latents)."""
    current, latents, tokens = working, None, {}
    tiled, runs = plan is not None, composed(plugins, settings)
    for order, plugin in enumerate(runs):
        label = plugin.task if len(runs) == 1 else f"{plugin.task} {order + 1}/{len(runs)}"
        meter.stage(label)
        visual_prompt, input_latent = plugin_inputs(backend, plugin, originals, working, current, plan, settings.tiles, tokens)
        start = meter.done
        latents = backend.sample(
            plugin, input_latent, visual_prompt, steps=settings.steps if order == 0 else settings.later_steps,
            seed=settings.seed, renoise_until=settings.renoise_until, plan=plan, tile_batch=settings.tiles.batch,
            progress=lambda done, _, start=start: meter(start + done),
        )
        meter.stage(f"decoding ({label})" if len(runs) > 1 else "decoding")
        current = backend.decode(latents, tiled)
    if latents is None:  # no plugin: the photo as it is
        latents = backend.encode_images(working, tiled)
    return current, latents


def plugin_inputs(backend: RestoreBackend, plugin, originals, working, current, plan, tiles: TileSettings,
                  tokens: dict | None = None):
    """What one plugin of a chain reads: (Fp, the latent of the current images). Fp comes from the
    CLIP tokens of `prompt_tokens`, kept in `tokens` (by CLIP layer) for the chain's next plugins."""
    tokens = {} if tokens is None else tokens
    members = getattr(plugin, "plugins", [plugin])  # a PluginMix: each member's Fp, joined
    for layer in {member.info.clip_layer for member in members} - set(tokens):
        tokens[layer] = prompt_tokens(backend, originals, working, layer, plan, tiles)
    with torch.no_grad():
        prompts = [member.visual_prompt(tokens[member.info.clip_layer]) for member in members]
    visual_prompt = plugin.visual_prompt(prompts) if hasattr(plugin, "plugins") else prompts[0]
    return visual_prompt, backend.encode_images(current, plan is not None)


def prompt_tokens(backend: RestoreBackend, originals, working, layer: int, plan, tiles: TileSettings) -> torch.Tensor:
    """The CLIP vision tokens the TPB reads: of the original images ([B, 1 + N, W]), as the
    reference; with a tile plan and the 'tile' prompt, of each tile's crop of the working-size
    images ([tiles, B, 1 + N, W]), the scale the plugins were trained on."""
    if plan is None or tiles.prompt != "tile":
        return backend.clip_tokens(originals, layer)
    return torch.stack([backend.clip_tokens(crops, layer) for crops in plan.image_crops(working, backend.vae_factor)])


def groups_by_selection(selections: Sequence, by_task: dict) -> list[PluginGroup]:
    """Images that selected the same plugins, together, in order of first appearance; each
    selection's `selected` task names mapped to the items of `by_task`."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, selection in enumerate(selections):
        groups.setdefault(tuple(selection.selected), []).append(index)
    return [PluginGroup(indices, [by_task[task] for task in tasks]) for tasks, indices in groups.items()]


def _batches(backend, originals, groups, settings, report) -> list[tuple[list[int], list, object]]:
    """(image indices of one working size, their plugins, tile plan or None) for every group."""
    batches = []
    for group in groups:
        by_size: dict[tuple[int, int], list[int]] = {}
        for index in group.indices:
            size = imaging.working_size(*originals[index].size, resolution=settings.resolution, mode=settings.resize,
                                        multiple=backend.vae_factor)
            by_size.setdefault(size, []).append(index)
        for (width, height), indices in by_size.items():
            plan = settings.tiles.plan(width, height, backend.vae_factor)
            batches.append((indices, list(group.plugins), plan))
            if plan is not None and group.plugins and report:
                report(f"{width}x{height}: {plan.describe(backend.vae_factor)}, Fp per {settings.tiles.prompt}")
    return batches


def _calls(plugins, plan, settings: RestoreSettings) -> int:
    """UNet calls of one batch's plugins as composed."""
    runs = len(composed(plugins, settings))
    if not runs:
        return 0
    steps = settings.steps + settings.later_steps * (runs - 1)
    return steps * (len(plan.batches(settings.tiles.batch)) if plan is not None else 1)


def _finish_seconds(backend, originals, batches, settings: RestoreSettings, side: int = 256) -> float:
    """What the decodes (one per plugin of a chain) and the colour fix of all batches will take:
    both timed on a crop of the first photo (at most side x side px, through the backend's own
    VAE) and scaled to the pixels of every decode."""
    crop = imaging.resize_for_vae(originals[0], settings.resolution, settings.resize, backend.vae_factor)
    crop = crop.crop((0, 0, min(side, crop.width), min(side, crop.height)))
    latent = backend.encode_images([crop])
    start = time.perf_counter()
    decoded = backend.decode(latent)
    decoding = time.perf_counter() - start
    fix_colors(decoded, [crop], settings.color_fix)
    fixing = time.perf_counter() - start - decoding
    def pixels(index: int) -> int:
        width, height = imaging.working_size(*originals[index].size, settings.resolution, settings.resize, backend.vae_factor)
        return width * height

    per_pixel = 1 / (crop.width * crop.height)
    return sum((decoding * len(composed(plugins, settings)) + fixing) * sum(map(pixels, indices)) * per_pixel
               for indices, plugins, _ in batches if plugins)


def _at_output_size(image: Image.Image, original: Image.Image, restored: bool, settings: RestoreSettings) -> Image.Image:
    if settings.output_size == "processed":
        return image
    return imaging.at_size(image, original.size) if restored else original


def tile_advice(settings: RestoreSettings, width: int, height: int, device, names=("--tile-size", "--tile-overlap")) -> str | None:
    """On a CPU, for a photo of this size that `settings` sample whole or in larger tiles than
    CPU_TILES would, beyond one of them: the faster setting, spelled with `names`; else None."""
    working = imaging.working_size(width, height, settings.resolution, settings.resize)
    tiles = settings.tiles
    if not on_cpu(device) or (tiles.size and tiles.size <= CPU_TILES.size) or max(working) <= CPU_TILES.size:
        return None
    return (f"on a CPU, {names[0]} {CPU_TILES.size} and {names[1]} {CPU_TILES.overlap} sample this {working[0]}x{working[1]} "
            f"photo in less time per pixel than {f'{names[0]} {tiles.size}' if tiles.size else 'whole'} (a tile's self-attention grows with the square of "
            "its pixels; docs/tiles-and-colour.md)")
