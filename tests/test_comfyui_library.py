"""The pack in ComfyUI's node library, in a real ComfyUI with the newest frontend (FRONTEND_NEWEST,
1.58.1): typing what a user types ("derain", "remove rain", "restore", ...) in the node search
finds the node that does it (the nodes' search aliases, nodes/search.py); the rarely changed
inputs reach the frontend marked advanced, where its Vue renderer folds them away; and the
one-plugin restore blueprint (subgraphs/, scripts/build_blueprint.py) is listed by the host's
/global_subgraphs route (nodes/blueprints.py on this host), found by the search, placed as one
node with the photo, plugin, strength and steps on it, and restores a photo when queued.

    COMFYUI_DIR=/path/to/ComfyUI FRONTEND_NEWEST=/path/to/static CHROMIUM=/usr/bin/chromium \\
        $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_library.py
"""

from __future__ import annotations

import io
import json
import os
import types

import pytest
from PIL import Image

from tests import comfy_support as cs
from tests.frontend_support import browser, open_page  # noqa: F401  (browser: a fixture)
from tests.script_support import script

pytestmark = pytest.mark.comfyui

cs.require_host("the node library tests")

pictures = script("help_pictures")

BLUEPRINT = "Restore a photo with one Task-Plugin"
# What a user types -> the nodes any of which does it, one of them among the first results.
SEARCHES = {
    "derain": {"Restore with Task-Plugins", "Apply Task-Plugin", BLUEPRINT},
    "dehaze": {"Restore with Task-Plugins", "Apply Task-Plugin", BLUEPRINT},
    "remove rain": {"Restore with Task-Plugins", "Apply Task-Plugin", BLUEPRINT},
    "restore": {"Restore with Task-Plugins", BLUEPRINT},
    "denoise photo": {"Restore with Task-Plugins", "Apply Task-Plugin"},
}
ADVANCED = {"RestoreWithTaskPlugins": {"seed", "tile_size", "tile_overlap", "tile_batch", "tile_prompt", "color_fix", "same_noise"},
            "ApplyTaskPlugin": {"tile_size", "tile_overlap", "tile_batch", "tile_prompt"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd15_fixtures_dir, photo_dir):
    if not os.path.isdir(os.environ.get("FRONTEND_NEWEST") or ""):
        pytest.skip("FRONTEND_NEWEST does not name a frontend's static folder (.ci/comfy_host prints one)")
    models = cs.model_files(sd15_fixtures_dir)
    started = cs.ComfyServer(tmp_path_factory.mktemp("comfy"), models, cs.workflow_photos(photo_dir),
                             front_end_root=os.environ["FRONTEND_NEWEST"]).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def page(browser, server, tmp_path_factory):  # noqa: F811
    sync_api, playwright, chromium = browser
    from tests.frontend_support import CHROMIUM_ARGS

    context = playwright.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("profile")), executable_path=chromium,
                                                           args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1000})
    errors = []
    opened = context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    open_page(opened, server.url, sync_api)
    yield opened
    context.close()
    assert not [e for e in errors if "diff-plugin" in e or "extensions/" in e], errors


def search(page, text: str) -> list[str]:
    return pictures.open_search(page, text)


@pytest.mark.parametrize("text", SEARCHES)
def test_the_search_finds_the_node_a_user_means(page, text):
    found = search(page, text)
    page.keyboard.press("Escape")
    assert SEARCHES[text] & set(found[:5]), f"'{text}' found {found[:8]}"


def test_the_rarely_changed_inputs_reach_the_frontend_as_advanced(server, page):
    info = server.get("/object_info")
    for node, names in ADVANCED.items():
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        marked = {name for name, spec in inputs.items() if len(spec) > 1 and spec[1].get("advanced")}
        assert marked == names, node
    shown = page.evaluate("""() => {
        const node = LiteGraph.createNode('RestoreWithTaskPlugins');
        return node.widgets.filter(w => w.options?.advanced).map(w => w.name); }""")
    assert set(shown) == ADVANCED["RestoreWithTaskPlugins"]


def test_the_blueprint_is_listed_by_the_host(server):
    listed = server.get("/api/global_subgraphs")
    [(key, entry)] = [(k, e) for k, e in listed.items() if e["name"] == BLUEPRINT]
    assert entry["info"]["node_pack"] == "diff-plugin" and "data" not in entry
    assert "derain" in entry["info"]["search_aliases"]
    data = json.loads(server.get(f"/api/global_subgraphs/{key}")["data"])
    assert data == json.loads((cs.REPO / "subgraphs" / f"{BLUEPRINT}.json").read_text())


def test_the_blueprint_routes_are_left_to_a_host_that_has_them():
    cs.load_pack()
    from diff_plugin_pack_under_test.nodes import blueprints

    with_manager = types.SimpleNamespace(subgraph_manager=object(), routes=[])
    assert blueprints.serve(with_manager) is False and with_manager.routes == []
    served_already = types.SimpleNamespace(routes=[types.SimpleNamespace(path=blueprints.ROUTE)])
    assert blueprints.serve(served_already) is False


PLACE_AND_QUEUE = """async ([title, photo]) => {
    app.graph.clear();
    const sub = app.graph.nodes.find(n => n.title === title);
    const values = {plugin: 'dehaze.safetensors', strength: 0.5, steps: 2};
    const placed = app.graph.nodes.find(n => n.isSubgraphNode?.());
    for (const w of placed.widgets) if (w.name in values) w.value = values[w.name];
    const load = LiteGraph.createNode('LoadImage'); app.graph.add(load);
    load.widgets.find(w => w.name === 'image').value = photo;
    const save = LiteGraph.createNode('SaveImage'); app.graph.add(save);
    load.connect(0, placed, 0); placed.connect(0, save, 0);
    return (await app.graphToPrompt()).output; }"""


def test_the_blueprint_is_one_node_that_restores_a_photo(page, server):
    page.keyboard.press("Escape")
    page.evaluate("() => app.graph.clear()")
    assert BLUEPRINT in search(page, "derain")
    page.get_by_role("option", name=BLUEPRINT).first.click()
    page.wait_for_function("() => app.graph.nodes.some(n => n.isSubgraphNode?.())", timeout=10_000)
    node = page.evaluate("""() => { const n = app.graph.nodes.find(n => n.isSubgraphNode?.());
        return {inputs: n.inputs.map(i => i.name), widgets: n.widgets.map(w => [w.name, w.value]),
                outputs: n.outputs.map(o => o.type)}; }""")
    assert node == {"inputs": ["image", "plugin", "strength", "steps"], "outputs": ["IMAGE"],
                    "widgets": [["plugin", "derain.safetensors"], ["strength", 1], ["steps", 20]]}
    prompt = page.evaluate(PLACE_AND_QUEUE.replace("app.graph.clear();", ""), [BLUEPRINT, "demo_rain.jpg"])
    by_type = {entry["class_type"]: entry["inputs"] for entry in prompt.values()}
    assert by_type["LoadTaskPlugin"]["plugin_name"] == "dehaze.safetensors"
    assert by_type["ApplyTaskPlugin"]["strength"] == 0.5 and by_type["KSampler"]["steps"] == 2
    assert by_type["KSampler"]["cfg"] == 1 and by_type["KSampler"]["denoise"] == 1
    [saved] = server.run_prompt(prompt)["outputs"].values()
    with Image.open(io.BytesIO(server.image(saved["images"][0]))) as restored, \
            Image.open(server.base / "input" / "demo_rain.jpg") as photo:
        assert restored.size == photo.size
