"""Single weight files in the layouts users bring, written from the tests' models: an SD 1.x
checkpoint in the original (LDM / CompVis) layout and the transformers layouts of a CLIP vision
file; for tests/test_single_file.py and the command-line tests.

The diffusers -> LDM key mapping here is written from the original UNetModel / AutoencoderKL
names, independently of diffusers' LDM -> diffusers conversion that plugin_core.base.sd_file
calls, so a round trip through both tests the loading."""

from __future__ import annotations

import re
from pathlib import Path

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str, table: dict) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_key_to_ldm(key: str, config: dict) -> str:
    """A diffusers UNet2DConditionModel key as the original UNetModel names it (model.diffusion_model. prefix)."""
    per = config["layers_per_block"] + 1
    for name, ldm in _UNET_TOP.items():
        if key.startswith(name + "."):
            return "model.diffusion_model." + ldm + key[len(name):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per + layer
        key = f"input_blocks.{index}.0.{_resnet(rest, _RESNET)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        key = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        key = f"middle_block.{2 * int(m[1])}.{_resnet(m[2], _RESNET)}"
    elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        key = f"middle_block.1.{m[1]}"
    elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        index = int(m[1]) * per + int(m[3])
        key = f"output_blocks.{index}.0.{_resnet(m[4], _RESNET)}" if m[2] == "resnets" else f"output_blocks.{index}.1.{m[4]}"
    elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        slot = 2 if config["up_block_types"][block].startswith("CrossAttn") else 1
        key = f"output_blocks.{block * per + per - 1}.{slot}.conv.{m[2]}"
    else:
        raise KeyError(key)
    return "model.diffusion_model." + key


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: dict, config: dict) -> dict:
    """A diffusers AutoencoderKL state dict as the original AutoencoderKL names it (first_stage_model. prefix);
    the mid-block attention's linear weights become 1x1 convolutions, as there."""
    levels, out = len(config["block_out_channels"]), {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", new):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", new):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", new):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def text_to_ldm(state: dict) -> dict:
    """transformers' CLIPTextModel keys (with or without text_model.) as SD 1.x checkpoints hold them."""
    return {"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v for k, v in state.items()}


def sd_to_ldm(unet, vae, text=None) -> dict:
    """One original-layout state dict from diffusers / transformers modules."""
    out = {unet_key_to_ldm(k, dict(unet.config)): v for k, v in unet.state_dict().items()}
    out.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    if text is not None:
        out.update(text_to_ldm(text.state_dict()))
    return {k: v.contiguous() for k, v in out.items()}


def write_safetensors(path: Path, state: dict) -> Path:
    """`state` as a .safetensors file (its folder made)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def sd1_extras() -> dict:
    """What real SD 1.x files carry besides the three models: the DDPM schedule, EMA counters and the
    text encoder's position_ids (a buffer older transformers saved); the loaders must ignore them."""
    return {"betas": torch.linspace(0.00085, 0.012, 1000), "alphas_cumprod": torch.rand(1000),
            "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1000, dtype=torch.int32),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None]}


def write_sd_file(sd_folder: Path, path: Path, *, text: bool = True) -> Path:
    """The diffusers SD folder (tests.random_models.write_tiny_sd) as one original-layout checkpoint:
    .safetensors, or a Lightning-style .ckpt ({"state_dict": ...}) for any other suffix."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    sd_folder, path = Path(sd_folder), Path(path)
    unet = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    vae = AutoencoderKL.from_pretrained(sd_folder / "vae")
    encoder = CLIPTextModel.from_pretrained(sd_folder / "text_encoder") if text else None
    state = {**sd_to_ldm(unet, vae, encoder), **sd1_extras()}
    if path.suffix == ".safetensors":
        return write_safetensors(path, state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 1}, path)
    return path


def clip_vision_layouts(vision: dict) -> dict[str, dict]:
    """A CLIPVisionModel's weights (keys without vision_model.) in each accepted file layout: a whole
    CLIPModel (with a small text tower, projections and the position_ids older transformers saved),
    CLIPVisionModel, CLIPVisionModelWithProjection, and "flat" (as transformers >= 5.6 saves it)."""
    g = torch.Generator().manual_seed(5)
    width = next(v for k, v in vision.items() if k.endswith("class_embedding")).shape[0]
    tower = {"vision_model." + k: v for k, v in vision.items()}
    projection = {"visual_projection.weight": torch.randn(32, width, generator=g)}
    text = {"text_model.embeddings.token_embedding.weight": torch.randn(100, 48, generator=g),
            "text_model.embeddings.position_ids": torch.arange(77)[None],
            "vision_model.embeddings.position_ids": torch.arange(257)[None],
            "text_model.final_layer_norm.weight": torch.ones(48), "text_projection.weight": torch.randn(32, 48, generator=g),
            "logit_scale": torch.tensor(2.6592)}
    return {"CLIPModel": {**tower, **projection, **text}, "CLIPVisionModel": tower,
            "CLIPVisionModelWithProjection": {**tower, **projection}, "flat": dict(vision)}


def write_clip_vision_file(folder: Path, path: Path, layout: str = "CLIPVisionModelWithProjection") -> Path:
    """A transformers CLIP vision folder (tests.random_models.write_tiny_clip_vision) as one .safetensors
    file in `layout`, with the folder's config.json beside it as <name>.json (how a model of other
    shapes than ViT-L/14 gets its config)."""
    import shutil

    from safetensors.torch import load_file

    vision = {k.removeprefix("vision_model."): v for k, v in load_file(Path(folder) / "model.safetensors").items()}
    path = write_safetensors(Path(path), clip_vision_layouts(vision)[layout])
    shutil.copy(Path(folder) / "config.json", path.with_suffix(".json"))
    return path


def vit_header(width: int, layers: int, positions: int = 257, fc1: bool = False, prefix: str = "vision_model.") -> dict:
    """A file with a CLIP vision tower's telltale shapes (embeddings, one norm per layer) and none of its bulk:
    the shapes are what inspection reads, so the file stays a few MB."""
    half = torch.float16
    state = {f"{prefix}embeddings.class_embedding": torch.zeros(width, dtype=half),
             f"{prefix}embeddings.patch_embedding.weight": torch.zeros(width, 3, 14, 14, dtype=half),
             f"{prefix}embeddings.position_embedding.weight": torch.zeros(positions, width, dtype=half)}
    state.update({f"{prefix}encoder.layers.{i}.layer_norm1.weight": torch.zeros(width, dtype=half) for i in range(layers)})
    if fc1:
        state[f"{prefix}encoder.layers.0.mlp.fc1.weight"] = torch.zeros(4 * width, width, dtype=half)
    return state


class Tiny:
    """The tiny SD folder, its diffusers / transformers modules and their original-layout weights."""

    def __init__(self, root: Path):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        from tests.random_models import write_tiny_sd

        self.root, self.folder = root, write_tiny_sd(root / "sd")
        self.unet = UNet2DConditionModel.from_pretrained(self.folder / "unet").eval()
        self.vae = AutoencoderKL.from_pretrained(self.folder / "vae").eval()
        self.text = CLIPTextModel.from_pretrained(self.folder / "text_encoder").eval()
        self.ldm = {**sd_to_ldm(self.unet, self.vae, self.text), **sd1_extras()}
        self.file = self.write("model.safetensors", self.ldm)

    def write(self, name: str, state: dict) -> Path:
        path = self.root / name
        if path.suffix == ".safetensors":
            return write_safetensors(path, state)
        torch.save(state, path)
        return path

    def without(self, *prefixes: str) -> dict:
        return {k: v for k, v in self.ldm.items() if not k.startswith(prefixes)}


class TinyClip:
    """The tiny CLIP vision folder (width 64, 4 heads), its model, and its weights under each layout."""

    def __init__(self, root: Path):
        from safetensors.torch import load_file
        from transformers import CLIPVisionModel

        from tests.random_models import write_tiny_clip_vision

        self.root, self.folder = root, write_tiny_clip_vision(root / "clip", layers=3)
        self.model = CLIPVisionModel.from_pretrained(self.folder).eval()
        self.flat = {k.removeprefix("vision_model."): v for k, v in load_file(self.folder / "model.safetensors").items()}
        self.tower = self.layout("CLIPVisionModel")

    def layout(self, name: str) -> dict:
        return clip_vision_layouts(self.flat)[name]
