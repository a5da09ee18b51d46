"""plugin_core's TrainingBackend over ComfyUI's MODEL, VAE and CLIP_VISION: what
TrainTaskPlugin trains on. Model adaptation only; the recipe is plugin_core's Trainer.
Restoring's backend: restore_backend.py."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch

from ..plugin_core import training_clip_pixels
from . import bridge
from .management import compute_dtype
from .patch import SkipResiduals


class ComfyTrainingBackend:
    """plugin_core.training.TrainingBackend over ComfyUI's MODEL, VAE and CLIP_VISION."""

    def __init__(self, model, vae, clip_vision):
        import comfy.model_sampling

        self.model, self.vae, self.clip_vision = model, vae, clip_vision
        self.device = model.load_device
        self.facts = bridge.base_facts(model, clip_vision)
        self.first_block = bridge.output_blocks(model) - 3
        sampling = model.get_model_object("model_sampling")
        self.prediction_type = "v_prediction" if isinstance(sampling, comfy.model_sampling.V_PREDICTION) else "epsilon"
        if not isinstance(sampling, (comfy.model_sampling.EPS, comfy.model_sampling.V_PREDICTION)):
            raise ValueError("TrainTaskPlugin trains on epsilon- or v-prediction UNets (SD 1.x / 2.x / XL)")
        self.alphas_cumprod = (1.0 / (1.0 + sampling.sigmas.float() ** 2)).cpu()  # sigma = sqrt((1 - a) / a)
        self.latent_format = model.model.latent_format

    def load(self):
        """The UNet stays loaded for the whole run; frozen, no parameter gradients."""
        self.model.model.requires_grad_(False)
        comfy.model_management.load_models_gpu([self.model], force_full_load=True)
        self.diffusion_model = self.model.model.diffusion_model
        bridge.make_autograd_safe(self.diffusion_model)
        self.dtype = compute_dtype(self.model)  # fp8 storage computes in its manual cast dtype

    @torch.no_grad()
    def encode_distribution(self, pixels):
        """Pixels [B,3,H,W] in [-1,1] -> scaled posterior (mean, std), as the UNet reads latents."""
        vae = self.vae
        comfy.model_management.load_models_gpu([vae.patcher])
        x = pixels.to(vae.device, vae.vae_dtype)  # already in [-1, 1]
        first = vae.first_stage_model
        if hasattr(first, "quant_conv") and hasattr(first, "encoder"):
            moments = first.encoder(x)
            moments = first.quant_conv(moments) if first.quant_conv is not None else moments
            mean, logvar = moments.float().chunk(2, dim=1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        else:  # VAEs without a Gaussian posterior (TAESD ...): the deterministic latent
            mean = vae.encode(((pixels + 1) / 2).movedim(1, -1).cpu()).float()
            std = torch.zeros_like(mean)
        scaled = self.latent_format.process_in(mean.clone())
        scale = self.latent_format.scale_factor
        return scaled.to(self.device).float(), (std * scale).to(self.device).float()

    def clip_tokens_of_pixels(self, pixels, layer):
        return bridge.clip_hidden_states(self.clip_vision, training_clip_pixels(pixels.float()), layer).to(self.device)

    def predict(self, noisy, timesteps, visual_prompt, residuals):
        options = {"patches": {"output_block_patch": [SkipResiduals(residuals, self.first_block)]}}
        return self.diffusion_model(
            noisy.to(self.dtype), timesteps, context=visual_prompt.to(self.dtype), transformer_options=options
        ).float()

    def enable_gradient_checkpointing(self):
        from torch.utils.checkpoint import checkpoint

        # Each input/output block of the frozen UNet recomputes its activations in backward.
        for block in [*self.model.model.diffusion_model.input_blocks, *self.model.model.diffusion_model.output_blocks]:
            if not hasattr(block, "_diffplugin_forward"):
                block._diffplugin_forward = block.forward
                block.forward = lambda *a, _f=block._diffplugin_forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)

    def disable_gradient_checkpointing(self):
        for block in [*self.model.model.diffusion_model.input_blocks, *self.model.model.diffusion_model.output_blocks]:
            if hasattr(block, "_diffplugin_forward"):
                block.forward = block._diffplugin_forward
                del block._diffplugin_forward

    def unet_state(self):
        """ComfyUI's UNet weights in diffusers' names (comfy.utils.unet_to_diffusers)."""
        mapping = comfy.utils.unet_to_diffusers(self.model.model.model_config.unet_config)  # diffusers name -> ComfyUI name
        state = self.model.model.diffusion_model.state_dict()
        return {name: state[comfy_name].float().cpu() for name, comfy_name in mapping.items() if comfy_name in state}
