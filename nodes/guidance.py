"""cfg on a patched MODEL. The plugin replaces the text context in every chunk, so ComfyUI's usual
cfg > 1 would evaluate the same prediction twice (cond and uncond alike) for the cfg 1 result.

* By default (plugin_guidance off), while the plugin acts, only the cond chunk is evaluated and
  its prediction serves as the uncond too: cfg's `uncond + (cond - uncond) * cfg` is then exactly
  the cond prediction, the cfg 1 result, at one UNet evaluation per step whatever cfg is.
* With plugin_guidance on, the uncond chunk runs the base model *without* the plugin (its own
  text conditioning, no Fp, no residuals), so cfg > 1 pushes the result away from the unrestored
  prediction, as InstructPix2Pix's image guidance pushes away from the image-free one.

Outside the plugin's range (start/end percent, strength 0) sampling is ComfyUI's own."""

from __future__ import annotations

import comfy.samplers

from .patch import OFF_KEY, _PatchPoint


class PluginGuidance(_PatchPoint):
    """The MODEL's sampler_calc_cond_batch_function; `previous`: the one it replaced (called in turn)."""

    def __init__(self, patch, guidance: bool, previous=None):
        super().__init__(patch)
        self.guidance, self.previous = guidance, previous

    def __call__(self, args: dict) -> list:
        cond, uncond = args["conds"]
        options = args["model_options"]
        if uncond is None or not self.patch.is_active(args["sigma"], options.get("transformer_options")):
            return self._calc(args, args["conds"], options)
        with_plugin = self._calc(args, [cond, None], options)[0]
        if not self.guidance:
            return [with_plugin, with_plugin]
        off = {**options, "transformer_options": {**options.get("transformer_options", {}), OFF_KEY: True}}
        return [with_plugin, self._calc(args, [None, uncond], off)[1]]

    def _calc(self, args: dict, conds: list, options: dict) -> list:
        if self.previous is not None:
            return self.previous({**args, "conds": conds, "model_options": options})
        return comfy.samplers.calc_cond_batch(args["model"], conds, args["input"], args["sigma"], options)
