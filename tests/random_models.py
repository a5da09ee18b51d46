"""Random Stable Diffusion / CLIP models, for the tests and the benchmarks.

* tiny ones in the on-disk layouts users bring (`write_tiny_sd`, `write_tiny_clip_vision`):
  shapes fit the tiny reference plugins in ../shared/fixtures/official/tiny (SCB channels 32,
  context width 768, CLIP vision width 64) and the reference PromptTunner (text width 768);
* SD1.5-shaped ones in memory (`sd15_unet`, `sd15_vae`, `sd15_clip_vision`, `sd15_clip_text`),
  for the benchmarks' costs at the real scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_TEXT_WIDTH = 768

SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def clip_tokenizer_files(folder: Path, words: tuple[str, ...] = ()) -> int:
    """A CLIP BPE vocabulary of every byte symbol (alone and word-final), plus merges that
    make each of `words` one token, as CLIP's real vocabulary does for common words."""
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]  # last, as in CLIP: EOS has the highest id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in dict.fromkeys(merges)))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        )
    )
    return len(vocab)


def write_tiny_sd(folder: Path, seed: int = 0, context_width: int = 768, channels: int = 32, sdxl_like: bool = False) -> Path:
    """A diffusers SD-1.x-shaped pipeline folder: unet/, vae/, scheduler/, text_encoder/, tokenizer/.

    sdxl_like: SDXL's layout (a first level without attention, attention below it)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(channels, channels * 2),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D") if sdxl_like else ("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D") if sdxl_like else ("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context_width,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    unet.save_pretrained(folder / "unet")
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    vae.save_pretrained(folder / "vae")
    # SD-1.x's own scheduler_config.json, verbatim (the reference builds UniPC from it).
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2))
    vocab_size = clip_tokenizer_files(folder / "tokenizer")
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=TINY_TEXT_WIDTH, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    text.save_pretrained(folder / "text_encoder")
    return folder


def write_tiny_clip_vision(folder: Path, seed: int = 0, width: int = 64, layers: int = 24) -> Path:
    """A transformers CLIPVisionModel folder: ViT/14 at 224 px (257 tokens), tiny width."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
            image_size=224, patch_size=14, projection_dim=768,
        )
    )
    model.save_pretrained(folder)
    return Path(folder)


def random_task_plugins(tasks, seed: int = 100) -> list:
    """One small TaskPlugin with random weights per task (clip width 64, 32 channels): their Fp
    on real photos are distinct pseudo-labels for selector training."""
    from plugin_core import PluginConfig, PluginInfo, TaskPlugin

    plugins = []
    for i, task in enumerate(tasks):
        torch.manual_seed(seed + i)
        plugins.append(TaskPlugin(PluginConfig(clip_width=64, channels=32), PluginInfo.for_task(task)).eval())
    return plugins


def write_reference_selector(path: Path, seed: int = 7) -> Path:
    """A Plugin-Selector in the reference layout (plugin_selector/PromptTunner.pt: {'model': state_dict},
    logit_scale and proj_v / proj_t 768 wide) with seeded random weights."""
    generator = torch.Generator().manual_seed(seed)

    def linear(width):
        return (torch.randn(width, width, generator=generator) / width**0.5, torch.randn(width, generator=generator) * 0.05)

    proj_v, proj_t = linear(768), linear(768)
    state = {
        "logit_scale": torch.log(torch.tensor(1 / 0.07)) + 0.05 * torch.randn((), generator=generator),
        "proj_v.weight": proj_v[0], "proj_v.bias": proj_v[1],
        "proj_t.weight": proj_t[0], "proj_t.bias": proj_t[1],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return Path(path)


# ---------------------------------------------------------------------- SD1.5-shaped, in memory

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


def sd15_unet(seed: int = 0):
    """SD1.5's UNet (860M parameters), random, frozen."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**SD15_UNET).eval().requires_grad_(False)


def sd15_vae(seed: int = 3, full: bool = True):
    """SD's VAE shape (full) or a small VAE with the same latent layout, random, frozen."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    widths, layers = ((128, 256, 512, 512), 2) if full else ((8, 8, 8, 8), 1)
    return AutoencoderKL(block_out_channels=widths, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=layers, latent_channels=4,
                         norm_num_groups=32 if full else 8, sample_size=512).eval().requires_grad_(False)


def sd15_clip_vision(seed: int = 2):
    """CLIP ViT-L/14 vision (304M), random, frozen."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    return CLIPVisionModel(CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768)).eval().requires_grad_(False)


def sd15_clip_text(folder: Path, words: tuple[str, ...] = ()):
    """SD's CLIP-L text encoder (123M), random, and a tokenizer that reads `words` as whole tokens."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = clip_tokenizer_files(Path(folder), words=words)
    model = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, eos_token_id=vocab - 1, bos_token_id=vocab - 2)).eval().requires_grad_(False)
    return model, CLIPTokenizer.from_pretrained(folder)
