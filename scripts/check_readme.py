"""Run every shell command of README.md, as written and one after another, in a fresh clone with
stand-in weights: SD1.5-shaped random weights in the files a user downloads (an fp16
original-layout SD 1.5 checkpoint with its text encoder, a CLIP ViT-L/14 vision .safetensors, the
authors' release layout of two plugins and the selector, where the README's commands unpack them)
and a made photo. Not a test (minutes: the commands run the real 860M UNet); run it before
changing the README's commands is done.

    python scripts/check_readme.py                       # everything: the install, then each command
    python scripts/check_readme.py --venv .venv          # `.venv` is this venv instead of a new one

Left out, with the reason printed: the install into ComfyUI (`cd ComfyUI/custom_nodes` and what
follows it there), the downloads (the stand-ins are written in their place), PyPI's CPU index of
torch (no network here: the install takes torch 2.13.0 from pip's own settings, TORCH_INDEX_URL=""
TORCH_SPEC=torch==2.13.0), and the tests (`bash .ci/run` and `scripts/test_comfyui.sh`, which CI runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SD_FILE, CLIP_FILE = "v1-5-pruned-emaonly-fp16.safetensors", "clip-vit-large-patch14.safetensors"
COMFYUI = "needs a ComfyUI checkout (the pack's install is tested by tests/test_comfyui.py from a clone named diff-plugin)"
DOWNLOAD = "a download: the stand-ins are written in its place"
LEFT_OUT = {
    "cd ComfyUI": COMFYUI,
    "git clone https://": COMFYUI,
    "diff-plugin/requirements.txt": COMFYUI,
    "download.pytorch.org": "PyTorch's package index is not reachable from this machine",
    "curl -L": DOWNLOAD,
    "unzip -q": DOWNLOAD,
    "bash .ci/run": "the tests: CI runs them (`bash .ci/run` on a fresh clone)",
    "scripts/test_comfyui.sh": "the tests inside a ComfyUI: CI runs them (`bash .ci/run`, docs/testing.md)",
}
# PyTorch's CPU index is not reachable here: torch 2.13.0 (a CPU build) from pip's own settings.
INSTALL_ENV = {"TORCH_INDEX_URL": "", "TORCH_SPEC": "torch==2.13.0"}


def commands(readme: str) -> list[str]:
    """Every command of the README's ```bash blocks: continuation lines joined, comments dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", command).strip()
            if command and not command.startswith("#"):
                found.append(re.sub(r"\s+", " ", command))
    return found


def write_release(folder: Path, tasks=("derain", "dehaze")) -> Path:
    """The authors' release layout (pre-trained/<task>/tpb.pt + scb/, plugin_selector/PromptTunner.pt),
    plugins of the released shape with seeded random weights."""
    import torch

    from plugin_core import PluginConfig, PluginInfo, TaskPlugin
    from tests.random_models import write_reference_selector

    for index, task in enumerate(tasks):
        torch.manual_seed(100 + index)
        plugin = TaskPlugin(PluginConfig(), PluginInfo.for_task(task))
        for module in plugin.scb.modules():  # the released SCBs are trained: not the zero-initialised outputs
            if isinstance(module, torch.nn.Conv2d) and not module.weight.abs().sum():
                torch.nn.init.normal_(module.weight, std=1e-3)
        config = plugin.config
        (folder / task / "scb").mkdir(parents=True)
        torch.save(plugin.tpb.state_dict(), folder / task / "tpb.pt")
        torch.save(plugin.scb.state_dict(), folder / task / "scb" / "diffusion_pytorch_model.bin")
        (folder / task / "scb" / "config.json").write_text(json.dumps({
            "_class_name": "ControlNetModel", "in_channels": config.latent_channels, "block_out_channels": [config.channels],
            "down_block_types": ["CrossAttnDownBlock2D"], "layers_per_block": config.scb_layers,
            "cross_attention_dim": config.context_width, "attention_head_dim": config.scb_heads}))
    write_reference_selector(folder / "plugin_selector" / "PromptTunner.pt")
    return folder


def write_base_files(folder: Path) -> None:
    """SD 1.5 as one fp16 original-layout checkpoint (UNet, VAE, CLIP text encoder; random) and CLIP
    ViT-L/14 vision as one .safetensors, the files ComfyUI's model folders hold."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from plugin_core.base.sd_file import SD15_CONFIGS
    from tests.random_models import sd15_clip_vision, sd15_unet, sd15_vae
    from tests.single_files import sd1_extras, sd_to_ldm, write_safetensors

    torch.manual_seed(5)
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_CONFIGS / "text_encoder")).eval()
    state = {**sd_to_ldm(sd15_unet(), sd15_vae(full=True), text), **sd1_extras()}
    write_safetensors(folder / SD_FILE, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    del state
    vision = sd15_clip_vision().state_dict()
    write_safetensors(folder / CLIP_FILE, {f"vision_model.{k.removeprefix('vision_model.')}": v.half() for k, v in vision.items()})


def stand_ins(clone: Path) -> None:
    """The downloads of the README's Weights section, where its commands leave them, and photo.jpg."""
    from tests.photos import scene

    started = time.perf_counter()
    write_release(clone / "Diff-Plugin-main" / "pre-trained")
    write_base_files(clone)
    scene(3, size=(512, 512), theme="street").save(clone / "photo.jpg", quality=92)
    print(f"stand-ins written in {time.perf_counter() - started:.0f} s", flush=True)


def run(readme_commands: list[str], clone: Path, venv: Path | None) -> int:
    """Each command in one bash session (cd and activate carry over); the first failure stops."""
    script, seen = ["set -euo pipefail"], set()
    if venv is not None:
        script.append(f"ln -s {venv.resolve()} .venv")
    for command in readme_commands:
        reason = next((why for key, why in LEFT_OUT.items() if key in command), None)
        if command in seen:
            reason = "ran above, word for word"
        if venv is not None and command.startswith("bash scripts/install.sh"):
            reason = "--venv given: .venv is that venv"
        if reason:
            print(f"left out: {command}\n          ({reason})")
            continue
        seen.add(command)
        script += [f"echo; echo '$ {command}'", f"SECONDS=0; {command}", 'echo "  ($SECONDS s)"']
    env = {**os.environ, **INSTALL_ENV, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, help="use this venv as .venv instead of running `bash scripts/install.sh`")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it, instead of a temporary one")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="check-readme-"))
    work.mkdir(parents=True, exist_ok=True)
    clone = work / "diff-plugin"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    readme_commands = commands((clone / "README.md").read_text())
    stand_ins(clone)
    code = run(readme_commands, clone, args.venv)
    print(f"\nREADME commands: {'all ran' if code == 0 else f'stopped with exit status {code}'} (in {clone})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
