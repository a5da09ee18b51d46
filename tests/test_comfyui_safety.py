"""The pack against a real ComfyUI (COMFYUI_DIR), over the HTTP API: queue-time errors filed
under the input that is wrong; batches, texts, file names and paths that used to reach a raw
error or escape the pack's folders; plugins replaced on disk; Apply Task-Plugin's progress and
cancel. Issue 22, items 7 and 8.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_safety.py
"""

from __future__ import annotations

import gc
import importlib
import io as bytes_io
import json
import os
import shutil
import time
import weakref
from types import SimpleNamespace

import pytest
from PIL import Image

from tests import comfy_support as cs

pytestmark = pytest.mark.comfyui

cs.require_host()

BAD_NAME = b"bad-\xff-name.safetensors"  # not UTF-8


def pack_module(name: str):
    """A module of the pack as ComfyUI imports it, in this process."""
    return importlib.import_module(f"{cs.load_pack().__name__}.nodes.{name}")


@pytest.fixture(scope="module")
def models(sd15_fixtures_dir):
    return cs.model_files(sd15_fixtures_dir)


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory):  # a folder outside ComfyUI's that the server's owner allows
    return tmp_path_factory.mktemp("allowed_data")


@pytest.fixture(scope="module")
def server(tmp_path_factory, models, photo_dir, allowed_dir):
    """A server with a plugin file of a name that is not UTF-8 in models/diff_plugins from the start."""
    instance = cs.ComfyServer(tmp_path_factory.mktemp("comfy"), models, {name: photo_dir / name for name in ("rain.png", "haze.png")})
    plugins = instance.base / "models" / "diff_plugins"
    (plugins / os.fsdecode(BAD_NAME)).write_bytes((plugins / "dehaze.safetensors").read_bytes()[:4096])
    with pytest.MonkeyPatch.context() as patch:  # the server process inherits it
        patch.setenv("DIFF_PLUGIN_DATA_PATHS", str(allowed_dir))
        instance.start()
    yield instance
    instance.stop()


# ---------------------------------------------------------------------- prompts


def loaders(plugin: str = "derain.safetensors", photo: str = "rain.png") -> dict:
    return {
        "img": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": cs.CHECKPOINT}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": cs.CLIP_VISION}},
        "plug": {"class_type": "LoadTaskPlugin", "inputs": {"plugin_name": plugin}},
    }


def apply_inputs(**changes) -> dict:
    values = dict(strength=1.0, start_percent=0.0, end_percent=1.0, resolution=64, tile_size=1536, tile_overlap=256,
                  tile_batch=1, tile_prompt="tile", model=["ckpt", 0], task_plugin=["plug", 0], clip_vision=["cv", 0],
                  vae=["ckpt", 2], image=["img", 0])
    return values | changes


def single_task(plugin: str = "derain.safetensors", seed: int = 1, **apply_changes) -> dict:
    """Load Task-Plugin -> Apply -> KSampler (1 euler step) -> VAE Decode -> Save Image."""
    return loaders(plugin) | {
        "apply": {"class_type": "ApplyTaskPlugin", "inputs": apply_inputs(**apply_changes)},
        "text": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["apply", 0], "positive": ["text", 0], "negative": ["text", 0], "latent_image": ["apply", 1]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"filename_prefix": "safety/restored", "images": ["decode", 0]}},
    }


def multi_task(instruction: str = "remove the rain", **restore_changes) -> dict:
    """Library -> Plugin-Selector -> Restore with Task-Plugins -> Save Image."""
    restore = dict(seed=1, steps=1, later_steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", resolution=64,
                   output_size="original", tile_size=1536, tile_overlap=256, tile_batch=1, tile_prompt="tile", color_fix="none",
                   model=["ckpt", 0], task_plugins=["select", 0], clip_vision=["cv", 0], vae=["ckpt", 2], image=["img", 0])
    prompt = loaders()
    del prompt["plug"]
    return prompt | {
        "library": {"class_type": "LoadTaskPluginLibrary",
                    "inputs": {"tasks": "", "selector_name": "plugin_selector/PromptTunner.pt"}},
        "select": {"class_type": "PluginSelector", "inputs": {
            "image": ["img", 0], "instruction": instruction, "task_plugins": ["library", 0], "selector": ["library", 1],
            "clip_vision": ["cv", 0], "threshold": 0.0, "clip": ["ckpt", 1]}},
        "restore": {"class_type": "RestoreWithTaskPlugins", "inputs": restore | restore_changes},
        "save": {"class_type": "SaveImage", "inputs": {"filename_prefix": "safety/multi", "images": ["restore", 0]}},
    }


def training(**changes) -> dict:
    values = dict(data_path="", save_name="safety_task", steps=1, batch_size=1, learning_rate=1e-5, resolution=64, seed=0,
                  start_mode="auto", gradient_checkpointing=False, cache_encodings=False, checkpoint_every=0, resume=False,
                  overwrite=False, model=["ckpt", 0], vae=["ckpt", 2], clip_vision=["cv", 0])
    return {"ckpt": loaders()["ckpt"], "cv": loaders()["cv"],
            "train": {"class_type": "TrainTaskPlugin", "inputs": values | changes}}


def refused(server, prompt: dict) -> dict:
    """node id -> [(input_name, details)] of a prompt the server must refuse when queued."""
    status, answer = server.post("/prompt", {"prompt": prompt})
    assert status == 400, answer
    return {node: [(e.get("extra_info", {}).get("input_name"), e["message"] + ": " + e["details"]) for e in entry["errors"]]
            for node, entry in answer["node_errors"].items()}


def run_error(server, prompt: dict) -> dict:
    """The execution_error message of a prompt that is queued and fails when it runs."""
    status, answer = server.post("/prompt", {"prompt": prompt})
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], 600, poll=0.2)
    errors = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert errors, entry["status"]
    return errors[0]


def saved_images(server, history: dict, node: str = "save") -> list[Image.Image]:
    return [Image.open(bytes_io.BytesIO(server.image(info))).convert("RGB") for info in history["outputs"][node]["images"]]


# ---------------------------------------------------------------------- item 7 (a): the input that is wrong


CASES = [  # (prompt, node, input changes, the only inputs named, text of the message)
    ("single", "apply", {"strength": float("nan")}, {"strength"}, "Value nan smaller than min"),
    ("single", "apply", {"end_percent": 1.5}, {"end_percent"}, "bigger than max of 1.0"),
    ("single", "apply", {"resolution": 60}, {"resolution"}, "smaller than min of 64"),
    ("single", "apply", {"tile_prompt": "bogus"}, {"tile_prompt"}, "'bogus' not in"),
    ("single", "apply", {"tile_size": -8}, {"tile_size"}, "smaller than min of 0"),
    ("single", "apply", {"tile_overlap": 9000}, {"tile_overlap"}, "bigger than max of 8192"),
    ("single", "plug", {"plugin_name": "x\udc80"}, {"plugin_name"}, "'x\\udc80' is not available"),
    ("multi", "library", {"tasks": "derain\x00"}, {"tasks"}, "control character"),
    ("multi", "library", {"selector_name": "missing.pt"}, {"selector_name"}, "'missing.pt' not in"),
    ("multi", "restore", {"cfg": float("nan")}, {"cfg"}, "Value nan smaller than min"),
    ("multi", "restore", {"sampler_name": "bogus"}, {"sampler_name"}, "'bogus' not in"),
    ("multi", "restore", {"steps": 0}, {"steps"}, "smaller than min of 1"),
    ("multi", "select", {"threshold": float("nan")}, {"threshold"}, "Value nan smaller than min"),
    ("single", "plug", {"plugin_name": "missing.safetensors"}, {"plugin_name"}, "'missing.safetensors' is not available"),
]


@pytest.mark.parametrize("kind,node,changes,named,text", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_queued_mistake_is_filed_under_the_inputs_it_concerns(server, kind, node, changes, named, text):
    """Each error names the input that is wrong (a rule between two inputs: both), never another
    one of the node's inputs, and no other node; nothing is queued."""
    prompt = single_task() if kind == "single" else multi_task()
    prompt[node]["inputs"].update(changes)
    errors = refused(server, prompt)
    assert set(errors) == {node}, errors
    assert {name for name, _ in errors[node]} == named, errors
    assert any(text in details for _, details in errors[node]), errors


@pytest.mark.parametrize("kind,node,changes,text", [
    ("single", "apply", {"tile_size": 100}, "tile_size must be a multiple of 8 (the VAE's factor), got 100"),
    ("single", "apply", {"tile_size": 256, "tile_overlap": 256},
     "tile_overlap (256 px) must be smaller than tile_size (256 px): lower tile_overlap or raise tile_size"),
    ("multi", "restore", {"tile_size": 128, "tile_overlap": 128}, "lower tile_overlap or raise tile_size"),
], ids=["multiple-of-8", "apply-overlap", "restore-overlap"])
def test_a_rule_between_two_inputs_stops_the_node_naming_the_input_to_change(server, kind, node, changes, text):
    """Filed under both inputs when queued, it would mark both widgets: the node stops first thing
    when it runs, its message naming the input to change."""
    prompt = single_task(seed=7) if kind == "single" else multi_task(seed=7)
    prompt[node]["inputs"].update(changes)
    error = run_error(server, prompt)
    assert error["node_id"] == node and text in error["exception_message"], error
    assert error["exception_type"] == "ValueError", error


def test_start_after_end_stops_the_node_with_a_message(server):
    """A rule between two inputs a node cannot file when queued (its one queue-time rule is the
    tiles'): the node stops first thing when it runs, saying which."""
    error = run_error(server, single_task(start_percent=0.8, end_percent=0.2))
    assert error["node_id"] == "apply" and "start_percent (0.8) is after end_percent (0.2)" in error["exception_message"], error


# ---------------------------------------------------------------------- item 7 (b), (c)


def batched(prompt: dict, images: int, masks: int) -> dict:
    """The photo repeated `images` times, and `masks` masks (the red channel of the photo)."""
    prompt["photos"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": images}}
    prompt["mask_photos"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": masks}}
    prompt["masks"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_photos", 0], "channel": "red"}}
    prompt["apply"]["inputs"].update(image=["photos", 0], mask=["masks", 0])
    return prompt


def test_a_mask_batch_that_does_not_fit_the_images_is_refused_with_a_message(server):
    error = run_error(server, batched(single_task(seed=11), images=3, masks=2))
    assert error["node_id"] == "apply", error
    assert "the MASK holds 2 masks for 3 images" in error["exception_message"], error
    assert error["exception_type"] != "RuntimeError"


def test_one_mask_serves_every_image_of_a_batch(server):
    history = server.run_prompt(batched(single_task(seed=12), images=3, masks=1))
    assert len(saved_images(server, history)) == 3


def test_an_instruction_that_is_not_text_is_refused(server):
    """A lone surrogate (JSON's \\ud800) in the instruction: refused when queued, under
    `instruction`; the same text arriving over a link stops the node with the same message."""
    errors = refused(server, multi_task("remove the rain \ud800 please"))
    assert set(errors) == {"select"} and {name for name, _ in errors["select"]} == {"instruction"}, errors
    assert any("lone surrogate U+D800" in details for _, details in errors["select"]), errors
    linked = multi_task()
    linked["text"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "remove the rain \ud800"}}
    linked["select"]["inputs"]["instruction"] = ["text", 0]
    error = run_error(server, linked)
    assert error["node_id"] == "select" and "lone surrogate U+D800" in error["exception_message"], error
    assert error["exception_type"] != "TypeError"


# ---------------------------------------------------------------------- item 8 (a): files that change


def test_a_plugin_replaced_on_disk_is_used_by_the_next_queue(server):
    """The same prompt queued twice, the plugin file replaced (same name, same size) in between:
    the second result is the new plugin's, as a prompt naming that plugin directly gives."""
    plugins = server.base / "models" / "diff_plugins"
    swap = plugins / "swap.safetensors"
    shutil.copyfile(plugins / "derain.safetensors", swap)
    prompt = single_task("swap.safetensors", seed=21)
    first = saved_images(server, server.run_prompt(prompt))[0]
    staged = plugins / ".swap.tmp"
    shutil.copyfile(plugins / "dehaze.safetensors", staged)
    os.replace(staged, swap)
    second = saved_images(server, server.run_prompt(prompt))[0]
    direct = saved_images(server, server.run_prompt(single_task("dehaze.safetensors", seed=21)))[0]
    assert first.tobytes() != second.tobytes()
    assert second.tobytes() == direct.tobytes()


def test_the_loader_keeps_only_the_newest_copy_of_a_changed_file(models, tmp_path, monkeypatch):
    """In process: a plugin file rewritten changes both loaders' fingerprints (ComfyUI runs them
    again) and is loaded again, and the loader lets the old copy go."""
    import folder_paths

    loaders_module = pack_module("loaders")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diff_plugins", ([str(tmp_path)], {".safetensors", ".pt"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    shutil.copyfile(models / "diff_plugins" / "derain.safetensors", tmp_path / "p.safetensors")
    first = loaders_module.load_plugin_handle("p.safetensors")
    assert loaders_module.load_plugin_handle("p.safetensors") is first  # unchanged: the same copy
    gone, library = weakref.ref(first), loaders_module.LoadTaskPluginLibrary.fingerprint_inputs("", "none")
    single = loaders_module.LoadTaskPlugin.fingerprint_inputs("p.safetensors")
    shutil.copyfile(models / "diff_plugins" / "dehaze.safetensors", tmp_path / "p.tmp")
    os.replace(tmp_path / "p.tmp", tmp_path / "p.safetensors")
    assert loaders_module.LoadTaskPluginLibrary.fingerprint_inputs("", "none") != library
    assert loaders_module.LoadTaskPlugin.fingerprint_inputs("p.safetensors") != single
    assert loaders_module.load_plugin_handle("p.safetensors").task == "dehaze"
    del first
    gc.collect()
    assert gone() is None, "the old copy is still held"
    assert [key for key in loaders_module._loaded if key[1] == str(tmp_path / "p.safetensors")] == [
        ("plugin", str(tmp_path / "p.safetensors"))]


# ---------------------------------------------------------------------- item 8 (b): names and paths


def written(server) -> set:  # everything under the server's output/ and models/
    return {os.path.join(root, name) for top in ("output", "models") for root, dirs, files in os.walk(server.base / top)
            for name in dirs + files}


@pytest.mark.parametrize("changes,named,text", [
    ({"save_name": ".."}, "save_name", "is not a plain file name"),
    ({"save_name": "../x"}, "save_name", "is not a plain file name"),
    ({"save_name": "x\udc80"}, "save_name", "lone surrogate"),
    ({"save_name": "x" * 300}, "save_name", "a file name of at most"),
    ({"data_path": "/etc"}, "data_path", "data_path '/etc' is outside ComfyUI's input and output folders"),
    ({"data_path": "../../../etc"}, "data_path", "is outside ComfyUI's input and output folders"),
], ids=["dotdot", "dotdot-slash", "surrogate", "too-long", "absolute", "relative-climb"])
def test_training_names_and_data_paths_stay_inside(server, changes, named, text):
    """A save_name is refused when queued, filed under save_name alone; a data_path (which an
    earlier node of the prompt may write) stops the node when it runs, before any model is used.
    Nothing is written; the message says how the server's owner can allow another folder."""
    before = written(server)
    if named == "save_name":
        errors = refused(server, training(**changes))
        assert set(errors) == {"train"}, errors
        assert {name for name, _ in errors["train"]} == {"save_name"}, errors
        assert any(text in details for _, details in errors["train"]), errors
    else:
        error = run_error(server, training(**changes))
        assert error["node_id"] == "train" and text in error["exception_message"], error
        assert "DIFF_PLUGIN_DATA_PATHS" in error["exception_message"]
    assert written(server) == before


def test_a_folder_the_owner_allows_is_read(server, allowed_dir):
    """DIFF_PLUGIN_DATA_PATHS names a folder outside ComfyUI's: a data_path there is queued and read
    (here it holds no pairs, which is what the node then says, naming it)."""
    error = run_error(server, training(data_path=str(allowed_dir), save_name="allowed"))
    message = error["exception_message"]
    assert error["node_id"] == "train" and str(allowed_dir) in message and "outside" not in message, error


def test_a_pairs_list_naming_files_outside_is_refused(server, tmp_path):
    """A pairs CSV inside input/ that lists a photo outside the allowed folders: the node stops
    before training, writing no run folder and no plugin."""
    outside = tmp_path / "outside.png"
    Image.new("RGB", (64, 64), "gray").save(outside)
    folder = server.base / "input" / "listing"
    folder.mkdir()
    shutil.copyfile(server.base / "input" / "rain.png", folder / "rain.png")
    (folder / "pairs.csv").write_text(f"image,conditioning_image\n{outside},rain.png\n")
    error = run_error(server, training(data_path="listing/pairs.csv", save_name="listing"))
    message = error["exception_message"]
    assert "1 listed file(s) lie outside the folders data may come from" in message and str(outside) in message, error
    assert "DIFF_PLUGIN_DATA_PATHS" in message  # and how the server's owner may allow a folder
    assert not (server.base / "output" / "diff-plugin-training" / "listing").exists()
    assert not (server.base / "models" / "diff_plugins" / "listing.safetensors").exists()


# ---------------------------------------------------------------------- item 8 (c): names that are not UTF-8


def test_a_file_name_that_is_not_utf8_leaves_object_info_answering(server):
    """One there from the start and one added while the server runs: /object_info answers at
    once, lists neither, and the log names each escaped."""
    plugins = server.base / "models" / "diff_plugins"
    for step in range(2):
        started = time.time()
        info = server.get("/object_info")
        assert time.time() - started < 10
        options = info["LoadTaskPlugin"]["input"]["required"]["plugin_name"][1]["options"]
        assert "derain.safetensors" in options and not [o for o in options if "bad-" in o], options
        if step == 0:
            with open(os.path.join(os.fsencode(plugins), b"more-\xfe.safetensors"), "wb") as handle:
                handle.write(b"\x00" * 64)
    log = server.log_text()
    assert "bad-\\udcff-name.safetensors is left out" in log and "more-\\udcfe.safetensors is left out" in log, log[-3000:]
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if "diff-plugin" in line)


# ---------------------------------------------------------------------- item 8 (d): progress and cancel


def tiled_apply(tile_size: int, strength: float) -> dict:
    """Apply Task-Plugin alone (its LATENT saved), on a photo in many tiles with an Fp per tile."""
    return loaders() | {
        "apply": {"class_type": "ApplyTaskPlugin", "inputs": apply_inputs(resolution=128, tile_size=tile_size, tile_overlap=32,
                                                                          strength=strength)},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["apply", 1], "filename_prefix": "safety/latent"}},
    }


def test_apply_shows_its_progress_and_stops_when_cancelled(server):
    messages = cs.WebSocketMessages(server)
    status, answer = server.post("/prompt", {"prompt": tiled_apply(96, 0.5), "client_id": messages.client_id})
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], 600, poll=0.2)
    assert entry["status"]["status_str"] == "success", entry["status"]
    # One step per tile's CLIP vision call and one for the VAE encode (whose tiled encode shows a
    # bar of ComfyUI's own in between).
    steps = [(p["value"], p["max"]) for p in messages.of("progress", "apply")]
    total = steps[0][1]
    assert total >= 3 and [v for v, m in steps if m == total] == list(range(1, total + 1)), steps

    status, answer = server.post("/prompt", {"prompt": tiled_apply(64, 0.6), "client_id": messages.client_id})
    assert status == 200, answer
    deadline = time.time() + 300
    while not [p for p in messages.of("progress", "apply") if p["prompt_id"] == answer["prompt_id"]]:
        assert time.time() < deadline, server.log_text()[-3000:]
        time.sleep(0.05)
    server.post("/interrupt", {})
    entry = server.wait(answer["prompt_id"], 600, poll=0.2)
    interrupted = [data for kind, data in entry["status"]["messages"] if kind == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_id"] == "apply", entry["status"]
    reached = [p for p in messages.of("progress", "apply") if p["prompt_id"] == answer["prompt_id"]]
    assert reached[-1]["value"] < reached[-1]["max"], reached
    assert "save" not in entry.get("outputs", {})


def test_selector_scores_that_are_not_finite_reach_the_browser_as_text(models, monkeypatch):
    """Plugin-Selector's scores drawn on the node go as JSON a browser parses: an infinite or NaN
    score as its text (as Image Metrics sends an infinite PSNR)."""
    import torch

    select, plugin_types = pack_module("select"), pack_module("plugin_types")
    scores = SimpleNamespace(format=lambda: "derain inf", as_dict=lambda: {
        "scores": {"derain": float("inf"), "dehaze": float("nan")}, "null": float("-inf"), "threshold": 0.0, "selected": ["derain"]})
    monkeypatch.setattr(select, "select_plugins", lambda *args: (plugin_types.PluginSet([]), [scores]))
    result = select.PluginSelector.execute(torch.zeros(1, 8, 8, 3), "remove the rain", plugin_types.PluginSet([]), object(), None, 0.0)
    sent = json.loads(json.dumps(result.ui, allow_nan=False))["diff_plugin_scores"][0]
    assert sent["scores"] == {"derain": "inf", "dehaze": "nan"} and sent["null"] == "-inf"


def test_the_shipped_synthetic_pairs_run_again_as_shipped(server):
    """Issue 32 item 2: Synthesize Degraded Pairs as the training workflow ships it (save_to
    'diff-plugin-synthetic/rain', overwrite off), run twice with ComfyUI's cache emptied between:
    the second run finds its own pairs and keeps them, untouched. Other pairs in that folder (another
    seed) stop the node with a message naming its own inputs, as a ValueError."""
    shipped = json.loads((cs.REPO / "example_workflows" / "api" / "diff_plugin_train_task_plugin.json").read_text())
    synth = next(node for node in shipped.values() if node["class_type"] == "SynthesizeDegradedPairs")
    prompt = {"img": {"class_type": "LoadImage", "inputs": {"image": "rain.png"}},
              "synth": {"class_type": "SynthesizeDegradedPairs", "inputs": synth["inputs"] | {"clean_images": ["img", 0]}},
              "show": {"class_type": "PreviewImage", "inputs": {"images": ["synth", 0]}}}
    folder = server.base / "input" / synth["inputs"]["save_to"]
    server.run_prompt(prompt)
    stamps = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}
    assert len(stamps) > 4 and (folder / "pairs.csv").is_file()
    server.post("/free", {"free_memory": True})  # the next prompt runs every node again
    time.sleep(1)
    server.run_prompt(prompt)
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == stamps
    prompt["synth"]["inputs"]["seed"] = synth["inputs"]["seed"] + 1
    error = run_error(server, prompt)
    assert error["node_id"] == "synth" and error["exception_type"] == "ValueError", error
    message = error["exception_message"]
    assert "save_to 'diff-plugin-synthetic/rain' already holds other pairs" in message and "overwrite" in message, error
    assert "--overwrite" not in message and " -o" not in message, error
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == stamps


def test_compose_chain_wired_to_apply_is_refused_with_a_message(server):
    """Issue 32 item 4: Compose Task-Plugins' task_plugin output is the plugins in one pass; with
    compose = chain, Apply Task-Plugin stops, saying what to connect instead."""
    prompt = single_task(seed=11)
    # derain and deblur: an earlier test leaves a second dehaze plugin in this server's folder
    prompt["library"] = {"class_type": "LoadTaskPluginLibrary", "inputs": {"tasks": "derain, deblur", "selector_name": "none"}}
    prompt["compose"] = {"class_type": "ComposeTaskPlugins", "inputs": {
        "task_plugins": ["library", 0], "compose": "chain", "joint_context": "attention", "weights": ""}}
    prompt["apply"]["inputs"]["task_plugin"] = ["compose", 1]
    error = run_error(server, prompt)
    assert error["node_id"] == "apply" and "compose = chain" in error["exception_message"], error
    assert "set compose to joint" in error["exception_message"] and "Restore with Task-Plugins" in error["exception_message"]
    prompt["compose"]["inputs"]["compose"] = "joint"
    server.run_prompt(prompt)  # the same graph in one pass runs


def test_the_selector_threshold_starts_at_zero(server):
    """Issue 32 item 5: the reference rule counts a negative score as 0, so a θ below 0 selected
    every plugin while the tooltip said 'scoring above it': θ's range starts at 0, and the host
    refuses less under threshold alone."""
    info = server.get("/object_info/PluginSelector")["PluginSelector"]["input"]["required"]["threshold"][1]
    assert info["min"] == 0.0 and "starts at 0" in info["tooltip"]
    prompt = multi_task()
    prompt["select"]["inputs"]["threshold"] = -0.3
    errors = refused(server, prompt)
    assert errors == {"select": [("threshold", "Value -0.3 smaller than min of 0.0: threshold")]}, errors
