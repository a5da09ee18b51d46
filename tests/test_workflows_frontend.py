"""Every UI workflow in ComfyUI's own frontend (headless Chromium, a real ComfyUI with this pack):
each widget reads back the value the workflow means, the saved widgets and the prompt the frontend
would queue are what the files hold, nothing overlaps at the sizes the frontend gives the nodes,
the models entries are offered for download, and the template browser shows the titles.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_workflows_frontend.py

Needs playwright (pip install playwright) and Chromium (apt install chromium, or CHROMIUM=/path).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys

import pytest

from tests import comfy_support as cs

pytestmark = pytest.mark.comfyui

cs.require_host("the browser tests")

REPO = cs.REPO
_spec = importlib.util.spec_from_file_location("build_example_workflows", REPO / "scripts" / "build_example_workflows.py")
builder = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))  # scripts/ is no package
if not hasattr(builder, "workflows"):
    _spec.loader.exec_module(builder)

WORKFLOWS = builder.workflows()
each_workflow = pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.key)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd15_fixtures_dir, photo_dir):
    """A ComfyUI with this pack, the plugins and the workflows' photos, and no checkpoint or CLIP
    vision at all: loading a workflow must offer both for download."""
    models = tmp_path_factory.mktemp("models")
    (models / "diff_plugins").symlink_to(cs.model_files(sd15_fixtures_dir) / "diff_plugins", target_is_directory=True)
    photos = cs.workflow_photos(photo_dir)
    photos["example.png"] = cs.COMFYUI_DIR / "input" / "example.png"
    instance = cs.ComfyServer(tmp_path_factory.mktemp("comfy"), models, photos, max_side=640).start()
    try:
        failed = [line for line in instance.log_text().splitlines() if "IMPORT FAILED" in line and "diff-plugin" in line]
        assert not failed, f"the pack did not import:\n{instance.log_text()[-4000:]}"
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def browser():
    """Playwright and a Chromium, or a skip saying which is missing (before a server is started)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install playwright)")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("the browser tests need Chromium (apt install chromium, or CHROMIUM=/path/to/it)")
    return sync_api, chromium


@pytest.fixture(scope="module")
def page(browser, server, tmp_path_factory):
    sync_api, chromium = browser
    errors = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack}"))
            page.goto(server.url)
            page.wait_for_function("window.app && window.app.graph", timeout=120_000)
            # The frontend loads its start-up workflow (and on a first visit opens the template
            # browser) once it is ready: wait for that, then close every dialog.
            with contextlib.suppress(sync_api.TimeoutError):
                page.wait_for_function("window.app.graph.nodes.length > 0", timeout=30_000)
            close_dialogs(page)
            yield page
        finally:
            context.close()
    assert not [e for e in errors if "diff-plugin" in e or "extensions/" in e], errors


def close_dialogs(page):
    for _ in range(5):
        if not page.locator(".p-dialog").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not page.locator(".p-dialog").count(), "a dialog did not close"


def load(page, workflow) -> dict:
    """Load the UI file as the template browser does, wait for the photos, close the missing-models
    dialog; what the frontend shows, keeps and would queue."""
    graph = json.loads(builder.ui_path(workflow).read_text())
    close_dialogs(page)
    page.evaluate("async graph => { await app.loadGraphData(graph); }", graph)
    page.wait_for_function("n => app.graph.nodes.length === n", arg=len(graph["nodes"]), timeout=30_000)
    page.wait_for_function("() => app.graph.nodes.filter(n => n.type === 'LoadImage').every(n => n.imgs?.length)", timeout=30_000)
    dialog = ""
    if any("models" in n["properties"] for n in graph["nodes"]):
        page.wait_for_selector(".comfy-missing-models", timeout=30_000)
        dialog = page.inner_text(".comfy-missing-models")
    close_dialogs(page)
    page.wait_for_timeout(500)  # let sizes settle after the images
    shown = page.evaluate("""async () => ({
        nodes: app.graph.nodes.map(n => ({
            id: n.id, type: n.type, pos: [...n.pos], size: [...n.size], computed: [...n.computeSize()],
            widgets: (n.widgets ?? []).filter(w => w.serialize !== false).map(w => [w.name, w.value]),
            saved: n.serialize().widgets_values ?? [] })),
        groups: app.graph.groups.map(g => {
            const ctx = document.createElement("canvas").getContext("2d");
            ctx.font = `${g.font_size}px ${LiteGraph.GROUP_FONT}`;  // as LGraphGroup draws its title
            return { title: g.title, bounding: [...g._bounding], titleHeight: g.titleHeight,
                     titleWidth: ctx.measureText(g.title).width + 2 * (g.constructor.padding ?? 4) };
        }),
        titleHeight: LiteGraph.NODE_TITLE_HEIGHT,
        prompt: (await app.graphToPrompt()).output })""")
    return {"file": graph, "shown": shown, "dialog": dialog}


@pytest.fixture(scope="module")
def loaded(page):
    return {workflow.key: load(page, workflow) for workflow in WORKFLOWS}


def intended_widgets(node) -> list[tuple[str, object]]:
    """What each widget of a node should show: the description's value; the seeds' control 'fixed';
    LoadImage's upload button 'image'; a widget driven by a link has no value of its own (None)."""
    values = []
    for name in builder.frontend_widgets(node.type):
        if name == "control_after_generate":
            values.append((name, "fixed"))
        elif name == "upload":
            values.append((name, "image"))
        else:
            values.append((name, None if name in node.links else node.widgets[name]))
    return values


# ---------------------------------------------------------------------- tests


def test_the_template_browser_shows_the_titles_and_thumbnails(page, server):
    close_dialogs(page)
    page.click(".templates-tab-button")
    page.get_by_text("diff-plugin", exact=True).first.click()  # the pack's folder name: its category
    cards = page.locator('[data-testid^="template-workflow-"]')
    cards.first.wait_for(timeout=30_000)
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"] img')]
                                    .every(img => img.complete && img.naturalWidth > 0)""", timeout=30_000)
    shown = page.evaluate("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')].map(card => ({
        id: card.dataset.testid, title: card.querySelector('h3').innerText, text: card.innerText,
        thumbnail: [...card.querySelectorAll('img')].map(img => img.naturalWidth) }))""")
    assert sorted(card["title"] for card in shown) == sorted(w.title for w in WORKFLOWS)
    for card in shown:
        assert card["thumbnail"] and all(width == 400 for width in card["thumbnail"]), card  # our 400x300 JPEG
        description = card["title"].replace("-", " ").replace("_", " ")
        assert " ".join(description.split()) in " ".join(card["text"].split())
    # Opening one from the browser loads that graph.
    region = next(w for w in WORKFLOWS if w.key == "diff_plugin_region_mask")
    page.click(f'[data-testid="template-workflow-{region.title}"]')
    expected = len(json.loads(builder.ui_path(region).read_text())["nodes"])
    page.wait_for_function("n => app.graph.nodes.length === n && app.graph.nodes.some(n => n.type === 'ApplyTaskPlugin')",
                           arg=expected, timeout=30_000)
    close_dialogs(page)


@each_workflow
def test_every_widget_reads_back_as_intended(loaded, workflow):
    """Names and values of every widget of every node, as the frontend made them from the saved
    file, against the node descriptions in scripts/build_example_workflows.py."""
    result = loaded[workflow.key]
    nodes = {n.id: n for n in workflow.nodes}
    assert sorted(n["id"] for n in result["shown"]["nodes"]) == sorted(nodes)
    for shown in result["shown"]["nodes"]:
        node = nodes[shown["id"]]
        assert shown["type"] == node.type
        expected = intended_widgets(node)
        assert [name for name, _ in shown["widgets"]] == [name for name, _ in expected], node.type
        for (name, value), (_, want) in zip(shown["widgets"], expected):
            if want is not None:
                assert value == want, f"{workflow.title}: {node.type} {node.id} shows {name}={value!r}, means {want!r}"


@each_workflow
def test_the_frontend_saves_and_queues_what_the_files_hold(loaded, workflow):
    """Serialising the loaded nodes gives the file's widgets_values back, and the prompt the
    frontend would queue is the API twin (same nodes, links and inputs)."""
    result = loaded[workflow.key]
    saved = {n["id"]: n["widgets_values"] for n in result["file"]["nodes"]}
    for shown in result["shown"]["nodes"]:
        assert shown["saved"] == saved[shown["id"]], (shown["type"], shown["saved"], saved[shown["id"]])
    twin = json.loads(builder.api_path(workflow).read_text())
    queued = result["shown"]["prompt"]
    assert {k: v["class_type"] for k, v in queued.items()} == {k: v["class_type"] for k, v in twin.items()}
    for key, node in twin.items():
        assert queued[key]["inputs"] == node["inputs"], (workflow.key, node["class_type"])


@each_workflow
def test_nothing_overlaps_at_the_sizes_the_frontend_gives(loaded, workflow):
    shown = loaded[workflow.key]["shown"]
    title = shown["titleHeight"]
    saved = {n["id"]: n["size"] for n in loaded[workflow.key]["file"]["nodes"]}
    boxes = {}
    for node in shown["nodes"]:
        # The frontend draws a node at least at its computed size: the saved one already is.
        assert node["computed"][0] <= node["size"][0] and node["computed"][1] <= node["size"][1], node
        assert node["size"] == saved[node["id"]], node
        (x, y), (w, h) = node["pos"], node["size"]
        boxes[node["id"]] = (x, y - title, x + w, y + h)
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            A, B = boxes[a], boxes[b]
            assert not (A[0] < B[2] and B[0] < A[2] and A[1] < B[3] and B[1] < A[3]), f"{workflow.title}: nodes {a} and {b} overlap"
    groups = shown["groups"]
    assert len(groups) == len(loaded[workflow.key]["file"]["groups"])
    for group in groups:
        assert group["titleWidth"] <= group["bounding"][2], f"{workflow.title}: the title {group['title']!r} runs out of its group"
    for node in shown["nodes"]:
        x0, y0, x1, y1 = boxes[node["id"]]
        holders = [g["title"] for g in groups
                   if (gx := g["bounding"][0]) <= x0 and g["bounding"][1] + g["titleHeight"] <= y0
                   and x1 <= gx + g["bounding"][2] and y1 <= g["bounding"][1] + g["bounding"][3]]
        touching = [g["title"] for g in groups if g["bounding"][0] < x1 and x0 < g["bounding"][0] + g["bounding"][2]
                    and g["bounding"][1] < y1 and y0 < g["bounding"][1] + g["bounding"][3]]
        expected = 0 if node["type"] == "MarkdownNote" else 1  # notes beside the groups, every other node in one
        assert len(holders) == len(touching) == expected, f"{workflow.title}: {node['type']} {node['id']} in groups {touching}"


@each_workflow
def test_the_missing_models_are_offered_for_download(loaded, workflow):
    """The server has neither the checkpoint nor CLIP vision: the frontend lists both, from the
    loaders' `models` entries, in their folders, with a download it allows (no error line)."""
    dialog = loaded[workflow.key]["dialog"]
    for entry in builder.DOWNLOADS.values():
        assert f"{entry['directory']} / {entry['name']}" in dialog, dialog
    assert dialog.count("Download") == len(builder.DOWNLOADS), dialog
    for refusal in ("not allowed", "Invalid directory", "Only allowed suffixes"):
        assert refusal not in dialog, dialog
