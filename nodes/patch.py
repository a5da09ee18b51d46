"""The Diff-Plugin patch on a ComfyUI MODEL: one object for the patch points and wrappers.

* attn2 patch: the visual prompt Fp replaces the text context of every cross-attention;
* output-block patch: the three SCB residuals are added to the skips of the last three
  output blocks (the ones fed by input blocks 2, 1, 0), computed ONCE per UNet call for
  the current timestep and shared by every cond/uncond chunk of the batch;
* with tiles (plugin_core.tiling): an apply-model wrapper gives each tile (or batch of tiles)
  its own UNet call on its crop of x, and blends the predictions with weights that sum to one;
  the call tells the patch points which tiles it carries, so each reads its tile's Fp and the
  SCB reads its tile's crop of the input latent;
* area conditioning: ComfyUI calls the model on a crop of x at a cond's area; a calc-cond-batch
  wrapper records each cond's area, so the residuals are cropped where the call's crop lies.

Outside the active range (strength 0, a zero mask, outside start/end percent) the patch points
return their inputs untouched, so the model is exactly the unpatched one. The object holds the
plugin's weights by reference and survives ModelPatcher.clone()'s deepcopy as itself; its patch
points are objects of their own types (ContextPatch, SkipPatch), so a later apply finds them.
"""

from __future__ import annotations

import comfy.model_management
import einops
import torch
from comfy.patcher_extension import CallbacksMP, WrappersMP

TILES_KEY = "diff_plugin_tiles"  # transformer_options: the tile indices of this UNet call, in row-block order
OFF_KEY = "diff_plugin_off"  # transformer_options: this UNet call runs the base model without the plugin (guidance.py)


def skip_index(transformer_options, first_patched_block: int) -> int | None:
    """Which SCB residual an output block takes (its skip comes from input block 2 - k), or None."""
    kind, index = transformer_options.get("block", ("output", -1))
    k = index - first_patched_block  # 0, 1, 2 for the last three output blocks
    return 2 - k if kind == "output" and 0 <= k <= 2 else None


class SkipResiduals:
    """An output-block patch adding fixed residuals (training: they carry gradients)."""

    def __init__(self, residuals, first_patched_block: int):
        self.residuals = residuals
        self.first_patched_block = first_patched_block

    def __call__(self, h, hsp, transformer_options):
        index = skip_index(transformer_options, self.first_patched_block)
        return (h, hsp) if index is None else (h, hsp + self.residuals[index].to(hsp.dtype))


class _PatchPoint:
    """One patch point of a DiffPluginPatch, recognisable by its type in a MODEL's patch lists."""

    def __init__(self, patch: DiffPluginPatch):
        self.patch = patch

    def __deepcopy__(self, memo):
        return self  # shared by every clone of the MODEL, as its patch


class ContextPatch(_PatchPoint):
    """The attn2 patch: Fp as the cross-attention context."""

    def __call__(self, n, context, value, extra_options):
        return self.patch.attn2(n, context, value, extra_options)


class SkipPatch(_PatchPoint):
    """The output-block patch: the SCB residuals on the skips."""

    def __call__(self, h, hsp, transformer_options):
        return self.patch.output_block(h, hsp, transformer_options)


class CrossAttentionPatch(_PatchPoint):
    """An attn2 replace patch (several plugins in one pass): the cross-attention over the joined
    prompts by the PluginMix's rule, with ComfyUI's own attention function."""

    def __call__(self, q, k, v, extra_options):
        return self.patch.cross_attention(q, k, v, extra_options)


def attention_blocks(model) -> list[tuple[str, int]]:
    """The (block, index) of every UNet block holding a cross-attention (as transformer_options names them)."""
    diffusion = model.get_model_object("diffusion_model")
    has = lambda block: any(hasattr(m, "attn2") for m in block.modules())
    found = [("input", i) for i, block in enumerate(diffusion.input_blocks) if has(block)]
    found += [("middle", 0)] if getattr(diffusion, "middle_block", None) is not None and has(diffusion.middle_block) else []
    return found + [("output", i) for i, block in enumerate(diffusion.output_blocks) if has(block)]


def remove_plugin_patches(model, key: str) -> bool:
    """Take a Diff-Plugin patch (its patch points, wrappers and plugin weights, filed under `key`)
    off a MODEL clone; whether there was one."""
    options = model.model_options.get("transformer_options", {})
    patches, replace = options.get("patches", {}), options.get("patches_replace", {}).get("attn2", {})
    removed = False
    for name in ("attn2_patch", "output_block_patch"):
        kept = [p for p in patches.get(name, []) if not isinstance(p, _PatchPoint)]
        removed |= len(kept) != len(patches.get(name, []))
        if name in patches:
            patches[name] = kept
    for block in [block for block, p in replace.items() if isinstance(p, _PatchPoint)]:
        del replace[block]
    if isinstance(model.model_options.get("sampler_calc_cond_batch_function"), _PatchPoint):
        removed = True
        previous = model.model_options.pop("sampler_calc_cond_batch_function").previous
        if previous is not None:
            model.model_options["sampler_calc_cond_batch_function"] = previous
    for wrapper in (WrappersMP.APPLY_MODEL, WrappersMP.CALC_COND_BATCH):
        removed |= bool(model.get_wrappers(wrapper, key))
        model.remove_wrappers_with_key(wrapper, key)
    model.remove_additional_models(key)
    model.remove_callbacks_with_key(CallbacksMP.ON_DETACH, key)
    return removed


class DiffPluginPatch:
    def __init__(
        self,
        plugin,  # plugin_core TaskPlugin in the model's dtype (its weights are managed by a ModelPatcher)
        visual_prompt: torch.Tensor,  # [N, tokens, context] float32, one per input image; with tiles maybe [tiles, N, tokens, context]
        input_latent: torch.Tensor,  # [N, 4, h, w] float32, scaled posterior mean of each input image
        model_sampling,
        num_output_blocks: int,
        strength: float = 1.0,
        sigma_start: float = float("inf"),
        sigma_end: float = 0.0,
        mask: torch.Tensor | None = None,  # [N or 1, 1, h, w] in [0, 1] at latent size
        plan=None,  # plugin_core's TilePlan over the latent, or None (untiled)
        tile_batch: int = 1,
    ):
        """plugin: one plugin, or a PluginMix of them (several plugins in one pass)."""
        self.plugin = plugin
        self.visual_prompt = visual_prompt
        self.input_latent = input_latent
        self.model_sampling = model_sampling
        self.first_patched_block = num_output_blocks - 3
        self.strength = float(strength)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.mask = mask
        self.plan, self.tile_batch = plan, tile_batch
        self.enabled = self.strength != 0 and (mask is None or bool(mask.any()))
        self._on_device: dict = {}
        # The SCB never reads x_t: its residuals depend only on the timestep (and the tiles), so
        # they are kept for the last call and serve every chunk and every split call at that step.
        self._residuals: tuple[tuple, list[torch.Tensor]] | None = None
        self._areas: dict = {}  # cond uuid -> (y, x) of its area, during a calc_cond_batch
        self.context_patch, self.skip_patch = ContextPatch(self), SkipPatch(self)
        self.attention_patch = CrossAttentionPatch(self) if hasattr(plugin, "plugins") else None

    def __deepcopy__(self, memo):
        return self  # shared by every clone of the MODEL: no weight copies

    # ------------------------------------------------------------------ helpers

    def is_active(self, sigmas: torch.Tensor | None, options: dict | None = None) -> bool:
        """Whether the plugin acts at this sigma (and in this call: not one guidance runs without it)."""
        if not self.enabled or (options or {}).get(OFF_KEY):
            return False
        if sigmas is None:
            return True
        sigma = float(sigmas.reshape(-1)[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def _tensor(self, name: str, device, dtype) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._on_device[key]

    def _per_row(self, tensor: torch.Tensor, rows: int, chunks: int) -> torch.Tensor:
        """Tile per-image tensors over the batch: chunk-major rows (uncond/cond ...), each chunk one latent batch."""
        images = tensor.shape[0]
        per_chunk = rows // max(chunks, 1)
        if images != per_chunk:
            if images != 1:
                raise ValueError(
                    f"Diff-Plugin was applied to {images} images but sampling runs {per_chunk} latents per batch; "
                    "use as many latents as images (or one image)"
                )
            tensor = tensor.expand(per_chunk, *tensor.shape[1:])
        return einops.repeat(tensor, "n ... -> (c n) ...", c=chunks) if chunks > 1 else tensor

    def _prompt(self, tile: int | None, device, dtype) -> torch.Tensor:
        """Fp of the images [N, tokens, context]: the tile's own, or the one of the whole image."""
        prompt = self._tensor("visual_prompt", device, dtype)
        return prompt[tile] if prompt.ndim == 4 else prompt

    # ------------------------------------------------------------------ patch points

    def attn2(self, n, context, value, extra_options):
        if not self.is_active(extra_options.get("sigmas"), extra_options):
            return n, context, value
        tiles = extra_options.get(TILES_KEY) or [None]
        chunks = len(extra_options.get("cond_or_uncond", [0]))
        rows = n.shape[0] // len(tiles)
        prompt = torch.cat([self._per_row(self._prompt(t, n.device, n.dtype), rows, chunks) for t in tiles])
        return n, prompt, prompt

    def output_block(self, h, hsp, transformer_options):
        index = skip_index(transformer_options, self.first_patched_block)
        if index is None or not self.is_active(transformer_options.get("sigmas"), transformer_options):
            return h, hsp
        sigmas = transformer_options["sigmas"]
        tiles = transformer_options.get(TILES_KEY) or [None]
        key = (float(sigmas.reshape(-1)[0]), tuple(tiles))
        if self._residuals is None or self._residuals[0] != key:
            self._residuals = (key, self._compute_residuals(sigmas, tiles, hsp.device))
        chunks = len(transformer_options.get("cond_or_uncond", [0]))
        rows = hsp.shape[0] // len(tiles)
        blocks = []
        for tile, residual in zip(tiles, self._residuals[1]):
            residual = residual[index].to(hsp.dtype)
            if residual.shape[-2:] != hsp.shape[-2:]:
                blocks.append(self._area_crops(residual, hsp, rows, chunks, transformer_options))
            else:
                blocks.append(self._per_row(residual, rows, chunks))
        return h, hsp + torch.cat(blocks)

    def cross_attention(self, q, k, v, extra_options):
        """A cross-attention of the MODEL (the attn2 replace patch of a PluginMix): over the joined
        prompts by the mix's rule while the plugins act, else the plain attention (as the host's)."""
        from comfy.ldm.modules.attention import optimized_attention, optimized_attention_masked

        heads, precision = extra_options["n_heads"], extra_options.get("attn_precision")

        def attend(q, k, v, bias):
            if bias is None:
                return optimized_attention(q, k, v, heads, attn_precision=precision, transformer_options=extra_options)
            return optimized_attention_masked(q, k, v, heads, bias.view(1, -1), attn_precision=precision,
                                              transformer_options=extra_options)

        if not self.is_active(extra_options.get("sigmas"), extra_options):
            return attend(q, k, v, None)
        if self.plugin.regions is None:
            return self.plugin.attention(attend, q, k, v)
        return self.plugin.attention(attend, q, k, v, regions=self._call_regions(q.shape[0], extra_options))

    def _region_maps(self, device) -> torch.Tensor:
        """The mix's regions over the images' latent ([M, N, 1, h, w]), once per device."""
        key = ("regions", device)
        if key not in self._on_device:
            self._on_device[key] = self.plugin.region_maps(*self.input_latent.shape[-2:], self.input_latent.shape[0]).to(device)
        return self._on_device[key]

    def _call_regions(self, rows: int, options: dict) -> torch.Tensor:
        """The regions of this UNet call's rows ([M, rows, 1, h, w]): each tile's crop, per chunk."""
        tiles = options.get(TILES_KEY) or [None]
        maps = self._region_maps(options.get("sigmas", torch.zeros(())).device)
        crops = [maps if tile is None else self.plan.tiles[tile].crop(maps) for tile in tiles]
        shape = options.get("original_shape")
        if shape is not None and tuple(shape[-2:]) != tuple(crops[0].shape[-2:]):
            raise ValueError("Diff-Plugin: plugins with regions were called on a crop of the latent (area conditioning or "
                             "another pack's tiled sampler); for tiles use the pack's own tile_size")
        chunks = len(options.get("cond_or_uncond", [0]))
        per_tile = rows // len(tiles)
        return torch.cat([torch.stack([self._per_row(member, per_tile, chunks) for member in crop]) for crop in crops], dim=1)

    def _area_crops(self, residual, hsp, rows, chunks, transformer_options) -> torch.Tensor:
        """Residuals for a call on crops of x (area conditioning): each chunk's cond area, cut out."""
        uuids = transformer_options.get("uuids") or []
        if len(uuids) != chunks or any(u not in self._areas for u in uuids):
            raise ValueError(
                f"Diff-Plugin: the model was called on a {hsp.shape[-1]}x{hsp.shape[-2]} crop of the "
                f"{residual.shape[-1]}x{residual.shape[-2]} latent of the photo at a position it cannot know (another pack's "
                "tiled sampler, or a latent of another size than the photo's?); for tiles use Apply Task-Plugin's / Restore "
                "with Task-Plugins' own tile_size"
            )
        height, width = hsp.shape[-2:]
        per_chunk = rows // chunks
        parts = []
        for uuid in uuids:
            y, x = self._areas[uuid]
            crop = residual[..., y : y + height, x : x + width]
            parts.append(self._per_row(crop, per_chunk, 1))
        return torch.cat(parts)

    @torch.no_grad()
    def _compute_residuals(self, sigmas: torch.Tensor, tiles, out_device) -> list[list[torch.Tensor]]:
        """One SCB evaluation per tile of the call (one for an untiled call), on the UNet call's
        device in the plugin's dtype (the MODEL's compute dtype; a layer a partial load left on the
        offload device is cast there per call): [per tile: the three residuals [N, C, h, w]]."""
        device, dtype = out_device, next(self.plugin.parameters()).dtype
        images = self.input_latent.shape[0]
        timesteps = self.model_sampling.timestep(sigmas.reshape(-1).float()).to(device)
        timesteps = timesteps[:images] if timesteps.numel() >= images else timesteps[:1].expand(images)
        latent = self._tensor("input_latent", device, dtype)
        mask = self._tensor("mask", device, dtype) if self.mask is not None else None
        regions = self._region_maps(device) if getattr(self.plugin, "regions", None) is not None else None
        out = []
        for tile in tiles:
            box = (lambda t: t) if tile is None else self.plan.tiles[tile].crop
            prompt = self._prompt(tile, device, dtype)
            residuals = (self.plugin.skip_residuals(box(latent), timesteps, prompt) if regions is None
                         else self.plugin.skip_residuals(box(latent), timesteps, prompt, regions=box(regions)))
            scale = self.strength if mask is None else box(mask) * self.strength
            out.append([(r * scale).to(out_device) for r in residuals])
        return out

    # ------------------------------------------------------------------ wrappers

    def calc_cond_batch(self, executor, model, conds, x_in, timestep, model_options):
        """Record where each area cond's crop of x lies, for the output-block patch."""
        self._areas = {}
        for cond_list in conds:
            for cond in cond_list or []:
                area = cond.get("area")
                if area is not None and len(area) == 4 and "uuid" in cond:
                    self._areas[cond["uuid"]] = (int(area[2]), int(area[3]))
        return executor(model, conds, x_in, timestep, model_options)

    def apply_model(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        """Tiles: one call per batch of tiles on their crops of x, predictions blended."""
        plan = self.plan
        if (plan is None or tuple(x.shape[-2:]) != (plan.height, plan.width)
                or not self.is_active(transformer_options.get("sigmas"), transformer_options)):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        if control is not None:
            raise ValueError("Diff-Plugin tiles do not combine with a ControlNet yet: set tile_size to 0 (no tiles)")
        rows = x.shape[0]

        def call(batch: list[int]) -> torch.Tensor:
            comfy.model_management.throw_exception_if_processing_interrupted()  # Cancel stops within a step, at a tile
            crop = lambda v: plan.crop(v, batch) if v is not None else None
            repeat = lambda v: torch.cat([v] * len(batch)) if isinstance(v, torch.Tensor) and v.shape[:1] == (rows,) else v
            options = {**transformer_options, TILES_KEY: list(batch)}
            extra = {k: repeat(v) for k, v in kwargs.items()}
            return executor(crop(x), repeat(t), crop(c_concat), repeat(c_crossattn), None, options, **extra)

        return plan.predict(x, self.tile_batch, call)
