"""The example workflows: generated from one description (UI and API twins in step), widget values
where ComfyUI's frontend puts them, the models they name, and a layout with nothing overlapping.

No ComfyUI needed; tests/test_workflows_frontend.py loads the same files in the real frontend.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.script_support import script

REPO = Path(__file__).resolve().parent.parent
builder = script("build_example_workflows")

WORKFLOWS = builder.workflows()
NOTE_TYPES = {"Note", "MarkdownNote"}  # the frontend's own notes: never in a prompt
NODE_TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
GROUP_TITLE_HEIGHT = 34  # a group's title bar at font size 24


def ui(workflow) -> dict:
    return json.loads(builder.ui_path(workflow).read_text())


def api(workflow) -> dict:
    return json.loads(builder.api_path(workflow).read_text())


def by_key(param):
    return param.key


each_workflow = pytest.mark.parametrize("workflow", WORKFLOWS, ids=by_key)


def test_workflow_files_are_up_to_date():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_example_workflows.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_blueprint_is_the_one_plugin_workflow_as_one_node():
    """subgraphs/: the example's nodes and values inside, the photo in, the result out, and the
    plugin, strength and steps exposed; up to date with the example workflow it is made from."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_blueprint.py"), "--check"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = (REPO / "subgraphs").glob("*.json")
    [definition] = json.loads(path.read_text())["definitions"]["subgraphs"]
    example = json.loads((REPO / "example_workflows" / "Diff-Plugin - Restore a photo with one Task-Plugin.json").read_text())
    inner = {n["id"]: n for n in definition["nodes"]}
    kept = [n for n in example["nodes"] if n["type"] not in ("MarkdownNote", "LoadImage", "SaveImage")]
    assert {n["id"]: (n["type"], n["widgets_values"]) for n in kept} == {i: (n["type"], n["widgets_values"]) for i, n in inner.items()}
    assert [(i["name"], i["type"]) for i in definition["inputs"]] == [("image", "IMAGE"), ("plugin", "COMBO"), ("strength", "FLOAT"),
                                                                      ("steps", "INT")]
    targets = {link["id"]: (inner[link["target_id"]]["type"], link["target_slot"]) for link in definition["links"]
               if link["origin_id"] == -10}
    fed = {name: sorted(targets[i] for i in entry["linkIds"]) for name, entry in ((e["name"], e) for e in definition["inputs"])}
    widget = {(n["type"], slot): i["widget"]["name"] for n in inner.values() for slot, i in enumerate(n["inputs"]) if "widget" in i}
    assert fed["image"] == [("ApplyTaskPlugin", 4), ("GetImageSize", 0)]
    assert [widget[fed[name][0]] for name in ("plugin", "strength", "steps")] == ["plugin_name", "strength", "steps"]
    [out] = [link for link in definition["links"] if link["target_id"] == -20]
    assert inner[out["origin_id"]]["type"] == "ImageScale"


def test_the_template_browser_lists_exactly_the_workflows_with_their_thumbnails():
    """The browser lists every example_workflows/*.json (by file name) and asks for <name>.jpg."""
    listed = {p.stem for p in (REPO / "example_workflows").glob("*.json")}
    assert listed == {w.title for w in WORKFLOWS}
    for name in listed:
        assert (REPO / "example_workflows" / f"{name}.jpg").read_bytes()[:3] == b"\xff\xd8\xff", name
    assert {p.stem for p in (REPO / "example_workflows" / "api").glob("*.json")} == {w.key for w in WORKFLOWS}


def test_titles_name_what_each_workflow_does():
    """The file name is the title the browser shows (and, with '-' and '_' as spaces, the description):
    words, not a code name; characters that need no escaping in a URL path or a file name anywhere."""
    titles = [w.title for w in WORKFLOWS]
    assert len(set(titles)) == len(titles)
    for title in titles:
        assert re.fullmatch(r"Diff-Plugin - [A-Z][A-Za-z0-9 ,()-]+", title), title
        assert "_" not in title and len(title.split()) >= 5, title


# ---------------------------------------------------------------------- widgets as the frontend makes them


def frontend_widget_names(node_type: str) -> list[str]:
    """ComfyUI's frontend (1.27): a widget per widget input, in schema order; after an INT with
    control_after_generate, or (unasked) an INT named seed / noise_seed, a control widget; after
    LoadImage's image, its upload button. The INT kinds and explicit flags come from the generator's
    table, which the browser test checks against the real frontend."""
    names = []
    for name, kind in builder.NODE_TYPES[node_type][1]:
        names.append(name)
        flag = builder.CONTROL_FLAGS.get((node_type, name))
        if kind == "INT" and (flag if flag is not None else name in ("seed", "noise_seed")):
            names.append("control_after_generate")
    return names


def named_values(node: dict) -> dict:
    names = frontend_widget_names(node["type"])
    assert len(node["widgets_values"]) == len(names), (node["type"], names, node["widgets_values"])
    return dict(zip(names, node["widgets_values"]))


@each_workflow
def test_every_seed_has_its_control_widget_value(workflow):
    """The frontend inserts a control_after_generate widget after every INT seed (KSampler, Restore,
    and also Synthesize Degraded Pairs and Train Task-Plugin, whose schemas do not ask for it):
    without its value in widgets_values, every later widget is read one place off."""
    seeds = 0
    for node in ui(workflow)["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        values = named_values(node)
        if "seed" in values:
            seeds += 1
            names = list(values)
            assert names[names.index("seed") + 1] == "control_after_generate"
            assert values["control_after_generate"] == "fixed", node["type"]  # as saved: same result, training resumes
            assert isinstance(values["seed"], int)
    assert seeds >= 1


def test_the_training_node_reads_back_its_settings():
    """The case seen in the frontend: Train Task-Plugin showed start_mode false, checkpoint_every 1,
    resume false and gradient checkpointing on, one widget off from what was saved."""
    workflow = next(w for w in WORKFLOWS if w.key == "diff_plugin_train_task_plugin")
    nodes = {n["type"]: n for n in ui(workflow)["nodes"]}
    train = named_values(nodes["TrainTaskPlugin"])
    assert (train["start_mode"], train["checkpoint_every"], train["resume"], train["gradient_checkpointing"]) == ("auto", 250, True, False)
    pairs = named_values(nodes["SynthesizeDegradedPairs"])
    assert (pairs["save_to"], pairs["overwrite"], pairs["seed"]) == ("diff-plugin-synthetic/rain", False, 0)


@each_workflow
def test_api_twins_mirror_the_ui_files(workflow):
    """Same nodes, same links, and every widget value (read as the frontend reads widgets_values)
    equal to the API twin's input: what the frontend sends is what the scripts send."""
    graph, prompt = ui(workflow), api(workflow)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert {str(i): n["type"] for i, n in nodes.items() if n["type"] not in NOTE_TYPES} == {k: v["class_type"] for k, v in prompt.items()}
    for link_id, source, slot, target, target_slot, kind in graph["links"]:
        socket = nodes[target]["inputs"][target_slot]
        assert socket["link"] == link_id and socket["type"] == kind
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert prompt[str(target)]["inputs"][socket["name"]] == [str(source), slot]
    for node_id, node in nodes.items():
        if node["type"] in NOTE_TYPES:
            continue
        inputs = prompt[str(node_id)]["inputs"]
        linked = {s["name"] for s in node["inputs"] if s["link"] is not None}
        for name, value in named_values(node).items():
            if name in ("control_after_generate", "upload") or name in linked:
                continue  # frontend-only widgets; a linked widget's value comes from its link
            assert inputs[name] == value, (workflow.key, node["type"], name)
        widget_inputs = set(inputs) - linked
        assert widget_inputs <= set(named_values(node)), (node["type"], widget_inputs)


# ---------------------------------------------------------------------- the models they name


LOADER_FOLDERS = {  # ComfyUI's loaders: the widget that names the file and its models folder
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "CLIPVisionLoader": ("clip_name", "clip_vision"),
}


@each_workflow
def test_models_entries_name_the_loaders_file_and_folder(workflow):
    """Every core loader carries a `models` entry {name, url, directory} (the workflow_templates
    specification) whose name is the loader's widget value and whose directory is its models
    folder, with a link the frontend will download from (huggingface.co, a .safetensors file)."""
    entries = 0
    for node in ui(workflow)["nodes"]:
        models = node.get("properties", {}).get("models")
        if node["type"] not in LOADER_FOLDERS:
            assert models is None, f"{node['type']} names models but is not a loader"
            continue
        widget, folder = LOADER_FOLDERS[node["type"]]
        value = named_values(node)[widget]
        assert models and len(models) == 1, node["type"]
        (entry,) = models
        assert set(entry) == {"name", "url", "directory"}
        assert entry["name"] == value and entry["directory"] == folder, (entry, value, folder)
        assert entry["name"].endswith(".safetensors")
        assert re.fullmatch(r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/[\w./-]+\.safetensors(\?download=true)?", entry["url"]), entry["url"]
        entries += 1
    assert entries == 2  # the checkpoint and CLIP vision, in every workflow


def test_the_checkpoint_is_named_as_comfyuis_own_sd15_templates_name_it():
    for workflow in WORKFLOWS:
        (checkpoint,) = [n for n in ui(workflow)["nodes"] if n["type"] == "CheckpointLoaderSimple"]
        assert checkpoint["properties"]["models"] == [{
            "name": "v1-5-pruned-emaonly-fp16.safetensors",
            "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true",
            "directory": "checkpoints",
        }]


@each_workflow
def test_a_note_says_where_the_task_plugins_come_from(workflow):
    notes = [n["widgets_values"][0] for n in ui(workflow)["nodes"] if n["type"] in NOTE_TYPES]
    text = "\n".join(notes)
    for needed in ("github.com/yuhaoliu7456/Diff-Plugin", "CC BY-NC-SA 4.0", "diffplugin convert", "models/diff_plugins",
                   "tpb.pt", "scb/", builder.CHECKPOINT, builder.CLIP_VISION):
        assert needed in text, f"{workflow.title}: the notes do not mention {needed}"


# ---------------------------------------------------------------------- the layout


def node_box(node: dict) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of a node with its title bar."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - NODE_TITLE_HEIGHT, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(box, outer) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


@each_workflow
def test_nothing_overlaps_and_every_group_holds_its_nodes(workflow):
    graph = ui(workflow)
    boxes = {n["id"]: node_box(n) for n in graph["nodes"]}
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not overlap(boxes[a], boxes[b]), f"{workflow.title}: nodes {a} and {b} overlap"
    groups = {g["title"]: (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2], g["bounding"][1] + g["bounding"][3])
              for g in graph["groups"]}
    assert len(groups) >= 3
    titles = list(groups)
    for i, a in enumerate(titles):
        for b in titles[i + 1:]:
            assert not overlap(groups[a], groups[b]), f"groups {a!r} and {b!r} overlap"
    for node in graph["nodes"]:
        holders = [t for t, g in groups.items() if overlap(boxes[node["id"]], g)]
        if node["type"] in NOTE_TYPES:
            assert not holders, f"note {node['id']} lies on group {holders}"
            continue
        assert len(holders) == 1, f"{node['type']} {node['id']} is in groups {holders}"
        x0, y0, x1, y1 = groups[holders[0]]
        assert inside(boxes[node["id"]], (x0, y0 + GROUP_TITLE_HEIGHT, x1, y1)), f"{node['type']} {node['id']} sticks out of {holders[0]!r}"


@each_workflow
def test_group_titles_fit_their_groups(workflow):
    """At 24 px a title's characters average under 11 px (Arial; the browser test measures them):
    a longer title runs over the next group."""
    for group in ui(workflow)["groups"]:
        assert len(group["title"]) * 11 + 8 <= group["bounding"][2], group["title"]


@each_workflow
def test_links_read_left_to_right(workflow):
    """A link goes to a node further right, or further down the same column."""
    graph = ui(workflow)
    pos = {n["id"]: n["pos"] for n in graph["nodes"]}
    for _, source, _, target, _, _ in graph["links"]:
        (sx, sy), (tx, ty) = pos[source], pos[target]
        assert sx < tx or (sx == tx and sy < ty), f"{workflow.title}: link {source} -> {target} runs backwards"
    group_x = [g["bounding"][0] for g in graph["groups"]]
    assert group_x == sorted(group_x) and all(g["bounding"][1] == graph["groups"][0]["bounding"][1] for g in graph["groups"])
    assert [g["title"][0] for g in graph["groups"]] == [str(i + 1) for i in range(len(graph["groups"]))]  # numbered steps


def test_the_region_workflow_restores_the_painted_mask():
    """The mask is the one painted on the photo in the mask editor: LoadImage's MASK output, of the
    same photo Apply Task-Plugin restores; no fixed-size masks."""
    workflow = next(w for w in WORKFLOWS if w.key == "diff_plugin_region_mask")
    prompt = api(workflow)
    (apply,) = [n for n in prompt.values() if n["class_type"] == "ApplyTaskPlugin"]
    photo, slot = apply["inputs"]["mask"]
    assert prompt[photo]["class_type"] == "LoadImage" and slot == 1  # LoadImage's outputs: IMAGE, MASK
    assert apply["inputs"]["image"] == [photo, 0]
    assert not [n for n in prompt.values() if n["class_type"] in ("SolidMask", "MaskComposite")]


@each_workflow
def test_saved_sizes_cover_the_node_contents(workflow):
    """A lower bound of the frontend's own size for a node (title, a row per socket, a row per
    widget): a smaller saved size is grown when loaded and covers the node below. The browser test
    compares with the frontend's computeSize."""
    for node in ui(workflow)["nodes"]:
        rows = max(len(node["inputs"]) - sum("widget" in s for s in node["inputs"]), len(node["outputs"]))
        widgets = len([name for name in frontend_widget_names(node["type"]) if name != "upload"])
        assert node["size"][1] >= rows * 20 + widgets * 20 + 6, (node["type"], node["size"])
        assert node["size"][0] >= 300, node["type"]


def test_the_readmes_convert_step_gives_exactly_the_files_the_workflows_name(tmp_path, fixtures_dir, selector_file):
    """README, 'First restore': `diffplugin convert path/to/pre-trained -o models/diff_plugins` on the
    authors' release layout (<task>/tpb.pt + scb/, plugin_selector/PromptTunner.pt), through the real
    entry point; every file under diff_plugins that a workflow names is among what it wrote, and
    every task a library node asks for has its file."""
    import shutil

    release = tmp_path / "pre-trained"
    for task in ("derain", "dehaze", "desnow"):  # the tasks the workflows use, with the tiny plugins' weights
        shutil.copytree(fixtures_dir / "tiny" / "derain", release / task)
    shutil.copytree(selector_file.parent, release / "plugin_selector")
    out = tmp_path / "models" / "diff_plugins"
    result = subprocess.run([sys.executable, "-m", "plugin_core", "convert", str(release), "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    written = {p.name for p in out.iterdir()}
    named, tasks = set(), set()
    for workflow in WORKFLOWS:
        for node in api(workflow).values():
            inputs = node["inputs"]
            if node["class_type"] == "LoadTaskPlugin":
                named.add(inputs["plugin_name"])
            if node["class_type"] == "LoadTaskPluginLibrary":
                tasks.update(t.strip() for t in inputs["tasks"].split(",") if t.strip())
                if inputs["selector_name"] != "none":
                    named.add(inputs["selector_name"])
    assert named and "selector.safetensors" in named
    assert named <= written, f"the workflows name {sorted(named - written)}, which convert does not write ({sorted(written)})"
    assert {f"{task}.safetensors" for task in tasks} <= written
