"""The Diff-Plugin patch on a ComfyUI MODEL: one callable object for both patch points.

* attn2 patch: the visual prompt Fp replaces the text context of every cross-attention;
* output-block patch: the three SCB residuals are added to the skips of the last three
  output blocks (the ones fed by input blocks 2, 1, 0), computed ONCE per UNet call for
  the current timestep and shared by every cond/uncond chunk of the batch.

Outside the active range (strength 0, a zero mask, outside start/end percent) both
patch points return their inputs untouched, so the model is exactly the unpatched one.
The object holds the plugin's weights by reference and survives ModelPatcher.clone()'s
deepcopy as itself: a clone never copies weights.
"""

from __future__ import annotations

import einops
import torch


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


class DiffPluginPatch:
    def __init__(
        self,
        plugin,  # plugin_core TaskPlugin in the model's dtype (its weights are managed by a ModelPatcher)
        visual_prompt: torch.Tensor,  # [N, tokens, context] float32, one per input image
        input_latent: torch.Tensor,  # [N, 4, h, w] float32, scaled posterior mean of each input image
        model_sampling,
        num_output_blocks: int,
        strength: float = 1.0,
        sigma_start: float = float("inf"),
        sigma_end: float = 0.0,
        mask: torch.Tensor | None = None,  # [N or 1, 1, h, w] in [0, 1] at latent size
    ):
        self.plugin = plugin
        self.visual_prompt = visual_prompt
        self.input_latent = input_latent
        self.model_sampling = model_sampling
        self.first_patched_block = num_output_blocks - 3
        self.strength = float(strength)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.mask = mask
        self.enabled = self.strength != 0 and (mask is None or bool(mask.any()))
        self._on_device: dict = {}
        # The SCB never reads x_t: its residuals depend only on the timestep, so they are
        # kept for the last sigma and serve every chunk and every split call at that step.
        self._residuals: tuple[float, list[torch.Tensor]] | None = None

    def __deepcopy__(self, memo):
        return self  # shared by every clone of the MODEL: no weight copies

    # ------------------------------------------------------------------ helpers

    def is_active(self, sigmas: torch.Tensor | None) -> bool:
        if not self.enabled:
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

    # ------------------------------------------------------------------ patch points

    def attn2(self, n, context, value, extra_options):
        if not self.is_active(extra_options.get("sigmas")):
            return n, context, value
        prompt = self._tensor("visual_prompt", n.device, n.dtype)
        prompt = self._per_row(prompt, n.shape[0], len(extra_options.get("cond_or_uncond", [0])))
        return n, prompt, prompt

    def output_block(self, h, hsp, transformer_options):
        index = skip_index(transformer_options, self.first_patched_block)
        if index is None or not self.is_active(transformer_options.get("sigmas")):
            return h, hsp
        sigmas = transformer_options["sigmas"]
        sigma = float(sigmas.reshape(-1)[0])
        if self._residuals is None or self._residuals[0] != sigma:
            self._residuals = (sigma, self._compute_residuals(sigmas, hsp.device))
        residual = self._residuals[1][index]
        if residual.shape[-2:] != hsp.shape[-2:] or residual.shape[1] != hsp.shape[1]:
            raise ValueError(
                f"Diff-Plugin residual {tuple(residual.shape)} does not fit the skip {tuple(hsp.shape)} "
                "(area conditioning or a latent of another size than the plugin's input image?)"
            )
        residual = self._per_row(residual.to(hsp.dtype), hsp.shape[0], len(transformer_options.get("cond_or_uncond", [0])))
        return h, hsp + residual

    @torch.no_grad()
    def _compute_residuals(self, sigmas: torch.Tensor, out_device) -> list[torch.Tensor]:
        """One SCB evaluation per UNet call, on the device its weights are loaded to."""
        weight = next(self.plugin.parameters())
        device, dtype = weight.device, weight.dtype
        images = self.input_latent.shape[0]
        timesteps = self.model_sampling.timestep(sigmas.reshape(-1).float()).to(device)
        timesteps = timesteps[:images] if timesteps.numel() >= images else timesteps[:1].expand(images)
        residuals = self.plugin.skip_residuals(
            self._tensor("input_latent", device, dtype), timesteps, self._tensor("visual_prompt", device, dtype)
        )
        scale = self.strength
        if self.mask is not None:
            scale = self._tensor("mask", device, dtype) * self.strength
        return [(r * scale).to(out_device) for r in residuals]
