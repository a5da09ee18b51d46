"""Every UI workflow in ComfyUI's own frontends (headless Chromium, a real ComfyUI with this pack):
the frontend the host pins and the newest on PyPI (FRONTEND_NEWEST, from .ci/comfy_host), the
newest with its classic canvas and with its Vue node renderer ("Nodes 2.0"). Each widget reads
back the value the workflow means, the saved widgets and the prompt the frontend would queue are
what the files hold, nothing overlaps at the sizes the frontend gives the nodes (the canvas), the
models entries are offered for download, and the template browser shows the titles (the host's).
One ComfyUI for each frontend's files (the newest's two renderers share one): every workflow is
loaded while it has no checkpoint or CLIP vision, then they are linked in for a run.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_workflows_frontend.py

Needs playwright (pip install playwright) and Chromium (apt install chromium, or CHROMIUM=/path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import comfy_support as cs
from tests import frontend_support as support
from tests.frontend_support import (  # noqa: F401
    FRONTENDS,
    BrowserSite,
    Sites,
    browser,
    close_dialogs,
    count_light,
    count_near,
    frontend,
    new_server,
    node_pixels,
)
from tests.script_support import script

# ruff: noqa: F811, F402 (the browser and frontend fixtures are imported from tests/frontend_support.py, then named as arguments)

pytestmark = pytest.mark.comfyui

cs.require_host("the browser tests")

REPO = cs.REPO
builder = script("build_example_workflows")

WORKFLOWS = builder.workflows()
each_workflow = pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.key)


def missing_models(page, frontend) -> str:
    """The models the frontend offers to download, as it lists them: the 1.27 dialog's text, or
    the 1.5x issues panel's rows as 'directory / name' lines with their Download buttons."""
    if not frontend.newer:
        page.wait_for_selector(".comfy-missing-models", timeout=30_000)
        return page.inner_text(".comfy-missing-models")
    buttons = page.locator("[data-testid=missing-model-download]")
    if not buttons.count():
        page.get_by_text("View details").first.click(timeout=30_000)
        buttons.first.wait_for(timeout=30_000)
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=missing-model-download]')].map(button => {
        const row = button.parentElement;
        const name = row.querySelector('button[title]').title, folder = row.querySelector('span.block').innerText;
        return `${folder} / ${name} ${button.innerText}`; }).join('\\n')""")


def load(page, workflow, frontend) -> dict:
    """Load the UI file as the template browser does, wait for the photos, read and close what the
    frontend says of the missing models; what the frontend shows, keeps and would queue."""
    graph = json.loads(builder.ui_path(workflow).read_text())
    close_dialogs(page)
    page.evaluate("async graph => { await app.loadGraphData(graph); }", graph)
    page.wait_for_function("n => app.graph.nodes.length === n", arg=len(graph["nodes"]), timeout=30_000)
    page.wait_for_function("() => app.graph.nodes.filter(n => n.type === 'LoadImage').every(n => n.imgs?.length)", timeout=30_000)
    dialog = ""
    if any("models" in n["properties"] for n in graph["nodes"]):
        dialog = missing_models(page, frontend)
    close_dialogs(page)
    page.wait_for_timeout(500)  # let sizes settle after the images
    shown = page.evaluate("""async () => ({
        nodes: app.graph.nodes.map(n => ({
            id: Number(n.id), type: n.type, pos: [...n.pos], size: [...n.size], computed: [...n.computeSize()],
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


# ComfyUI keeps the outputs of the last prompt it ran (its classic cache) and drops those of nodes
# that a new prompt lacks: this one, which shares no node with a workflow, makes the next run of
# that workflow execute every node again.
UNRELATED_PROMPT = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


class Site(BrowserSite):
    """A BrowserSite for the example workflows. It starts with the plugins and the workflows'
    photos but no checkpoint or CLIP vision, so that loading a workflow offers both for download;
    the models are linked in for the runs once every renderer's loads have been read."""

    def __init__(self, browser, server, profile: Path, models: Path, root: str | None):
        super().__init__(browser, server, profile, root)
        self.models, self.results, self.models_added = models, {}, False

    def loaded(self, frontend) -> dict:
        """Every workflow as `frontend` loads it (load()), read once, while the models are missing."""
        if frontend.key not in self.results:
            assert not self.models_added, "the missing models' checks need a server without the models"
            page = self.show(frontend)
            self.results[frontend.key] = {workflow.key: load(page, workflow, frontend) for workflow in WORKFLOWS}
        return self.results[frontend.key]

    def add_models(self) -> bool:
        """Link every model folder into the server's models folder, once every frontend of these
        files has loaded the workflows without them, and see ComfyUI list their files. False when
        they were already there."""
        if self.models_added:
            return False
        for frontend in FRONTENDS:
            if frontend.root == self.root:
                self.loaded(frontend)
        for folder in self.models.iterdir():
            linked = self.server.base / "models" / folder.name
            if not linked.exists():
                linked.symlink_to(folder, target_is_directory=True)
                listed = self.server.get(f"/models/{folder.name}")
                assert {f.name for f in folder.glob("*.safetensors")} <= set(listed), (folder.name, listed)
        self.models_added = True
        return True

    def ready_to_run(self, frontend):
        """The page in `frontend`'s renderer, reloaded if the models were just added (so that the
        frontend lists them too), and no outputs cached from an earlier run on this server (the
        Plugin-Selector, no output node, sends no scores when its output comes from the cache)."""
        reload = self.add_models()
        self.server.run_prompt(UNRELATED_PROMPT)
        return self.show(frontend, reload=reload)


def open_site(browser, tmp_path_factory, models: Path, server, root: str | None) -> Site:
    """A Site of `server` (stopped if this pack did not import there, or no page opens)."""
    return support.open_site(server, lambda: Site(browser, server, tmp_path_factory.mktemp("chromium-profile"), models, root))


@pytest.fixture(scope="module")
def sites(request, browser, tmp_path_factory, sd15_fixtures_dir, photo_dir):
    """The Sites of the frontends this module's selected tests use, in their order."""
    roots = support.site_roots(request)
    models = cs.model_files(sd15_fixtures_dir)
    pool = Sites(lambda root: new_server(tmp_path_factory, models, photo_dir, root),
                 lambda server, root: open_site(browser, tmp_path_factory, models, server, root), roots)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def site(sites, frontend):
    """The Site serving `frontend`; fails on a page error of this pack's extension."""
    current = sites.of(frontend)
    yield current
    errors = current.pack_errors()
    assert not errors, errors


@pytest.fixture
def page(site, frontend):
    """The page, showing `frontend` (in its renderer)."""
    return site.show(frontend)


@pytest.fixture(scope="module")
def loaded(site, frontend):
    """Every workflow as `frontend` loads it, on a server without the checkpoint or CLIP vision."""
    return site.loaded(frontend)


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


def test_the_template_browser_shows_the_titles_and_thumbnails(page, frontend):
    """The host's template browser (1.27) shows every workflow with its title and thumbnail and
    opens one; the newer frontends' browser reads the same list, which the page fetches as it does."""
    if frontend.newer:
        listed = page.evaluate("() => fetch('/api/workflow_templates').then(r => r.json())")
        assert sorted(listed["diff-plugin"]) == sorted(w.title for w in WORKFLOWS)
        return
    close_dialogs(page)
    page.click(".templates-tab-button")
    page.get_by_text("diff-plugin", exact=True).first.click()  # the pack's folder name: its category
    cards = page.locator('[data-testid^="template-workflow-"]')
    cards.first.wait_for(timeout=30_000)
    shown = page.evaluate("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')].map(card => ({
        id: card.dataset.testid, title: card.querySelector('h3').innerText, text: card.innerText }))""")
    for index, card in enumerate(shown):  # a thumbnail loads while its card is in view (and is let go after)
        cards.nth(index).scroll_into_view_if_needed()
        card["thumbnail"] = page.wait_for_function(
            """card => { const imgs = [...card.querySelectorAll('img')];
                         return imgs.length && imgs.every(img => img.complete && img.naturalWidth > 0)
                                && imgs.map(img => img.naturalWidth); }""", arg=cards.nth(index).element_handle(),
            timeout=30_000).json_value()
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
def test_nothing_overlaps_at_the_sizes_the_frontend_gives(loaded, workflow, frontend):
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


# ---------------------------------------------------------------------- what the nodes draw after a run


@pytest.fixture
def running(site, frontend):
    """The page, showing `frontend`, of a ComfyUI with every model (the workflows run)."""
    return site.ready_to_run(frontend)


def test_the_selectors_scores_and_the_metrics_table_show_on_the_nodes(running, frontend, tmp_path):
    """The Plugin-Selector workflow at CPU size, with Image Metrics comparing the restored photo with
    the input: after the run both nodes draw what they got (bars in the scores' colours, the
    table's light text), in this frontend and renderer."""
    page = running
    graph = json.loads(builder.ui_path(next(w for w in WORKFLOWS if w.key == "diff_plugin_text_driven_multi_task")).read_text())
    page.evaluate("async graph => { await app.loadGraphData(graph); }", graph)
    page.wait_for_function("() => app.graph.nodes.some(n => n.type === 'RestoreWithTaskPlugins')", timeout=60_000)
    close_dialogs(page)
    ids = page.evaluate("""() => {
        const restore = app.graph.nodes.find(n => n.type === 'RestoreWithTaskPlugins');
        for (const [name, value] of [["steps", 2], ["later_steps", 1], ["resolution", 64]])
            restore.widgets.find(w => w.name === name).value = value;
        const photo = app.graph.nodes.find(n => n.type === 'LoadImage');
        const metrics = LiteGraph.createNode('DiffPluginImageMetrics');
        metrics.pos = [restore.pos[0], restore.pos[1] + restore.size[1] + 80];
        app.graph.add(metrics);
        restore.connect(0, metrics, 0);
        photo.connect(0, metrics, 1);
        return {selector: app.graph.nodes.find(n => n.type === 'PluginSelector').id, metrics: metrics.id}; }""")
    before = node_pixels(page, ids["metrics"], tmp_path / "metrics-before.png")
    page.evaluate("() => app.queuePrompt(0, 1)")
    page.wait_for_function("""ids => [[ids.selector, 'diff_plugin_scores'], [ids.metrics, 'diff_plugin_metrics']].every(([id, name]) =>
        app.graph.getNodeById(id).widgets?.some(w => w.name === name && w.value))""", arg=ids, timeout=600_000)
    page.wait_for_timeout(1000)
    shown = page.evaluate("id => app.graph.getNodeById(id).widgets.find(w => w.name === 'diff_plugin_scores').value", ids["selector"])
    boxes = page.evaluate("""id => { const n = app.graph.getNodeById(id);
        const g = app.graph.groups.find(g => g.title.startsWith("2 - Select"));
        return {node: [n.pos[0], n.pos[1], n.size[0], n.size[1]], group: [g.pos[0], g.pos[1], g.size[0], g.size[1]]}; }""", ids["selector"])
    saved = page.evaluate("id => app.graph.getNodeById(id).serialize().widgets_values", ids["selector"])
    sent = page.evaluate("async id => (await app.graphToPrompt()).output[String(id)].inputs", ids["selector"])
    # one report per image of the batch (one photo here); every plugin in the folder
    assert len(shown) == 1 and {"dehaze", "derain"} <= set(shown[0]["scores"]) and "null" in shown[0]
    assert shown[0]["threshold"] == 0
    # with the scores drawn (up to the reference's 8 tasks), the node stays inside its group
    (nx, ny, nw, nh), (gx, gy, gw, gh) = boxes["node"], boxes["group"]
    assert len(shown[0]["scores"]) <= 8 and gx <= nx and nx + nw <= gx + gw and gy <= ny and ny + nh <= gy + gh, boxes
    # the scores are neither saved with the workflow nor sent with the prompt
    assert saved == ["remove the snow and the haze", 0]
    assert "diff_plugin_scores" not in sent and sent["instruction"] == "remove the snow and the haze"
    scores = node_pixels(page, ids["selector"], tmp_path / "scores.png")
    bars = count_near(scores, (0x5C, 0x6B, 0xC0)) + count_near(scores, (0x4C, 0xAF, 0x50))  # unselected, selected
    assert bars > 100, f"{frontend}: no score bars drawn on the Plugin-Selector ({bars} px)"
    after = node_pixels(page, ids["metrics"], tmp_path / "metrics.png")
    added = count_light(after) - count_light(before)  # the table's text
    assert added > 100, f"{frontend}: no metrics table drawn ({added} px of text added)"
    shots = os.environ.get("DIFFPLUGIN_SCREENSHOTS")
    if shots:  # docs/nodes.md's pictures: DIFFPLUGIN_SCREENSHOTS=docs/images
        page.evaluate("id => app.canvas.centerOnNode?.(app.graph.getNodeById(id))", ids["selector"])
        page.wait_for_timeout(500)
        page.screenshot(path=str(Path(shots) / f"frontend-{frontend.key}.jpg"), type="jpeg", quality=80)


def test_widget_inputs_linked_in_the_frontend_become_links_in_the_prompt(page):
    """A workflow whose ImageScale takes its width and height from GetImageSize (widget inputs):
    the frontend turns those links into the prompt's links."""
    single = json.loads(builder.ui_path(next(w for w in WORKFLOWS if w.key == "diff_plugin_single_task")).read_text())
    page.evaluate("async graph => { await app.loadGraphData(graph); }", single)
    page.wait_for_function("n => app.graph.nodes.length === n", arg=len(single["nodes"]), timeout=30_000)
    close_dialogs(page)
    scale = page.evaluate("async () => (await app.graphToPrompt()).output['14'].inputs")
    assert scale["width"] == ["13", 0] and scale["height"] == ["13", 1] and scale["image"] == ["8", 0], scale
