"""The pictures of the node help pages (web/docs/images/<NodeId>.jpg: each node cropped from an
example workflow as ComfyUI's frontend draws it) and of docs/nodes.md's section on help pages and
translations (docs/images/help-page.jpg: a help page open in the frontend; docs/images/ui-chinese.jpg:
the frontend in Chinese) and on search (docs/images/search.jpg: the node search for "remove rain"). A real ComfyUI with this pack and headless Chromium, on the newest
frontend (FRONTEND_NEWEST, from .ci/comfy_host), its classic canvas; tests/test_comfyui_help.py
drives the same page with the helpers here.

    export $(.ci/comfy_host ../shared/comfyui)   # COMFYUI_DIR, COMFYUI_PYTHON, FRONTEND_NEWEST
    CHROMIUM=/usr/bin/chromium $COMFYUI_PYTHON scripts/help_pictures.py [NodeId ...]

With ../shared's fixtures (DIFFPLUGIN_SHARED) the server gets the random test models, so every
loader shows a file it has; without them the pictures are the same but for the missing-model marks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEB_DOCS = REPO / "web" / "docs"
PICTURES = WEB_DOCS / "images"
DOC_IMAGES = REPO / "docs" / "images"
WORKFLOWS = REPO / "example_workflows"
PACK = "diff-plugin"  # the folder name the pack is installed under: /extensions/diff-plugin/
MAX_BYTES = 150_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DIALOGS = ".p-dialog, [role=dialog]"

# The example workflow each node is pictured in (its file's title). Train Plugin-Selector and
# Image Metrics are in none: they are added to the Plugin-Selector workflow, linked as a user would.
WORKFLOW_OF = {
    "LoadTaskPlugin": "Restore a photo with one Task-Plugin",
    "LoadTaskPluginLibrary": "Restore by instruction (Plugin-Selector)",
    "ApplyTaskPlugin": "Restore a photo with one Task-Plugin",
    "PluginSelector": "Restore by instruction (Plugin-Selector)",
    "RestoreWithTaskPlugins": "Restore by instruction (Plugin-Selector)",
    "ComposeTaskPlugins": "Remove the snow only on the river",
    "DiffPluginColorFix": "Restore a large photo in tiles",
    "SynthesizeDegradedPairs": "Train a Task-Plugin on synthetic rain",
    "TrainTaskPlugin": "Train a Task-Plugin on synthetic rain",
    "TrainPluginSelector": "Restore by instruction (Plugin-Selector)",
    "DiffPluginImageMetrics": "Restore by instruction (Plugin-Selector)",
}
ADD_NODE = """type => {
    const find = t => app.graph.nodes.find(n => n.type === t);
    const library = find('LoadTaskPluginLibrary'), restore = find('RestoreWithTaskPlugins'), photo = find('LoadImage');
    const node = LiteGraph.createNode(type);
    node.pos = [restore.pos[0], restore.pos[1] + restore.size[1] + 120];
    app.graph.add(node);
    if (type === 'TrainPluginSelector') {
        library.connect(0, node, 0); find('CLIPVisionLoader').connect(0, node, 1); photo.connect(0, node, 2);
        find('CheckpointLoaderSimple').connect(1, node, node.findInputSlot('clip'));
    } else { restore.connect(0, node, 0); photo.connect(0, node, 1); }
    return node.id; }"""
# The node's box on screen (with `margin` graph px around it), the canvas at scale 1 and the node
# in the middle of the screen's free part (clear of the side bar, the menus and the side panel).
NODE_BOX = """([id, margin, centre]) => { const node = app.graph.getNodeById(id), ds = app.canvas.ds, title = LiteGraph.NODE_TITLE_HEIGHT;
    const rect = app.canvas.canvas.getBoundingClientRect();
    ds.scale = 1;
    ds.offset[0] = centre[0] - rect.x - node.size[0] / 2 - node.pos[0];
    ds.offset[1] = centre[1] - rect.y - (node.size[1] + title) / 2 - node.pos[1] + title;
    app.canvas.setDirty(true, true);
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
    return [rect.x + x - margin, rect.y + y - margin, node.size[0] + 2 * margin, node.size[1] + title + 2 * margin]; }"""
CENTRE = (700, 620)  # of the 1600 x 1200 page: right of the side bar, below the menus, left of the side panel


def close_dialogs(page) -> None:
    for _ in range(5):
        if not page.locator(DIALOGS).count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def open_page(page, url: str, timeout_error) -> None:
    """Go to the frontend and wait until it is ready (its start-up workflow or the template
    browser of a first visit), every dialog closed."""
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph", timeout=120_000)
    with contextlib.suppress(timeout_error):
        page.wait_for_function(f"window.app.graph.nodes.length > 0 || document.querySelector({DIALOGS!r})", timeout=30_000)
    page.wait_for_timeout(2000)
    close_dialogs(page)


def load_workflow(page, title: str) -> None:
    """An example workflow, as the template browser loads it, its photos shown."""
    graph = json.loads((WORKFLOWS / f"Diff-Plugin - {title}.json").read_text())
    close_dialogs(page)
    page.evaluate("async graph => { await app.loadGraphData(graph); }", graph)
    page.wait_for_function("n => app.graph.nodes.length === n", arg=len(graph["nodes"]), timeout=30_000)
    page.wait_for_function("() => app.graph.nodes.filter(n => n.type === 'LoadImage').every(n => n.imgs?.length)", timeout=30_000)
    page.wait_for_timeout(500)
    close_dialogs(page)


def show_node(page, node_type: str) -> int:
    """The example workflow with `node_type` loaded (the node added to it where no workflow has
    it); the node's id."""
    load_workflow(page, WORKFLOW_OF[node_type])
    found = page.evaluate("t => app.graph.nodes.find(n => n.type === t)?.id ?? null", node_type)
    return found if found is not None else page.evaluate(ADD_NODE, node_type)


def small_jpeg(image, path: Path, limit: int = MAX_BYTES) -> None:
    """`image` as a JPEG under `limit` bytes: the highest quality that fits, then smaller."""
    image = image.convert("RGB")
    while True:
        for quality in (85, 75, 65, 55):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= limit:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(buffer.getvalue())
                return
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5))


def node_picture(page, node_type: str, path: Path, margin: int = 40) -> None:
    """The node in its workflow, at the frontend's own scale, with `margin` px of the graph around it."""
    from PIL import Image

    node_id = show_node(page, node_type)
    page.evaluate(NODE_BOX, [node_id, margin, CENTRE])
    page.wait_for_timeout(400)
    x, y, w, h = page.evaluate(NODE_BOX, [node_id, margin, CENTRE])
    shot = page.screenshot(clip={"x": max(x, 0), "y": max(y, 0), "width": w, "height": h})
    small_jpeg(Image.open(io.BytesIO(shot)), path)


def open_help(page, node_type: str) -> str:
    """Select the node by clicking its title, as a user does, and press the selection toolbox's
    info button: the side panel's Info tab shows the node's help page. Its text, once loaded."""
    node_id = show_node(page, node_type)
    page.evaluate(NODE_BOX, [node_id, 0, CENTRE])
    page.wait_for_timeout(300)
    x, y, w, _ = page.evaluate(NODE_BOX, [node_id, 0, CENTRE])
    page.mouse.click(x + min(w / 2, 120), y + 12)  # on the title bar, clear of its collapse dot
    page.locator("[data-testid=info-button]").click(timeout=15_000)
    panel = page.locator(".node-help-content")
    panel.wait_for(timeout=15_000)
    page.wait_for_function("() => { const p = document.querySelector('.node-help-content');"
                           " return p && p.innerText.trim().length > 0 && !p.querySelector('[aria-label]')?.matches('[role=progressbar]'); }",
                           timeout=15_000)
    page.wait_for_timeout(800)
    return panel.inner_text()


def set_locale(page, server, locale: str, timeout_error) -> None:
    """The frontend's language (the Comfy.Locale setting, read as the page loads)."""
    status, _ = server.post("/settings/Comfy.Locale", locale)
    assert status == 200, status
    open_page(page, server.url, timeout_error)


def start_server(work: Path, frontend_root: str | None):
    """A ComfyUI with this pack, the workflows' photos and (with ../shared's fixtures) the test models."""
    sys.path.insert(0, str(REPO))
    from tests import comfy_support as cs
    from tests.photos import write_photos

    shared = Path(os.environ.get("DIFFPLUGIN_SHARED", REPO.parent / "shared")) / "fixtures" / "official"
    if (shared / "sd15").is_dir():
        models = cs.model_files(shared)
    else:
        models = work / "no-models"
        models.mkdir()
    photos = cs.workflow_photos(write_photos(work / "photos"))
    photos["example.png"] = cs.COMFYUI_DIR / "input" / "example.png"  # the training workflow's clean photo: ComfyUI's own
    return cs.ComfyServer(work / "comfy", models, photos, max_side=640, front_end_root=frontend_root).start()


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def browser_page(playwright, profile: Path, width: int = 1600, height: int = 1200):
    context = playwright.chromium.launch_persistent_context(str(profile), executable_path=chromium_path(), args=CHROMIUM_ARGS,
                                                            viewport={"width": width, "height": height})
    try:
        yield context.new_page()
    finally:
        context.close()


def node_ids() -> list[str]:
    return list(WORKFLOW_OF)


def chinese_picture(page, server, timeout_error, path: Path) -> None:
    """The Plugin-Selector workflow with locale zh: the pack's nodes under their own (translated)
    titles, the workflow's English titles dropped, as they come from the node library."""
    from PIL import Image

    if not subprocess_output(["fc-list", ":lang=zh"]):
        print("no Chinese font (fc-list :lang=zh): the picture would show boxes; apt install fonts-wqy-microhei")
    set_locale(page, server, "zh", timeout_error)
    try:
        load_workflow(page, "Restore by instruction (Plugin-Selector)")
        restore = page.evaluate("""types => { for (const node of app.graph.nodes)
                if (types.includes(node.type)) node.title = LiteGraph.registered_node_types[node.type].title;
            return app.graph.nodes.find(n => n.type === 'RestoreWithTaskPlugins').id; }""", node_ids())
        page.evaluate(NODE_BOX, [restore, 0, [1150, 640]])  # the selector and the loaders to its left
        page.wait_for_timeout(800)
        small_jpeg(Image.open(io.BytesIO(page.screenshot())), path)
        print(f"wrote {path.relative_to(REPO)}")
    finally:
        set_locale(page, server, "en", timeout_error)


def open_search(page, text: str) -> list[str]:
    """The node search as a user opens it (double-click on the empty canvas), `text` typed: the
    results' titles, in the frontend's order (the dialog stays open)."""
    box = page.locator("input[role=combobox]")
    for _ in range(3):  # the last search's dialog may still be closing: a double-click then opens nothing
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
        page.mouse.dblclick(*CENTRE)
        with contextlib.suppress(Exception):
            box.wait_for(timeout=5_000)
            break
    box.fill(text)
    page.wait_for_timeout(800)
    return page.evaluate("() => [...document.querySelectorAll('#results-list [role=option]')].map(e => e.innerText.split('\\n')[0])")


def subprocess_output(command: list[str]) -> str:
    import subprocess

    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def make_pictures(page, server, timeout_error, wanted: list[str]) -> None:
    from PIL import Image

    assert server.post("/settings/Comfy.Minimap.Visible", False)[0] == 200  # it would cover the lower right
    open_page(page, server.url, timeout_error)
    for node_type in wanted:
        node_picture(page, node_type, PICTURES / f"{node_type}.jpg")
        print(f"wrote {(PICTURES / f'{node_type}.jpg').relative_to(REPO)}")
    chinese_picture(page, server, timeout_error, DOC_IMAGES / "ui-chinese.jpg")
    open_help(page, "ApplyTaskPlugin")
    small_jpeg(Image.open(io.BytesIO(page.screenshot())), DOC_IMAGES / "help-page.jpg")
    print("wrote docs/images/help-page.jpg")
    page.evaluate("() => app.graph.clear()")
    open_search(page, "remove rain")
    small_jpeg(Image.open(io.BytesIO(page.screenshot())), DOC_IMAGES / "search.jpg")
    page.keyboard.press("Escape")
    print("wrote docs/images/search.jpg")


def main(argv: list[str]) -> int:
    from playwright.sync_api import TimeoutError as timeout_error
    from playwright.sync_api import sync_playwright

    root = os.environ.get("FRONTEND_NEWEST")
    if not root or not os.path.isdir(root) or not chromium_path():
        print("needs FRONTEND_NEWEST (a frontend's static folder: .ci/comfy_host prints one) and Chromium (CHROMIUM=...)")
        return 2
    wanted = argv or node_ids()
    with tempfile.TemporaryDirectory() as temp:
        server = start_server(Path(temp), root)
        try:
            with sync_playwright() as playwright, browser_page(playwright, Path(temp) / "profile") as page:
                make_pictures(page, server, timeout_error, wanted)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
