"""A real ComfyUI for the integration tests: random models its own loaders accept, and a
server process with this pack installed.

Runs inside ComfyUI's Python (COMFYUI_DIR on sys.path). Model files are built from
ComfyUI's own classes on the meta device (so key names always match the host) and filled
from a seeded generator; they are cached between runs under DIFFPLUGIN_TEST_CACHE.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
COMFYUI_DIR = Path(os.environ["COMFYUI_DIR"]).resolve() if os.environ.get("COMFYUI_DIR") else None
CACHE = Path(os.environ.get("DIFFPLUGIN_TEST_CACHE", Path.home() / ".cache" / "diff-plugin-tests")) / "v1"

CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"  # the names the example workflows use (ComfyUI's SD 1.5 template's)
CLIP_VISION = "clip-vit-large-patch14.safetensors"
# The photos the example workflows load (LoadImage) -> the made photos (tests/photos.py) served under those names.
WORKFLOW_PHOTOS = {"demo_rain.jpg": "rain.png", "demo_snow_and_haze.jpg": "snow_and_haze.png",
                   "demo_rain_and_haze.jpg": "rain_and_haze.png", "demo_snow_river.png": "snow_river.png",
                   "demo_river_mask.png": "river_mask.png"}


def workflow_photos(photo_dir: Path) -> dict[str, Path]:
    """Input file name -> source photo, for a server that runs the example workflows."""
    return {name: photo_dir / made for name, made in WORKFLOW_PHOTOS.items()}


def require_host(what: str = "these tests") -> None:
    """Skip the calling test module, saying why, unless COMFYUI_DIR names a ComfyUI that imports
    under this Python (the run's summary counts these skips by the word COMFYUI_DIR)."""
    if COMFYUI_DIR is None:
        pytest.skip(f"COMFYUI_DIR is not set: {what} need a real ComfyUI checkout (see README, 'Tests')", allow_module_level=True)
    try:
        import_comfy()
        import comfy.model_management  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the interpreter
        pytest.skip(f"COMFYUI_DIR is set but ComfyUI does not import here ({error}); run with ComfyUI's own Python",
                    allow_module_level=True)


def import_comfy(pytorch_attention: bool = False) -> None:
    """Make `import comfy...` work in this process, on the CPU (optionally with PyTorch
    attention, ComfyUI's default on NVIDIA GPUs, instead of its CPU default)."""
    # ComfyUI's nodes.py goes ahead of this repository's nodes/ package while it is imported;
    # then ComfyUI's folder moves to the end, so that this repository's `tests` package keeps
    # winning over ComfyUI's own (processes spawned from here inherit sys.path).
    home = str(COMFYUI_DIR)
    sys.path[:] = [home] + [p for p in sys.path if p != home]
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    if pytorch_attention:
        comfy.cli_args.args.use_pytorch_cross_attention = True
    import nodes

    sys.path[:] = [p for p in sys.path if p != home] + [home]
    assert Path(nodes.__file__).resolve() == COMFYUI_DIR / "nodes.py", f"`nodes` is {nodes.__file__}, not ComfyUI's"


def load_pack():
    """Import this repository the way ComfyUI imports a custom node folder."""
    import_comfy()
    name = "diff_plugin_pack_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- random models


def random_fill(shapes: dict[str, torch.Tensor], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Seeded values of sane scale: norms ~1, matrices 1/sqrt(fan_in), biases small."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, meta in shapes.items():
        if not meta.dtype.is_floating_point:
            continue
        shape = tuple(meta.shape)
        noise = torch.randn(shape, generator=generator)
        lowered = name.lower()
        if len(shape) >= 2:
            value = noise / max(1.0, (meta.numel() / shape[0]) ** 0.5)
        elif lowered.endswith("weight") and ("norm" in lowered or "ln" in lowered.split(".")[-2]):
            value = 1.0 + 0.05 * noise
        else:
            value = 0.05 * noise
        out[name] = value.to(dtype)
    return out


def sd15_unet_config(context_dim: int = 768) -> dict:
    """The smallest UNet ComfyUI detects as SD1.5 (one level, 320 channels); context 1024 gives an SD2-like one."""
    sd2 = context_dim == 1024
    return dict(
        image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[2], channel_mult=[1],
        num_heads=-1 if sd2 else 8, num_head_channels=64 if sd2 else -1, use_spatial_transformer=True,
        transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1], transformer_depth_middle=-2,
        context_dim=context_dim, use_linear_in_transformer=sd2, legacy=False,
    )


def _meta_state(factory) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return factory().state_dict()


def unet_state(context_dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = sd15_unet_config(context_dim)
    return random_fill(_meta_state(lambda: UNetModel(**config, operations=comfy.ops.disable_weight_init)), seed)


def vae_state(seed: int = 1) -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    return random_fill(_meta_state(lambda: AutoencoderKL(ddconfig=ddconfig, embed_dim=4)), seed)


def clip_text_state(seed: int = 2) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ops

    config = json.loads((COMFYUI_DIR / "comfy" / "sd1_clip_config.json").read_text())
    state = _meta_state(lambda: comfy.clip_model.CLIPTextModel(config, torch.float32, None, comfy.ops.disable_weight_init))
    return random_fill(state, seed, torch.float16)


def clip_vision_state(seed: int = 3) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ops

    config = json.loads((COMFYUI_DIR / "comfy" / "clip_vision_config_vitl.json").read_text())
    state = _meta_state(lambda: comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, None, comfy.ops.disable_weight_init))
    return random_fill(state, seed, torch.float16)


def _cached(path: Path, build) -> Path:
    if not path.is_file():
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in build().items()}, str(temp))
        temp.replace(path)
    return path


def model_files(fixtures: Path) -> Path:
    """A models/ tree with a random SD1.5 checkpoint, CLIP ViT-L vision, and the reference plugins
    (`fixtures`: ../shared's fixtures/official, for its sd15/ plugins)."""
    import_comfy()
    models = CACHE / "models"

    def checkpoint():
        state = {f"model.diffusion_model.{k}": v for k, v in unet_state().items()}
        state.update({f"first_stage_model.{k}": v for k, v in vae_state().items()})
        state.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_text_state().items() if not k.startswith("text_projection")})
        return state

    _cached(models / "checkpoints" / CHECKPOINT, checkpoint)
    _cached(models / "clip_vision" / CLIP_VISION, clip_vision_state)
    _cached(models / "diffusion_models" / "sd2-like-unet.safetensors", lambda: unet_state(context_dim=1024))
    plugins = models / "diff_plugins"
    # One plugin per task (two for one task are refused as ambiguous): derain.safetensors as
    # `diffplugin convert` writes it, dehaze.safetensors (other weights), a reference-layout
    # folder, deblur/ (derain's weights under another task name); desnow.safetensors (derain's, halved).
    for stale in ("derain", "desnow"):  # left by older versions of this cache
        shutil.rmtree(plugins / stale, ignore_errors=True)
    if not all((plugins / name).exists() for name in ("dehaze.safetensors", "derain.safetensors", "desnow.safetensors", "deblur",
                                                      "selector.safetensors")):
        sys.path.insert(0, str(REPO))
        from plugin_core import load_plugin, save_plugin
        from plugin_core.selector import convert_reference_selector

        shutil.copytree(fixtures / "sd15" / "derain", plugins / "deblur", dirs_exist_ok=True)
        shutil.copytree(fixtures / "sd15" / "plugin_selector", plugins / "plugin_selector", dirs_exist_ok=True)
        dehaze = load_plugin(fixtures / "sd15" / "derain")
        dehaze.info.task = "dehaze"
        with torch.no_grad():  # another plugin: the same shapes, other weights
            for parameter in dehaze.parameters():
                parameter.mul_(-1.0)
        save_plugin(dehaze, plugins / "dehaze.safetensors")
        desnow = load_plugin(fixtures / "sd15" / "derain")
        desnow.info.task = "desnow"
        with torch.no_grad():
            for parameter in desnow.parameters():
                parameter.mul_(0.5)
        save_plugin(desnow, plugins / "desnow.safetensors")
        save_plugin(load_plugin(fixtures / "sd15" / "derain"), plugins / "derain.safetensors")  # as `diffplugin convert` writes it
        convert_reference_selector(fixtures / "sd15" / "plugin_selector" / "PromptTunner.pt", plugins / "selector.safetensors")
    return models


# ---------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """ComfyUI started with --cpu on a base directory holding this pack and the test models."""

    def __init__(self, base: Path, models: Path, inputs: dict[str, Path], max_side: int = 160, front_end_root: str | None = None):
        """front_end_root: a frontend's static folder to serve instead of the host's own pin."""
        self.base, self.front_end_root = base, front_end_root
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / "diff-plugin").symlink_to(REPO, target_is_directory=True)
        (base / "models").mkdir()
        for folder in models.iterdir():
            if folder.name == "diff_plugins":  # a folder of its own: plugins trained by tests land here, not in the cache
                (base / "models" / folder.name).mkdir()
                for entry in folder.iterdir():
                    (base / "models" / folder.name / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
            else:
                (base / "models" / folder.name).symlink_to(folder, target_is_directory=True)
        (base / "input").mkdir()
        for name, source in inputs.items():  # small copies under the same names: CPU-sized runs
            from PIL import Image

            with Image.open(source) as image:
                image.thumbnail((max_side, max_side))
                image.save(base / "input" / name, format=image.format)  # a .jpg name may hold a PNG: LoadImage reads either
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.process = None

    def start(self, timeout: float = 180) -> "ComfyServer":
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", str(self.base),
             "--disable-auto-launch", *(["--front-end-root", self.front_end_root] if self.front_end_root else [])],
            cwd=COMFYUI_DIR, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                self.get("/system_stats")
                return self
            time.sleep(1)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log_text()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            if self.process.poll() is None:
                self.process.kill()
        if self.process:
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def wait(self, prompt_id: str, timeout: float = 900, poll: float = 1.0) -> dict:
        """The history entry of a queued prompt once it has finished, failed or not; TimeoutError
        (the prompt worker stuck) after `timeout` seconds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s\n{self.log_text()[-3000:]}")

    def run_prompt(self, prompt: dict, timeout: float = 900) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        status, answer = self.post("/prompt", {"prompt": prompt})
        if status != 200:
            raise AssertionError(f"/prompt refused the workflow ({status}): {json.dumps(answer)[:2000]}")
        entry = self.wait(answer["prompt_id"], timeout)
        if entry["status"].get("status_str") == "error" or not entry["status"]["completed"]:
            raise AssertionError(f"prompt failed: {json.dumps(entry['status'])[:3000]}\n{self.log_text()[-3000:]}")
        return entry

    def image(self, info: dict) -> bytes:
        query = f"/view?filename={info['filename']}&subfolder={info.get('subfolder', '')}&type={info['type']}"
        with urllib.request.urlopen(self.url + query, timeout=60) as response:
            return response.read()


class WebSocketMessages:
    """The JSON messages ComfyUI sends one websocket client (progress, executing, ...), collected
    by a thread of their own; queue prompts with {"client_id": this.client_id} to get theirs."""

    def __init__(self, server: ComfyServer, timeout: float = 30):
        import asyncio
        import threading
        import uuid

        self.client_id, self.items = uuid.uuid4().hex, []
        self._url = f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}"
        self._connected = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._listen(),), daemon=True).start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"no websocket connection to {self._url}")

    async def _listen(self):
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self._url) as socket:
            self._connected.set()
            async for message in socket:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.items.append(json.loads(message.data))

    def of(self, kind: str, node: str | None = None) -> list[dict]:
        """The data of every message of one type (for one node id) so far."""
        return [m["data"] for m in self.items if m["type"] == kind and (node is None or m["data"].get("node") == node)]
